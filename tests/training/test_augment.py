"""The upload-like augmentations: shapes, determinism, framing like normalize_digit, and each lever's effect."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from models.preprocessing import DIGIT_BOX, normalize_digit, shifted_extreme
from training import augment
from training.augment import AugmentSettings, augment_batch, frame_like_uploads

OFF = AugmentSettings(rotation_degrees=0.0, shear=0.0, scale=(1.0, 1.0), narrow=(1.0, 1.0), elastic_probability=0.0,
                      bend_probability=0.0, stroke_probability=0.0, low_resolution_probability=0.0,
                      blur_probability=0.0, style_probability=0.0,
                      narrow_two_probability=0.0)


@pytest.fixture(scope="module")
def digits(subset_data) -> tuple[np.ndarray, np.ndarray]:
    """200 MNIST digits, 20 of each, and their labels."""
    index = np.concatenate([np.flatnonzero(subset_data.y_train == d)[:20] for d in range(10)])
    return subset_data.x_train[index], subset_data.y_train[index]


def ink(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) / 255.0


def test_augmented_digits_are_mnist_shaped_and_framed(digits):
    images, labels = digits
    out = augment_batch(images, labels, np.random.default_rng(0), AugmentSettings())
    assert out.shape == images.shape and out.dtype == np.uint8
    assert not np.array_equal(out, images)
    for digit in out:
        rows, cols = np.flatnonzero(digit.any(axis=1)), np.flatnonzero(digit.any(axis=0))
        assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 <= DIGIT_BOX  # fitted into the 20x20 box
        weights = digit.astype(np.float64)
        centre = (weights.sum(axis=1) @ np.arange(28) / weights.sum(), weights.sum(axis=0) @ np.arange(28) / weights.sum())
        assert np.allclose(centre, 14.0, atol=1.0)  # centred by mass, as MNIST and normalize_digit do


def test_the_same_seed_gives_the_same_digits(digits):
    images, labels = digits
    first = augment_batch(images, labels, np.random.default_rng(5), AugmentSettings())
    again = augment_batch(images, labels, np.random.default_rng(5), AugmentSettings())
    other = augment_batch(images, labels, np.random.default_rng(6), AugmentSettings())
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_with_every_lever_off_a_digit_is_only_reframed(digits):
    images, labels = digits
    out = augment_batch(images, labels, np.random.default_rng(0), OFF)
    np.testing.assert_array_equal(out, frame_like_uploads(ink(images)))
    assert np.abs(out.astype(int) - images).mean() < 8  # MNIST digits are already framed this way


def test_bad_input_is_refused_with_a_sentence(digits):
    images, labels = digits
    with pytest.raises(ValueError, match="uint8"):
        augment_batch(images.astype(np.float32), labels, np.random.default_rng(0), OFF)
    with pytest.raises(ValueError, match="labels"):
        augment_batch(images, labels[:3], np.random.default_rng(0), OFF)


@pytest.mark.parametrize("scale", [1.5, 2.0, 3.0])
def test_framing_matches_normalize_digit_on_clean_uploads(digits, scale):
    """The vectorised framing gives what the service's normalize_digit gives for the same clean picture."""
    images, _ = digits
    side = round(28 * scale)
    big = np.stack([np.asarray(Image.fromarray(d).resize((side, side), Image.Resampling.BILINEAR)) for d in images])
    service = np.stack([normalize_digit(255 - page) for page in big])  # dark ink on white paper
    ours = frame_like_uploads(ink(big))
    difference = np.abs(service.astype(int) - ours.astype(int))
    assert difference.mean() < 0.5  # grey levels of 255
    assert np.mean(difference.reshape(len(images), -1).max(axis=1) <= 16) >= 0.97


@pytest.mark.parametrize("kernel, resample", [("lanczos", Image.Resampling.LANCZOS),
                                               ("bilinear", Image.Resampling.BILINEAR),
                                               ("bicubic", Image.Resampling.BICUBIC)])
