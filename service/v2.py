"""The Open Inference Protocol (KServe v2 / Triton) front door, REST: health, metadata and inference, JSON
and the binary tensor data extension, over the same engine as the project's own routes.

The model is the BentoML model's name (``mnist_cnn``); its one version is the exact store version this
server serves. It takes one of two inputs and gives two outputs:

- ``digits``  UINT8 ``[-1, 28, 28]``: MNIST-style digits, white ink on black, as ``/infer`` takes them;
- ``images``  BYTES ``[-1]``: encoded image files (PNG, JPEG, ...), each normalised exactly as
  ``/classify`` normalises an upload. In JSON an element is the file in base64 (a JSON string cannot
  carry raw bytes); in binary it is the raw file, or its base64;
- ``probabilities`` FP32 ``[-1, 10]`` and ``digit`` INT64 ``[-1]``.

A request is JSON, or (binary tensor data extension) a JSON header of ``Inference-Header-Content-Length``
bytes followed by the binary inputs in order, each ``parameters.binary_data_size`` bytes long; a BYTES
tensor in binary is each element as a 4-byte little-endian length and its bytes. Outputs come back as JSON
unless the request asks for binary (``binary_data`` on a requested output, or ``binary_data_output`` on
the request, which tritonclient sends when it names no outputs). ``gzip`` and ``deflate`` request bodies
(tritonclient's request compression) are taken, bounded by the same byte limits once inflated.

Every refusal is a 4xx with the service's error body, ``{"error": sentence, "reason": label}``, which is
also the protocol's error shape (``{"error": ...}``).
"""

from __future__ import annotations

import base64
import binascii
import importlib.metadata
import json
import math
import struct
import zlib
from typing import Any, Literal, Optional

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from models.preprocessing import IMAGE_SIZE, NUM_CLASSES
from service import errors
from service.engine import Engine, Prediction
from service.openapi import error_responses
from service.rest import EngineDep

PROTOCOL = "v2"
HEADER_LENGTH = "inference-header-content-length"
DIGITS, IMAGES = "digits", "images"
PROBABILITIES, DIGIT = "probabilities", "digit"
PLATFORM = "keras"
# Triton's name for the binary extension is "binary_tensor_data"; "binary_data_tensor" is how the issue that
# asked for it spelled it, so both are listed. "model_configuration" is Triton's GET .../config.
EXTENSIONS = ["binary_tensor_data", "binary_data_tensor", "model_configuration"]

INPUTS = [{"name": DIGITS, "datatype": "UINT8", "shape": [-1, IMAGE_SIZE, IMAGE_SIZE]},
          {"name": IMAGES, "datatype": "BYTES", "shape": [-1]}]
OUTPUTS = [{"name": PROBABILITIES, "datatype": "FP32", "shape": [-1, NUM_CLASSES]},
           {"name": DIGIT, "datatype": "INT64", "shape": [-1]}]
TRITON_TYPES = {"UINT8": "TYPE_UINT8", "BYTES": "TYPE_STRING", "FP32": "TYPE_FP32", "INT64": "TYPE_INT64"}


# --- the wire shapes -------------------------------------------------------------------------------------


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


Parameters = dict[str, Any]


class RequestInput(BaseModel):
    name: str = Field(description=f"{DIGITS!r} (UINT8 [n, 28, 28]) or {IMAGES!r} (BYTES [n])")
    shape: list[StrictInt]  # [true, 28, 28] or ["1", 28, 28] is not a shape
    datatype: str
    parameters: Optional[Parameters] = None
    data: Optional[list[Any]] = Field(None, description="row-major values, flat or nested; absent when binary")


class RequestOutput(BaseModel):
    name: Literal["probabilities", "digit"]
    parameters: Optional[Parameters] = None


class InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: Optional[str] = None
    parameters: Optional[Parameters] = None
    inputs: list[RequestInput] = Field(min_length=1, max_length=1)
    outputs: Optional[list[RequestOutput]] = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Optional[Parameters] = None
    data: Optional[list[Any]] = None


class InferenceResponse(BaseModel):
    model_name: str
    model_version: Optional[str] = None
    id: Optional[str] = None
    parameters: Optional[Parameters] = None
    outputs: list[ResponseOutput]


# --- decoding a request -------------------------------------------------------------------------------


CONTENT_CODINGS = ("gzip", "deflate")  # tritonclient's request compression


def inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """A gzip or deflate body, inflated to at most ``limit`` bytes (413 past it: no inflation bombs)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in CONTENT_CODINGS:
        raise errors.UnsupportedMediaType(f"Content-Encoding {encoding[:40]!r} is not taken; use gzip, deflate or none.",
                                          accepted_encodings=CONTENT_CODINGS)
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as error:
        raise errors.InvalidInput(f"The {encoding} body cannot be inflated: {error}.") from error
    if len(data) > limit or inflater.unconsumed_tail:
        raise errors.UploadTooLarge(f"The {encoding} body inflates past the limit of {limit:,} bytes.")
    return data


def split_body(body: bytes, header_length: str | None) -> tuple[InferenceRequest, bytes]:
    """The JSON inference request and the binary part that follows it (empty without the extension)."""
    if header_length is None:
        header, binary = body, b""
    else:
        if not header_length.strip().isdigit() or int(header_length) > len(body):
            raise errors.InvalidInput(
                f"Inference-Header-Content-Length is {header_length[:40]!r}: it must be a number of bytes no larger "
                f"than the body ({len(body):,} bytes).")
        length = int(header_length)
        header, binary = body[:length], body[length:]
    try:
        return InferenceRequest.model_validate_json(header), binary
    except ValidationError as error:
        problem = error.errors()[0] if error.errors() else {}
        if problem.get("type") == "json_invalid":
            raise errors.InvalidJson(f"The inference request is not valid JSON: {problem.get('msg', '')}.") from None
        where = ".".join(str(part) for part in problem.get("loc", ())) or "the request"
        raise errors.InvalidInput(f"The inference request is malformed: {where}: {problem.get('msg', 'invalid')}.") from None


def binary_slices(request: InferenceRequest, binary: bytes) -> list[bytes | None]:
    """Each input's binary data (None for an input whose data is in the JSON), checked against the body."""
    slices: list[bytes | None] = []
    offset = 0
    for tensor in request.inputs:
        size = (tensor.parameters or {}).get("binary_data_size")
        if size is None:
            slices.append(None)
            continue
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise errors.InvalidInput(f"Input {tensor.name!r}: binary_data_size must be a byte count, got {size!r}.")
        if tensor.data is not None:
            raise errors.InvalidInput(f"Input {tensor.name!r} has both JSON data and binary_data_size.")
        if offset + size > len(binary):
            raise errors.InvalidInput(f"Input {tensor.name!r} declares {size:,} binary bytes, but the body holds "
                                      f"{len(binary) - offset:,} after the JSON.")
        slices.append(binary[offset:offset + size])
        offset += size
    if offset != len(binary):
        raise errors.InvalidInput(f"The body has {len(binary) - offset:,} bytes after the inputs' binary data.")
    return slices


def digits_tensor(tensor: RequestInput, raw: bytes | None, max_images: int) -> np.ndarray:
    """A UINT8 [n, 28, 28] input as uint8 (n, 28, 28) digits."""
    if tensor.datatype != "UINT8":
        raise errors.InvalidInput(f"Input {DIGITS!r} must be UINT8 (grey levels 0..255), got {tensor.datatype}.")
    shape = tensor.shape
    if len(shape) != 3 or shape[1:] != [IMAGE_SIZE, IMAGE_SIZE] or shape[0] < 1:
        raise errors.InvalidInput(f"Input {DIGITS!r} must have shape [n, 28, 28] with n >= 1, got {shape}.")
    if shape[0] > max_images:
        raise errors.BatchTooLarge(f"Input {DIGITS!r} has {shape[0]:,} digits; the most one request may carry is "
                                   f"{max_images:,} (DIGITSERVE_MAX_BATCH_IMAGES).")
    count = math.prod(shape)
    if raw is not None:
        if len(raw) != count:
            raise errors.InvalidInput(f"Input {DIGITS!r} of shape {shape} needs {count:,} bytes, got {len(raw):,}.")
        return np.frombuffer(raw, np.uint8).reshape(shape)
    if tensor.data is None:
        raise errors.InvalidInput(f"Input {DIGITS!r} has no data and no binary_data_size.")
    return grey_levels(tensor.data, count).reshape(shape)


