"""The service's HTTP app: the front doors' routes in one FastAPI app, its error handlers, and the policy
the guard middleware applies to each route.

BentoML serves this app (``@bentoml.asgi_app``, a public API) and keeps its own health routes; every
route of ours lives here, so every answer, error or not, is shaped here or by ``service.guard``.
"""

from __future__ import annotations

import logging

import pydantic_core
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from service import errors, rest, v2, web
from service.guard import BodyPolicy, RoutePolicy
from service.metrics import domain_metrics

logger = logging.getLogger(__name__)

SERVICE_DESCRIPTION = """Classifies a handwritten digit in an uploaded image with the CNN from *Deep Learning for
Engineers, part 1*, trained on MNIST.

**[Draw or upload a digit at /ui](./ui)** · model metadata at [/model](./model) · metrics at [/metrics](./metrics)

Every answer that is not a success is a JSON body `{"error": sentence, "reason": label}`: a 4xx for the
client's mistakes, a 503 with `Retry-After` when the service is overloaded.
"""

UPLOAD = BodyPolicy("multipart", "max_upload_bytes", framing=64 * 1024, field="image")
BATCH = BodyPolicy("multipart", "max_request_bytes", field="images")
JSON = BodyPolicy("json", "max_json_bytes")
# JSON within max_json_bytes, or JSON and binary tensors; gzip or deflate, as tritonclient compresses a request
V2 = BodyPolicy("v2", "max_request_bytes", encodings=v2.CONTENT_CODINGS)

# What each route accepts; routes absent here take no body and are not counted as inference.
POLICIES: dict[str, RoutePolicy] = {
    "/classify": RoutePolicy("rest", inference=True, body=UPLOAD),
    "/normalized": RoutePolicy("rest", inference=True, body=UPLOAD),
    "/classify_batch": RoutePolicy("rest", inference=True, body=BATCH),
    "/infer": RoutePolicy("rest", inference=True, body=JSON),
    "/v2/models/{name}/infer": RoutePolicy("v2", inference=True, body=V2),
    "/v2/models/{name}/versions/{version}/infer": RoutePolicy("v2", inference=True, body=V2),
    "/v2": RoutePolicy("v2", inference=False),
    "/v2/{path:path}": RoutePolicy("v2", inference=False),  # the protocol's health and metadata routes
}


def protocol_of(request: Request) -> str:
    return "v2" if request.url.path.startswith("/v2") else "rest"


def create_app() -> FastAPI:
    app = FastAPI(title="digitserve", description=SERVICE_DESCRIPTION, version="1",
                  docs_url=None, redoc_url=None, openapi_url=None)  # BentoML serves the docs at / and /docs.json
    app.include_router(rest.router)
    app.include_router(v2.router)
    app.include_router(web.router)
    app.mount(web.UI_PATH, web.static_files(), name="ui")
    app.add_exception_handler(errors.ServiceError, service_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    return app


def error_response(request: Request, error: errors.ServiceError) -> JSONResponse:
    domain_metrics().rejected.labels(reason=error.reason, protocol=protocol_of(request)).inc()
    return JSONResponse(error.to_dict(), status_code=error.status_code, headers=error.headers)


async def service_error(request: Request, error: errors.ServiceError) -> JSONResponse:
    return error_response(request, error)


async def http_error(request: Request, error: HTTPException) -> JSONResponse:
    """The router's 404 and 405, and Starlette's 400 for a multipart body it cannot parse."""
    if error.status_code == 404:
        return error_response(request, errors.NotFound("There is no such route; see the OpenAPI document at /docs.json."))
    if error.status_code == 405:
        allowed = tuple(m.strip() for m in (error.headers or {}).get("Allow", "").split(",") if m.strip())
        return error_response(request, errors.MethodNotAllowed(
            f"This route does not take {request.method}{'; it takes ' + ', '.join(allowed) if allowed else ''}.",
            allowed))
    if 400 <= error.status_code < 500:
        problem = await json_syntax_error(request, error) or errors.InvalidInput(
            f"The request body could not be parsed: {error.detail}.")
        problem.status_code = error.status_code
        return error_response(request, problem)
    logger.error("HTTP %d: %s", error.status_code, error.detail)
    failure = errors.ServiceError("An unexpected error occurred; it is in the service's log.")
    failure.status_code = error.status_code
    return error_response(request, failure)


async def json_syntax_error(request: Request, error: HTTPException) -> errors.InvalidJson | None:
    """What is wrong with a JSON body that FastAPI read but could not parse, and only called "an error parsing
    the body" (nesting deeper than Python's recursion, an integer of thousands of digits, bytes that are not
    UTF-8): None for any other failure, such as a client that left while its body was arriving.

    The parser's error is a ValueError or RecursionError, raised after the whole body was read; Starlette keeps
    that body and the guard bounds it, so parsing it again reads nothing from the client and costs little."""
    if not isinstance(error.__cause__, (ValueError, RecursionError)):
        return None
    if "json" not in request.headers.get("content-type", "application/json").lower():
        return None
    try:
        pydantic_core.from_json(await request.body())
    except ValueError as complaint:
        return errors.InvalidJson(f"The body is not valid JSON: {complaint}.")
    return None


async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    """FastAPI's validation errors as one sentence, with the reason the first problem earns."""
    fields: list[str] | None = None
    if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        fields = sorted(set((await request.form()).keys()))  # already parsed: Starlette caches the form
    return error_response(request, input_error(error.errors(), fields))


def input_error(problems: list[dict], fields: list[str] | None = None) -> errors.InputError:
    """The InputError for a list of pydantic/FastAPI validation problems (the first one is named)."""
    first = problems[0] if problems else {"type": "unknown", "loc": (), "msg": "invalid request"}
    kind, location = first.get("type", ""), [str(part) for part in first.get("loc", ()) if part != "body"]
    where = ".".join(location) or "the body"
    more = f" ({len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})" if len(problems) > 1 else ""
    if kind == "upload_type":
        return errors.UrlNotAllowed(
            f"The field {location[0]!r} must hold an uploaded file; text values such as URLs are refused "
            "and never fetched." if location else "Upload fields must hold files.")
    if kind == "json_invalid":  # FastAPI's problem names the parser's complaint and where it stopped
        complaint = (first.get("ctx") or {}).get("error") or first.get("msg", "")
        at = f" at character {location[-1]}" if location and location[-1].isdigit() else ""
        return errors.InvalidJson(f"The body is not valid JSON: {complaint}{at}{more}.")
    if kind == "too_long" and location in (["digits"], ["images"]):
        return errors.BatchTooLarge(f"The request has more {location[0]} than the {first.get('ctx', {}).get('max_length', '')} "
                                    "one request may carry (DIGITSERVE_MAX_BATCH_IMAGES).")
    if kind == "missing" and len(location) == 1:
        if fields is not None:
            sent = f"the form has {', '.join(map(repr, fields))}" if fields else "the form is empty"
            return errors.InvalidInput(f"Send the file in the multipart field {location[0]!r}; {sent}{more}.")
        return errors.InvalidInput(f"The field {location[0]!r} is missing{more}.")
    return errors.InvalidInput(f"{where}: {first.get('msg', 'invalid')}{more}.")