def test_resample_matrices_reproduce_pillow(kernel, resample):
    """The matrix form of a crop-and-resize equals cropping and then Pillow's own ``resize``, as
    normalize_digit does."""
    rng = np.random.default_rng(0)
    image = rng.random((28, 28)).astype(np.float32)
    for top, left, height, width, out_h, out_w in [(3, 5, 17, 11, 20, 13), (0, 0, 28, 28, 20, 20), (6, 2, 9, 9, 20, 20)]:
        crop = image[top : top + height, left : left + width]
        expected = np.asarray(Image.fromarray(crop, mode="F").resize((out_w, out_h), resample))
        rows = augment.resample_matrices(np.array([top]), np.array([height]), 28, 20, np.array([out_h]), kernel)
        cols = augment.resample_matrices(np.array([left]), np.array([width]), 28, 20, np.array([out_w]), kernel)
        ours = (rows[0] @ image @ cols[0].T)[:out_h, :out_w]
        np.testing.assert_allclose(ours, expected, atol=1e-4)


def test_thicker_and_thinner_pens(digits):
    images, _ = digits
    before = ink(images)
    thicker = shifted_extreme(before, np.maximum, square=True)
    assert (thicker > 0.5).sum() > 1.5 * (before > 0.5).sum()
    changed = augment.stroke_width(before, np.random.default_rng(0), replace(OFF, stroke_probability=1.0))
    areas_before, areas_after = (before > 0.5).sum(axis=(1, 2)), (changed > 0.5).sum(axis=(1, 2))
    assert (areas_after > areas_before).any() and (areas_after < areas_before).any()


def test_low_resolution_keeps_the_digit_but_only_a_grid_of_cells(digits):
    images, _ = digits
    before = ink(images)
    settings = replace(OFF, low_resolution_probability=1.0, low_resolution_sizes=(8, 8))
    out = augment.low_resolution(before, np.random.default_rng(0), settings)
    assert out.shape == images.shape and 0.0 <= out.min() and out.max() <= 1.0
    assert np.abs(out - before).mean() > 0.02  # the detail is gone...
    mass_before, mass_after = before.sum(axis=(1, 2)), out.sum(axis=(1, 2))
    assert np.median(np.abs(mass_after / mass_before - 1.0)) < 0.1  # ...but the ink is where it was
    # The nearest filter copies each of the 8 cells into a block of whole pixels.
    top, left, side = augment._square_boxes(before)
    nearest = augment._upsample_matrices(top, side, np.full(len(images), 8), 8, 28, np.zeros(len(images), int))
    assert set(np.unique(nearest).tolist()) <= {0.0, 1.0} and (nearest.sum(axis=2) <= 1).all()
    assert (nearest.sum(axis=1) > 0).all()  # every cell shows


def test_blur_spreads_ink(digits):
    images, _ = digits
    out = augment.blur(ink(images), np.random.default_rng(0), replace(OFF, blur_probability=1.0))
    assert ((out > 0.05).sum() > (ink(images) > 0.05).sum()) and out.max() < ink(images).max()


def test_writing_styles_change_only_ones_fours_sevens_and_nines(digits):
    images, labels = digits
    before = ink(images)
    out = augment.writing_styles(before, labels, np.random.default_rng(0), replace(OFF, style_probability=1.0))
    changed = np.flatnonzero(np.abs(out - before).max(axis=(1, 2)) > 0)
    assert set(labels[changed].tolist()) == {1, 4, 7, 9}
    ones = labels == 1  # every 1 gets a flag, and some a foot
    area = lambda x: (x > 0.5).sum(axis=(1, 2))  # noqa: E731
    assert np.all(area(out[ones]) > area(before[ones]))
    drawn = np.isin(labels, (1, 7, 9))  # flags, feet, bars and hooks only ever add ink
    assert (out[drawn] >= before[drawn] - 1e-6).all()
    fours = labels == 4  # some closed (ink added), some with a short stem (ink rubbed out)
    assert (area(out[fours]) > area(before[fours])).any() and (area(out[fours]) < area(before[fours])).any()


def test_a_hooked_tail_adds_a_stroke_leftwards_from_the_foot_of_each_nine(digits):
    images, labels = digits
    nines = ink(images[labels == 9])
    out = augment.writing_styles(nines, np.full(len(nines), 9), np.random.default_rng(0),
                                 replace(OFF, style_probability=1.0))
    assert (out >= nines - 1e-6).all()  # only drawn, nothing moved
    top, bottom, _, foot_col = augment._ink_extent(nines)
    added = (out > 0.5) & ~(nines > 0.5)
    rows, cols = np.mgrid[0:28, 0:28]
    low_left = (rows[None] >= (top + 0.6 * (bottom - top))[:, None, None]) & (cols[None] < foot_col[:, None, None] + 2)
    # Every 9 gains ink, nearly all of it low down and left of where its stem ended (give or take a stroke).
    assert added.any(axis=(1, 2)).all()
    assert (added & low_left).sum() / added.sum() > 0.9