def grey_levels(data: list, count: int) -> np.ndarray:
    """JSON values (flat or nested) as ``count`` uint8 grey levels: integers 0..255 (7.0 counts, 0.5 and true do not)."""
    try:
        values = np.asarray(data)
    except (ValueError, OverflowError):  # ragged nesting, or an integer beyond 64 bits
        raise errors.InvalidInput(f"Input {DIGITS!r}: the data must be {count:,} integers 0..255, nested evenly.") from None
    if values.size != count:
        raise errors.InvalidInput(f"Input {DIGITS!r}: the shape needs {count:,} values, the data has {values.size:,}.")
    if values.dtype.kind not in "iuf" or (values.dtype.kind in "iu" and _holds_bool(data)):
        raise errors.InvalidInput(f"Input {DIGITS!r}: every value must be an integer 0..255.")
    if values.dtype.kind == "f" and not (np.isfinite(values).all() and (values == np.rint(values)).all()):
        raise errors.InvalidInput(f"Input {DIGITS!r}: every value must be an integer 0..255, with no fraction.")
    if values.size and (values.min() < 0 or values.max() > 255):
        raise errors.InvalidInput(f"Input {DIGITS!r}: values must be 0..255, got {values.min()}..{values.max()}.")
    return values.astype(np.uint8).reshape(-1)


def _holds_bool(data: list) -> bool:
    """Whether nested JSON values hold a true or false (NumPy would take them as 1 and 0)."""
    stack = [data]
    while stack:
        items = stack.pop()
        for item in items:
            if item is True or item is False:
                return True
            if isinstance(item, list):
                stack.append(item)
    return False


def image_files(tensor: RequestInput, raw: bytes | None, max_images: int, max_file_bytes: int) -> list[bytes]:
    """A BYTES [n] input as n encoded image files."""
    if tensor.datatype != "BYTES":
        raise errors.InvalidInput(f"Input {IMAGES!r} must be BYTES (encoded image files), got {tensor.datatype}.")
    if len(tensor.shape) != 1 or tensor.shape[0] < 1:
        raise errors.InvalidInput(f"Input {IMAGES!r} must have shape [n] with n >= 1, got {tensor.shape}.")
    count = tensor.shape[0]
    if count > max_images:
        raise errors.BatchTooLarge(f"Input {IMAGES!r} has {count:,} images; the most one request may carry is "
                                   f"{max_images:,} (DIGITSERVE_MAX_BATCH_IMAGES).")
    if raw is not None:
        elements = length_prefixed(raw, max_file_bytes)
    elif tensor.data is None:
        raise errors.InvalidInput(f"Input {IMAGES!r} has no data and no binary_data_size.")
    else:
        flat = tensor.data[0] if len(tensor.data) == 1 and isinstance(tensor.data[0], list) else tensor.data
        if not all(isinstance(item, str) for item in flat):
            raise errors.InvalidInput(f"Input {IMAGES!r}: in JSON each element must be a string, the image file in base64.")
        elements = [item.encode("utf-8", "surrogatepass") for item in flat]
    if len(elements) != count:
        raise errors.InvalidInput(f"Input {IMAGES!r} has shape [{count}] but holds {len(elements)} elements.")
    return [unbase64(element) for element in elements]


def length_prefixed(raw: bytes, max_element_bytes: int) -> list[bytes]:
    """A binary BYTES tensor: elements of a 4-byte little-endian length and that many bytes."""
    elements, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise errors.InvalidInput("A BYTES element's 4-byte length is cut short.")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if length > max_element_bytes:
            raise errors.UploadTooLarge(f"A BYTES element declares {length:,} bytes; the limit for one image file is "
                                        f"{max_element_bytes:,} (DIGITSERVE_MAX_UPLOAD_BYTES).")
        if offset + length > len(raw):
            raise errors.InvalidInput(f"A BYTES element declares {length:,} bytes, but only {len(raw) - offset:,} follow.")
        elements.append(raw[offset:offset + length])
        offset += length
    return elements


def unbase64(element: bytes) -> bytes:
    """The file in ``element``: decoded when it is base64 text (line breaks allowed, as the ``base64`` tool
    writes it), else the element itself (raw file bytes)."""
    if not element:
        return element
    try:
        return base64.b64decode(b"".join(element.split()), validate=True)
    except (binascii.Error, ValueError):
        return element  # real image files hold bytes outside the base64 alphabet: these are raw


def requested_outputs(request: InferenceRequest) -> list[tuple[str, bool]]:
    """(output name, as binary) for each output to send, in the order asked (both when none are named)."""
    binary_default = _flag(request.parameters, "binary_data_output", False)
    if not request.outputs:
        return [(PROBABILITIES, binary_default), (DIGIT, binary_default)]
    names = [output.name for output in request.outputs]
    if len(set(names)) != len(names):
        raise errors.InvalidInput(f"An output is requested twice: {names}.")
    return [(output.name, _flag(output.parameters, "binary_data", binary_default)) for output in request.outputs]


