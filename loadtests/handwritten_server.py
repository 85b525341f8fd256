"""The hand-written server the benchmark compares against: what a careful engineer writes without a framework.

    uvicorn loadtests.handwritten_server:app --port 8002

A minimal Starlette app with the service's compiled model (``make_inference_fn``), the service's
normalisation (``preprocess_upload``, with the same input limits and 4xx answers) and the same TensorFlow
thread settings, but no batching, no metrics and no middleware. Each request is decoded and classified on
the event loop: one small image takes a millisecond or two, less than a hop to a thread pool would cost.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

import numpy as np
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from models.preprocessing import IMAGE_SIZE
from service.errors import InputError, InvalidInput
from service.imaging import preprocess_upload
from service.settings import get_settings
from training.registry import get_stored, load_model, model_input_of

logger = logging.getLogger(__name__)
settings = get_settings()


@asynccontextmanager
async def lifespan(app: Starlette):
    from models.cnn import make_inference_fn
    from service.device import configure_tensorflow

    device = configure_tensorflow(1, settings.threads)
    stored = get_stored(settings.model_tag)
    app.state.infer = make_inference_fn(load_model(stored))
    app.state.model_input = model_input_of(stored)
    app.state.infer(np.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 1), np.float32))  # warm-up: trace and compile now
    app.state.tag = str(stored.tag)
    logger.info("Hand-written server loaded %s on %s", app.state.tag, device)
    yield


async def classify(request: Request) -> JSONResponse:
    try:
        form = await request.form()
        upload = form.get("image")
        if not isinstance(upload, UploadFile):
            raise InvalidInput("Send the image file as multipart/form-data in the field 'image'.")
        digit = preprocess_upload(await upload.read(), max_bytes=settings.max_upload_bytes,
                                  max_pixels=settings.max_pixels)
    except InputError as error:
        return JSONResponse({"error": error.message, "reason": error.reason}, status_code=error.status_code)
    probabilities = request.app.state.infer(request.app.state.model_input(digit))[0]
    label = int(probabilities.argmax())
    return JSONResponse({"digit": label, "confidence": float(probabilities[label]),
                         "probabilities": [round(float(p), 6) for p in probabilities], "model": request.app.state.tag})


async def ready(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")  # the lifespan has loaded and warmed the model before the first request


app = Starlette(routes=[Route("/classify", classify, methods=["POST"]), Route("/readyz", ready)], lifespan=lifespan)
