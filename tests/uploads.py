"""Test helpers that turn MNIST digits into the kind of files people upload.

Shared by the preprocessing and imaging tests and by the accuracy test on realistic uploads.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

UPLOAD_CANVAS = (200, 160)  # (width, height) of the rendered "photo"
UPLOAD_SCALE = 4  # the 28x28 digit becomes 112x112 on the canvas
UPLOAD_JPEG_QUALITY = 75


def encode(image: np.ndarray | Image.Image, fmt: str, **save_options) -> bytes:
    """Encode a uint8 array (2-D grey, 3-D colour) or a PIL image as ``fmt`` ("PNG", "JPEG", ...)."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_options)
    return buffer.getvalue()


def render_as_upload(digit28: np.ndarray, rng: np.random.Generator) -> bytes:
    """Render an MNIST digit the way a person's photo of it would arrive: a JPEG of dark ink on light paper.

    The digit is inverted, scaled up 4x, placed off-centre on a 200x160 page, lit with a brightness
    gradient, given mild sensor noise, and saved as JPEG quality 75.
    """
    digit = np.asarray(digit28, dtype=np.uint8)
    if digit.shape != (28, 28):
        raise ValueError(f"render_as_upload needs a (28, 28) digit, got shape {digit.shape}.")
    side = 28 * UPLOAD_SCALE
    ink = ink_at(digit, side)  # (112, 112), 1 where the pen was

    width, height = UPLOAD_CANVAS
    strength = np.zeros((height, width), dtype=np.float32)
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(0, width - side + 1))
    strength[top : top + side, left : left + side] = ink

    paper, pen = 235.0, 35.0
    page = paper - (paper - pen) * strength
    # Light falls off across the page in a random direction, by up to a quarter.
    angle = rng.uniform(0.0, 2.0 * np.pi)
    rows, cols = np.mgrid[0:height, 0:width]
    ramp = np.cos(angle) * cols / width + np.sin(angle) * rows / height
    ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min())
    page = page * (1.0 - 0.25 * ramp)
    page = page + rng.normal(0.0, 6.0, size=page.shape)
    rgb = np.repeat(np.clip(np.rint(page), 0, 255).astype(np.uint8)[..., np.newaxis], 3, axis=2)
    return encode(rgb, "JPEG", quality=UPLOAD_JPEG_QUALITY)


def as_photo(page: np.ndarray) -> bytes:
    """A float page of grey levels (2-D) or colours (3-D), rounded into 0-255 and saved as the JPEG
    (quality 85) a phone would save."""
    return encode(np.clip(np.rint(page), 0, 255).astype(np.uint8), "JPEG", quality=85)


def ink_at(digit: np.ndarray, side: int) -> np.ndarray:
    """The uint8 digit blown up (bicubic) to ``side`` x ``side`` as ink strengths: float32, 1 where the pen was."""
    return np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC), np.float32) / 255.0


def written_with(digit: np.ndarray, pen: int) -> np.ndarray:
    """The MNIST digit written with a pen ``pen`` pixels broader on each side (a grey dilation)."""
    return np.asarray(Image.fromarray(digit).filter(ImageFilter.MaxFilter(2 * pen + 1))) if pen else digit


def cropped_tight(digit: np.ndarray, margin: int, scale: int, blur: float) -> bytes:
    """A photo cropped to the digit: cut out ``margin`` pixels beyond its ink, blown up ``scale`` times,
    blurred by ``blur`` px, in dark ink on light paper: PNG bytes. A bold digit's ink and blur cover about
    half the picture or more."""
    rows, cols = np.flatnonzero(digit.max(axis=1) > 30), np.flatnonzero(digit.max(axis=0) > 30)
    crop = digit[max(0, rows[0] - margin) : rows[-1] + 1 + margin, max(0, cols[0] - margin) : cols[-1] + 1 + margin]
    big = Image.fromarray(crop).resize((crop.shape[1] * scale, crop.shape[0] * scale), Image.Resampling.BICUBIC)
    ink = np.asarray(big.filter(ImageFilter.GaussianBlur(blur)), np.float32) / 255.0
    return encode(np.rint(240.0 - 200.0 * ink).astype(np.uint8), "PNG")


