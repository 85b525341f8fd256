"""Plain HTTP routes beside the API: ``GET /model``, ``GET /metrics`` and the page at ``/ui`` where a person
draws or uploads a digit.

The page's files live in ``service/static`` and are all served from here: the page fetches nothing from
any other origin, and its Content-Security-Policy says so.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.staticfiles import StaticFiles

from service.metrics import exposition
from service.openapi import error_responses
from service.rest import EngineDep

STATIC_DIR = Path(__file__).parent / "static"
UI_PATH = "/ui"

# The browser may load scripts, styles, images and API answers from this service only; images may also be
# blob: URLs, which is how the page shows the upload and the normalised preview.
UI_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

router = APIRouter()


class ModelDescription(BaseModel):
    """The model this worker serves."""

    tag: str = Field(description="the exact BentoML store tag", examples=["mnist_cnn:fbea5fhlekv5qax4"])
    created: str = Field(description="when it was registered (ISO 8601)")
    test_accuracy: float | None = Field(description="accuracy on the MNIST test set, from training")
    data_source: str | None
    input_spec: dict | None
    preprocessing_version: str | None
    device: str = Field(description="where inference runs: CPU or GPU:n (name)")
    metadata: dict = Field(description="the rest of the model's metadata in the store")


@router.get("/model", response_model=ModelDescription, responses=error_responses(), tags=["model"])
async def model_info(engine: EngineDep) -> JSONResponse:
    """The served model's metadata, and the device this worker runs it on."""
    model = engine.model
    metadata = model.metadata
    return JSONResponse({
        "tag": model.tag,
        "created": model.info.creation_time.isoformat(),
        "test_accuracy": metadata.pop("test_accuracy", None),
        "data_source": metadata.pop("data_source", None),
        "input_spec": metadata.pop("input_spec", None),
        "preprocessing_version": metadata.pop("preprocessing_version", None),
        "device": engine.device,
        "metadata": metadata,
    })


@router.get("/metrics", response_class=Response, tags=["infrastructure"], responses={
    200: {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}},
    **error_responses()})
async def metrics() -> Response:
    """Every worker's metrics in Prometheus' text format."""
    body, content_type = exposition()
    return Response(body, media_type=content_type)


@router.api_route(UI_PATH, methods=["GET", "HEAD"], include_in_schema=False)
async def ui_page() -> FileResponse:
    """The draw-or-upload page, at ``/ui`` as well as ``/ui/`` (which the static mount answers)."""
    return FileResponse(STATIC_DIR / "index.html", headers=UI_HEADERS)


class UiStaticFiles(StaticFiles):
    """StaticFiles that also send the page's security headers (``/ui/`` is its index.html)."""

    async def get_response(self, path: str, scope):
        response = await super().get_response(path, scope)
        response.headers.update(UI_HEADERS)
        return response


def static_files() -> UiStaticFiles:
    return UiStaticFiles(directory=STATIC_DIR, html=True)
