"""Requests the service refuses before any endpoint code runs.

- ``application/vnd.bentoml+pickle`` bodies: unpickling untrusted bytes runs arbitrary code (BentoML has a
  published RCE through this content type), so it is refused everywhere with a 415.
- URLs where an upload is expected: BentoML fetches a URL given for a file field (as a JSON body, or as a
  plain multipart text value), which is a server-side request forgery hole. Upload endpoints accept only
  ``multipart/form-data`` (415 otherwise), and a text value in a file field is refused with a 400.
- Bodies over the byte limits: a 413 from the ``Content-Length`` header, before the body is read, or as
  soon as a streamed body passes the limit.

It also gives BentoML's own 4xx bodies (a one-element JSON list, ``[{"error": ...}]``, with no reason) the
shape every other error of this service has: ``{"error": sentence, "reason": label}``.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Awaitable, Callable

from service import errors
from service.settings import Settings

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PICKLE_MEDIA_TYPE = "application/vnd.bentoml+pickle"
# Endpoints that take uploaded files, and the body limit of each (None: the per-request limit).
UPLOAD_ROUTES = ("/classify", "/classify_batch", "/normalized")
MULTIPART_FRAMING_BYTES = 64 * 1024  # headers and boundaries around one file
REASON_KEY = "digitserve.reject_reason"  # set in the request's ASGI scope by the multipart parser


async def send_error(send: Send, error: errors.InputError) -> None:
    body = json.dumps(error.to_dict()).encode()
    await send({"type": "http.response.start", "status": error.status_code,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _count_rejection(reason: str) -> None:
    """Count a refusal in the service's metrics, when a service instance is running in this process."""
    try:
        import bentoml

        service = bentoml.get_current_service()
    except Exception:  # no service in this process (a unit test of the middleware alone)
        return
    metrics = getattr(service, "metrics", None)
    if metrics is not None:
        metrics.rejected.labels(reason=reason).inc()


class GuardMiddleware:
    """ASGI middleware applying the rules in this module's docstring."""

    def __init__(self, app, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    def body_limit(self, path: str) -> int:
        if path == "/classify_batch":
            return self.settings.max_request_bytes
        return self.settings.max_upload_bytes + MULTIPART_FRAMING_BYTES

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        media_type = headers.get("content-type", "").split(";")[0].strip().lower()
        path = scope["path"].rstrip("/") or "/"

        error = self.check(path, scope["method"], media_type, headers.get("content-length"))
        if error is not None:
            _count_rejection(error.reason)
            await send_error(send, error)
            return
        if path not in UPLOAD_ROUTES:
            await self.app(scope, receive, self._mend_error_bodies(scope, send))
            return
        # A body streamed without Content-Length is counted as it arrives; past the limit the app sees a
        # disconnect, and whatever it answers is replaced by the 413.
        limit, seen, overflow = self.body_limit(path), 0, None

        async def limited_receive() -> Message:
            nonlocal seen, overflow
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    overflow = errors.UploadTooLarge(f"The request body passed the limit of {limit:,} bytes.")
                    return {"type": "http.disconnect"}
            return message

        mended_send = self._mend_error_bodies(scope, send)

        async def guarded_send(message: Message) -> None:
            if overflow is None:
                await mended_send(message)
            elif message["type"] == "http.response.start":
                _count_rejection(overflow.reason)
                await send_error(send, overflow)

        await self.app(scope, limited_receive, guarded_send)

    def check(self, path: str, method: str, media_type: str, content_length: str | None) -> errors.InputError | None:
        if media_type == PICKLE_MEDIA_TYPE:
            return errors.PickleNotAllowed(
                f"Content-Type {PICKLE_MEDIA_TYPE} is never accepted: unpickling a request could run arbitrary code."
            )
        if path not in UPLOAD_ROUTES or method != "POST":
            return None
        if media_type != "multipart/form-data":
            field = "images" if path == "/classify_batch" else "image"
            return errors.NotMultipart(
                f"Send the image file as multipart/form-data in the field {field!r} "
                f"(got Content-Type {media_type or 'none'}); URLs are not fetched."
            )
        if content_length is not None and content_length.isdigit() and int(content_length) > self.body_limit(path):
            if path == "/classify_batch":
                return errors.UploadTooLarge(f"The request has {int(content_length):,} bytes; the limit for a batch "
                                             f"is {self.settings.max_request_bytes:,} (DIGITSERVE_MAX_REQUEST_BYTES).")
            return errors.UploadTooLarge(f"The image file is about {int(content_length):,} bytes; the limit is "
                                         f"{self.settings.max_upload_bytes:,} (DIGITSERVE_MAX_UPLOAD_BYTES).")
        return None

    @staticmethod
    def _mend_error_bodies(scope: Scope, send: Send) -> Send:
        """Give every 4xx JSON body this service's shape, ``{"error": sentence, "reason": label}``.

        BentoML sends its own 4xx bodies as a one-element list and without a reason; the reason comes from
        ``scope[REASON_KEY]`` when the multipart parser set it, else ``invalid_input``. Other responses pass.
        """
        pending: Message | None = None

        async def mending_send(message: Message) -> None:
            nonlocal pending
            if message["type"] == "http.response.start" and 400 <= message["status"] < 500:
                pending = message  # hold the headers until we have seen the body
                return
            if pending is not None and message["type"] == "http.response.body":
                start, pending = pending, None
                body = message.get("body", b"")
                try:
                    parsed = json.loads(body) if body and not message.get("more_body") else None
                except ValueError:
                    parsed = None
                if isinstance(parsed, list) and len(parsed) == 1 and isinstance(parsed[0], dict):
                    parsed = parsed[0]
                if isinstance(parsed, dict) and "error" in parsed and "reason" not in parsed:
                    reason = scope.get(REASON_KEY, errors.InvalidInput.reason)
                    _count_rejection(reason)
                    body = json.dumps({**parsed, "reason": reason}).encode()
                    headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
                    start = {**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]}
                    message = {**message, "body": body}
                await send(start)
            await send(message)

        return mending_send