def on_a_desk(digit: np.ndarray, layout: str, angle: float, rng: np.random.Generator) -> bytes:
    """A photo (320x240, JPEG) of the MNIST digit written on a sheet of paper that lies on a darker desk:
    the sheet in the middle (desk all round), against the left edge, or in the top-left corner, turned by
    ``angle`` degrees, the light falling off across the picture."""
    height, width = 240, 320
    sheet_h, sheet_w, top, left = {
        "middle": (180, 240, 30, 40), "left-edge": (170, 240, 35, 0), "corner": (200, 270, 0, 0),
    }[layout]
    mask = Image.new("L", (width, height), 0)
    mask.paste(255, (left, top, left + sheet_w, top + sheet_h))
    sheet = np.asarray(mask.rotate(angle, Image.Resampling.BILINEAR, center=(left + sheet_w / 2, top + sheet_h / 2)),
                       np.float32) / 255.0
    page = rng.uniform(40.0, 140.0) * (1.0 - sheet) + rng.uniform(200.0, 245.0) * sheet
    side = 90
    ink = ink_at(digit, side)
    row, col = top + (sheet_h - side) // 2, left + (sheet_w - side) // 2
    page[row : row + side, col : col + side] *= 1.0 - 0.8 * ink
    page *= 1.0 - 0.2 * np.linspace(0.0, 1.0, width)[np.newaxis, :]
    page += rng.normal(0.0, 3.0, page.shape)
    return as_photo(page)


def in_a_shadow(digit: np.ndarray, edge: float, rng: np.random.Generator) -> bytes:
    """A photo (320x240, JPEG) of the MNIST digit on paper that a shadow falls across: a half-plane at a
    random angle and offset, 30-50 % darker, its edge blurred over about ``edge`` pixels (a hand or a phone
    gives a soft one, 20-30 px; a lamp a hard one)."""
    height, width = 240, 320
    page = np.full((height, width), rng.uniform(200.0, 245.0))
    side = 100
    ink = ink_at(digit, side)
    top, left = int(rng.integers(10, height - side - 10)), int(rng.integers(10, width - side - 10))
    page[top : top + side, left : left + side] *= 1.0 - 0.8 * ink
    angle = rng.uniform(0.0, 2.0 * np.pi)
    rows, cols = np.mgrid[0:height, 0:width]
    across = np.cos(angle) * (cols - width / 2) + np.sin(angle) * (rows - height / 2) + rng.uniform(-60.0, 60.0)
    page *= 1.0 - rng.uniform(0.3, 0.5) / (1.0 + np.exp(-across / edge))
    page += rng.normal(0.0, 4.0, page.shape)
    return as_photo(page)


PAPER_COLOURS = {"dim-white": (95, 95, 95), "red": (210, 50, 50), "dark-blue": (40, 70, 170), "kraft": (160, 120, 80)}


def on_coloured_paper(digit: np.ndarray, paper: str, rng: np.random.Generator) -> bytes:
    """A photo (260x200, RGB JPEG) of the MNIST digit in black ink on paper of one of PAPER_COLOURS, each
    darker than mid-grey once made grey: white paper in dim light, red, dark blue or brown kraft paper."""
    height, width, side = 200, 260, 90
    ink = ink_at(digit, side)
    page = np.ones((height, width, 3)) * np.array(PAPER_COLOURS[paper]) * rng.uniform(0.85, 1.1)
    top, left = int(rng.integers(5, height - side - 5)), int(rng.integers(5, width - side - 5))
    page[top : top + side, left : left + side] *= (1.0 - 0.85 * ink)[..., np.newaxis]
    page += rng.normal(0.0, 3.0, page.shape)
    return as_photo(page)


def on_a_notebook_page(digit: np.ndarray, rng: np.random.Generator, margin: bool = True) -> bytes:
    """A photo (260x200, RGB JPEG) of the MNIST digit written in dark-blue ink across the light-blue ruled
    lines of a notebook page (every 26-32 px), right of its red margin line (or with no margin)."""
    height, width, side = 200, 260, 90
    ink = ink_at(digit, side)
    page = np.ones((height, width, 3)) * 245.0
    spacing = int(rng.integers(26, 33))
    for row in range(int(rng.integers(0, spacing)), height, spacing):
        page[row : row + 2] = (150, 180, 230)
    left_limit = 5
    if margin:
        page[:, 30:32] = (230, 120, 120)
        left_limit = 45
    top, left = int(rng.integers(5, height - side - 5)), int(rng.integers(left_limit, width - side - 5))
    window = page[top : top + side, left : left + side]  # a view: written on in place
    window[:] = window * (1.0 - ink[..., None]) + np.array([25, 25, 60]) * ink[..., None]
    page += rng.normal(0.0, 3.0, page.shape)
    return as_photo(page)


