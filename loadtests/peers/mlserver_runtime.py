"""Seldon MLServer (``mlserver`` 1.7) serving the digit classifier: a custom inference runtime, the way
MLServer's docs serve a model no built-in runtime covers (an ``MLModel`` subclass named in
``model-settings.json``), with MLServer's adaptive batching on.

    cd SETTINGS_DIR && PYTHONPATH=REPO .venv-peers/mlserver/bin/mlserver start .

``loadtests/peers/launch.py`` writes ``settings.json`` and ``model-settings.json`` into a scratch folder
(MLServer keeps its metrics and environments beside them) and says which settings the benchmark uses, and
why. ``tf_threads`` comes from the model settings' ``parameters.extra``.
"""

from __future__ import annotations

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput

from loadtests.peers.model import PeerModel
from loadtests.v2wire import DIGIT_OUTPUT, DIGITS_INPUT, IMAGES_INPUT, OUTPUTS, PROBABILITIES_OUTPUT
from models.preprocessing import IMAGE_SIZE


class DigitRuntime(MLModel):
    """The digit classifier as an MLServer runtime.

    ``digits`` (UINT8) or ``images`` (BYTES) in, ``probabilities`` (FP32) and ``digit`` (INT64) out.

    With adaptive batching on, MLServer merges concurrent requests along the first axis before
    ``predict`` and splits the answer back, so ``predict`` sees one request of many images.
    """

    async def load(self) -> bool:
        extra = self.settings.parameters.extra if self.settings.parameters and self.settings.parameters.extra else {}
        self._model = PeerModel(tf_threads=int(extra.get("tf_threads", 1)))
        self.ready = True
        return self.ready

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        if len(payload.inputs) != 1:
            raise InferenceError(f"Send exactly one input, {DIGITS_INPUT!r} or {IMAGES_INPUT!r}.")
        tensor = payload.inputs[0]
        if tensor.name == DIGITS_INPUT and tensor.datatype == "UINT8":
            digits = NumpyCodec.decode_input(tensor)
            if digits.ndim != 3 or digits.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
                raise InferenceError(f"{DIGITS_INPUT!r} must have shape [n, {IMAGE_SIZE}, {IMAGE_SIZE}], "
                                     f"got {tensor.shape}.")
            digits = digits.astype(np.uint8, copy=False)
        elif tensor.name == IMAGES_INPUT and tensor.datatype == "BYTES":
            files = [item if isinstance(item, bytes) else str(item).encode() for item in tensor.data.root]
            try:
                digits = self._model.normalise(files)
            except ValueError as error:  # the service's InputError: not an image, no ink, too large, ...
                raise InferenceError(str(error)) from error
        else:
            raise InferenceError(f"Send {DIGITS_INPUT!r} as UINT8 or {IMAGES_INPUT!r} as BYTES, "
                                 f"got {tensor.name!r} as {tensor.datatype}.")
        probabilities = self._model.probabilities(digits)  # (n, 10)
        tensors = {
            PROBABILITIES_OUTPUT: ResponseOutput(name=PROBABILITIES_OUTPUT, datatype="FP32",
                                                 shape=list(probabilities.shape), data=probabilities.ravel().tolist()),
            DIGIT_OUTPUT: ResponseOutput(name=DIGIT_OUTPUT, datatype="INT64", shape=[len(probabilities)],
                                         data=probabilities.argmax(axis=1).tolist()),
        }
        requested = [output.name for output in payload.outputs] if payload.outputs else list(OUTPUTS)
        unknown = [name for name in requested if name not in tensors]
        if unknown:
            raise InferenceError(f"Unknown outputs {unknown}; choose from {list(OUTPUTS)}.")
        return InferenceResponse(id=payload.id, model_name=self.name, model_version=self._model.version,
                                 outputs=[tensors[name] for name in requested])
