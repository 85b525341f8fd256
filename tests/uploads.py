"""Test helpers that turn MNIST digits into the kind of files people upload.

Shared by the preprocessing and imaging tests and by the accuracy test on realistic uploads.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

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
    big = Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC)
    ink = np.asarray(big, dtype=np.float32) / 255.0  # (112, 112), 1 where the pen was

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
