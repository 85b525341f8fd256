"""Make MNIST training digits look like people's uploads after ``normalize_digit``: vectorised NumPy.

Every function takes a batch of digits and a ``numpy.random.Generator`` and returns a new batch; none
changes a label. The distortions act on the image, and ``frame_like_uploads`` then frames the result the
way ``normalize_digit`` frames an upload (Otsu core, contrast stretch, crop, fit into the 20x20 box with
Lanczos, centre by mass in 28x28), so an augmented digit is what the service would make of such a
picture. Whole batches go through a few matrix products and gathers: 60,000 digits take seconds.

The levers, in the order ``augment_batch`` applies them: writing styles (``writing_styles``), geometry and
elastic wobble (``warp``), pen width (``stroke_width``), low resolution (``low_resolution``) and blur
(``blur``); ``AugmentSettings`` says how often and how strongly each acts.

    digits = augment_batch(x_train, y_train, np.random.default_rng(seed), AugmentSettings())
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from models.preprocessing import CENTRE_OF_MASS, CORE_INK_PERCENTILE, DIGIT_BOX, IMAGE_SIZE, shifted_extreme

LANCZOS_SUPPORT = 3.0  # Pillow's LANCZOS is a 3-lobe Lanczos window
CHUNK = 512  # digits augmented at a time
BOWL_SEGMENTS = 7  # straight strokes that draw a 9's round bowl


@dataclass(frozen=True)
class AugmentSettings:
    """How strongly each lever acts; a probability of 0 turns a lever off."""

    rotation_degrees: float = 10.0  # uniform in +-: tilted digits
    shear: float = 0.2  # horizontal shear factor, uniform in +-: slanted (or upright) handwriting
    scale: tuple[float, float] = (0.85, 1.15)  # y scale, and x scale relative to it: tall and wide writers
    narrow: tuple[float, float] = (0.7, 1.1)  # further x scale: many people write narrower than MNIST
    elastic_probability: float = 0.3
    elastic_pixels: float = 0.8  # std of the displacement on a coarse grid: wobbly strokes
    bend_probability: float = 0.3  # the lower half bent sideways: a 9 or a 7 with a curved tail
    bend_pixels: float = 3.0  # the most the bottom row moves, uniform in +-
    stroke_probability: float = 0.7  # another pen: a thin one, thicker markers, a wet one that fills loops
    low_resolution_probability: float = 0.5  # the digit's box down to k x k cells and back up
    low_resolution_sizes: tuple[int, int] = (7, 12)  # 8x8 is the UCI set's grid
    crisp_probability: float = 0.5  # of the low-resolution digits: redrawn as solid ink (a pen on paper)
    crisp_threshold: tuple[float, float] = (0.35, 0.6)  # the cell level where the redrawn stroke's edge runs
    blur_probability: float = 0.2  # a soft focus photo or a scan: Gaussian blur
    blur_sigma: tuple[float, float] = (0.5, 1.2)
    # Of the 1s, 4s, 7s and 9s: a 1 with a flag and a foot, a 4 with a closed top or a short stem, a 7 with
    # a bar, a 9 whose tail hooks back to the left or curls round in a bowl.
    style_probability: float = 0.5
    short_stem_probability: float = 0.5  # of the styled 4s: a short right stem instead of a closed top
    bowl_probability: float = 0.5  # of the styled 9s: a round bowl under the stem instead of a short hook
    # Of the 2s, drawn apart from the other styles: a 2 written narrow, a tall curl over a short base, which
    # a network that has learnt the flagged and footed 1s above reads as a 1.
    narrow_two_probability: float = 0.3
    narrow_two_width: tuple[float, float] = (0.45, 0.7)  # squeezed to this share of its width


# --- resampling as matrices -----------------------------------------------------------------------


def _lanczos(x: np.ndarray) -> np.ndarray:
    angle = np.pi * np.maximum(np.abs(x), 1e-6)  # sinc(x) sinc(x / 3), written out: float32 all the way
    window = LANCZOS_SUPPORT * np.sin(angle) * np.sin(angle / LANCZOS_SUPPORT) / (angle * angle)
    return np.where(np.abs(x) < LANCZOS_SUPPORT, window, 0.0)


def _triangle(x: np.ndarray) -> np.ndarray:
    return np.clip(1.0 - np.abs(x), 0.0, None)


def _cubic(x: np.ndarray) -> np.ndarray:
    a, x = -0.5, np.abs(x)  # Pillow's bicubic
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


KERNELS = {"lanczos": (_lanczos, LANCZOS_SUPPORT), "bilinear": (_triangle, 1.0), "bicubic": (_cubic, 2.0)}


def resample_matrices(start: np.ndarray, length: np.ndarray, size_in: int, size_out: int,
                      out_length: np.ndarray, kernel: str) -> np.ndarray:
    """(n, size_out, size_in) weights that resample ``[start, start + length)`` of each row onto its first
    ``out_length`` output pixels, as Pillow's ``resize`` does (antialiased when shrinking); the output
    pixels past ``out_length`` get zero weight.

    ``start``, ``length`` and ``out_length`` are per image (n,); lengths are in source pixels.
    """
    function, support = KERNELS[kernel]
    start, length = np.asarray(start, np.float32)[:, None, None], np.asarray(length, np.float32)[:, None, None]
    out_length = np.asarray(out_length, np.float32)[:, None, None]
    scale = length / out_length  # source pixels per output pixel
    stretch = np.maximum(scale, 1.0)
    centre = start + (np.arange(size_out, dtype=np.float32)[None, :, None] + 0.5) * scale
    source = np.arange(size_in, dtype=np.float32)[None, None, :] + 0.5
    inside = (source >= start) & (source <= start + length)  # Pillow only reads the cropped box
    distance = (source - centre) / stretch
    weights = np.where(inside & (np.abs(distance) < support), function(distance), 0.0)
    total = weights.sum(axis=2, keepdims=True)
    weights = np.divide(weights, total, out=np.zeros_like(weights), where=np.abs(total) > 1e-6)
    live = np.arange(size_out)[None, :, None] < out_length
    return np.where(live, weights, 0.0).astype(np.float32)


def _resample(images: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(n, h_out, w_out) = rows (n, h_out, h) @ images (n, h, w) @ cols (n, w_out, w)^T."""
    return rows @ images @ cols.transpose(0, 2, 1)


