"""The OpenAPI document at ``/docs.json``: what FastAPI generates from the routes' signatures, plus
BentoML's health routes, with every error status each route can answer.

BentoML builds its own document from its API methods, and this service has none (its routes are a mounted
FastAPI app); the service class hands BentoML this document instead (``service.service.DescribedService``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from service.errors import REJECT_REASONS

ErrorReason = Literal[REJECT_REASONS]  # type: ignore[valid-type]


class ErrorBody(BaseModel):
    """Every answer that is not a success."""

    error: str = Field(description="what went wrong, as a sentence for a person", examples=[
        "The upload is not an image; send PNG, JPEG, GIF, BMP, TIFF or WebP."])
    reason: ErrorReason = Field(description="a stable label for programs and metrics", examples=["not_an_image"])


STATUS_DESCRIPTIONS = {
    400: "the request is malformed: a missing or unknown field, bytes that are no image, a damaged file, bad JSON",
    404: "no such route, model or model version",
    405: "the route does not take this method",
    408: "the request body stopped arriving (DIGITSERVE_BODY_TIMEOUT_S)",
    413: "the body, the file or the number of images is over its limit",
    415: "a Content-Type, Content-Encoding or image format the route does not take",
    422: "a readable image that cannot be classified: too many pixels, or no ink",
    503: "the worker is overloaded or not ready: retry after the Retry-After header's seconds",
    504: "the request could not be answered within DIGITSERVE_REQUEST_TIMEOUT_S",
}
ALWAYS = (404, 405)  # any path and method may earn these; listed on every route


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """FastAPI ``responses=`` for these error statuses (and 404, 405), each with the error body."""
    return {status: {"model": ErrorBody, "description": STATUS_DESCRIPTIONS[status]}
            for status in sorted({*statuses, *ALWAYS})}


def _error_content() -> dict:
    return {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}


HEALTH_PATHS = {
    "/livez": "200 while the worker's process is alive",
    "/healthz": "the same as /livez",
    "/readyz": "200 once every worker has loaded and warmed up the model; 503 while starting or draining",
}


def health_paths() -> dict[str, Any]:
    """BentoML's health routes, which are not part of the FastAPI app."""
    paths = {}
    for path, summary in HEALTH_PATHS.items():
        responses: dict[str, Any] = {
            "200": {"description": "healthy", "content": {"text/plain": {"schema": {"type": "string"}}}},
            "405": {"description": STATUS_DESCRIPTIONS[405], "content": _error_content()},
        }
        if path == "/readyz":
            responses["503"] = {"description": "not ready: starting, draining, or no model", "content": _error_content()}
        paths[path] = {"get": {"summary": summary, "tags": ["infrastructure"], "operationId": f"get{path.replace('/', '_')}",
                               "responses": responses}}
    return paths


def _drop_fastapis_validation_answers(document: dict[str, Any]) -> None:
    """FastAPI lists a 422 with its own validation-error body on every route with parameters; the service
    answers a request that fails validation with a 400 and its own error body (service.app), so those
    entries would be untrue."""
    fastapi_body = "#/components/schemas/HTTPValidationError"
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            answer = operation.get("responses", {}).get("422", {})
            if answer.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref") == fastapi_body:
                del operation["responses"]["422"]
    schemas = document.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)


class Document:
    """A finished OpenAPI document in the form BentoML's ``/docs.json`` view asks for (``.asdict()``)."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def asdict(self) -> dict[str, Any]:
        return self.document


def build_document(app, extra_models: tuple = ()) -> Document:
    """FastAPI's document for ``app`` with the health routes added, and the schemas of ``extra_models``
    (pydantic models a route reads itself, so FastAPI does not list them) in its components."""
    from pydantic.json_schema import models_json_schema

    document = dict(app.openapi())
    _drop_fastapis_validation_answers(document)
    document["paths"] = {**health_paths(), **document["paths"]}
    document["servers"] = [{"url": "."}]
    if extra_models:
        _, schemas = models_json_schema([(model, "validation") for model in extra_models],
                                        ref_template="#/components/schemas/{model}")
        components = document.setdefault("components", {}).setdefault("schemas", {})
        for name, schema in schemas.get("$defs", {}).items():
            components.setdefault(name, schema)
    return Document(document)
