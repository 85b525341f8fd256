"""Measure what each augmentation lever is worth: the people preset with each lever turned off in turn.

    python -m training.levers                     # writes reports/levers.json
    python -m training.levers --epochs 3 --only "none,framing only,all"

Every run is short (``--epochs``, default 4) and holds 10 % of MNIST's training set out, so nothing is
chosen on the test set; it reports that held-out accuracy, MNIST test accuracy, and the person-like set's
tuning half (training/personlike.py), the half that levers may be chosen on. Nothing is registered.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from training.config import DEFAULT_PRESET, make_config

logger = logging.getLogger(__name__)

# Each lever, as the AugmentSettings fields that turn it off.
LEVERS: dict[str, dict] = {
    "geometry (rotation, shear, scale)": {"rotation_degrees": 0.0, "shear": 0.0, "scale": (1.0, 1.0),
                                          "narrow": (1.0, 1.0)},
    "elastic wobble and bend": {"elastic_probability": 0.0, "bend_probability": 0.0},
    "stroke width": {"stroke_probability": 0.0},
    "low resolution": {"low_resolution_probability": 0.0},
    "blur": {"blur_probability": 0.0},
    "writing styles": {"style_probability": 0.0, "narrow_two_probability": 0.0},
}


def variants() -> dict[str, dict]:
    """Run name -> config overrides: no augmentation, the framing alone (every lever off), every lever,
    and every lever but one."""
    every_lever_off = {field: value for off in LEVERS.values() for field, value in off.items()}
    runs = {"none": {"augment": "none"}, "framing only": {"augment_settings_off": every_lever_off}, "all": {}}
    for lever, off in LEVERS.items():
        runs[f"all but {lever}"] = {"augment_settings_off": off}
    return runs


def run(name: str, overrides: dict, epochs: int, data: str) -> dict:
    from training.train import train

    off = overrides.pop("augment_settings_off", {})
    config = make_config(DEFAULT_PRESET, epochs=epochs, data=data, validation_fraction=0.1, **overrides)
    config = replace(config, augment_settings=replace(config.augment_settings, **off))
    with tempfile.TemporaryDirectory() as reports:
        metrics = train(config, reports_dir=Path(reports), register=False).metrics
    tune = metrics["personlike"]["tune"]
    return {
        "run": name,
        "validation_accuracy": round(metrics["history"]["val_accuracy"][-1], 5),
        "test_accuracy": round(metrics["test_accuracy"], 5),
        "personlike_tune_accuracy": round(tune["accuracy"], 5),
        "personlike_tune_min_class_accuracy": tune["min_class_accuracy"],
        "personlike_tune_per_class_accuracy": tune["per_class_accuracy"],
        "fit_seconds": metrics["fit_seconds"],
    }


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m training.levers", description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4, help="epochs a run (default 4)")
    parser.add_argument("--data", default="auto", help="where MNIST comes from (default auto)")
    parser.add_argument("--only", help="comma-separated run names (default: all of them)")
    parser.add_argument("--output", type=Path, default=Path("reports/levers.json"))
    args = parser.parse_args(argv)
    runs = variants()
    chosen = args.only.split(",") if args.only else list(runs)
    unknown = sorted(set(chosen) - set(runs))
    if unknown:
        parser.error(f"unknown runs {unknown}; choose from {list(runs)}")
    results = []
    for name in chosen:
        results.append(run(name, dict(runs[name]), args.epochs, args.data))
        logger.info("%s", json.dumps(results[-1]))
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"epochs": args.epochs, "preset": DEFAULT_PRESET, "runs": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