def install_safe_multipart() -> None:
    """Make BentoML's multipart parser refuse, with a 400, what it would otherwise mishandle.

    - a text value (such as a URL) in a file field: BentoML would fetch it (SSRF);
    - a field the endpoint does not take: BentoML would JSON-decode it, and a file there was a 500.
    """
    from bentoml.exceptions import BadInput
    from starlette.datastructures import UploadFile

    from _bentoml_impl import serde

    base = serde.ALL_SERDE["multipart/form-data"]
    if getattr(base, "refuses_urls", False):
        return

    def refuse(request, error: errors.InputError) -> BadInput:
        request.scope[REASON_KEY] = error.reason  # read back by GuardMiddleware when it shapes the body
        return BadInput(error.message)

    class UploadOnlyMultipartSerde(base):
        refuses_urls = True

        async def parse_request(self, request, cls):
            form = await request.form()  # parsed once; Starlette caches it for the parser below
            unknown = sorted(set(form.keys()) - set(cls.model_fields))
            if unknown:
                raise refuse(request, errors.InvalidInput(
                    f"Unknown form field(s) {', '.join(map(repr, unknown))}; "
                    f"this endpoint takes {', '.join(map(repr, cls.model_fields))}."
                ))
            for name in cls.multipart_fields:
                if any(not isinstance(value, UploadFile) for value in form.getlist(name)):
                    raise refuse(request, errors.UrlNotAllowed(
                        f"The field {name!r} must hold an uploaded file; text values such as URLs are "
                        "refused and never fetched."
                    ))
            return await super().parse_request(request, cls)

        @staticmethod
        async def ensure_file(obj: Any) -> UploadFile:
            if isinstance(obj, UploadFile):
                return obj
            raise BadInput("A file field must hold an uploaded file; URLs are never fetched.")  # unreachable backstop

    for media_type, serde_class in list(serde.ALL_SERDE.items()):
        if serde_class is base:
            serde.ALL_SERDE[media_type] = UploadOnlyMultipartSerde
