"""Training hyperparameters: one dataclass, saved next to the weights and in the model's metadata."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class TrainConfig:
    """What a training run does. The defaults are the seed's choices."""

    epochs: int = 2  # the seed's choice: "just to finish the training sooner"
    batch_size: int = 256  # the seed's choice: fits in memory everywhere
    learning_rate: float = 1e-3  # Adam's default, which the seed's optimizer='adam' used
    # 0, the seed's choice: train on the whole training set and watch the test set during training. With
    # a fixed number of epochs nothing is chosen by it, so the final test accuracy stays unbiased. A
    # fraction holds that share of the training set out instead (the "best" preset, whose settings were
    # tuned, does). Measured over seeds 1, 2, 3, 42: 98.52-98.62 % with 0, 98.44-98.54 % with 0.1.
    validation_fraction: float = 0.0
    seed: int = 42
    augment: bool = False  # light random rotation, shift and zoom of the training images
    lr_schedule: str = "constant"  # "constant" or "cosine" (decays to 0 over the run)
    data: str = "auto"
    preset: str = "seed"

    def to_dict(self) -> dict:
        return asdict(self)


# A preset is a named set of overrides; ``python -m training --preset best`` picks one.
PRESETS: dict[str, dict] = {
    # The article, as written: 2 epochs of batch 256.
    "seed": {},
    # Trains longer with light augmentation and a cosine learning-rate decay, for the best accuracy the
    # seed's network reaches here. The network itself stays exactly the seed's.
    "best": {"epochs": 15, "batch_size": 128, "augment": True, "lr_schedule": "cosine", "validation_fraction": 0.1},
}


def make_config(preset: str = "seed", **overrides) -> TrainConfig:
    """Return the preset's config with ``overrides`` (those that are not None) applied on top."""
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; choose one of {', '.join(PRESETS)}.")
    values = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    config = replace(TrainConfig(), preset=preset, **values)
    if config.epochs < 1 or config.batch_size < 1:
        raise ValueError("epochs and batch_size must both be at least 1.")
    if not 0.0 <= config.validation_fraction < 0.5:
        raise ValueError("validation_fraction must be in [0, 0.5).")
    if config.lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"Unknown lr_schedule {config.lr_schedule!r}; choose constant or cosine.")
    return config