def _flag(parameters: Parameters | None, key: str, default: bool) -> bool:
    """A boolean parameter; "false" is a string, and would be truthy, so only true and false are taken."""
    value = (parameters or {}).get(key, default)
    if not isinstance(value, bool):
        raise errors.InvalidInput(f"The parameter {key!r} must be true or false, got {value!r:.40}.")
    return value


# --- encoding an answer ---------------------------------------------------------------------------------


def inference_response(request: InferenceRequest, prediction: Prediction) -> Response:
    """The v2 answer for ``prediction``: JSON, or a JSON header and binary outputs."""
    count = len(prediction.probabilities)
    values = {PROBABILITIES: prediction.probabilities.astype("<f4", copy=False),
              DIGIT: prediction.digits.astype("<i8", copy=False)}
    shapes = {PROBABILITIES: [count, NUM_CLASSES], DIGIT: [count]}
    datatypes = {PROBABILITIES: "FP32", DIGIT: "INT64"}
    outputs, chunks = [], []
    for name, binary in requested_outputs(request):
        output: dict[str, Any] = {"name": name, "datatype": datatypes[name], "shape": shapes[name]}
        if binary:
            chunk = np.ascontiguousarray(values[name]).tobytes()
            output["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
        else:
            output["data"] = values[name].reshape(-1).tolist()
        outputs.append(output)
    answer: dict[str, Any] = {"model_name": prediction.model.name, "model_version": prediction.model.version,
                              "outputs": outputs}
    if request.id is not None:
        answer["id"] = request.id
    header = json.dumps(answer, separators=(",", ":")).encode()
    if not chunks:
        return Response(header, media_type="application/json")
    return Response(b"".join([header, *chunks]), media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(header))})


# --- routes ------------------------------------------------------------------------------------------------

router = APIRouter(prefix="/v2", tags=["Open Inference Protocol (v2)"])


def server_version() -> str:
    try:
        return importlib.metadata.version("digitserve")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def served(engine: Engine, name: str, version: str | None = None):
    """The served model when ``name`` (and ``version``, if given) are it; else a 404."""
    model = engine.model
    if name != model.name:
        raise errors.NotFound(f"No model {name[:100]!r} is served here; the model is {model.name!r}.")
    if version is not None and version != model.version:
        raise errors.NotFound(f"Version {version[:100]!r} of {model.name!r} is not served; this server serves "
                              f"version {model.version!r}.")
    return model


@router.get("", response_model=ServerMetadata, responses=error_responses())
async def server_metadata() -> dict:
    """The server's name, version and protocol extensions."""
    return {"name": "digitserve", "version": server_version(), "extensions": EXTENSIONS}


@router.get("/health/live", response_model=Live, responses=error_responses())
async def server_live() -> dict:
    """200 while the server's process is alive (tritonclient reads the status, KServe's client the body)."""
    return {"live": True}


@router.get("/health/ready", response_model=Ready, responses=error_responses(503))
async def server_ready(engine: EngineDep) -> JSONResponse:
    """200 while this worker serves a model and takes requests; 503 when it does not."""
    return _readiness({"ready": True}, engine)


def _readiness(body: dict, engine: Engine) -> JSONResponse:
    if not engine.ready:
        error = errors.NotReady("The server is not ready: it is draining before it stops.")
        return JSONResponse({**body, "ready": False, **error.to_dict()}, status_code=503, headers=error.headers)
    return JSONResponse(body)


def _model_metadata(engine: Engine, name: str, version: str | None) -> dict:
    model = served(engine, name, version)
    return {"name": model.name, "versions": [model.version], "platform": PLATFORM, "inputs": INPUTS, "outputs": OUTPUTS}


def _model_config(engine: Engine, name: str, version: str | None) -> dict:
    """Triton's model configuration for the model: what perf_analyzer reads before it sends anything.

    ``max_batch_size`` 0 says, in Triton's terms, that the first dimension is part of each tensor's shape
    (the ``-1`` of ``[-1, 28, 28]``), as the metadata gives it, rather than a batch dimension Triton adds;
    requests are still merged into one model call inside the service. Either input may be sent alone.
    """
    model = served(engine, name, version)
    return {
        "name": model.name, "platform": PLATFORM, "backend": "", "max_batch_size": 0,
        "version_policy": {"specific": {"versions": [model.version]}},
        "input": [{"name": tensor["name"], "data_type": TRITON_TYPES[tensor["datatype"]], "dims": tensor["shape"],
                   "optional": True} for tensor in INPUTS],
        "output": [{"name": tensor["name"], "data_type": TRITON_TYPES[tensor["datatype"]], "dims": tensor["shape"]}
                   for tensor in OUTPUTS],
        "instance_group": [{"count": 1, "kind": "KIND_GPU" if engine.device.startswith("GPU") else "KIND_CPU"}],
    }


