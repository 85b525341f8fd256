"""MNIST training digits as the service sees a low-resolution upload: the real pipeline, end to end.

People's small uploads, and the UCI writers' digits in the person-like set (training/personlike.py), are
coarse grids blown up: fat, blocky strokes whose loops half fill in. ``frame_like_uploads`` in
training/augment.py only approximates what ``normalize_digit`` makes of such a picture. Here each MNIST
digit is made into one the way the UCI set made its digits, and rendered and read back the way the
service reads an upload:

1. binarise it (the UCI set's 32x32 NIST bitmaps were binary), at a random ink threshold;
2. crop to its ink and scale it so its height fills a 32x32 frame, keeping its aspect ratio, centred
   (every UCI digit spans all 8 rows of its grid and 3 to 7 of its 8 columns, as a kept aspect ratio
   gives);
3. count the 4x4 blocks: an 8x8 grid of levels 0..16;
4. render that grid as an upload with ``personlike.render_upload`` (photo, scan, marker, pen, blow-up,
   canvas; 36-150 px, off-centre, PNG or JPEG), from a seed stream of its own;
5. read the bytes back with ``service.imaging.preprocess_upload``: decode, checks, ``normalize_digit``.

A render costs about a millisecond, too slow for every batch, so a run draws a fixed, seeded set once
(``uploads_like_set``) and caches it under data/, keyed by a hash of the settings; training mixes it
into its batches (training/train.py). Only MNIST training digits go in: never the person-like set's.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from models.preprocessing import IMAGE_SIZE, PREPROCESSING_VERSION
from training.personlike import SOURCE_LEVELS, STYLES, render_upload

logger = logging.getLogger(__name__)

BITMAP_SIDE = 32  # the UCI set's NIST bitmaps
BLOCK = 4  # counted in 4x4 blocks: an 8x8 grid
GRID_SIDE = BITMAP_SIDE // BLOCK
GENERATOR_VERSION = 1  # bump when the generator would turn the same settings into different digits


@dataclass(frozen=True)
class UploadsLikeSettings:
    """Which MNIST training digits become renders, and how; their hash names the cache file."""

    count: int = 30_000  # digits rendered once per run: about 30 s cold, then read from the cache
    seed: int = 1212  # a seed stream of its own, apart from the person-like set's RENDER_SEED (12)
    ink_threshold: tuple[float, float] = (0.25, 0.6)  # of 255: where the binarised stroke's edge runs
    keep_aspect: bool = True  # False stretches the ink box to fill the whole 32x32 frame
    styles: tuple[str, ...] = STYLES  # drawn uniformly

    def key(self) -> str:
        """A short hash of everything that decides the renders."""
        text = json.dumps({**asdict(self), "version": GENERATOR_VERSION, "preprocessing": PREPROCESSING_VERSION},
                          sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def ink_grid(digit: np.ndarray, threshold: float, keep_aspect: bool = True) -> np.ndarray:
    """A uint8 MNIST digit (28, 28) -> the UCI set's view of it: float32 (8, 8) ink in [0, 1], each cell
    the inked share of a 4x4 block of a binary 32x32 bitmap whose height the digit fills."""
    ink = np.asarray(digit) >= threshold * 255.0
    if not ink.any():
        raise ValueError("The digit has no ink above the threshold.")
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    box = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    height, width = box.shape
    if keep_aspect:
        scale = BITMAP_SIDE / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))  # Pillow's (width, height)
    else:
        size = (BITMAP_SIDE, BITMAP_SIDE)
    # Scaled as grey and thresholded at half: a binary bitmap with the stroke's shape, not nearest's jags.
    grey = Image.fromarray(box.astype(np.float32), mode="F").resize(size, Image.Resampling.BILINEAR)
    bitmap = np.zeros((BITMAP_SIDE, BITMAP_SIDE), dtype=np.float32)
    top, left = (BITMAP_SIDE - size[1]) // 2, (BITMAP_SIDE - size[0]) // 2
    bitmap[top:top + size[1], left:left + size[0]] = np.asarray(grey) >= 0.5
    counts = bitmap.reshape(GRID_SIDE, BLOCK, GRID_SIDE, BLOCK).sum(axis=(1, 3))  # 0..16
    return (counts / SOURCE_LEVELS).astype(np.float32)


def render_digits(digits: np.ndarray, settings: UploadsLikeSettings, rng: np.random.Generator) -> np.ndarray:
    """uint8 MNIST digits (n, 28, 28) -> uint8 (n, 28, 28): each made an 8x8 grid, rendered as an upload in
    a random style and read back through ``service.imaging.preprocess_upload``.

    A render the service would refuse as blank (rare: a very thin digit at a high threshold) keeps the
    original digit, so labels stay aligned.
    """
    from service.imaging import preprocess_upload
    from service.settings import Settings

    limits = Settings()
    out = np.empty((len(digits), IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for index, digit in enumerate(digits):
        threshold = rng.uniform(*settings.ink_threshold)
        style = settings.styles[int(rng.integers(len(settings.styles)))]
        try:
            upload = render_upload(ink_grid(digit, threshold, settings.keep_aspect), style, rng)
            out[index] = preprocess_upload(upload, max_bytes=limits.max_upload_bytes, max_pixels=limits.max_pixels)
        except ValueError:  # the service's NoInk is an InputError, a ValueError
            out[index] = digit
    return out


def uploads_like_set(images: np.ndarray, labels: np.ndarray, settings: UploadsLikeSettings,
                     cache_dir: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``settings.count`` of the training digits, chosen with ``settings.seed``, as the service sees them
    uploaded at low resolution: uint8 (count, 28, 28) and their labels.

    With ``cache_dir`` the set is read from, or written to, ``uploads-like-<key>-<data hash>.npz`` there.
    """
    images, labels = np.asarray(images), np.asarray(labels)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"uploads_like_set needs uint8 digits of shape (n, 28, 28), got {images.dtype} {images.shape}.")
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} digits but {len(labels)} labels.")
    # The cache is keyed by the training digits too: a different split or source is a different set.
    data_key = hashlib.sha256(images.tobytes() + labels.astype(np.uint8).tobytes()).hexdigest()[:12]
    path = None if cache_dir is None else Path(cache_dir) / f"uploads-like-{settings.key()}-{data_key}.npz"
    if path is not None and path.exists():
        with np.load(path) as cached:
            logger.info("Read %d upload-like renders from %s", len(cached["labels"]), path)
            return cached["images"], cached["labels"]

    rng = np.random.default_rng(settings.seed)
    chosen = rng.choice(len(images), size=min(settings.count, len(images)), replace=False)
    rendered = render_digits(images[chosen], settings, rng)
    chosen_labels = labels[chosen].astype(np.uint8)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.npz")
        np.savez_compressed(partial, images=rendered, labels=chosen_labels)
        partial.replace(path)  # a killed run leaves no half-written cache behind
        logger.info("Cached %d upload-like renders in %s", len(chosen_labels), path)
    return rendered, chosen_labels
