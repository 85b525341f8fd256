"""Training presets: the people preset by default, the seed's run on request, and overrides that are checked."""

from __future__ import annotations

import pytest

from training.config import make_config
from training.train import parse_args


def test_the_default_preset_is_trained_for_peoples_uploads():
    config = make_config()
    assert config.preset == "people" and parse_args([]).preset == "people"
    assert config.augment == "uploads" and 0.0 < config.augment_fraction < 1.0  # some clean MNIST stays
    assert config.epochs > 2 and config.lr_schedule == "cosine"
    assert config.validation_fraction == 0.0  # nothing is chosen on the test set: it is only watched
    # It reads digits with their strokes normalised, then straightened; its fit's batches are only straightened.
    assert config.normalize_strokes and config.preprocessing_version == "mnist-norm-1-strokes-deskew"
    assert config.fit_preprocessing_version == "mnist-norm-1-deskew"


def test_the_seed_preset_is_the_articles_run():
    config = make_config("seed")
    assert (config.epochs, config.batch_size, config.learning_rate) == (2, 256, 1e-3)
    assert config.validation_fraction == 0.0  # the article watches the test set; nothing is tuned on it
    assert config.augment == "none" and config.lr_schedule == "constant"
    assert config.preprocessing_version == config.fit_preprocessing_version == "mnist-norm-1"


def test_best_preset_trains_longer_with_augmentation_and_a_held_out_split():
    config = make_config("best")
    assert config.epochs > make_config().epochs and config.augment != "none" and config.lr_schedule == "cosine"
    assert config.validation_fraction == 0.1
    assert config.clean_warp_fraction == 1.0  # the half not made to look like uploads gets MNIST's own warp
    assert config.preset == "best" and config.preprocessing_version == "mnist-norm-1-strokes-deskew"
    # Its styled 9s keep the short hook; the default's end in a round bowl half the time.
    assert config.augment_settings.bowl_probability == 0.0 < make_config().augment_settings.bowl_probability


def test_overrides_apply_and_none_means_keep():
    config = make_config("best", epochs=3, batch_size=None)
    assert config.epochs == 3 and config.batch_size == 128


def test_the_learning_rate_can_be_set_from_the_command_line():
    args = parse_args(["--preset", "seed", "--learning-rate", "0.002"])
    assert make_config(args.preset, learning_rate=args.learning_rate).learning_rate == 0.002
    assert parse_args([]).learning_rate is None  # the preset's own


def test_the_clean_share_warp_can_be_set_from_the_command_line():
    args = parse_args(["--preset", "best", "--clean-warp-fraction", "0"])
    assert make_config(args.preset, clean_warp_fraction=args.clean_warp_fraction).clean_warp_fraction == 0.0
    assert parse_args([]).clean_warp_fraction is None and make_config().clean_warp_fraction == 0.0


def test_the_stroke_normalisation_can_be_turned_off_from_the_command_line():
    args = parse_args(["--no-normalize-strokes"])
    config = make_config(args.preset, normalize_strokes=args.normalize_strokes)
    assert not config.normalize_strokes and config.preprocessing_version == "mnist-norm-1-deskew"
    assert parse_args([]).normalize_strokes is None and parse_args(["--normalize-strokes"]).normalize_strokes is True


def test_the_fit_budget_is_off_unless_asked_for_and_set_from_the_command_line():
    assert all(make_config(preset).fit_budget_s == 0 for preset in ("people", "seed", "best"))
    args = parse_args(["--fit-budget", "200"])
    assert make_config(args.preset, fit_budget_s=args.fit_budget).fit_budget_s == 200
    assert parse_args([]).fit_budget is None


def test_the_budget_buys_whole_epochs_between_a_floor_and_the_presets():
    from training.train import MIN_BUDGETED_EPOCHS, epochs_within_budget

    assert epochs_within_budget(200, 14.7, most=10) == 10  # a bfloat16 CPU: all of them
    assert epochs_within_budget(200, 37.5, most=10) == 5  # a float32 CPU at 37.5 s an epoch
    assert epochs_within_budget(200, 40.0, most=10) == 5  # exactly five fit
    assert epochs_within_budget(200, 40.1, most=10) == 4
    assert epochs_within_budget(10, 38.0, most=10) == MIN_BUDGETED_EPOCHS  # too slow: the floor, late
    assert epochs_within_budget(-5, 38.0, most=10) == MIN_BUDGETED_EPOCHS  # the probe alone ate the budget
    assert epochs_within_budget(10, 38.0, most=2) == 2  # never more than the preset's
    assert epochs_within_budget(200, 0.0, most=10) == 10


@pytest.mark.parametrize("overrides", [{"epochs": 0}, {"batch_size": 0}, {"validation_fraction": 0.7},
                                       {"lr_schedule": "step"}, {"augment": "heavy"}, {"augment_fraction": 1.5},
                                       {"clean_warp_fraction": -0.1}, {"clean_warp_fraction": 1.5},
                                       {"precision": "float16"}, {"learning_rate": 0.0}, {"learning_rate": -0.01},
                                       {"fit_budget_s": -1.0}, {"fit_budget_s": float("nan")},
                                       {"fit_budget_s": float("inf")},
                                       {"deskew": False}])  # the people preset's stroke normalisation needs it
def test_bad_settings_say_what_is_wrong(overrides):
    with pytest.raises(ValueError):
        make_config(**overrides)


def test_unknown_preset():
    with pytest.raises(ValueError, match="Unknown preset 'fast'"):
        make_config("fast")


def test_precision_auto_picks_bfloat16_only_where_the_cpu_has_it(monkeypatch):
    from pathlib import Path

    import tensorflow as tf

    from training.train import resolve_precision

    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])  # as on a CPU-only machine
    assert make_config("seed").precision == "float32"  # the article's run keeps its arithmetic
    assert resolve_precision("float32") == "float32" and resolve_precision("bfloat16") == "bfloat16"
    monkeypatch.setattr(Path, "read_text", lambda self: "flags : fpu sse2 avx512f avx512_bf16")
    assert resolve_precision("auto") == "bfloat16"
    monkeypatch.setattr(Path, "read_text", lambda self: "flags : fpu sse2 avx2")
    assert resolve_precision("auto") == "float32"
