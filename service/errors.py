"""The client errors the service answers with a 4xx: each carries an HTTP status and a short reason.

``reason`` is a machine-readable label from a fixed set (``REJECT_REASONS``), safe to use as a
Prometheus label; the message is a sentence for the person who sent the request.
Every class is a ValueError, so code that only knows "bad input" can still catch them.
"""

from __future__ import annotations


class InputError(ValueError):
    """A request the client must change before it can succeed."""

    status_code: int = 400
    reason: str = "invalid_input"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, str]:
        """The JSON error body: the sentence and the reason label."""
        return {"error": self.message, "reason": self.reason}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status_code}, {self.reason!r}, {self.message!r})"


class InvalidInput(InputError):
    """A request field is missing, or has the wrong type or shape."""

    status_code = 400
    reason = "invalid_input"


class EmptyUpload(InputError):
    """The upload has no bytes."""

    status_code = 400
    reason = "empty"


class NotMultipart(InputError):
    """An upload route called with a body that is not multipart/form-data (JSON, a raw body, a form)."""

    status_code = 415
    reason = "not_multipart"


class UploadTooLarge(InputError):
    """The upload has more bytes than the service accepts."""

    status_code = 413
    reason = "too_large"


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
    """An image whose header declares more pixels than the service decodes (decompression bombs included).

    422 rather than 413: the bytes were within the size limit; what they describe is not processable.
    """

    status_code = 422
    reason = "too_many_pixels"


class NoInk(InputError):
    """A readable image with no digit in it: blank, or nothing stands out from the background."""

    status_code = 422
    reason = "no_ink"


class BatchTooLarge(InputError):
    """A batch request with more items than the service accepts in one call."""

    status_code = 413
    reason = "batch_too_large"


class ForbiddenInput(InputError):
    """An input kind the service refuses on principle, whatever its content."""

    status_code = 400
    reason = "forbidden_input"


class UrlNotAllowed(ForbiddenInput):
    """A URL where image bytes were expected: the service never fetches anything on a client's behalf."""

    status_code = 400
    reason = "url_not_allowed"


class PickleNotAllowed(ForbiddenInput):
    """A pickled payload: unpickling untrusted bytes runs arbitrary code, so it is never accepted."""

    status_code = 415
    reason = "pickle_not_allowed"


class NotMultipart(InputError):
    """An upload endpoint called with a body that is not multipart/form-data (a JSON URL, raw bytes, ...)."""

    status_code = 415
    reason = "not_multipart"


# Every error class, once; their reasons are the labels the service's reject metric may carry.
ERROR_CLASSES: tuple[type[InputError], ...] = (
    InvalidInput,
    EmptyUpload,
    NotMultipart,
    UploadTooLarge,
    UnsupportedFormat,
    NotAnImage,
    TruncatedImage,
    TooManyPixels,
    NoInk,
    BatchTooLarge,
    ForbiddenInput,
    UrlNotAllowed,
    PickleNotAllowed,
    NotMultipart,
)
REJECT_REASONS: tuple[str, ...] = tuple(dict.fromkeys(error.reason for error in ERROR_CLASSES))
