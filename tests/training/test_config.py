"""Training presets: the seed's run by default, and overrides that are checked."""

from __future__ import annotations

import pytest

from training.config import make_config


def test_the_default_is_the_articles_run():
    config = make_config()
    assert (config.epochs, config.batch_size, config.learning_rate) == (2, 256, 1e-3)
    assert config.validation_fraction == 0.0  # the article watches the test set; nothing is tuned on it
    assert not config.augment and config.lr_schedule == "constant"


def test_best_preset_trains_longer_with_augmentation_and_a_held_out_split():
    config = make_config("best")
    assert config.epochs > 2 and config.augment and config.lr_schedule == "cosine"
    assert config.validation_fraction == 0.1
    assert config.preset == "best"


def test_overrides_apply_and_none_means_keep():
    config = make_config("best", epochs=3, batch_size=None)
    assert config.epochs == 3 and config.batch_size == 128


@pytest.mark.parametrize("overrides", [{"epochs": 0}, {"batch_size": 0}, {"validation_fraction": 0.7},
                                       {"lr_schedule": "step"}])
def test_bad_settings_say_what_is_wrong(overrides):
    with pytest.raises(ValueError):
        make_config(**overrides)


def test_unknown_preset():
    with pytest.raises(ValueError, match="Unknown preset 'fast'"):
        make_config("fast")
