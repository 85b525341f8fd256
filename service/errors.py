"""Every answer that is not a success: an HTTP status, a short reason and a sentence.

``reason`` is a machine-readable label from a fixed set (``REJECT_REASONS``), safe to use as a
Prometheus label; the message is a sentence for the person who sent the request. Every answer the
service gives that is not a 2xx has the body ``{"error": sentence, "reason": label}``.

``InputError`` and its subclasses are the client's mistakes (4xx); each is a ValueError, so code that only
knows "bad input" can still catch them. ``Overloaded`` and ``RequestTimeout`` are the server's (5xx).
"""

from __future__ import annotations


class ServiceError(Exception):
    """An answer other than success, with its HTTP status, reason label and sentence."""

    status_code: int = 500
    reason: str = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def headers(self) -> dict[str, str]:
        return {}

    def add_context(self, prefix: str) -> ServiceError:
        """Put ``prefix`` before the sentence (such as which image of a batch it is about); returns self."""
        self.message = f"{prefix}{self.message}"
        self.args = (self.message,)
        return self

    def to_dict(self) -> dict[str, str]:
        """The JSON error body: the sentence and the reason label."""
        return {"error": self.message, "reason": self.reason}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status_code}, {self.reason!r}, {self.message!r})"


class InputError(ServiceError, ValueError):
    """A request the client must change before it can succeed."""

    status_code = 400
    reason = "invalid_input"


class InvalidInput(InputError):
    """A request field is missing, or has the wrong type, shape or values."""

    status_code = 400
    reason = "invalid_input"


class InvalidJson(InputError):
    """A body that should be JSON and is not."""

    status_code = 400
    reason = "invalid_json"


class EmptyUpload(InputError):
    """The upload has no bytes."""

    status_code = 400
    reason = "empty"


class NotFound(InputError):
    """No such route, model or model version."""

    status_code = 404
    reason = "not_found"


class MethodNotAllowed(InputError):
    """The route exists, but not for this HTTP method."""

    status_code = 405
    reason = "method_not_allowed"

    def __init__(self, message: str, allowed: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.allowed = allowed

    @property
    def headers(self) -> dict[str, str]:
        return {"Allow": ", ".join(self.allowed)} if self.allowed else {}


class BodyTimeout(InputError):
    """The request body stopped arriving: fewer bytes came than its Content-Length announced."""

    status_code = 408
    reason = "body_timeout"


class HeaderTimeout(InputError):
    """The request line and headers did not all arrive within DIGITSERVE_HEADER_TIMEOUT_S."""

    status_code = 408
    reason = "header_timeout"


class HeaderTooLarge(InputError):
    """The request line and headers together are longer than DIGITSERVE_MAX_HEADER_BYTES."""

    status_code = 431
    reason = "header_too_large"


class MalformedHttp(InputError):
    """Bytes that do not parse as an HTTP/1.1 request."""

    status_code = 400
    reason = "malformed_http"


class UploadTooLarge(InputError):
    """The upload, or the whole request body, has more bytes than the service accepts."""

    status_code = 413
    reason = "too_large"


class BatchTooLarge(InputError):
    """A request with more images than the service accepts in one call."""

    status_code = 413
    reason = "batch_too_large"


class NotMultipart(InputError):
    """An upload route called with a body that is not multipart/form-data (JSON, a raw body, a URL, ...)."""

    status_code = 415
    reason = "not_multipart"


class UnsupportedMediaType(InputError):
    """A route called with a Content-Type it does not take (for example a form where JSON is expected), or
    with a Content-Encoding it cannot undo; then ``Accept-Encoding`` names the codings it takes (RFC 9110)."""

    status_code = 415
    reason = "unsupported_media_type"

    def __init__(self, message: str, accepted_encodings: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.accepted_encodings = accepted_encodings

    @property
    def headers(self) -> dict[str, str]:
        return {"Accept-Encoding": ", ".join(self.accepted_encodings)} if self.accepted_encodings else {}


class UnsupportedFormat(InputError):
    """A recognised image format (ICO, PPM, PDF, HEIC, ...) that the service does not accept."""

    status_code = 415
    reason = "unsupported_format"


class NotAnImage(InputError):
    """Bytes that are no image format at all."""

    status_code = 400
    reason = "not_an_image"


class TruncatedImage(InputError):
    """An image in an accepted format whose data is cut short or damaged."""

    status_code = 400
    reason = "truncated"


class TooManyPixels(InputError):
    """An image, or a request's images together, declaring more pixels than the service decodes
    (decompression bombs included).

    422 rather than 413: the bytes were within the size limit; what they describe is not processable.
    """

    status_code = 422
    reason = "too_many_pixels"


class NoInk(InputError):
    """A readable image with no digit in it: blank, or nothing stands out from the background."""

    status_code = 422
    reason = "no_ink"


class ForbiddenInput(InputError):
    """An input kind the service refuses on principle, whatever its content."""

    status_code = 400
    reason = "forbidden_input"


class UrlNotAllowed(ForbiddenInput):
    """A URL (or any text) where image bytes were expected: the service never fetches anything."""

    status_code = 400
    reason = "url_not_allowed"


class PickleNotAllowed(ForbiddenInput):
    """A pickled payload: unpickling untrusted bytes runs arbitrary code, so it is never accepted."""

    status_code = 415
    reason = "pickle_not_allowed"


class Overloaded(ServiceError):
    """More requests in progress than the worker admits: come back shortly (``Retry-After``)."""

    status_code = 503
    reason = "overloaded"
    retry_after_s = 1

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class NotReady(ServiceError):
    """The worker is starting, or draining before it stops."""

    status_code = 503
    reason = "not_ready"

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class RequestTimeout(ServiceError):
    """The service could not answer within DIGITSERVE_REQUEST_TIMEOUT_S."""

    status_code = 504
    reason = "timeout"


# Every error class, once; their reasons are the labels the service's reject metric may carry.
ERROR_CLASSES: tuple[type[ServiceError], ...] = (
    InvalidInput,
    InvalidJson,
    EmptyUpload,
    NotFound,
    MethodNotAllowed,
    BodyTimeout,
    HeaderTimeout,
    HeaderTooLarge,
    MalformedHttp,
    UploadTooLarge,
    BatchTooLarge,
    NotMultipart,
    UnsupportedMediaType,
    UnsupportedFormat,
    NotAnImage,
    TruncatedImage,
    TooManyPixels,
    NoInk,
    ForbiddenInput,
    UrlNotAllowed,
    PickleNotAllowed,
    Overloaded,
    NotReady,
    RequestTimeout,
)
REJECT_REASONS: tuple[str, ...] = tuple(error.reason for error in ERROR_CLASSES)
