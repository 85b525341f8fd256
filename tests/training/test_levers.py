"""The lever study: no augmentation, the framing alone, all of it, and all of it with each lever off."""

from __future__ import annotations

from dataclasses import replace

from training.augment import AugmentSettings
from training.levers import LEVERS, variants


def test_every_lever_has_a_run_without_it():
    runs = variants()
    assert runs["none"] == {"augment": "none"} and runs["all"] == {}
    assert {f"all but {lever}" for lever in LEVERS} <= set(runs)
    assert len(runs) == len(LEVERS) + 3


def test_framing_only_turns_every_lever_off():
    settings = replace(AugmentSettings(), **variants()["framing only"]["augment_settings_off"])
    # How a lever acts, once it does:
    within_a_lever = ("crisp_probability", "short_stem_probability", "bowl_probability")
    probabilities = [value for field, value in vars(settings).items() if field.endswith("_probability")
                     and field not in within_a_lever]
    assert not any(probabilities) and settings.rotation_degrees == settings.shear == 0.0


def test_each_lever_turns_something_off():
    default = AugmentSettings()
    for lever, off in LEVERS.items():
        turned_off = replace(default, **off)  # raises on a field AugmentSettings does not have
        assert turned_off != default, lever