def test_a_bowl_carries_each_nines_stem_down_round_to_the_left_and_up_again(digits):
    images, labels = digits
    nines = ink(images[labels == 9])
    out = augment._bowl_tail(nines, np.random.default_rng(0))
    assert out.shape == nines.shape and (out >= nines - 1e-6).all()  # only drawn, nothing moved
    top, bottom, _, foot_col = augment._ink_extent(nines)
    new_top, new_bottom, _, _ = augment._ink_extent(out)
    added = (out > 0.5) & ~(nines > 0.5)
    rows, cols = np.mgrid[0:28, 0:28]
    np.testing.assert_array_equal(new_top, top)
    assert (new_bottom >= bottom).all() and (new_bottom > bottom).mean() > 0.9  # down below the foot
    for grown, low, foot, height in zip(added, bottom, foot_col, bottom - top):
        left = grown & (cols < foot - 0.3 * height)  # well left of the foot ...
        assert left.any() and rows[left].min() <= low  # ... it climbs back at least to the foot's row
        assert (cols[grown] <= foot + 2).all()  # never right of the stem (give or take a stroke)


def test_styled_nines_end_in_a_hook_or_a_bowl(digits):
    images, labels = digits
    nines = ink(images[labels == 9])
    styled = lambda share: augment.writing_styles(  # noqa: E731
        nines, np.full(len(nines), 9), np.random.default_rng(0),
        replace(OFF, style_probability=1.0, bowl_probability=share))
    hooks, bowls, both = styled(0.0), styled(1.0), styled(0.5)
    assert np.any(hooks != bowls, axis=(1, 2)).all()
    # At 0 not a number more is drawn than before the bowls, so the batches after them stay as they were.
    styles_rng, hooks_rng = np.random.default_rng(0), np.random.default_rng(0)
    augment.writing_styles(nines, np.full(len(nines), 9), styles_rng,
                           replace(OFF, style_probability=1.0, bowl_probability=0.0))
    hooks_rng.random(len(nines))  # writing_styles' draw of which digits to style
    np.testing.assert_array_equal(hooks, augment._hooked_tail(nines, hooks_rng))
    assert styles_rng.bit_generator.state == hooks_rng.bit_generator.state
    is_hook = np.all(both == hooks, axis=(1, 2))
    is_bowl = np.all(both == bowls, axis=(1, 2))
    assert (is_hook | is_bowl).all() and is_hook.any() and is_bowl.any()


def test_a_narrow_two_is_squeezed_about_its_middle_and_no_other_digit_is(digits):
    images, labels = digits
    before = ink(images)
    out = augment.writing_styles(before, labels, np.random.default_rng(0), replace(OFF, narrow_two_probability=1.0))
    changed = np.flatnonzero(np.abs(out - before).max(axis=(1, 2)) > 0)
    assert set(labels[changed].tolist()) == {2}
    twos = labels == 2
    top, bottom, _, _ = augment._ink_extent(before[twos])
    new_top, new_bottom, _, _ = augment._ink_extent(out[twos])
    np.testing.assert_array_equal(new_top, top)  # as tall as it was
    np.testing.assert_array_equal(new_bottom, bottom)
    width = lambda x: np.array([np.ptp(np.flatnonzero((d > 0.5).any(axis=0))) + 1 for d in x])  # noqa: E731
    share = width(out[twos]) / width(before[twos])
    assert (share > 0.3).all() and (share < 0.8).all()  # squeezed to 45-70 % of its width, give or take a pixel
    column_mass = lambda x: (x.sum(axis=1) * np.arange(28)).sum(axis=1) / x.sum(axis=(1, 2))  # noqa: E731
    assert np.abs(column_mass(out[twos]) - column_mass(before[twos])).max() < 1.0  # about its own middle
    # At 0 not a number is drawn for it, so the batches of a preset without it stay as they were.
    styles_rng, choice_rng = np.random.default_rng(0), np.random.default_rng(0)
    augment.writing_styles(before, labels, styles_rng, OFF)
    choice_rng.random(len(before))  # writing_styles' draw of which digits to style, and no more
    assert styles_rng.bit_generator.state == choice_rng.bit_generator.state


