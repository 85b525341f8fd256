"""The project's own REST front door: ``/classify``, ``/classify_batch``, ``/normalized`` and ``/infer``.

Each route only translates its wire format into a call on the engine (``service.engine``) and back. The
typed signatures and the pydantic models below are the OpenAPI schema; ``responses`` lists every error
status a route can answer, each with the service's error body.
"""

from __future__ import annotations

import io
from typing import Annotated, Union

from annotated_types import Ge, Le, MultipleOf

import numpy as np
from fastapi import APIRouter, Depends, File, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, Strict, WithJsonSchema

from models.preprocessing import IMAGE_SIZE, NUM_CLASSES
from service import errors
from service.engine import Engine, Prediction
from service.openapi import error_responses
from service.settings import get_settings
from service.upload import Upload

settings = get_settings()
PROTOCOL = "rest"


async def get_engine() -> Engine:
    """The engine of the service instance running in this worker. (``async``: FastAPI would run a plain
    function in its thread pool, a hop to a thread and back for every request.)"""
    import bentoml

    return bentoml.get_current_service().engine


EngineDep = Annotated[Engine, Depends(get_engine)]


class Classification(BaseModel):
    """What the model says about one image."""

    digit: int = Field(ge=0, le=9, description="the predicted digit", examples=[7])
    confidence: float = Field(ge=0, le=1, description="the predicted digit's probability", examples=[0.998])
    probabilities: list[float] = Field(
        min_length=NUM_CLASSES, max_length=NUM_CLASSES, description="probability of each digit 0..9",
        examples=[[0.0, 0.0, 0.001, 0.0, 0.0, 0.0, 0.0, 0.998, 0.0, 0.001]],
    )
    model: str = Field(description="the exact BentoML tag of the model that answered",
                       examples=["mnist_cnn:fbea5fhlekv5qax4"])


def classification(probabilities: np.ndarray, model_tag: str) -> dict:
    """One row of probabilities as the ``Classification`` JSON object."""
    digit = int(probabilities.argmax())
    return {"digit": digit, "confidence": float(probabilities[digit]),
            "probabilities": [round(float(p), 6) for p in probabilities], "model": model_tag}


# A grey level is a JSON integer 0..255. JSON Schema counts 7.0 as an integer too, so it is taken; 0.5,
# true, "7", 256 and -1 are not. (pydantic's lax int would take true and "7"; its strict int refuses 7.0.)
GreyLevel = Annotated[
    Union[Annotated[int, Strict(), Ge(0), Le(255)], Annotated[float, Strict(), MultipleOf(1), Ge(0), Le(255)]],
    WithJsonSchema({"type": "integer", "minimum": 0, "maximum": 255}),
]
Row = Annotated[list[GreyLevel], Field(min_length=IMAGE_SIZE, max_length=IMAGE_SIZE)]
Digit = Annotated[list[Row], Field(min_length=IMAGE_SIZE, max_length=IMAGE_SIZE)]


class InferRequest(BaseModel):
    """MNIST-style digits: uint8 grey levels, white ink on black, shape (n, 28, 28)."""

    model_config = ConfigDict(extra="forbid")
    digits: list[Digit] = Field(
        min_length=1, max_length=settings.max_batch_images,
        description=f"1 to {settings.max_batch_images} digits, each 28 rows of 28 integers 0..255",
    )


# Multipart upload fields. ``Upload`` keeps the file's bytes in memory and refuses a text value (a URL).
ImageField = Annotated[Upload, File(description="an image file: PNG, JPEG, GIF, BMP, TIFF or WebP")]
ImagesField = Annotated[list[Upload], File(
    min_length=1, max_length=settings.max_batch_images,
    description=f"1 to {settings.max_batch_images} image files (repeat the field), in the order of the answers")]

UPLOAD_ERRORS = error_responses(400, 408, 413, 415, 422, 503, 504)

router = APIRouter()


