"""The ASGI middleware every request passes first: budgets, timeouts, admission control, error shape, metrics.

Before any endpoint code runs, and before the body is read:

- ``application/vnd.bentoml+pickle`` is refused everywhere (415): unpickling untrusted bytes runs arbitrary
  code, and BentoML has a published RCE through that content type.
- A POST route takes only its own kind of body: multipart/form-data for uploads (415 ``not_multipart``
  otherwise, so a JSON body carrying a URL is never fetched), JSON for ``/infer``, and only the
  Content-Encodings it inflates (gzip and deflate on the v2 infer routes, none elsewhere; 415 otherwise,
  rather than reading a compressed body as a broken one).
- A body over its route's byte limit is refused with a 413, from ``Content-Length`` when it is declared,
  and as soon as a streamed body passes the limit otherwise.
- An inference request beyond ``DIGITSERVE_MAX_CONCURRENCY`` requests in progress on this worker gets an
  immediate 503 with ``Retry-After`` and ``reason: "overloaded"``, instead of a place in a queue that
  would make every accepted request slow.

While the request runs:

- a body that stops arriving (a pause longer than ``DIGITSERVE_BODY_TIMEOUT_S``, as when a client sends
  fewer bytes than its ``Content-Length``) gets a 408 and the connection is closed;
- a request not answered within ``DIGITSERVE_REQUEST_TIMEOUT_S`` gets a 504, or a 408 if its body was
  still arriving.

And every answer that is not a success leaves with the service's error shape, ``{"error": sentence,
"reason": label}``: the routers' plain-text 404 and 405, BentoML's plain-text 503 from ``/readyz``.
The request metrics are counted here, by route template.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from starlette.routing import compile_path

from service import errors
from service.lifecycle import activity
from service.metrics import domain_metrics
from service.settings import Settings

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PICKLE_MEDIA_TYPE = "application/vnd.bentoml+pickle"
MULTIPART_FRAMING_BYTES = 64 * 1024  # headers and boundaries around one file
BENTOML_PATHS = ("/", "/readyz", "/livez", "/healthz", "/docs.json", "/schema.json")  # BentoML's own routes
UNMATCHED = "unmatched"  # the route label of every path that no route takes: one label, not one per path


@dataclass(frozen=True)
class BodyPolicy:
    """What a POST route accepts as a body, and how much of it."""

    kind: str  # "multipart", "json" or "v2" (JSON, or a JSON header followed by binary tensors)
    limit: str  # the Settings field that bounds its bytes
    framing: int = 0  # bytes allowed beyond the limit for multipart headers and boundaries
    field: str = ""  # the multipart field, for the error sentence
    encodings: tuple[str, ...] = ()  # the Content-Encodings the route inflates; any other is refused (415)


@dataclass(frozen=True)
class RoutePolicy:
    protocol: str  # "rest" or "v2": a metrics label
    inference: bool  # counted against DIGITSERVE_MAX_CONCURRENCY
    body: BodyPolicy | None = None  # for POST


class Guard:
    """ASGI middleware applying the rules in this module's docstring.

    ``policies`` maps each route template that takes a body or runs the model (``/classify``,
    ``/v2/models/{name}/infer``) to what it accepts.
    """

    def __init__(self, app, settings: Settings, policies: dict[str, RoutePolicy]) -> None:
        self.app = app
        self.settings = settings
        self.policies = [(compile_path(template)[0], template, policy) for template, policy in policies.items()]
        self.in_flight = 0  # inference requests in progress on this worker (one event loop: no lock needed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._refuse_websocket(scope, receive, send)
            return
        if scope["type"] != "http":  # the lifespan
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        if method == "HEAD":
            # HEAD is GET without the body (RFC 9110 asks every server to take both): our FastAPI routes take
            # only GET, so the app sees a GET, and the server, whose scope still says HEAD, sends no body.
            scope = {**scope, "method": "GET"}
        template, policy = self.policy(scope["path"])
        metrics = domain_metrics()
        started = time.perf_counter()
        status_seen: list[int] = []

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_seen.append(message["status"])
                if activity.draining:  # the client should reconnect, and reach a worker that is not stopping
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        activity.started()
        try:
            await self._guarded(scope, receive, counting_send, template, policy)
        finally:
            activity.finished()
            template = route_template(scope, template)
            status = str(status_seen[0]) if status_seen else "none"  # "none": the client left before an answer
            metrics.requests.labels(endpoint=template, method=_method_label(method), status=status).inc()
            metrics.request_seconds.labels(endpoint=template).observe(time.perf_counter() - started)

    def policy(self, path: str) -> tuple[str, RoutePolicy | None]:
        """The route template and policy of a path, when a route with a policy takes it."""
        for pattern, template, policy in self.policies:
            if pattern.match(path):
                return template, policy
        return UNMATCHED, None

    async def _guarded(self, scope: Scope, receive: Receive, send: Send, template: str,
                       policy: RoutePolicy | None) -> None:
        protocol = policy.protocol if policy else "rest"
        headers = _headers(scope)
        error = self.check(scope["method"], headers, policy)
        if error is not None:
            await self._refuse(send, error, protocol)
            return

        admitted = policy is not None and policy.inference
        if admitted:
            if self.in_flight >= self.settings.max_concurrency:
                await self._refuse(send, errors.Overloaded(
                    f"This worker is answering {self.in_flight} requests, its limit (DIGITSERVE_MAX_CONCURRENCY); "
                    "try again in a moment."), protocol)
                return
            self.in_flight += 1
            domain_metrics().in_progress.labels(endpoint=template).inc()
        try:
            await self._run(scope, receive, send, headers, policy, protocol)
        finally:
            if admitted:
                self.in_flight -= 1
                domain_metrics().in_progress.labels(endpoint=template).dec()

    def check(self, method: str, headers: dict[str, str], policy: RoutePolicy | None) -> errors.InputError | None:
        """The refusal a request earns from its headers alone, or None."""
        media_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type == PICKLE_MEDIA_TYPE:
            return errors.PickleNotAllowed(
                f"Content-Type {PICKLE_MEDIA_TYPE} is never accepted: unpickling a request could run arbitrary code."
            )
        if method != "POST" or policy is None or policy.body is None:
            return None
        body = policy.body
        if body.kind == "multipart" and media_type != "multipart/form-data":
            return errors.NotMultipart(
                f"Send the image file as multipart/form-data in the field {body.field!r} "
                f"(got Content-Type {media_type or 'none'}); URLs are not fetched."
            )
        if body.kind == "json" and media_type not in ("", "application/json") and not media_type.endswith("+json"):
            return errors.UnsupportedMediaType(f"Send a JSON body with Content-Type application/json (got {media_type}).")
        encoding = headers.get("content-encoding", "").strip().lower()
        if encoding not in ("", "identity") and encoding not in body.encodings:
            # Read as it came, a compressed body would fail as a broken form or JSON: say what is wrong instead.
            takes = f"it takes {' or '.join(body.encodings)}, or none" if body.encodings else "send the body uncompressed"
            return errors.UnsupportedMediaType(f"Content-Encoding {encoding[:40]!r} is not taken by this route; {takes}.",
                                               accepted_encodings=body.encodings or ("identity",))
        declared = headers.get("content-length")
        if declared is not None and not declared.isdigit():
            return errors.InvalidInput(f"The Content-Length header {declared[:40]!r} is not a number of bytes.")
        limit = self.body_limit(body, headers)
        if declared is not None and int(declared) > limit:
            return errors.UploadTooLarge(self._too_large_sentence(body, headers, int(declared)))
        return None

    def body_limit(self, body: BodyPolicy, headers: dict[str, str]) -> int:
        if body.kind == "v2" and "inference-header-content-length" not in headers:
            return self.settings.max_json_bytes  # a JSON-only v2 request
        if body.kind == "v2":
            return self.settings.max_request_bytes
        return getattr(self.settings, body.limit) + body.framing

    def _too_large_sentence(self, body: BodyPolicy, headers: dict[str, str], size: int) -> str:
        limit = self.body_limit(body, headers)
        variable = {"max_upload_bytes": "DIGITSERVE_MAX_UPLOAD_BYTES", "max_json_bytes": "DIGITSERVE_MAX_JSON_BYTES",
                    "max_request_bytes": "DIGITSERVE_MAX_REQUEST_BYTES"}[body.limit]
        if body.kind == "v2":
            variable = ("DIGITSERVE_MAX_REQUEST_BYTES" if "inference-header-content-length" in headers
                        else "DIGITSERVE_MAX_JSON_BYTES")
        if body.limit == "max_upload_bytes":
            return (f"The image file is about {size:,} bytes; the limit is "
                    f"{self.settings.max_upload_bytes:,} ({variable}).")
        return f"The request body has {size:,} bytes; the limit is {limit:,} ({variable})."

    async def _run(self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str],
                   policy: RoutePolicy | None, protocol: str) -> None:
        """Call the app with the body limit, the body and request timeouts, and the error shape applied."""
        body = policy.body if policy and scope["method"] == "POST" else None
        limit = self.body_limit(body, headers) if body else None
        state = _RequestState()

        async def limited_receive() -> Message:
            if state.body_complete:
                return await receive()  # after the body: the app is only listening for a disconnect
            try:
                async with asyncio.timeout(self.settings.body_timeout_s):
                    message = await receive()
            except TimeoutError:
                state.failure = errors.BodyTimeout(
                    f"The request body stopped arriving: nothing came for {self.settings.body_timeout_s:g} s "
                    "(DIGITSERVE_BODY_TIMEOUT_S). Send the whole body, as long as Content-Length says."
                )
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                state.received += len(message.get("body", b""))
                if limit is not None and state.received > limit:
                    state.failure = errors.UploadTooLarge(self._too_large_sentence(body, headers, state.received))
                    return {"type": "http.disconnect"}
                state.body_complete = not message.get("more_body", False)
            return message

        async def guarded_send(message: Message) -> None:
            if state.failure is not None:  # the app answers a body it never fully got: ours replaces it
                if message["type"] == "http.response.start" and not state.started:
                    state.started = True
                    await self._refuse(send, state.failure, protocol, close=True)
                return
            if message["type"] == "http.response.start":
                state.started = True
                status = message["status"]
                if status >= 400 and not _is_json(message):
                    state.reshape = _plain_error(status, message)
                    return
            elif state.reshape is not None:  # the plain body of a plain error: replaced by the JSON shape
                if not message.get("more_body", False):
                    error, state.reshape = state.reshape, None
                    await self._refuse(send, error, protocol)
                return
            await send(message)

        try:
            async with asyncio.timeout(self.settings.request_timeout_s):
                await self.app(scope, limited_receive, guarded_send)
        except TimeoutError:
            if not state.started:
                if not state.body_complete and body is not None:
                    await self._refuse(send, errors.BodyTimeout(
                        f"The request body did not arrive within {self.settings.request_timeout_s:g} s "
                        "(DIGITSERVE_REQUEST_TIMEOUT_S)."), protocol, close=True)
                else:
                    await self._refuse(send, errors.RequestTimeout(
                        f"The request could not be answered within {self.settings.request_timeout_s:g} s "
                        "(DIGITSERVE_REQUEST_TIMEOUT_S)."), protocol)
            return
        if state.failure is not None and not state.started:  # the app gave up on the body without answering
            await self._refuse(send, state.failure, protocol, close=True)

    async def _refuse_websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """No route takes a WebSocket. The handshake is answered with the service's error body where the
        server can send one (the ASGI WebSocket Denial Response extension, which uvicorn has), else closed
        (which uvicorn turns into a bare 403)."""
        error = errors.NotFound("No route here takes a WebSocket; the service answers plain HTTP requests "
                                "(see the OpenAPI document at /docs.json).")
        domain_metrics().rejected.labels(reason=error.reason, protocol="rest").inc()
        await receive()  # websocket.connect
        if "websocket.http.response" in scope.get("extensions", {}):
            await send_error(send, error, message_type="websocket.http.response")
        else:
            await send({"type": "websocket.close", "code": 1008})

    async def _refuse(self, send: Send, error: errors.ServiceError, protocol: str, close: bool = False) -> None:
        domain_metrics().rejected.labels(reason=error.reason, protocol=protocol).inc()
        await send_error(send, error, close=close)


class _RequestState:
    __slots__ = ("received", "body_complete", "failure", "started", "reshape")

    def __init__(self) -> None:
        self.received = 0
        self.body_complete = False
        self.failure: errors.ServiceError | None = None
        self.started = False
        self.reshape: errors.ServiceError | None = None


async def send_error(send: Send, error: errors.ServiceError, close: bool = False,
                     message_type: str = "http.response") -> None:
    """Send ``error`` as the whole answer: its status, its headers, the JSON body (``message_type``
    ``websocket.http.response`` refuses a WebSocket handshake the same way)."""
    body = json.dumps(error.to_dict(), separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in error.headers.items()]
    if close:  # the rest of the body is not read: the connection cannot carry another request
        headers.append((b"connection", b"close"))
    await send({"type": f"{message_type}.start", "status": error.status_code, "headers": headers})
    await send({"type": f"{message_type}.body", "body": body})


def route_template(scope: Scope, default: str = UNMATCHED) -> str:
    """The template of the route that answered (``/v2/models/{name}/infer``), never the raw path.

    Starlette's router records the route it chose in ``scope["route"]``; a path no route took is one label.
    """
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str) and path:
        return path
    if scope["path"] in BENTOML_PATHS:
        return scope["path"]
    if scope["path"].startswith("/static_content/"):  # the Swagger UI's files
        return "/static_content/{path}"
    return default


def _headers(scope: Scope) -> dict[str, str]:
    return {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}


def _is_json(start: Message) -> bool:
    for key, value in start.get("headers", ()):
        if key.lower() == b"content-type":
            return value.split(b";")[0].strip().lower() == b"application/json"
    return False


def _method_label(method: str) -> str:
    """The method as a metrics label: the standard ones by name, anything else as one label."""
    return method if method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS") else "other"


def _plain_error(status: int, start: Message) -> errors.ServiceError:
    """The service's error for a plain-text error answer from a router or from BentoML."""
    if status == 404:
        return errors.NotFound("There is no such route; see the OpenAPI document at /docs.json.")
    if status == 405:
        allowed = next((v.decode("latin-1") for k, v in start.get("headers", ()) if k.lower() == b"allow"), "")
        methods = tuple(m.strip() for m in allowed.split(",") if m.strip())
        return errors.MethodNotAllowed(
            f"This route does not take that method{'; it takes ' + ', '.join(methods) if methods else ''}.", methods)
    if status == 503:
        return errors.NotReady("The service is not ready: it is starting, or draining before it stops.")
    if 400 <= status < 500:
        error = errors.InvalidInput("The request is not valid for this route.")
        error.status_code = status
        return error
    logger.error("A route answered %d with a plain-text body", status)
    error = errors.ServiceError("An unexpected error occurred; it is in the service's log.")
    error.status_code = status
    return error
