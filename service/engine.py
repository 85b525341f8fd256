"""The inference engine: decode -> normalise -> batch -> infer, once, for every front door.

The project's REST routes (``service.rest``) and the Open Inference Protocol (``service.v2``) only
translate their wire format into calls on one ``Engine`` and back, like the data plane of KServe's and
MLServer's model servers. The engine owns the model being served, the batching queue, the limits on what
one request may cost, and the domain metrics.

Where work runs, per worker process:

- the event loop reads a single upload's header (its format and declared size) when the file is small,
  and decodes it there too when it declares few pixels: a thread hop would cost more than the decode;
- larger uploads, and every request of several images, are decoded in a thread under ``decode_limiter``
  (``DECODE_THREADS`` at a time), and only while the images being decoded declare at most
  ``DIGITSERVE_MAX_PIXELS`` pixels together (``pixel_budget``), which bounds the memory decoding holds;
- the model runs in a thread under the batcher's own limiter, so it never waits behind a decode.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import anyio
import anyio.to_thread
import numpy as np
from PIL import Image

from models.preprocessing import IMAGE_SIZE
from service import errors
from service.batching import Batcher
from service.imaging import normalise_image, open_image
from service.memory import PixelBudget
from service.metrics import DomainMetrics
from service.served_model import ServedModel
from service.settings import Settings

logger = logging.getLogger(__name__)

# Uploads up to this many bytes have their header read on the event loop; bigger files are handled
# entirely in a thread (a PNG may carry megabytes of chunks before its pixels).
INLINE_HEADER_BYTES = 64 * 1024
# Images up to this many declared pixels are decoded and normalised on the event loop. An MNIST-style
# 28x28 digit passes normalisation almost untouched: about 50 us, less than a hop to a thread and back
# (about 60 us). Anything larger goes through the whole normalisation (background, threshold, crop,
# resize: 0.4 ms and up for a 56x56 digit), which would hold up every other request on the loop.
INLINE_DECODE_PIXELS = IMAGE_SIZE * IMAGE_SIZE
DECODE_THREADS = 2  # per worker: the decodes running at once, and so the decoded images held at once


@dataclass(frozen=True)
class Prediction:
    """The model's answer for n digits, and which model gave it."""

    probabilities: np.ndarray  # (n, 10) float32, rows sum to 1
    model: ServedModel

    def rows(self, start: int, stop: int) -> Prediction:
        return Prediction(self.probabilities[start:stop], self.model)

    @property
    def digits(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)  # (n,) int64


PART_MIN_DIGITS = 64  # a batch is split for parallel model calls only into parts at least this large


