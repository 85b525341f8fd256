"""Upload bytes -> checked PIL image -> MNIST-style 28x28 array.

Every upload is checked in this order, and the first failure is the answer (see ``service.errors``):

1. no bytes                                             -> EmptyUpload       400 empty
2. more than ``max_bytes`` bytes                        -> UploadTooLarge    413 too_large
3. not PNG, JPEG, GIF, BMP, TIFF or WebP:
   a format we recognise but do not accept (ICO, PPM, PDF, HEIC, SVG, ...) -> UnsupportedFormat 415
   an accepted format whose header cannot be read      -> TruncatedImage    400 truncated
   anything else                                       -> NotAnImage        400 not_an_image
4. more than ``max_pixels`` pixels, read from the header before any pixel is decoded; this also
   covers decompression bombs                          -> TooManyPixels     422 too_many_pixels
5. pixel data cut short or damaged                     -> TruncatedImage    400 truncated
6. a colour mode Pillow cannot convert to grey          -> UnsupportedFormat 415 unsupported_format
7. (in ``preprocess_upload``) no ink                   -> NoInk             422 no_ink

Animated GIF, WebP and PNG, and multi-page TIFF: the first frame is the image. Later frames are never
decoded, and we never ask how many there are (``n_frames`` makes Pillow walk a GIF's every frame), so a
file of a million frames costs no more than its first frame.

Only the six accepted formats' parsers ever see the bytes: recognising a refused format is done by its
leading magic bytes, not by letting Pillow's other plugins parse hostile input.

Pillow's own decompression-bomb guard (``Image.MAX_IMAGE_PIXELS``, about 89 megapixels) is left as it is.
Its error, for images over twice that, becomes TooManyPixels. Its warning, for images between once and
twice that, may still be emitted, but the ``max_pixels`` check rejects those images right after, before
decoding, as long as ``max_pixels`` is below Pillow's limit. We do not turn the warning into an error with
``warnings.catch_warnings``: that swaps process-wide state and is not thread-safe under the service's
worker threads.
"""

from __future__ import annotations

import io
import logging
import math
import re

import numpy as np
import scipy.ndimage  # noqa: F401  normalize_digit imports these on a first photo (a shadow's opening, a sheet
import scipy.spatial  # noqa: F401  on a desk): load them with the service, so that photo does not wait for them
from PIL import Image, ImageChops, ImageOps

from models.preprocessing import WORKING_SIZE, NoInkError, normalize_digit
from service.errors import (
    EmptyUpload,
    InputError,
    NoInk,
    NotAnImage,
    TooManyPixels,
    TruncatedImage,
    UnsupportedFormat,
    UploadTooLarge,
)

logger = logging.getLogger(__name__)

ACCEPTED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")
ACCEPTED_FORMATS_TEXT = "PNG, JPEG, GIF, BMP, TIFF or WebP"

