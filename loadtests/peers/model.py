"""The model every peer serves: the registered ``mnist_cnn``, loaded and called through the project's own code.

KServe, MLServer and Ray Serve each wrap one ``PeerModel``, so that only the serving stack differs between
them and the service: the same store entry (``training.registry.get_stored`` and ``load_model``), the same
compiled forward pass (``models.cnn.make_inference_fn``), the same input transform (the model's own pipeline,
``training.registry.model_input_of``), and encoded uploads normalised by the service's own function
(``service.imaging.preprocess_upload``) under the service's own limits (``service.settings``).

Runs inside a peer's environment (.venv-peers/...), with the repository on PYTHONPATH.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from models.preprocessing import IMAGE_SIZE

logger = logging.getLogger(__name__)


class PeerModel:
    """One loaded, warmed-up copy of the model. Load it once per process that runs inference."""

    def __init__(self, tf_threads: int, tag: str | None = None) -> None:
        """Load ``tag`` on ``tf_threads`` intra-op threads; by default the service's own (DIGITSERVE_MODEL_TAG)."""
        import tensorflow as tf

        from models.cnn import make_inference_fn
        from service.settings import get_settings
        from training.registry import get_stored, load_model, model_input_of

        settings = get_settings()
        # As the service configures each worker: TensorFlow's pools sized for this process's share of the cores.
        tf.config.threading.set_intra_op_parallelism_threads(tf_threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        stored = get_stored(tag or settings.model_tag)
        self.tag = str(stored.tag)
        self.version = stored.tag.version
        self._infer = make_inference_fn(load_model(stored))
        self._model_input = model_input_of(stored)
        self._limits = {"max_bytes": settings.max_upload_bytes, "max_pixels": settings.max_pixels}
        self.probabilities(np.zeros((1, IMAGE_SIZE, IMAGE_SIZE), np.uint8))  # the first call builds the graph
        logger.info("Loaded %s with %d TensorFlow threads", self.tag, tf_threads)

    def probabilities(self, digits: np.ndarray) -> np.ndarray:
        """MNIST-style uint8 digits (n, 28, 28) -> float32 probabilities (n, 10)."""
        return self._infer(self._model_input(digits))

    def normalise(self, files: Sequence[bytes]) -> np.ndarray:
        """Encoded image files -> uint8 digits (n, 28, 28), each as ``/classify`` normalises it.

        Raises the service's InputError (a ValueError with ``status_code``) for a file it would refuse.
        """
        from service.imaging import preprocess_upload

        return np.stack([preprocess_upload(data, **self._limits) for data in files])

    def __repr__(self) -> str:
        return f"PeerModel({self.tag!r})"
