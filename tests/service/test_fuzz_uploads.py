"""Property-based tests of the upload path: random bytes, and valid images of every accepted format with
bytes flipped, cut, inserted or repeated. Only the project's input errors may come out, or a digit.

Seeded (``derandomize``), so CI runs the same examples every time; a failure names its example.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from service.errors import InputError
from service.imaging import ACCEPTED_FORMATS, preprocess_upload

LIMITS = {"max_bytes": 2_000_000, "max_pixels": 4_000_000}
FUZZ = settings(max_examples=400, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def seed_images() -> list[bytes]:
    """A small digit-like image in each accepted format and several modes: what mutations start from."""
    rng = np.random.default_rng(7)
    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:16] = 255
    images = []
    for fmt in ACCEPTED_FORMATS:
        for mode in ("L", "RGB", "P", "1"):
            if fmt == "JPEG" and mode in ("P", "1"):
                continue
            picture = Image.fromarray(digit).convert(mode)
            buffer = io.BytesIO()
            picture.save(buffer, format=fmt)
            images.append(buffer.getvalue())
    noisy = Image.fromarray(rng.integers(0, 255, (40, 30), dtype=np.uint8))
    for fmt in ("PNG", "GIF", "TIFF"):
        buffer = io.BytesIO()
        noisy.save(buffer, format=fmt, save_all=True, append_images=[noisy.rotate(90)])
        images.append(buffer.getvalue())
    return images


SEEDS = seed_images()


@st.composite
def mutated_images(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "repeat", "zero"]))
        position = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del data[position:position + draw(st.integers(1, 64))]
        elif kind == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=32))
        elif kind == "repeat":
            data[position:position] = data[position:position + draw(st.integers(1, 256))] * draw(st.integers(1, 8))
        elif kind == "zero" and data:
            data[position:position + 4] = b"\x00\x00\x00\x00"
    return bytes(data)


def check_upload(data: bytes) -> None:
    try:
        digit = preprocess_upload(data, **LIMITS)
    except InputError as error:
        assert 400 <= error.status_code < 500 and error.reason and error.message
        return
    assert digit.shape == (28, 28) and digit.dtype == np.uint8


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes_are_an_input_error_or_a_digit(data):
    check_upload(data)


@FUZZ
@given(mutated_images())
def test_damaged_images_are_an_input_error_or_a_digit(data):
    check_upload(data)


@pytest.mark.slow
@settings(max_examples=60, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.one_of(mutated_images(), st.binary(max_size=2048)))
def test_damaged_uploads_through_the_service_are_4xx_or_200(service_client, data):
    response = service_client.post("/classify", files={"image": ("fuzz.bin", data, "application/octet-stream")})
    assert response.status_code == 200 or 400 <= response.status_code < 500, response.text
    body = response.json()
    assert set(body) == ({"digit", "confidence", "probabilities", "model"} if response.status_code == 200
                         else {"error", "reason"})


@st.composite
def blown_up_grids(draw) -> bytes:
    """A grid of random cells (levels, a few of them or noise, any shape) blown up by nearest neighbour by any
    factor, maybe with noise and a border of paper, as PNG or JPEG: the inputs that get redrawn smoothly."""
    rows, cols = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    levels = draw(st.sampled_from(["any", "two", "few"]))
    if levels == "any":
        cells = rng.integers(0, 256, (rows, cols))
    else:
        cells = rng.choice([0, 255] if levels == "two" else [0, 60, 200, 255], (rows, cols))
    height, width = draw(st.integers(1, 300)), draw(st.integers(1, 300))
    picture = np.asarray(Image.fromarray(cells.astype(np.uint8)).resize((width, height), Image.Resampling.NEAREST))
    noise = draw(st.sampled_from([0.0, 1.0, 4.0]))
    picture = np.clip(picture + rng.normal(0.0, noise, picture.shape), 0, 255).astype(np.uint8)
    border = draw(st.integers(0, 40))
    picture = np.pad(picture, border, constant_values=draw(st.sampled_from([0, 255])))
    buffer = io.BytesIO()
    fmt = draw(st.sampled_from(["PNG", "JPEG"]))
    Image.fromarray(picture).save(buffer, format=fmt, **({"quality": draw(st.integers(30, 95))} if fmt == "JPEG" else {}))
    return buffer.getvalue()


@settings(max_examples=300, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blown_up_grids())
def test_pictures_blown_up_with_blocks_are_an_input_error_or_a_digit(data):
    check_upload(data)