# --- framing the way normalize_digit frames an upload -------------------------------------------------


def _otsu_thresholds(levels: np.ndarray) -> np.ndarray:
    """Per image Otsu threshold of uint8 ``levels`` (n, h, w): the lowest level of the brighter class."""
    count = len(levels)
    histogram = np.bincount((levels.reshape(count, -1).astype(np.int64) + 256 * np.arange(count)[:, None]).ravel(),
                            minlength=256 * count).reshape(count, 256).astype(np.float64)
    weight_dark = np.cumsum(histogram, axis=1)
    weight_light = weight_dark[:, -1:] - weight_dark
    mass_dark = np.cumsum(histogram * np.arange(256), axis=1)
    mean_dark = mass_dark / np.maximum(weight_dark, 1.0)
    mean_light = (mass_dark[:, -1:] - mass_dark) / np.maximum(weight_light, 1.0)
    return np.argmax(weight_dark * weight_light * (mean_dark - mean_light) ** 2, axis=1) + 1


def _percentiles(levels: np.ndarray, counts: np.ndarray, percentile: float) -> np.ndarray:
    """Per image, ``np.percentile`` (linear) of the ``counts`` largest uint8 ``levels`` (the rest are 0)."""
    count = len(levels)
    histogram = np.bincount((levels.reshape(count, -1).astype(np.int64) + 256 * np.arange(count)[:, None]).ravel(),
                            minlength=256 * count).reshape(count, 256)
    histogram[:, 0] -= levels.shape[1] * levels.shape[2] - counts  # the zeros that stand for "not core"
    cumulative = np.cumsum(histogram, axis=1)
    position = (np.maximum(counts, 1) - 1) * percentile / 100.0
    below, fraction = np.floor(position), position - np.floor(position)

    def ranked(rank: np.ndarray) -> np.ndarray:  # the value at a 0-based rank in sorted order
        return np.argmax(cumulative > rank[:, None], axis=1).astype(np.float64)

    low = ranked(below)
    return low + fraction * (ranked(np.minimum(below + 1, np.maximum(counts - 1, 0))) - low)


