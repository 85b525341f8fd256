"""Plain HTTP routes mounted on the service (BentoML's own routes are POST APIs): ``GET /model`` and the
page at ``/ui`` where a person draws or uploads a digit.

Mounted at ``/`` after BentoML's routes, so ``/classify``, ``/metrics``, ``/readyz`` and the docs keep
theirs; whatever they do not match lands here. The page's files live in ``service/static`` and are all
served from here: the page fetches nothing from any other origin, and its Content-Security-Policy says so.
"""

from __future__ import annotations

from pathlib import Path

import bentoml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

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


async def model_info(request: Request) -> JSONResponse:
    """The registered model's metadata, and the device this worker runs it on."""
    service = bentoml.get_current_service()
    metadata = dict(service.info.metadata)
    return JSONResponse({
        "tag": service.tag,
        "created": service.info.creation_time.isoformat(),
        "test_accuracy": metadata.pop("test_accuracy", None),
        "data_source": metadata.pop("data_source", None),
        "input_spec": metadata.pop("input_spec", None),
        "preprocessing_version": metadata.pop("preprocessing_version", None),
        "device": service.device,
        "metadata": metadata,
    })


async def ui_page(request: Request) -> FileResponse:
    """The draw-or-upload page, at ``/ui`` as well as ``/ui/`` (which the static mount answers)."""
    return FileResponse(STATIC_DIR / "index.html", headers=UI_HEADERS)


class UiStaticFiles(StaticFiles):
    """StaticFiles that also send the page's security headers (``/ui/`` is its index.html)."""

    async def get_response(self, path: str, scope):
        response = await super().get_response(path, scope)
        response.headers.update(UI_HEADERS)
        return response


web_app = Starlette(routes=[
    Route("/model", model_info, methods=["GET"]),
    Route(UI_PATH, ui_page, methods=["GET", "HEAD"]),
    Mount(UI_PATH, app=UiStaticFiles(directory=STATIC_DIR, html=True), name="ui"),
])