def in_a_box(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """A photo (280x220, JPEG) of the MNIST digit (80 px) in a box drawn round it in the same ink, 2-3 px
    wide and 8-24 px clear of it, as a form's cell holds a digit."""
    height, width, side = 220, 280, 80
    box = Image.fromarray(np.zeros((height, width), np.uint8))
    top, left = int(rng.integers(35, height - side - 35)), int(rng.integers(35, width - side - 35))
    pen, clear = int(rng.integers(2, 4)), int(rng.integers(8, 25))
    corners = [left - clear, top - clear, left + side + clear, top + side + clear]
    ImageDraw.Draw(box).rectangle(corners, outline=255, width=pen)
    return with_a_mark(digit, box, top, left, side, rng)


def underlined(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """A photo (280x220, JPEG) of the MNIST digit (80 px) with a line drawn under it in the same ink, 2-3
    px wide and 4-10 px below its box, as a 6 or a 9 is underlined to tell it from the other."""
    height, width, side = 220, 280, 80
    line = Image.fromarray(np.zeros((height, width), np.uint8))
    top, left = int(rng.integers(10, height - side - 20)), int(rng.integers(10, width - side - 10))
    below = top + side + int(rng.integers(4, 11))
    ImageDraw.Draw(line).line([left, below, left + side, below], fill=255, width=int(rng.integers(2, 4)))
    return with_a_mark(digit, line, top, left, side, rng)


def with_a_mark(
    digit: np.ndarray, mark: Image.Image, top: int, left: int, side: int, rng: np.random.Generator
) -> bytes:
    """A photo (JPEG) of ``mark`` (mode L, 255 where the pen went) and the MNIST digit blown up to ``side``
    px at (``top``, ``left``), both in dark ink on light paper."""
    strength = np.asarray(mark, np.float32) / 255.0  # a copy: written on below
    window = strength[top : top + side, left : left + side]
    window[:] = np.maximum(window, ink_at(digit, side))
    return as_photo(235.0 - 200.0 * strength + rng.normal(0.0, 3.0, strength.shape))


def under_a_flash(digit: np.ndarray, rng: np.random.Generator, falloff: float = 0.55) -> bytes:
    """A photo (260x200, JPEG) of the MNIST digit lit by a phone's flash: bright in the middle, the light
    falling off with the square of the distance from it to ``falloff`` darker in the corners."""
    height, width, side = 200, 260, 90
    page = np.full((height, width), 235.0)
    top, left = int(rng.integers(5, height - side - 5)), int(rng.integers(5, width - side - 5))
    page[top : top + side, left : left + side] -= 200.0 * ink_at(digit, side)
    rows, cols = np.mgrid[0:height, 0:width]
    distance = ((rows - height / 2) / (height / 2)) ** 2 + ((cols - width / 2) / (width / 2)) ** 2  # 2 at a corner
    page = page * (1.0 - falloff * distance / 2.0) + rng.normal(0.0, 3.0, page.shape)
    return as_photo(page)


def blown_up(digit: np.ndarray, rng: np.random.Generator, resample: Image.Resampling = Image.Resampling.NEAREST,
             thumbnail: tuple[int, int] = (8, 12)) -> bytes:
    """A thumbnail of the MNIST digit (``thumbnail`` px, dark ink on light) blown up with ``resample`` to
    50-150 px, by a factor that need not be whole, off-centre on a white page: PNG or JPEG (quality 90).
    NEAREST gives the visible blocks of a zoomed thumbnail; the same ``rng`` state with BILINEAR gives the
    same picture drawn smoothly."""
    cells = int(rng.integers(thumbnail[0], thumbnail[1] + 1))
    small = Image.fromarray(255 - digit).resize((cells, cells), Image.Resampling.BOX)
    side = int(rng.integers(50, 151))
    page = np.full((side + int(rng.integers(10, 80)), side + int(rng.integers(10, 80))), 255, np.uint8)
    top, left = int(rng.integers(0, page.shape[0] - side + 1)), int(rng.integers(0, page.shape[1] - side + 1))
    page[top : top + side, left : left + side] = np.asarray(small.resize((side, side), resample))
    return encode(page, "PNG") if rng.random() < 0.5 else encode(page, "JPEG", quality=90)