def frame_like_uploads(ink: np.ndarray) -> np.ndarray:
    """Frame bright ink on black (n, h, w) floats in [0, 1] as ``normalize_digit`` frames a clean upload.

    Steps 5-8 of ``normalize_digit`` (a clean picture has no background or specks to remove): Otsu's
    core, the contrast stretch between the paper's noise floor and the core's 90th percentile, the crop
    to the core, the Lanczos fit into DIGIT_BOX keeping the aspect ratio, the stretch to a peak of 255,
    and the integer shift that puts the centre of mass on (14, 14). Returns uint8 (n, 28, 28). An image
    with no ink comes back black.
    """
    count, height, width = ink.shape
    levels = np.rint(np.clip(ink, 0.0, 1.0) * 255.0).astype(np.uint8)
    residual = levels.astype(np.float32)
    core = levels >= _otsu_thresholds(levels)[:, None, None]
    has_ink = core.any(axis=(1, 2)) & (levels.max(axis=(1, 2)) > 0)
    core &= has_ink[:, None, None]

    paper = ~core
    paper_count = np.maximum(paper.sum(axis=(1, 2)), 1)
    paper_mean = np.where(paper, residual, 0.0).sum(axis=(1, 2)) / paper_count
    paper_var = np.where(paper, (residual - paper_mean[:, None, None]) ** 2, 0.0).sum(axis=(1, 2)) / paper_count
    noise_floor = paper_mean + 3.0 * np.sqrt(paper_var)
    full_ink = _percentiles(np.where(core, levels, 0), core.sum(axis=(1, 2)), CORE_INK_PERCENTILE)
    noise_floor = np.minimum(noise_floor, 0.5 * full_ink)[:, None, None]
    span = np.maximum(full_ink[:, None, None] - noise_floor, 1.0)
    strength = np.clip((residual - noise_floor) / span, 0.0, 1.0)
    strength = np.rint(strength * 255.0)  # normalize_digit hands Pillow uint8 levels

    rows_any, cols_any = core.any(axis=2), core.any(axis=1)
    top = np.argmax(rows_any, axis=1)
    bottom = height - np.argmax(rows_any[:, ::-1], axis=1)  # exclusive
    left = np.argmax(cols_any, axis=1)
    right = width - np.argmax(cols_any[:, ::-1], axis=1)
    box_h, box_w = np.maximum(bottom - top, 1), np.maximum(right - left, 1)
    fit = DIGIT_BOX / np.maximum(box_h, box_w)
    out_h = np.maximum(1, np.rint(box_h * fit)).astype(int)  # Python's round() is numpy's rint: half to even
    out_w = np.maximum(1, np.rint(box_w * fit)).astype(int)
    rows = resample_matrices(top, box_h, height, DIGIT_BOX, out_h, "lanczos")
    cols = resample_matrices(left, box_w, width, DIGIT_BOX, out_w, "lanczos")
    digit = np.clip(np.rint(_resample(strength.astype(np.float32), rows, cols)), 0.0, 255.0)
    peak = digit.max(axis=(1, 2), keepdims=True)
    digit = np.rint(digit * (255.0 / np.maximum(peak, 1.0)))

    total = np.maximum(digit.sum(axis=(1, 2)), 1e-9)
    centre_row = (digit.sum(axis=2) * np.arange(DIGIT_BOX)).sum(axis=1) / total
    centre_col = (digit.sum(axis=1) * np.arange(DIGIT_BOX)).sum(axis=1) / total
    place_top = np.clip(np.rint(CENTRE_OF_MASS - centre_row), 0, IMAGE_SIZE - out_h).astype(int)
    place_left = np.clip(np.rint(CENTRE_OF_MASS - centre_col), 0, IMAGE_SIZE - out_w).astype(int)
    return _paste(digit.astype(np.uint8), place_top, place_left) * has_ink[:, None, None]


def _paste(digits: np.ndarray, top: np.ndarray, left: np.ndarray) -> np.ndarray:
    """Paste each (20, 20) digit, zero past its content, into a black 28x28 frame at (top, left)."""
    count, box = len(digits), DIGIT_BOX
    side = IMAGE_SIZE + box  # room for the zero rows and columns past the content
    frame = np.zeros((count, side * side), dtype=np.uint8)
    rows = top[:, None, None] + np.arange(box)[None, :, None]
    cols = left[:, None, None] + np.arange(box)[None, None, :]
    np.put_along_axis(frame, (rows * side + cols).reshape(count, -1), digits.reshape(count, -1), axis=1)
    return frame.reshape(count, side, side)[:, :IMAGE_SIZE, :IMAGE_SIZE]


# --- the levers -----------------------------------------------------------------------------------