# Leading bytes of formats we name in errors: the accepted ones (to tell "damaged PNG" from "not an
# image") and common ones we refuse (to answer 415 rather than 400).
_MAGIC_PREFIXES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),  # BigTIFF
    (b"MM\x00+", "TIFF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"\x00\x00\x02\x00", "CUR or TGA"),  # an icon cursor and an uncompressed Targa start alike
    (b"%PDF-", "PDF"),
    (b"%!PS", "PostScript"),
    (b"\xc5\xd0\xd3\xc6", "EPS"),
    (b"8BPS", "PSD"),
    (b"icns", "ICNS"),
    (b"DDS ", "DDS"),
    (b"qoif", "QOI"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (b"\xff\x0a", "JPEG XL"),
    (b"gimp xcf", "XCF"),
    (b"SIMPLE  =", "FITS"),
    (b"#?RADIANCE", "Radiance HDR"),
    (b"#?RGBE", "Radiance HDR"),
    (b"\x01\xda", "SGI"),
    (b"\x59\xa6\x6a\x95", "Sun raster"),
    (b"BLP1", "BLP"),
    (b"BLP2", "BLP"),
    (b"/* XPM */", "XPM"),
    (b"Image type: ", "IM"),
)
_NETPBM = re.compile(rb"P[1-7Ff]\s")  # PBM, PGM, PPM, PAM, PFM
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"}
_PCX_VERSIONS = (b"\x00", b"\x02", b"\x03", b"\x04", b"\x05")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def open_image(data: bytes, *, max_bytes: int, max_pixels: int) -> Image.Image:
    """Checks 1 to 4 on uploaded bytes: a PIL image whose header is read and checked, pixels not yet decoded.

    Cheap whatever the declared size, so callers can decide from ``image.size`` where (and whether) to
    decode it.
    """
    if max_bytes < 1 or max_pixels < 1:
        raise ValueError(f"max_bytes and max_pixels must be positive, got {max_bytes} and {max_pixels}.")
    if not data:
        raise EmptyUpload("The upload is empty: send the bytes of an image file.")
    if len(data) > max_bytes:
        raise UploadTooLarge(f"The upload is {len(data):,} bytes; the limit is {max_bytes:,} bytes.")

    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError as error:
        raise TooManyPixels("The image declares far too many pixels to decode safely.") from error
    except MemoryError:
        raise
    except Exception as error:  # Pillow's parsers raise many types on hostile bytes; all are the bytes' fault
        raise _unreadable(data) from error

    width, height = image.size
    if width < 1 or height < 1:
        raise NotAnImage(f"The {image.format} image declares a size of {width}x{height}: it has no pixels.")
    if width * height > max_pixels:
        raise TooManyPixels(
            f"The image is {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,} pixels."
        )
    return image


def load_grayscale(image: Image.Image, *, reduce_to: int | None = None) -> Image.Image:
    """Checks 5 and 6: decode an image from ``open_image`` into grayscale ("L").

    Colour is converted to luminance; transparent pixels are composited onto white, so a transparent
    drawing becomes dark ink on light paper (light strokes on a transparent sheet are composited onto black
    and inverted, to the same end); 16-bit and float pixels are scaled, not clipped; the EXIF
    orientation is applied. With ``reduce_to``, a JPEG may be decoded at 1/2, 1/4 or 1/8 scale (libjpeg
    scales while it decodes: about 30% less time for a 12-megapixel photo) as long as its longer side
    stays at least ``reduce_to`` pixels; other formats always decode at full size.
    """
    width, height = image.size
    try:
        # libjpeg can decode a colour JPEG straight to luminance, and at a reduced scale; other formats
        # ignore draft(). Asking for (reduce_to, 1) bounds only the longer side.
        if reduce_to is None:
            image.draft("L", None)
        else:
            image.draft("L", (reduce_to, 1) if width >= height else (1, reduce_to))
        image.load()
    except MemoryError:
        raise
    except Exception as error:
        raise TruncatedImage(
            f"The {image.format} image could not be decoded: its data is truncated or damaged."
        ) from error

    try:
        ImageOps.exif_transpose(image, in_place=True)
    except Exception:  # a damaged EXIF block should not cost the user their answer
        logger.info("Ignoring an unreadable EXIF orientation in a %s upload.", image.format, exc_info=True)

    try:
        return _to_grayscale(image)
    except (InputError, MemoryError):
        raise
    except Exception as error:  # a conversion that fails on decoded pixels: damaged data (a broken palette, ...)
        raise TruncatedImage(f"The {image.format} image could not be converted to grey: its data is damaged.") from error


def decode_image(
    data: bytes, *, max_bytes: int, max_pixels: int, reduce_to: int | None = None
) -> Image.Image:
    """Check and decode uploaded bytes into a grayscale ("L") PIL image, raising an InputError if it can't."""
    return load_grayscale(open_image(data, max_bytes=max_bytes, max_pixels=max_pixels), reduce_to=reduce_to)


def normalise_image(image: Image.Image) -> np.ndarray:
    """Decode an image from ``open_image`` into the MNIST-style uint8 (28, 28) digit the model classifies."""
    # normalize_digit box-averages down to WORKING_SIZE anyway: let libjpeg do most of that for free.
    gray = load_grayscale(image, reduce_to=WORKING_SIZE)
    try:
        return normalize_digit(np.asarray(gray))
    except NoInkError as error:
        raise NoInk(str(error)) from error


def preprocess_upload(data: bytes, *, max_bytes: int, max_pixels: int) -> np.ndarray:
    """Turn uploaded bytes into the MNIST-style uint8 (28, 28) digit the model classifies."""
    return normalise_image(open_image(data, max_bytes=max_bytes, max_pixels=max_pixels))


def _unreadable(data: bytes) -> InputError:
    """The error for bytes that no accepted format's parser could open, named by their magic bytes."""
    name = _sniff_format(data)
    if name in ACCEPTED_FORMATS:
        return TruncatedImage(
            f"The upload starts like a {name} image, but its header cannot be read: "
            "the file is truncated or damaged."
        )
    if name is not None:
        return UnsupportedFormat(f"{name} images are not accepted; send {ACCEPTED_FORMATS_TEXT}.")
    return NotAnImage(f"The upload is not an image; send {ACCEPTED_FORMATS_TEXT}.")


def _sniff_format(data: bytes) -> str | None:
    """Name the image format that ``data`` starts like, or None; reads only the first bytes."""
    head = data[:1024]
    for prefix, name in _MAGIC_PREFIXES:
        if head.startswith(prefix):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "AVIF" if head[8:12] in (b"avif", b"avis") else "HEIF"
    if head[:1] == b"\x0a" and head[1:2] in _PCX_VERSIONS and head[2:3] == b"\x01":  # 1 = RLE encoding
        return "PCX"
    if _NETPBM.match(head):
        return "Netpbm (PBM/PGM/PPM)"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in text):
        return "SVG"
    return None