class Engine:
    """Turns uploads or MNIST-style digits into predictions, within the service's limits."""

    def __init__(self, model: ServedModel, settings: Settings, metrics: DomainMetrics, device: str = "CPU",
                 parallel_calls: int = 1) -> None:
        self.model = model  # replaced whole by a model update; a batch reads it once
        self.ready = True  # False once the worker drains before it stops
        self.device = device  # where the model runs, for /model
        self.settings = settings
        self.metrics = metrics
        self.decode_limiter = anyio.CapacityLimiter(DECODE_THREADS)
        self.pixel_budget = PixelBudget(settings.max_pixels)  # bounds the memory decoding holds at once
        self.batcher: Batcher[Prediction] = Batcher(self._run_model, max_batch_size=settings.max_batch_size)
        # A large batch runs as up to ``parallel_calls`` model calls at once (see _infer).
        self.parallel_calls = max(1, parallel_calls)
        self._helpers = ThreadPoolExecutor(self.parallel_calls - 1, "model-part") if self.parallel_calls > 1 else None

    # --- the model ------------------------------------------------------------------------------

    def _run_model(self, digits: np.ndarray) -> Prediction:
        """(n, 28, 28) uint8 -> Prediction; runs in the batcher's thread."""
        model = self.model
        started = time.perf_counter()
        probabilities = self._infer(model, digits)
        self.metrics.inference_seconds.observe(time.perf_counter() - started)
        self.metrics.batch_size.observe(len(digits))
        return Prediction(probabilities, model)

    def _infer(self, model: ServedModel, digits: np.ndarray) -> np.ndarray:
        """The model on ``digits``, a large batch split into parts that run at once, one on each core.

        On the CPU each worker's TensorFlow runs a call on DIGITSERVE_THREADS (1) threads, its share of the
        cores, which suits the small merged batches of single-image traffic. But a few long-lived
        connections all land on one worker (the first process the kernel wakes accepts them), and then that
        worker alone would run every bulk call on one core while its sibling idles. Parts of at least
        PART_MIN_DIGITS, run concurrently (TensorFlow's inter-op threads allow it), use the idle cores.
        Measured with ``make bench`` on 2 cores: bulk v2, 2 clients x 256 digits, 6,761 -> 11,228 images/s.
        """
        parts = min(self.parallel_calls, len(digits) // PART_MIN_DIGITS)
        if parts < 2:
            return model.probabilities(digits)
        first, *rest = np.array_split(digits, parts)
        others = [self._helpers.submit(model.probabilities, part) for part in rest]  # each part's input made there
        return np.concatenate([model.probabilities(first), *(other.result() for other in others)])

    async def predict(self, digits: np.ndarray, protocol: str) -> Prediction:
        """Probabilities for MNIST-style uint8 digits (n, 28, 28), merged with other requests' digits."""
        if digits.dtype != np.uint8 or digits.ndim != 3 or digits.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"predict needs uint8 (n, 28, 28) digits, got {digits.dtype} {digits.shape}.")
        self.check_count(len(digits))
        prediction = await self.batcher.submit(digits)
        self.metrics.record_predictions(prediction.digits, prediction.probabilities.max(axis=1), protocol)
        return prediction

    def check_count(self, count: int) -> None:
        """InputError unless one request's ``count`` images are within 1..DIGITSERVE_MAX_BATCH_IMAGES."""
        if count < 1:
            raise errors.InvalidInput("The request holds no image: send at least one.")
        if count > self.settings.max_batch_images:
            raise errors.BatchTooLarge(
                f"This request has {count:,} images; the most one request may carry is "
                f"{self.settings.max_batch_images:,} (DIGITSERVE_MAX_BATCH_IMAGES)."
            )

    # --- uploads --------------------------------------------------------------------------------

    async def normalise(self, upload: bytes) -> np.ndarray:
        """One encoded image file -> its MNIST-style uint8 (28, 28) digit; InputError when it can't be."""
        return (await self.normalise_all([upload]))[0]

    async def normalise_all(self, uploads: Sequence[bytes]) -> np.ndarray:
        """Encoded image files -> uint8 (n, 28, 28) digits, in order.

        Every header is read and checked, and the request's pixel budget with it, before any image is
        decoded. One bad image refuses the whole request, with its position in the message when there
        are several.
        """
        self.check_count(len(uploads))
        if len(uploads) == 1 and len(uploads[0]) <= INLINE_HEADER_BYTES:
            images = self._open_all(uploads)
        else:  # several files, or a big one: even their headers are read in a thread
            images = await anyio.to_thread.run_sync(self._open_all, uploads, limiter=self.decode_limiter)
        pixels = sum(image.width * image.height for image in images)
        if len(images) == 1 and pixels <= INLINE_DECODE_PIXELS:
            return self._decode_all(images)
        async with self.pixel_budget.hold(pixels):
            return await anyio.to_thread.run_sync(self._decode_all, images, limiter=self.decode_limiter)

    def _open_all(self, uploads: Sequence[bytes]) -> list[Image.Image]:
        """Each upload's checked header (nothing decoded yet), then the request's pixel budget."""
        images = [
            self._each(position, len(uploads), open_image, upload,
                       max_bytes=self.settings.max_upload_bytes, max_pixels=self.settings.max_pixels)
            for position, upload in enumerate(uploads)
        ]
        total = sum(image.width * image.height for image in images)
        if total > self.settings.max_request_pixels:
            raise errors.TooManyPixels(
                f"The {len(images)} images hold {total:,} pixels together; the most one request may carry is "
                f"{self.settings.max_request_pixels:,} (DIGITSERVE_MAX_REQUEST_PIXELS)."
            )
        return images

    def _decode_all(self, images: Sequence[Image.Image]) -> np.ndarray:
        digits = np.empty((len(images), IMAGE_SIZE, IMAGE_SIZE), np.uint8)
        for position, image in enumerate(images):
            started = time.perf_counter()
            digits[position] = self._each(position, len(images), normalise_image, image)
            self.metrics.preprocess_seconds.observe(time.perf_counter() - started)
        return digits

    @staticmethod
    def _each(position: int, count: int, function, *args, **kwargs):
        """``function(*args)``, naming the image's position in its error when the request has several."""
        try:
            return function(*args, **kwargs)
        except errors.InputError as error:
            if count > 1:
                error.add_context(f"Image {position} (counting from 0): ")
            raise