def warp(ink: np.ndarray, rng: np.random.Generator, settings: AugmentSettings) -> np.ndarray:
    """A random rotation, shear and x/y scale about the centre, plus (for some) a smooth elastic wobble."""
    count, height, width = ink.shape
    angle = np.deg2rad(rng.uniform(-settings.rotation_degrees, settings.rotation_degrees, count))
    shear = rng.uniform(-settings.shear, settings.shear, count)
    scale_y, scale_x = (rng.uniform(*settings.scale, count) for _ in range(2))
    scale_x = scale_x * rng.uniform(*settings.narrow, count)
    # The inverse map, output offsets from the centre -> source offsets, as one 2x2 matrix per digit:
    # rotate (shear (unscale (offset))).
    cos, sin = np.cos(angle), np.sin(angle)
    inverse = np.empty((count, 2, 2), dtype=np.float32)
    inverse[:, 0, 0] = (cos - sin * shear) / scale_y
    inverse[:, 0, 1] = -sin / scale_x
    inverse[:, 1, 0] = (sin + cos * shear) / scale_y
    inverse[:, 1, 1] = cos / scale_x
    offsets = np.stack(np.mgrid[0:height, 0:width], axis=0).reshape(2, -1).astype(np.float32) - CENTRE_OF_MASS
    source = inverse @ offsets + CENTRE_OF_MASS  # (n, 2, h*w): rows, then columns

    bent = np.flatnonzero(rng.random(count) < settings.bend_probability)
    if len(bent):
        below = np.clip(offsets[0] / CENTRE_OF_MASS, 0.0, None) ** 2  # (h*w,): 0 above the centre, 1 at the bottom
        source[bent, 1] += rng.uniform(-settings.bend_pixels, settings.bend_pixels, (len(bent), 1)) * below

    wobbly = np.flatnonzero(rng.random(count) < settings.elastic_probability)
    if len(wobbly):
        grid = 4  # a 4x4 grid of random displacements, interpolated: smooth, stroke-scale wobbles
        upsample = _upsample_matrices(np.zeros(1), np.full(1, height), np.full(1, grid), grid, height, np.full(1, 2))[0]
        field = rng.normal(0.0, settings.elastic_pixels, size=(len(wobbly), 2, grid, grid)).astype(np.float32)
        field = upsample @ field @ upsample.T  # (k, 2, h, w)
        source[wobbly] += field.reshape(len(wobbly), 2, -1)
    return bilinear_sample(ink, source[:, 0].reshape(count, height, width), source[:, 1].reshape(count, height, width))


