"""The digit classifier as a BentoML service: decode -> normalise -> infer -> respond.

    bentoml serve service:DigitClassifier            # from the repository root, on port 3000

Each worker loads the registered model once, runs a warm-up inference, and only then reports ready.

Adaptive batching: concurrent requests are merged into one model call by BentoML's batching dispatcher
(``CorkDispatcher``, the one behind ``batchable=True``). ``/infer`` is a ``batchable=True`` endpoint for
clients that send MNIST-style arrays. ``/classify`` decodes an upload first, then hands the digit to a
dispatcher of its own. It does not call ``self.to_async.infer``, BentoML's documented in-service call:
that is an extra in-process HTTP round trip with JSON encoding, which here cut throughput to 120
requests/s at 16 clients and failed 4 % of them ("Server disconnected" from the in-process connector).
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import time
from typing import Annotated, Sequence

import bentoml
from bentoml.validators import DType, Shape
from pydantic import BaseModel, Field

from service.device import configure_tensorflow, count_gpus, worker_count
from service.metrics import domain_metrics
from service.security import GuardMiddleware, install_safe_multipart
from service.settings import get_settings
from service.upload import Upload
from service.web import web_app
from training.registry import ModelLoadError, ModelNotRegistered, load_model, verify_archive

with bentoml.importing():
    import anyio
    import numpy as np
    from PIL import Image
    from bentoml._internal.marshal.dispatcher import CorkDispatcher
    from bentoml.exceptions import ServiceUnavailable
    from starlette.responses import JSONResponse

    from models.preprocessing import IMAGE_SIZE, NUM_CLASSES, to_model_input
    from service import errors
    from service.imaging import preprocess_upload

logger = logging.getLogger(__name__)
settings = get_settings()
# BentoML's workers log at WARNING below its own "bentoml" logger; this module is the workers' entry point,
# so it lets this project's INFO lines (the device in use, the model served) through to BentoML's handlers.
for package in ("service", "training", "models"):
    logging.getLogger(package).setLevel(logging.INFO)

# Uploads smaller than this are decoded on the event loop: a thread hop costs more than the decode.
INLINE_DECODE_BYTES = 32 * 1024

GPU_COUNT = count_gpus()


class Classification(BaseModel):
    """What the model says about one image."""

    digit: int = Field(ge=0, le=9, description="the predicted digit", examples=[7])
    confidence: float = Field(ge=0, le=1, description="the predicted digit's probability", examples=[0.998])
    probabilities: list[float] = Field(
        min_length=NUM_CLASSES, max_length=NUM_CLASSES, description="probability of each digit 0..9",
        examples=[[0.0, 0.0, 0.001, 0.0, 0.0, 0.0, 0.0, 0.998, 0.0, 0.001]],
    )
    model: str = Field(description="the BentoML tag of the model that answered", examples=["mnist_cnn:fbea5fhlekv5qax4"])


def error_response(error: errors.InputError) -> JSONResponse:
    return JSONResponse(error.to_dict(), status_code=error.status_code)


SERVICE_DESCRIPTION = """Classifies a handwritten digit in an uploaded image with the CNN from *Deep Learning for
Engineers, part 1*, trained on MNIST.

**[Draw or upload a digit at /ui](./ui)** · model metadata at [/model](./model) · metrics at [/metrics](./metrics)

