"""The naive server the benchmark compares against: what most tutorials ship.

    uvicorn loadtests.naive_server:app --port 8001

A Starlette app that reads the upload, decodes it with Pillow, resizes it to 28x28 and calls
``model.predict`` once per request, on the event loop. No compiled graph, no normalisation beyond the
resize, no input checks, no batching, no metrics. It is here to be measured, not used: the benchmark sends
it MNIST-style digits (light ink on black, 28x28), the only kind it classifies correctly.
"""

from __future__ import annotations

import io
import logging
from contextlib import asynccontextmanager

import numpy as np
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from models.preprocessing import IMAGE_SIZE
from service.settings import get_settings
from training.registry import get_stored, load_model

logger = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: Starlette):
    stored = get_stored(get_settings().model_tag)
    app.state.model = load_model(stored)
    app.state.tag = str(stored.tag)
    logger.info("Naive server loaded %s", app.state.tag)
    yield


async def classify(request: Request) -> JSONResponse:
    form = await request.form()
    data = await form["image"].read()
    image = Image.open(io.BytesIO(data)).convert("L").resize((IMAGE_SIZE, IMAGE_SIZE))
    pixels = np.asarray(image, dtype=np.float32).reshape(1, IMAGE_SIZE, IMAGE_SIZE, 1) / 255.0
    probabilities = request.app.state.model.predict(pixels, verbose=0)[0]
    digit = int(probabilities.argmax())
    return JSONResponse({"digit": digit, "confidence": float(probabilities[digit]),
                         "probabilities": [float(p) for p in probabilities], "model": request.app.state.tag})


async def ready(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")  # the lifespan has loaded the model before the first request is served


app = Starlette(routes=[Route("/classify", classify, methods=["POST"]), Route("/readyz", ready)], lifespan=lifespan)