async def only_fields(request: Request, *names: str, once: bool = False) -> None:
    """InvalidInput when the multipart body has a field other than ``names`` (a typo should not pass) or,
    with ``once``, one of them more than once (one image would be answered and the others dropped)."""
    form = await request.form()  # parsed once already for the typed parameters; Starlette caches it
    unknown = sorted(set(form.keys()) - set(names))
    if unknown:
        raise errors.InvalidInput(
            f"Unknown form field(s) {', '.join(map(repr, unknown))}; this endpoint takes {', '.join(map(repr, names))}."
        )
    repeated = [name for name in names if len(form.getlist(name)) > 1] if once else []
    if repeated:
        raise errors.InvalidInput(
            f"The field {repeated[0]!r} is sent {len(form.getlist(repeated[0]))} times; this endpoint reads one image "
            "(/classify_batch reads several, each in a field 'images')."
        )


@router.post("/classify", response_model=Classification, responses=UPLOAD_ERRORS, tags=["classify"])
async def classify(request: Request, image: ImageField, engine: EngineDep) -> JSONResponse:
    """Classify one uploaded image (multipart field ``image``): PNG, JPEG, GIF, BMP, TIFF or WebP.

    The upload is normalised the way MNIST was made (grayscale, ink on black, cropped, fitted into 20x20
    and centred by mass in 28x28) before the model sees it.
    """
    await only_fields(request, "image", once=True)
    digit = await engine.normalise(image.data)
    prediction = await engine.predict(digit[np.newaxis], PROTOCOL)
    return JSONResponse(classification(prediction.probabilities[0], prediction.model.tag))


@router.post("/classify_batch", response_model=list[Classification], responses=UPLOAD_ERRORS, tags=["classify"])
async def classify_batch(request: Request, images: ImagesField, engine: EngineDep) -> JSONResponse:
    """Classify 1..N uploaded images (multipart field ``images``, repeated); answers in the same order.

    N is ``DIGITSERVE_MAX_BATCH_IMAGES`` (default 256), and the images together may hold at most
    ``DIGITSERVE_MAX_REQUEST_PIXELS``. One bad image refuses the whole request, with its position in the
    message.
    """
    await only_fields(request, "images")
    digits = await engine.normalise_all([upload.data for upload in images])
    prediction = await engine.predict(digits, PROTOCOL)
    return JSONResponse(_classifications(prediction))


def _classifications(prediction: Prediction) -> list[dict]:
    return [classification(row, prediction.model.tag) for row in prediction.probabilities]


@router.post(
    "/normalized", responses={200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
                                    "description": "the 28x28 grey PNG the model sees"}, **UPLOAD_ERRORS},
    response_class=Response, tags=["classify"],
)
async def normalized(request: Request, image: ImageField, engine: EngineDep) -> Response:
    """The 28x28 image the model sees for this upload (multipart field ``image``), as a PNG.

    It is made by the same code as ``/classify`` uses, so a preview can never differ from what is
    classified; for a model that reads digits straightened, with their strokes normalised, it is so here too.
    """
    await only_fields(request, "image", once=True)
    digit = engine.model.as_seen((await engine.normalise(image.data))[np.newaxis])[0]
    buffer = io.BytesIO()
    Image.fromarray(digit).save(buffer, format="PNG")  # uint8 (28, 28): mode L
    return Response(buffer.getvalue(), media_type="image/png")


@router.post(
    "/infer",
    response_model=list[Annotated[list[float], Field(min_length=NUM_CLASSES, max_length=NUM_CLASSES)]],
    responses=error_responses(400, 408, 413, 415, 503, 504), tags=["classify"],
)
async def infer(body: InferRequest, engine: EngineDep) -> JSONResponse:
    """Probabilities (n, 10) for digits that are already MNIST-style: JSON ``{"digits": [...]}``, uint8
    (n, 28, 28), white on black.

    Concurrent calls are merged into one model call (adaptive batching). The answer's
    ``X-Digitserve-Model`` header names the model version that answered.
    """
    digits = np.array(body.digits, dtype=np.uint8)  # validated: integers 0..255, (n, 28, 28)
    prediction = await engine.predict(digits, PROTOCOL)
    return JSONResponse(prediction.probabilities.round(6).tolist(),
                        headers={"X-Digitserve-Model": prediction.model.tag})
