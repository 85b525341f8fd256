"""One model version, loaded, compiled and warmed up: what the engine calls to classify digits."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from models.preprocessing import INPUT_SHAPE, PREPROCESSING_VERSION, digit_steps_function, model_input_function

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedModel:
    """A model version from the BentoML store, ready to answer."""

    tag: str  # the exact store tag, "mnist_cnn:<version>"
    info: Any  # bentoml's ModelInfo: metadata, labels, creation_time
    infer: Callable[[np.ndarray], np.ndarray]  # (n, 28, 28, 1) float32 in [0, 1] -> (n, 10) probabilities
    pipeline: str = PREPROCESSING_VERSION  # the preprocessing the model reads digits through (its metadata's)

    @property
    def model_input(self) -> Callable[[np.ndarray], np.ndarray]:
        """uint8 digits (n, 28, 28) -> the input ``infer`` takes, by the model's pipeline."""
        return model_input_function(self.pipeline)

    @property
    def name(self) -> str:
        return self.tag.split(":", 1)[0]

    @property
    def version(self) -> str:
        return self.tag.split(":", 1)[1]

    @property
    def metadata(self) -> dict:
        return dict(self.info.metadata)

    def probabilities(self, digits: np.ndarray) -> np.ndarray:
        """uint8 digits (n, 28, 28) -> (n, 10) probabilities, through the pipeline the model was trained for."""
        return self.infer(self.model_input(digits))

    def as_seen(self, digits: np.ndarray) -> np.ndarray:
        """uint8 digits (n, 28, 28) as this model sees them: strokes normalised, straightened, as its pipeline
        says."""
        return digit_steps_function(self.pipeline)(digits)


def load_served_model(stored) -> ServedModel:
    """Load a ``bentoml.Model`` entry, compile its forward pass and run it once, so the first request is fast.

    Raises ``training.registry.ModelLoadError`` with a sentence when the entry cannot be loaded, or was
    trained for a preprocessing pipeline this code does not know.
    """
    from models.cnn import make_inference_fn  # imports TensorFlow: only where a model is served
    from training.registry import ModelLoadError, load_model, pipeline_of

    try:
        pipeline = pipeline_of(stored)
    except ValueError as error:
        raise ModelLoadError(f"{stored.tag}: {error}") from None
    infer = make_inference_fn(load_model(stored))
    infer(np.zeros((1, *INPUT_SHAPE), np.float32))  # warm-up: trace and compile now
    return ServedModel(tag=str(stored.tag), info=stored.info, infer=infer, pipeline=pipeline)