@router.get("/models/{name}", response_model=ModelMetadata, responses=error_responses())
async def model_metadata(name: str, engine: EngineDep) -> dict:
    """The model's versions (the one served), platform, inputs and outputs."""
    return _model_metadata(engine, name, None)


@router.get("/models/{name}/versions/{version}", response_model=ModelMetadata, responses=error_responses())
async def model_version_metadata(name: str, version: str, engine: EngineDep) -> dict:
    """The same, for one version: 404 unless it is the version served."""
    return _model_metadata(engine, name, version)


@router.get("/models/{name}/config", responses=error_responses())
async def model_config(name: str, engine: EngineDep) -> dict:
    """Triton's model configuration extension (perf_analyzer reads it)."""
    return _model_config(engine, name, None)


@router.get("/models/{name}/versions/{version}/config", responses=error_responses())
async def model_version_config(name: str, version: str, engine: EngineDep) -> dict:
    """The same, for one version."""
    return _model_config(engine, name, version)


@router.get("/models/{name}/ready", response_model=ModelReady, responses=error_responses(503))
async def model_ready(name: str, engine: EngineDep) -> JSONResponse:
    """200 when the model is served and the worker takes requests."""
    model = served(engine, name)
    return _readiness({"name": model.name, "ready": True}, engine)


@router.get("/models/{name}/versions/{version}/ready", response_model=ModelReady, responses=error_responses(503))
async def model_version_ready(name: str, version: str, engine: EngineDep) -> JSONResponse:
    model = served(engine, name, version)
    return _readiness({"name": model.name, "ready": True}, engine)


INFER_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/InferenceRequest"}},
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary"},
                "description": "binary tensor data extension: the JSON request (Inference-Header-Content-Length "
                               "bytes), then each binary input's bytes",
            },
        },
    },
    "parameters": [{"name": "Inference-Header-Content-Length", "in": "header", "required": False,
                    "schema": {"type": "integer", "minimum": 0},
                    "description": "the JSON header's length, when binary tensors follow it"}],
}
INFER_RESPONSES = {200: {"model": InferenceResponse, "description": "the outputs, JSON or JSON header + binary"},
                   **error_responses(400, 408, 413, 415, 422, 503, 504)}


async def _infer(request: Request, engine: Engine, name: str, version: str | None) -> Response:
    served(engine, name, version)
    settings = engine.settings
    binary_request = HEADER_LENGTH in request.headers
    limit = settings.max_request_bytes if binary_request else settings.max_json_bytes
    body = inflate(await request.body(), request.headers.get("content-encoding", ""), limit)
    inference, binary = split_body(body, request.headers.get(HEADER_LENGTH))
    raw = binary_slices(inference, binary)[0]
    tensor = inference.inputs[0]
    requested_outputs(inference)  # refuse a bad outputs list before any work
    if tensor.name == DIGITS:
        digits = digits_tensor(tensor, raw, settings.max_batch_images)
    elif tensor.name == IMAGES:
        digits = await engine.normalise_all(image_files(tensor, raw, settings.max_batch_images, settings.max_upload_bytes))
    else:
        raise errors.InvalidInput(f"Unknown input {tensor.name[:100]!r}; the model takes {DIGITS!r} (UINT8 [n, 28, 28]) "
                                  f"or {IMAGES!r} (BYTES [n]).")
    prediction = await engine.predict(digits, PROTOCOL)
    return inference_response(inference, prediction)


@router.post("/models/{name}/infer", openapi_extra=INFER_DOC, responses=INFER_RESPONSES, response_model=None)
async def infer(name: str, request: Request, engine: EngineDep) -> Response:
    """Classify digits (``digits``, UINT8 [n, 28, 28]) or image files (``images``, BYTES [n])."""
    return await _infer(request, engine, name, None)


@router.post("/models/{name}/versions/{version}/infer", openapi_extra=INFER_DOC, responses=INFER_RESPONSES,
             response_model=None)
async def infer_version(name: str, version: str, request: Request, engine: EngineDep) -> Response:
    """The same, naming the version: 404 unless it is the version served."""
    return await _infer(request, engine, name, version)