def test_a_short_stem_four_keeps_its_left_arm_crossbar_and_foot(digits):
    images, labels = digits
    fours = ink(images[labels == 4])
    corners = augment._four_corners(fours)
    stem_top, bar_end, usable = corners
    out = augment._short_stem(fours, corners, np.random.default_rng(0))
    assert (out <= fours).all()  # only rubbed out
    np.testing.assert_array_equal(out[~usable], fours[~usable])
    rows, cols = np.mgrid[0:28, 0:28]
    for before, after, top, end in zip(fours[usable], out[usable], stem_top[usable], bar_end[usable]):
        np.testing.assert_array_equal(after[rows >= end[0]], before[rows >= end[0]])  # the bar and below
        left = cols < end[1] + 0.6 * (top[1] - end[1])
        np.testing.assert_array_equal(after[left], before[left])  # the left arm
        assert after[int(top[0]), int(round(top[1]))] == 0  # the stem's old top is gone


def test_each_training_batch_is_seeded_by_its_number(digits):
    """The tf.data pipeline's augmentation gives the same batch for the same number, so a run repeats."""
    from models.preprocessing import model_input_function
    from training.config import make_config
    from training.train import upload_augmenter

    images, labels = digits
    config = make_config("people")
    augment = upload_augmenter(config)
    first, again, next_batch = augment(np.int64(3), images, labels), augment(np.int64(3), images, labels), \
        augment(np.int64(4), images, labels)
    assert first.shape == (len(images), 28, 28, 1) and first.dtype == np.float32
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, next_batch)
    clean = model_input_function(config.fit_preprocessing_version)(images)  # the preset's fit pipeline (deskew)
    untouched = np.all(first == clean, axis=(1, 2, 3))
    # The preset's share of each batch is augmented; the rest stays clean MNIST (a seeded draw per image).
    assert abs(untouched.mean() - (1 - config.augment_fraction)) < 0.15


def test_the_clean_warp_only_tilts_and_wobbles_mnist_digits(digits):
    """MNIST's own augmentation: each digit moved a little, still framed like MNIST, with its pen and style."""
    images, _ = digits
    out = augment.warp_clean(images, np.random.default_rng(0))
    again = augment.warp_clean(images, np.random.default_rng(0))
    assert out.shape == images.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, again)
    changed = np.any(out != frame_like_uploads(ink(images)), axis=(1, 2))
    assert changed.mean() > 0.9  # nearly every digit moves (a few are drawn with no rotation to speak of)
    for digit in out:
        rows, cols = np.flatnonzero(digit.any(axis=1)), np.flatnonzero(digit.any(axis=0))
        assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 <= DIGIT_BOX
    # No pen change, no low resolution, no blur: the ink's amount stays MNIST's, within a fifth.
    ratio = (out > 127).sum(axis=(1, 2)) / np.maximum((images > 127).sum(axis=(1, 2)), 1)
    assert 0.8 < np.median(ratio) < 1.25
    with pytest.raises(ValueError, match="uint8 digits"):
        augment.warp_clean(images.astype(np.float32), np.random.default_rng(0))


def test_normalizing_strokes_leaves_the_fit_as_it_was(digits):
    """``normalize_strokes`` changes how the model reads digits (evaluation, service), not what it learns from."""
    from training.config import make_config
    from training.train import upload_augmenter

    images, labels = digits
    normalized, plain = make_config("people"), make_config("people", normalize_strokes=False)
    assert normalized.preprocessing_version != plain.preprocessing_version
    np.testing.assert_array_equal(upload_augmenter(normalized)(np.int64(2), images, labels),
                                  upload_augmenter(plain)(np.int64(2), images, labels))


@pytest.mark.parametrize("clean_warp_fraction", [0.0, 0.5, 1.0])
def test_a_batch_splits_into_uploads_warped_digits_and_clean_ones(digits, clean_warp_fraction):
    """``augment_fraction`` of a batch becomes uploads; ``clean_warp_fraction`` of the rest is warped."""
    from models.preprocessing import model_input_function
    from training.config import make_config
    from training.train import upload_augmenter

    images, labels = digits
    config = make_config("people", clean_warp_fraction=clean_warp_fraction)
    clean = model_input_function(config.fit_preprocessing_version)(images)
    augment = upload_augmenter(config)
    untouched = np.mean([np.all(augment(np.int64(batch), images, labels) == clean, axis=(1, 2, 3))
                         for batch in range(5)])
    expected = (1 - config.augment_fraction) * (1 - clean_warp_fraction)
    assert abs(untouched - expected) < 0.07, (untouched, expected)  # 1,000 seeded draws