def _to_grayscale(image: Image.Image) -> Image.Image:
    """Convert a decoded image of any mode to "L"."""
    mode = image.mode
    if mode == "L":
        return image
    try:
        if mode in ("I", "F") or mode.startswith("I;"):
            return Image.fromarray(_scale_to_uint8(np.asarray(image), mode))
        if image.has_transparency_data:  # an alpha band, or a transparent colour or palette entry
            rgba = image.convert("RGBA")
            if _light_strokes_on_a_clear_sheet(rgba):
                # White strokes on a transparent sheet (a drawing app in dark mode) would vanish on white
                # paper: on black they show, and inverted they are dark ink on light like every other upload.
                black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
                return ImageOps.invert(Image.alpha_composite(black, rgba).convert("L"))
            # Transparent pixels become white paper; a transparent PNG drawing is dark ink on light.
            paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(paper, rgba).convert("L")
        if mode == "LAB":
            return image.getchannel("L")  # the lightness channel is the grayscale image
        return image.convert("L")
    except ValueError as error:  # Pillow has no conversion for this mode
        raise UnsupportedFormat(f"Images in colour mode {mode} are not supported.") from error


CLEAR_SHEET_SHARE = 0.5  # at least this share of an image see-through: a transparent sheet, not a few clear pixels


def _light_strokes_on_a_clear_sheet(rgba: Image.Image) -> bool:
    """Whether an RGBA image is mostly see-through and what is opaque on it is light (alpha-weighted
    luminance over half way). Judged from one-byte planes averaged in blocks, at most 256 blocks a side."""
    factor = max(1, math.ceil(max(rgba.size) / 256))
    opacity = rgba.getchannel("A")
    alpha = np.asarray(opacity.reduce(factor), dtype=np.float32) / 255.0
    if (alpha < 0.5).mean() < CLEAR_SHEET_SHARE or alpha.sum() == 0:
        return False
    weighted = ImageChops.multiply(rgba.convert("L"), opacity)  # luminance times opacity, in block sums below
    return float(np.asarray(weighted.reduce(factor), dtype=np.float32).sum() / alpha.sum()) > 127.5


def _scale_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Scale high-bit-depth grey levels to 0..255.

    16-bit modes divide by 257 (65535 -> 255), in integers. For 32-bit integer and float pixels the range
    decides: floats in [0, 1] are multiplied by 255, values already in 0..255 are kept, values in 0..65535
    are treated as 16-bit, and anything else is stretched from its minimum to its maximum. The work is done
    in place on one float32 copy: a 40-megapixel image must not cost a gigabyte of temporaries.
    """
    if mode in _SIXTEEN_BIT_MODES:
        return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)  # round(v / 257)
    values = values.astype(np.float32)
    np.nan_to_num(values, copy=False, nan=0.0, posinf=0.0, neginf=0.0)  # float TIFFs may hold NaN or infinity
    low, high = float(values.min()), float(values.max())
    if mode == "F" and low >= 0.0 and high <= 1.0:
        values *= 255.0
    elif low >= 0.0 and high <= 255.0:
        pass
    elif low >= 0.0 and high <= 65535.0:
        values /= 257.0
    elif high > low:
        values -= low
        values *= 255.0 / (high - low)
    else:
        values[...] = 0.0
    np.rint(values, out=values)
    np.clip(values, 0, 255, out=values)
    return values.astype(np.uint8)