def bilinear_sample(ink: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``ink`` (n, h, w) read at float positions (n, h', w'), zero outside the image."""
    count, height, width = ink.shape
    stride = width + 2
    padded = np.pad(ink, ((0, 0), (1, 1), (1, 1))).ravel()  # a zero ring: outside reads as no ink
    rows = np.clip(rows + 1.0, 0.0, height + 0.999, dtype=np.float32)
    cols = np.clip(cols + 1.0, 0.0, width + 0.999, dtype=np.float32)
    row0, col0 = rows.astype(np.int32), cols.astype(np.int32)  # floor, as both are >= 0
    row_frac, col_frac = rows - row0, cols - col0
    base = np.arange(count, dtype=np.int32)[:, None, None] * (stride * (height + 2))
    flat = base + row0 * stride + col0
    top = padded[flat] * (1 - col_frac) + padded[flat + 1] * col_frac
    bottom = padded[flat + stride] * (1 - col_frac) + padded[flat + stride + 1] * col_frac
    return top * (1 - row_frac) + bottom * row_frac


def stroke_width(ink: np.ndarray, rng: np.random.Generator, settings: AugmentSettings) -> np.ndarray:
    """For a share of digits, another pen: a thinner one (the stroke's faint edge cut away), thicker ones
    (grey dilation by a cross, a 3x3 square, both, or the square twice), or a wet one whose small loops
    fill in (a thick pen, then a closing that keeps the width but fills holes). People's photos and the
    UCI set's grids come out of normalize_digit bolder than MNIST, so thick pens are drawn most often."""
    out = ink.copy()
    chosen = np.flatnonzero(rng.random(len(ink)) < settings.stroke_probability)
    kind = rng.choice(6, size=len(chosen), p=[0.1, 0.2, 0.2, 0.2, 0.1, 0.2])
    cross = lambda x: shifted_extreme(x, np.maximum, square=False)  # noqa: E731
    square = lambda x: shifted_extreme(x, np.maximum, square=True)  # noqa: E731
    shrink = lambda x: shifted_extreme(x, np.minimum, square=True)  # noqa: E731
    for value, change in enumerate((
        lambda x: np.clip((x - 0.5) / 0.5, 0.0, 1.0),  # a thin pen: only the stroke's core is inked
        cross,
        square,
        lambda x: cross(square(x)),
        lambda x: square(square(x)),
        lambda x: shrink(square(square(cross(x)))),  # thicker by a cross, and holes up to ~4 px closed
    )):
        picked = chosen[kind == value]
        if len(picked):
            out[picked] = change(ink[picked])
    return out


def low_resolution(ink: np.ndarray, rng: np.random.Generator, settings: AugmentSettings) -> np.ndarray:
    """For a share of digits, the digit's square box averaged down to k x k cells (k in the settings'
    range; 8x8 is the UCI set's grid), counted in sixteenths as that set does, and blown up again with a
    nearest, bilinear or bicubic filter, as a small scan or an upscaled thumbnail arrives."""
    out = ink.copy()
    count, height, width = ink.shape
    chosen = np.flatnonzero(rng.random(count) < settings.low_resolution_probability)
    if not len(chosen):
        return out
    low, high = settings.low_resolution_sizes
    sizes = rng.integers(low, high + 1, len(chosen))
    kinds = rng.integers(0, 3, len(chosen))
    top, left, side = _square_boxes(ink[chosen])
    # Every digit gets (high x high) cells; those past its own k are zero and never read back.
    down_rows = resample_matrices(top, side, height, high, sizes, "bilinear")
    down_cols = resample_matrices(left, side, width, high, sizes, "bilinear")
    cells = np.rint(_resample(ink[chosen], down_rows, down_cols) * 16.0) / 16.0  # (k, high, high)
    up_rows = _upsample_matrices(top, side, sizes, high, height, kinds)
    up_cols = _upsample_matrices(left, side, sizes, high, width, kinds)
    blown_up = np.clip(up_rows @ cells @ up_cols.transpose(0, 2, 1), 0.0, 1.0)
    # Some are redrawn as solid ink, as a pen stroke rendered from the cells would be: a hole that the
    # cells only half show fills in, as it does in the UCI set's 9s and 8s.
    crisp = rng.random(len(chosen)) < settings.crisp_probability
    threshold = rng.uniform(*settings.crisp_threshold, len(chosen)).astype(np.float32)[:, None, None]
    solid = np.clip((blown_up - threshold) / 0.15 + 0.5, 0.0, 1.0)
    out[chosen] = np.where(crisp[:, None, None], solid, blown_up)
    return out


def _square_boxes(ink: np.ndarray, threshold: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(top, left, side) of the square around each digit's ink, centred on its bounding box."""
    rows_any, cols_any = (ink > threshold).any(axis=2), (ink > threshold).any(axis=1)
    height, width = ink.shape[1:]
    top, bottom = np.argmax(rows_any, axis=1), height - np.argmax(rows_any[:, ::-1], axis=1)
    left, right = np.argmax(cols_any, axis=1), width - np.argmax(cols_any[:, ::-1], axis=1)
    side = np.maximum(np.maximum(bottom - top, right - left), 1)
    return ((top + bottom - side) / 2.0, (left + right - side) / 2.0, side.astype(np.float64))


def _upsample_matrices(start: np.ndarray, length: np.ndarray, sizes: np.ndarray, cells: int, size_out: int,
                       kinds: np.ndarray) -> np.ndarray:
    """(n, size_out, cells): spread each digit's first ``sizes`` cells back over ``[start, start + length)``
    of the output, with a nearest (kind 0), bilinear (1) or bicubic (2) filter."""
    sizes = np.asarray(sizes, np.float32)[:, None]
    position = (np.arange(size_out, dtype=np.float32)[None, :] + 0.5 - np.asarray(start, np.float32)[:, None])
    position = position / np.asarray(length, np.float32)[:, None] * sizes - 0.5  # in cell units, (n, size_out)
    cell = np.arange(cells, dtype=np.float32)[None, None, :]
    distance = position[:, :, None] - cell
    kinds = np.asarray(kinds)[:, None, None]
    weights = np.where(kinds == 0, (np.floor(position[:, :, None] + 0.5) == cell).astype(np.float32),
                       np.where(kinds == 1, _triangle(distance), _cubic(distance)))
    live = (position > -0.5)[:, :, None] & (position < sizes - 0.5)[:, :, None] & (cell < sizes[:, :, None])
    return np.where(live, weights, 0.0).astype(np.float32)


def blur(ink: np.ndarray, rng: np.random.Generator, settings: AugmentSettings) -> np.ndarray:
    """For a share of digits, a Gaussian blur of random width: a soft photo or a cheap scanner."""
    out = ink.copy()
    count, height, width = ink.shape
    chosen = np.flatnonzero(rng.random(count) < settings.blur_probability)
    if not len(chosen):
        return out
    sigma = rng.uniform(*settings.blur_sigma, len(chosen))[:, None, None]
    positions = np.arange(height, dtype=np.float32)
    kernel = np.exp(-0.5 * ((positions[None, :, None] - positions[None, None, :]) / sigma) ** 2)
    kernel /= kernel.sum(axis=2, keepdims=True)
    out[chosen] = _resample(ink[chosen], kernel.astype(np.float32), kernel.astype(np.float32))
    return out


def _segments(ink: np.ndarray, start: np.ndarray, end: np.ndarray, width: np.ndarray) -> np.ndarray:
    """Draw one anti-aliased straight stroke per image from ``start`` to ``end`` ((n, 2) row, col)."""
    height, image_width = ink.shape[1:]
    rows, cols = np.mgrid[0:height, 0:image_width].astype(np.float32)
    points = np.stack([rows, cols], axis=-1)[None]  # (1, h, w, 2)
    direction = (end - start)[:, None, None, :]
    length_sq = np.maximum((direction ** 2).sum(-1), 1e-6)
    along = np.clip(((points - start[:, None, None, :]) * direction).sum(-1) / length_sq, 0.0, 1.0)
    nearest = start[:, None, None, :] + along[..., None] * direction
    distance = np.sqrt(((points - nearest) ** 2).sum(-1))
    stroke = np.clip(width[:, None, None] / 2.0 + 0.5 - distance, 0.0, 1.0)
    return np.maximum(ink, stroke)


def _ink_extent(ink: np.ndarray, threshold: float = 0.5) -> tuple[np.ndarray, ...]:
    """Per digit: top and bottom ink rows, and the mean ink column in each of those rows."""
    mask = ink > threshold
    rows_any = mask.any(axis=2)
    height = ink.shape[1]
    top = np.argmax(rows_any, axis=1)
    bottom = height - 1 - np.argmax(rows_any[:, ::-1], axis=1)
    index = np.arange(len(ink))
    columns = np.arange(ink.shape[2])

    def mean_column(row: np.ndarray) -> np.ndarray:
        line = mask[index, row].astype(np.float32)
        return (line * columns).sum(axis=1) / np.maximum(line.sum(axis=1), 1.0)

    return top, bottom, mean_column(top), mean_column(bottom)


def writing_styles(ink: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                   settings: AugmentSettings) -> np.ndarray:
    """For a share of the 1s, 2s, 4s, 7s and 9s, the way many people write them: a 1 with a flag (and often
    a foot), a narrow 2, a 4 with a closed top or a short stem, a 7 with a bar through its stem, a 9 whose
    tail hooks back to the left or curls round in a bowl. Other digits are unchanged."""
    out = ink.copy()
    chosen = rng.random(len(ink)) < settings.style_probability
    ones, sevens = np.flatnonzero(chosen & (labels == 1)), np.flatnonzero(chosen & (labels == 7))
    fours = np.flatnonzero(chosen & (labels == 4))
    if len(fours):
        short = rng.random(len(fours)) < settings.short_stem_probability
        corners = _four_corners(ink[fours])  # found once for both styles
        out[fours] = np.where(short[:, None, None], _short_stem(ink[fours], corners, rng),
                              _closed_top(ink[fours], corners, rng))
    nines = np.flatnonzero(chosen & (labels == 9))
    if len(nines):
        out[nines] = _hooked_tail(ink[nines], rng)
        if settings.bowl_probability > 0.0:  # at 0, not a number drawn: the batches stay as they were
            bowls = _bowl_tail(ink[nines], rng)
            bowl = rng.random(len(nines)) < settings.bowl_probability
            out[nines] = np.where(bowl[:, None, None], bowls, out[nines])
    if settings.narrow_two_probability > 0.0:  # at 0, not a number drawn: the batches stay as they were
        twos = np.flatnonzero((labels == 2) & (rng.random(len(ink)) < settings.narrow_two_probability))
        if len(twos):
            out[twos] = _narrowed(ink[twos], rng.uniform(*settings.narrow_two_width, len(twos)))
    if len(ones):
        top, bottom, top_col, bottom_col = _ink_extent(ink[ones])
        height = (bottom - top).astype(np.float32)
        stroke = rng.uniform(2.0, 3.5, len(ones)).astype(np.float32)
        start = np.stack([top, top_col], axis=1).astype(np.float32)
        flag_angle = np.deg2rad(rng.uniform(25, 65, len(ones)))  # below the horizontal, to the left
        flag_length = height * rng.uniform(0.3, 0.7, len(ones))
        flag_end = start + np.stack([np.sin(flag_angle), -np.cos(flag_angle)], axis=1) * flag_length[:, None]
        flagged = _segments(ink[ones], start, flag_end, stroke)
        # Some flags are filled in down to the stem, as a quick thick pen or a coarse scan leaves them.
        filled = flagged
        for share in (0.5, 1.0):
            along = share * (flag_end[:, 0] - top) / np.maximum(height, 1.0)
            stem_point = np.stack([top + share * (flag_end[:, 0] - top),
                                   top_col + along * (bottom_col - top_col)], axis=1).astype(np.float32)
            filled = _segments(filled, flag_end, stem_point, stroke)
        flagged = np.where((rng.random(len(ones)) < 0.4)[:, None, None], filled, flagged)
        foot = rng.random(len(ones)) < 0.5
        half = height * rng.uniform(0.15, 0.35, len(ones))
        base = np.stack([bottom, bottom_col], axis=1).astype(np.float32)
        footed = _segments(flagged, base - np.stack([0 * half, half], 1), base + np.stack([0 * half, half], 1), stroke)
        out[ones] = np.where(foot[:, None, None], footed, flagged)
    if len(sevens):
        top, bottom, _, _ = _ink_extent(ink[sevens])
        middle = np.rint(top + (bottom - top) * rng.uniform(0.45, 0.6, len(sevens))).astype(int)
        mask = ink[sevens] > 0.5
        line = mask[np.arange(len(sevens)), middle].astype(np.float32)
        centre = (line * np.arange(ink.shape[2])).sum(axis=1) / np.maximum(line.sum(axis=1), 1.0)
        half = (bottom - top) * rng.uniform(0.15, 0.25, len(sevens))
        row = middle.astype(np.float32)
        start = np.stack([row, centre - half], axis=1)
        end = np.stack([row + rng.uniform(-1.0, 1.0, len(sevens)), centre + half], axis=1)
        out[sevens] = _segments(ink[sevens], start, end, rng.uniform(1.5, 2.5, len(sevens)).astype(np.float32))
    return out


def _narrowed(ink: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """Each digit squeezed sideways to ``factor`` of its width about its centre column of ink."""
    count, height, width = ink.shape
    mass = ink.sum(axis=1)  # (n, w)
    centre = (mass * np.arange(width)).sum(axis=1) / np.maximum(mass.sum(axis=1), 1e-6)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    source_cols = centre[:, None, None] + (cols - centre[:, None, None]) / factor[:, None, None]
    return bilinear_sample(ink, np.broadcast_to(rows, ink.shape), source_cols.astype(np.float32))


def _hooked_tail(nines: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A hook at the foot of each 9's stem, sweeping left and up under the loop: the tail of a 9 written
    like a g, which MNIST's writers rarely use and which reads as a 3's lower bowl to a network that never
    saw it."""
    count = len(nines)
    top, bottom, _, bottom_col = _ink_extent(nines)
    height = np.maximum(bottom - top, 1).astype(np.float32)
    along = lambda low, high: height * rng.uniform(low, high, count).astype(np.float32)  # noqa: E731
    foot = np.stack([bottom, bottom_col], axis=1).astype(np.float32)
    turn = foot - np.stack([along(0.0, 0.08), along(0.2, 0.45)], axis=1)  # leftwards, nearly level
    end = turn - np.stack([along(0.05, 0.25), along(0.0, 0.1)], axis=1)  # and up, under the loop
    stroke = rng.uniform(2.0, 3.5, count).astype(np.float32)
    return _segments(_segments(nines, foot, turn, stroke), turn, end, stroke)


def _bowl_tail(nines: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A round bowl at the foot of each 9's stem: the stroke carries on down, turns left along the bottom
    and climbs again on the left, under the loop (half an ellipse and up to 40 degrees more). The UCI
    writers end their 9s so; under a small loop, a network that only saw MNIST's 9s reads it as a 3's lower
    bowl. Drawn as ``BOWL_SEGMENTS`` straight strokes; its depth is kept inside the frame."""
    count, height, _ = nines.shape
    top, bottom, _, bottom_col = _ink_extent(nines)
    digit_height = np.maximum(bottom - top, 1).astype(np.float32)
    stroke = rng.uniform(2.0, 3.5, count).astype(np.float32)
    room = height - 1.5 - stroke / 2 - bottom  # rows below the foot that the stroke can use
    depth = np.maximum(np.minimum(digit_height * rng.uniform(0.1, 0.22, count), room), 1.0).astype(np.float32)
    half_width = (digit_height * rng.uniform(0.18, 0.32, count)).astype(np.float32)
    sweep = np.pi + rng.uniform(0.0, 0.7, count)  # from the foot, round the bottom and up the left
    out, start = nines, np.stack([bottom, bottom_col], axis=1).astype(np.float32)
    for step in range(1, BOWL_SEGMENTS + 1):
        angle = sweep * step / BOWL_SEGMENTS
        end = np.stack([bottom + depth * np.sin(angle),
                        bottom_col - half_width + half_width * np.cos(angle)], axis=1).astype(np.float32)
        out, start = _segments(out, start, end, stroke), end
    return out


def _four_corners(fours: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per 4: the top of its right-hand stem and the left end of its crossbar, as (n, 2) (row, col), and
    whether both were found with the stem's top above the crossbar."""
    count, height, width = fours.shape
    mask = fours > 0.5
    columns = np.arange(width, dtype=np.float32)
    rows_any = mask.any(axis=2)
    top = np.argmax(rows_any, axis=1)
    bottom = height - 1 - np.argmax(rows_any[:, ::-1], axis=1)
    # The crossbar's left end: the leftmost ink in the band from 45 % to 75 % of the way down.
    band = np.arange(height)[None, :, None]
    low, high = top + 0.45 * (bottom - top), top + 0.75 * (bottom - top)
    in_band = mask & (band >= low[:, None, None]) & (band <= high[:, None, None])
    left_col = np.where(in_band.any(axis=1), columns[None, :], width).min(axis=1)
    left_row = np.argmax(in_band[np.arange(count), :, np.clip(left_col.astype(int), 0, width - 1)], axis=1)
    # The stem's top: the topmost ink right of the middle between the crossbar's left end and the right edge.
    right_col = np.where(mask.any(axis=1), columns[None, :], -1).max(axis=1)
    right_half = mask & (columns[None, None, :] >= (0.5 * (left_col + right_col))[:, None, None])
    stem_row = np.argmax(right_half.any(axis=2), axis=1)
    stem_line = right_half[np.arange(count), stem_row].astype(np.float32)
    stem_col = (stem_line * columns).sum(axis=1) / np.maximum(stem_line.sum(axis=1), 1.0)
    usable = in_band.any(axis=(1, 2)) & right_half.any(axis=(1, 2)) & (stem_row < left_row)
    stem_top = np.stack([stem_row, stem_col], axis=1).astype(np.float32)
    bar_end = np.stack([left_row, left_col], axis=1).astype(np.float32)
    return stem_top, bar_end, usable


def _closed_top(fours: np.ndarray, corners: tuple[np.ndarray, ...], rng: np.random.Generator) -> np.ndarray:
    """Close an open 4: a stroke from the top of its right-hand stem to the left end of its crossbar.
    ``corners`` is ``_four_corners(fours)``."""
    stem_top, bar_end, usable = corners
    closed = _segments(fours, stem_top, bar_end, rng.uniform(1.5, 2.5, len(fours)).astype(np.float32))
    return np.where(usable[:, None, None], closed, fours)


def _short_stem(fours: np.ndarray, corners: tuple[np.ndarray, ...], rng: np.random.Generator) -> np.ndarray:
    """A 4 whose right-hand stem starts a little above the crossbar instead of at the top: its upper part is
    rubbed out, leaving a tall left arm that runs into the bar, the way many people write a 4 (and a shape
    that reads as a 6 to a network that only saw MNIST's 4s). ``corners`` is ``_four_corners(fours)``."""
    count, height, width = fours.shape
    stem_top, bar_end, usable = corners
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    cut = stem_top[:, 0] + rng.uniform(0.4, 0.9, count) * (bar_end[:, 0] - stem_top[:, 0])
    stem_left = stem_top[:, 1] - 0.4 * (stem_top[:, 1] - bar_end[:, 1])
    upper_stem = (rows[None] < cut[:, None, None]) & (cols[None] > stem_left[:, None, None])
    return np.where(usable[:, None, None] & upper_stem, 0.0, fours)


def augment_batch(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                  settings: AugmentSettings) -> np.ndarray:
    """uint8 (n, 28, 28) MNIST digits -> uint8 (n, 28, 28) person-like digits, framed as uploads are."""
    images = _checked_digits(images, "augment_batch")
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} digits but {len(labels)} labels.")
    labels = np.asarray(labels)

    def distort(ink: np.ndarray, part: slice) -> np.ndarray:
        ink = writing_styles(ink, labels[part], rng, settings)
        ink = warp(ink, rng, settings)
        ink = stroke_width(ink, rng, settings)
        ink = low_resolution(ink, rng, settings)
        return blur(ink, rng, settings)

    return _distort_and_frame(images, distort)


# The classic augmentation of MNIST itself (small rotations, shears and scales, a gentle elastic wobble, as
# in Simard et al. 2003), for the share of each batch that is not made to look like an upload: it teaches
# new writers' variations of MNIST's own style without changing its look.
CLEAN_WARP = AugmentSettings(rotation_degrees=8.0, shear=0.15, scale=(0.9, 1.1), narrow=(0.95, 1.05),
                             elastic_probability=0.5, elastic_pixels=0.8, bend_probability=0.0)


def warp_clean(images: np.ndarray, rng: np.random.Generator, settings: AugmentSettings = CLEAN_WARP) -> np.ndarray:
    """uint8 (n, 28, 28) MNIST digits -> the same digits mildly warped (``warp`` with ``settings``: only its
    geometry and elastic wobble), framed as uploads are."""
    images = _checked_digits(images, "warp_clean")
    return _distort_and_frame(images, lambda ink, part: warp(ink, rng, settings))


def _checked_digits(images: np.ndarray, caller: str) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"{caller} needs uint8 digits of shape (n, 28, 28), got {images.dtype} {images.shape}.")
    return images


def _distort_and_frame(images: np.ndarray, distort: Callable[[np.ndarray, slice], np.ndarray]) -> np.ndarray:
    """``distort(ink, part)`` each chunk of uint8 digits as float ink in [0, 1] (``part`` is its slice of the
    batch), then frame it as ``normalize_digit`` frames an upload. A distortion that left no ink (rare: a thin
    digit thinned away, or warped off the frame) keeps the original digit."""
    framed = np.empty_like(images)
    for start in range(0, len(images), CHUNK):  # small chunks stay in the CPU's cache: 10x faster
        part = slice(start, start + CHUNK)
        framed[part] = frame_like_uploads(distort(images[part].astype(np.float32) / 255.0, part))
    empty = framed.reshape(len(framed), -1).max(axis=1) == 0
    framed[empty] = images[empty]
    return framed