Every client mistake is answered with a 4xx and a JSON body `{"error": sentence, "reason": label}`.
"""


class DescribedService(bentoml.Service):
    """A service whose OpenAPI description is ``description=``: BentoML 1.4 shows its own boilerplate
    (with badge images fetched from the internet) when serving from source."""

    @property
    def doc(self) -> str:
        return self.description or ""


def _overloaded():
    raise ServiceUnavailable("The service is overloaded: the batching queue is longer than DIGITSERVE_MAX_LATENCY_MS.")


def _check_model_is_registered() -> bentoml.models.BentoModel:
    """Fail at import, before any worker starts, when the model is missing or its file is damaged."""
    reference = bentoml.models.BentoModel(settings.model_tag)
    if reference.stored is None:
        raise ModelNotRegistered(
            f"No model {settings.model_tag!r} is registered in the BentoML model store. "
            "Run `make train` to train and register one (or set DIGITSERVE_MODEL_TAG)."
        )
    verify_archive(reference.stored)
    return reference


def _stop_server(error: Exception) -> None:
    """A worker that cannot load the model stops the whole server: BentoML would restart it forever."""
    logger.critical("%s Stopping the server.", error)
    if bentoml.server_context.worker_index is not None:  # under `bentoml serve`, not in-process tests
        os.kill(os.getppid(), signal.SIGTERM)


@bentoml.service(
    name="digitserve",
    description=SERVICE_DESCRIPTION,
    service_class=DescribedService,
    workers=worker_count(settings.workers),
    **({"resources": {"gpu": GPU_COUNT}} if GPU_COUNT else {}),
    traffic={"timeout": 30},
    metrics={"enabled": True},
    logging={"access": {"enabled": settings.access_log}},
    # OpenTelemetry spans cost about a sixth of a worker's time and go nowhere unless an exporter is set.
    tracing={} if settings.tracing else {"excluded_urls": [".*"]},
)
@bentoml.asgi_app(web_app, path="/")
class DigitClassifier:
    bento_model = _check_model_is_registered()

    def __init__(self) -> None:
        from models.cnn import make_inference_fn  # imports TensorFlow: only in the worker

        self.device = configure_tensorflow(bentoml.server_context.worker_index or 1, settings.threads)
        stored = self.bento_model
        self.tag = str(stored.tag)
        self.info = stored.info
        try:
            self._infer = make_inference_fn(load_model(stored))
        except ModelLoadError as error:
            _stop_server(error)
            raise
        self._infer(np.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 1), np.float32))  # warm-up: trace and compile now
        if settings.gc_freeze:
            # TensorFlow leaves ~10^5 long-lived objects; moved out of the collector's sight, they no
            # longer make every full collection (a pause of tens of ms under load) walk them.
            gc.collect()
            gc.freeze()

        self.metrics = domain_metrics()
        metadata = self.info.metadata
        self.metrics.model_info.labels(
            tag=self.tag,
            test_accuracy=str(metadata.get("test_accuracy", "unknown")),
            preprocessing_version=str(metadata.get("preprocessing_version", "unknown")),
        ).set(1)
        self.metrics.device_info.labels(device=self.device).set(1)

        # One queue per worker for /classify; the dispatcher adapts its wait to the measured model latency.
        self._dispatcher = CorkDispatcher(
            max_latency_in_ms=settings.max_latency_ms,
            max_batch_size=settings.max_batch_size,
            fallback=_overloaded,
            get_batch_size=len,
        )
        self._predict_batched = self._dispatcher(self._predict_merged)
        logger.info("Serving %s on %s (worker %s)", self.tag, self.device, bentoml.server_context.worker_index)

    # --- the model call, shared by every endpoint ------------------------------------------------

    def _predict(self, digits: np.ndarray) -> np.ndarray:
        """(n, 28, 28) uint8 MNIST-style digits -> (n, 10) probabilities, recorded in the metrics."""
        started = time.perf_counter()
        probabilities = self._infer(to_model_input(digits))
        self.metrics.inference_seconds.observe(time.perf_counter() - started)
        self.metrics.batch_size.observe(len(digits))
        self.metrics.record_predictions(probabilities.argmax(axis=1), probabilities.max(axis=1))
        return probabilities

    async def _predict_merged(self, requests: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The dispatcher's callback: one model call for the digits of every request waiting."""
        sizes = [len(digits) for digits in requests]
        probabilities = await anyio.to_thread.run_sync(self._predict, np.concatenate(requests))
        return np.split(probabilities, np.cumsum(sizes)[:-1])

    def _answer(self, probabilities: np.ndarray) -> Classification:
        digit = int(probabilities.argmax())
        return Classification(digit=digit, confidence=float(probabilities[digit]),
                              probabilities=[round(float(p), 6) for p in probabilities], model=self.tag)

    def _normalise(self, upload: Upload) -> np.ndarray:
        """Upload -> checked, MNIST-style (28, 28) uint8 digit; raises errors.InputError."""
        started = time.perf_counter()
        digit = preprocess_upload(upload.data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_pixels)
        self.metrics.preprocess_seconds.observe(time.perf_counter() - started)
        return digit

    async def _normalise_one(self, upload: Upload) -> np.ndarray:
        """``_normalise`` on the event loop for small uploads, where a thread hop costs more than the decode."""
        if len(upload.data) < INLINE_DECODE_BYTES:
            return self._normalise(upload)
        return await anyio.to_thread.run_sync(self._normalise, upload)

    def _normalise_all(self, uploads: list[Upload]) -> np.ndarray:
        """(n, 28, 28) digits for a batch, naming the position of the first bad image in its error."""
        digits = np.empty((len(uploads), IMAGE_SIZE, IMAGE_SIZE), np.uint8)
        for position, upload in enumerate(uploads):
            try:
                digits[position] = self._normalise(upload)
            except errors.InputError as error:
                error.message = f"Image {position} (counting from 0): {error.message}"
                raise
        return digits

    def _reject(self, error: errors.InputError) -> JSONResponse:
        self.metrics.rejected.labels(reason=error.reason).inc()
        return error_response(error)

    # --- endpoints -----------------------------------------------------------------------------

    @bentoml.api(
        batchable=True,
        max_batch_size=settings.max_batch_size,
        max_latency_ms=settings.max_latency_ms,
    )
    def infer(
        self, digits: Annotated[np.ndarray, Shape((-1, IMAGE_SIZE, IMAGE_SIZE)), DType("uint8")]
    ) -> np.ndarray:
        """Probabilities (n, 10) for digits that are already MNIST-style: uint8 (n, 28, 28), white on black.

        Concurrent calls are merged into one model call (adaptive batching).
        """
        return self._predict(digits)

    @bentoml.api
    async def classify(self, image: Upload) -> Classification:
        """Classify one uploaded image (multipart field ``image``): PNG, JPEG, GIF, BMP, TIFF or WebP.

        The upload is normalised the way MNIST was made (grayscale, ink on black, cropped, fitted into
        20x20 and centred by mass in 28x28) before the model sees it.
        """
        try:
            digit = await self._normalise_one(image)
        except errors.InputError as error:
            return self._reject(error)
        probabilities = await self._predict_batched(digit[np.newaxis])
        return self._answer(probabilities[0])

    @bentoml.api
    async def normalized(self, image: Upload) -> Image.Image:
        """The 28x28 image the model sees for this upload (multipart field ``image``), as a PNG.

        It is made by the same code as ``/classify`` uses, so a preview can never differ from what is
        classified.
        """
        try:
            digit = await self._normalise_one(image)
        except errors.InputError as error:
            return self._reject(error)
        return Image.fromarray(digit)  # uint8 (28, 28): mode L

    @bentoml.api
    async def classify_batch(self, images: list[Upload]) -> list[Classification]:
        """Classify 1..N uploaded images (multipart field ``images``, repeated); answers in the same order.

        N is ``DIGITSERVE_MAX_BATCH_IMAGES`` (default 256). One bad image rejects the whole request,
        with its position in the message.
        """
        try:
            if not images:
                raise errors.InvalidInput("Send at least one image in the multipart field 'images'.")
            if len(images) > settings.max_batch_images:
                raise errors.BatchTooLarge(
                    f"This batch has {len(images)} images; the most one request may carry is "
                    f"{settings.max_batch_images} (DIGITSERVE_MAX_BATCH_IMAGES)."
                )
            digits = await anyio.to_thread.run_sync(self._normalise_all, images)  # off the event loop
        except errors.InputError as error:
            return self._reject(error)
        probabilities = await anyio.to_thread.run_sync(self._predict, digits)
        return [self._answer(row) for row in probabilities]


install_safe_multipart()
DigitClassifier.add_asgi_middleware(GuardMiddleware, settings=settings)
