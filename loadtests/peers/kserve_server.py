"""KServe's model server (``kserve`` 0.21) serving the digit classifier over v2 REST, the way KServe's docs
build a custom predictor: a ``kserve.Model`` subclass whose ``predict`` takes an ``InferRequest`` and
returns an ``InferResponse``, started by ``kserve.ModelServer``.

    PYTHONPATH=. .venv-peers/kserve-ray/bin/python -m loadtests.peers.kserve_server \\
        --http_port 8080 --workers 1 --tf_threads 2 --enable_grpc false

Every ``kserve.ModelServer`` flag is accepted (KServe reads them itself); ``--tf_threads`` is ours.
``loadtests/peers/launch.py`` says which settings the benchmark uses, and why.
"""

from __future__ import annotations

import argparse
import asyncio
import threading

import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer, model_server
from kserve.errors import InvalidInput
from kserve.utils.utils import generate_uuid

from loadtests.peers.model import PeerModel
from loadtests.v2wire import (DIGIT_OUTPUT, DIGITS_INPUT, IMAGES_INPUT, MODEL_NAME, PROBABILITIES_OUTPUT)
from models.preprocessing import IMAGE_SIZE


class DigitModel(Model):
    """The digit classifier as a KServe model.

    ``digits`` (UINT8) or ``images`` (BYTES) in, ``probabilities`` (FP32) and ``digit`` (INT64) out.
    """

    def __init__(self, name: str, tf_threads: int) -> None:
        super().__init__(name)
        self.tf_threads = tf_threads
        self.model: PeerModel | None = None
        self.load()

    def load(self) -> bool:
        self.model = PeerModel(tf_threads=self.tf_threads)
        self.ready = True
        return self.ready

    # With --workers > 1 KServe starts each REST worker with multiprocessing's "spawn" and pickles this
    # object into it. A compiled TensorFlow function does not pickle, so each worker loads its own copy,
    # as the service's workers do. Not while being unpickled, though: KServe's parent pings every worker
    # from its start and kills one that has not answered within 5 s, and unpickling comes before the
    # worker's answering thread starts. Importing TensorFlow and loading the model takes longer than that
    # on 2 busy cores, so the workers were killed and respawned forever. The worker loads in a thread
    # instead, and ``healthy`` (which KServe asks before every inference and for the model's readiness)
    # waits for it.
    def __getstate__(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if key not in ("model", "_loaded")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, model=None)
        self._loaded = threading.Event()
        threading.Thread(target=self._load_in_worker, name="load-model", daemon=True).start()

    def _load_in_worker(self) -> None:
        self.load()
        self._loaded.set()

    async def healthy(self) -> bool:
        if self.model is None:  # a worker still loading its copy
            await asyncio.to_thread(self._loaded.wait)
        return self.ready

    def predict(self, payload: InferRequest, headers: dict | None = None) -> InferResponse:
        if len(payload.inputs) != 1:
            raise InvalidInput(f"Send exactly one input, {DIGITS_INPUT!r} or {IMAGES_INPUT!r}.")
        model = self.model
        tensor = payload.inputs[0]
        if tensor.name == DIGITS_INPUT and tensor.datatype == "UINT8":
            digits = tensor.as_numpy()
            if digits.ndim != 3 or digits.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
                raise InvalidInput(f"{DIGITS_INPUT!r} must have shape [n, {IMAGE_SIZE}, {IMAGE_SIZE}], "
                                   f"got {list(digits.shape)}.")
        elif tensor.name == IMAGES_INPUT and tensor.datatype == "BYTES":
            files = [item if isinstance(item, bytes) else str(item).encode() for item in tensor.as_numpy().ravel()]
            try:
                digits = model.normalise(files)
            except ValueError as error:  # the service's InputError: not an image, no ink, too large, ...
                raise InvalidInput(str(error)) from error
        else:
            raise InvalidInput(f"Send {DIGITS_INPUT!r} as UINT8 or {IMAGES_INPUT!r} as BYTES, "
                               f"got {tensor.name!r} as {tensor.datatype}.")
        probabilities = model.probabilities(digits)  # (n, 10)
        outputs = [
            InferOutput(name=PROBABILITIES_OUTPUT, shape=list(probabilities.shape), datatype="FP32", data=probabilities),
            InferOutput(name=DIGIT_OUTPUT, shape=[len(probabilities)], datatype="INT64",
                        data=probabilities.argmax(axis=1).astype(np.int64)),
        ]
        return InferResponse(response_id=payload.id or generate_uuid(), model_name=self.name, infer_outputs=outputs,
                             model_version=model.version, requested_outputs=payload.request_outputs)


def main() -> None:
    parser = argparse.ArgumentParser(parents=[model_server.parser], description=__doc__.splitlines()[0])
    parser.add_argument("--tf_threads", type=int, default=1, help="TensorFlow intra-op threads per worker")
    args, _ = parser.parse_known_args()
    ModelServer().start([DigitModel(MODEL_NAME, args.tf_threads)])


if __name__ == "__main__":
    main()
