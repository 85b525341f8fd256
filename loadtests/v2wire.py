"""The Open Inference Protocol (KServe v2) REST wire format, as the benchmark speaks it to every server.

One contract for the service and each peer, so one generator drives them all:

- model ``mnist_cnn``; ``POST /v2/models/mnist_cnn/infer``; ready at ``GET /v2/health/ready``;
- inputs ``digits`` (UINT8 ``[n, 28, 28]``, MNIST-style, white on black) or ``images`` (BYTES ``[n]``,
  encoded image files);
- outputs ``probabilities`` (FP32 ``[n, 10]``) and ``digit`` (INT64 ``[n]``).

A request is JSON, or JSON followed by raw tensors (the binary tensor data extension): the
``Inference-Header-Content-Length`` header gives the JSON's length, each binary input says how many bytes
are its in ``parameters.binary_data_size``, and a BYTES element is a 4-byte little-endian length and the
bytes.

Here are the request bodies the generator sends, the check of every answer, and the decoding and encoding
a hand-written v2 endpoint needs (the Ray Serve deployment, which has no v2 of its own, and the tests'
minimal v2 server). NumPy and the project's constants only: no Locust, no TensorFlow, no web framework.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from models.preprocessing import IMAGE_SIZE, NUM_CLASSES
from training.registry import MODEL_NAME

INFER_PATH = f"/v2/models/{MODEL_NAME}/infer"
READY_PATH = "/v2/health/ready"
MODEL_READY_PATH = f"/v2/models/{MODEL_NAME}/ready"
HEADER_LENGTH = "Inference-Header-Content-Length"

DIGITS_INPUT, IMAGES_INPUT = "digits", "images"
PROBABILITIES_OUTPUT, DIGIT_OUTPUT = "probabilities", "digit"
OUTPUTS = (PROBABILITIES_OUTPUT, DIGIT_OUTPUT)
OUTPUT_DATATYPES = {PROBABILITIES_OUTPUT: "FP32", DIGIT_OUTPUT: "INT64"}
PROBABILITY_SUM_TOLERANCE = 1e-3

JSON_TYPE, BINARY_TYPE = "application/json", "application/octet-stream"


class BadAnswer(ValueError):
    """An answer whose status, JSON or tensors are not what the contract promises."""


class BadRequest(ValueError):
    """A v2 request that breaks the contract: a hand-written endpoint answers it with a 400."""


@dataclass(frozen=True)
class V2Body:
    """A prepared v2 request: its bytes, its headers, and the labels of the digits it carries, in order."""

    data: bytes
    headers: dict[str, str]
    labels: tuple[int, ...]


# --- requests -------------------------------------------------------------------------------------


def digits_request(digits: np.ndarray, labels: Sequence[int], binary: bool = False,
                   outputs: Sequence[str] = OUTPUTS) -> V2Body:
    """UINT8 ``[n, 28, 28]`` digits as a v2 request: the data flat in the JSON, or appended as raw bytes."""
    digits = np.ascontiguousarray(digits, dtype=np.uint8)
    if digits.ndim != 3 or digits.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"Digits must have shape (n, {IMAGE_SIZE}, {IMAGE_SIZE}), got {digits.shape}.")
    tensor: dict[str, Any] = {"name": DIGITS_INPUT, "datatype": "UINT8", "shape": list(digits.shape)}
    if binary:  # binary both ways: the outputs come back as raw tensors too
        tensor["parameters"] = {"binary_data_size": digits.nbytes}
        return _binary_body(tensor, digits.tobytes(), outputs, labels, binary_outputs=True)
    tensor["data"] = digits.ravel().tolist()
    return _json_body(tensor, outputs, labels)


def images_request(files: Sequence[bytes], labels: Sequence[int], outputs: Sequence[str] = OUTPUTS) -> V2Body:
    """Encoded image files as a BYTES ``[n]`` input, always binary: an image file is no JSON string."""
    raw = encode_bytes_elements(files)
    tensor = {"name": IMAGES_INPUT, "datatype": "BYTES", "shape": [len(files)],
              "parameters": {"binary_data_size": len(raw)}}
    return _binary_body(tensor, raw, outputs, labels)


def _requested(outputs: Sequence[str], binary: bool = False) -> list[dict]:
    return [{"name": name, "parameters": {"binary_data": True}} if binary else {"name": name} for name in outputs]


def _json_body(tensor: dict, outputs: Sequence[str], labels: Sequence[int]) -> V2Body:
    header = {"inputs": [tensor], "outputs": _requested(outputs)}
    return V2Body(json.dumps(header, separators=(",", ":")).encode(), {"Content-Type": JSON_TYPE},
                  tuple(int(label) for label in labels))


def _binary_body(tensor: dict, raw: bytes, outputs: Sequence[str], labels: Sequence[int],
                 binary_outputs: bool = False) -> V2Body:
    header = json.dumps({"inputs": [tensor], "outputs": _requested(outputs, binary_outputs)},
                        separators=(",", ":")).encode()
    # application/octet-stream: FastAPI-based servers (KServe) would otherwise try to parse the body as JSON.
    headers = {"Content-Type": BINARY_TYPE, HEADER_LENGTH: str(len(header))}
    return V2Body(header + raw, headers, tuple(int(label) for label in labels))


def encode_bytes_elements(elements: Sequence[bytes]) -> bytes:
    """BYTES tensor elements in the binary extension's layout: each a 4-byte little-endian length, then its bytes."""
    return b"".join(struct.pack("<I", len(element)) + element for element in elements)


def decode_bytes_elements(raw: bytes, count: int) -> list[bytes]:
    """The inverse of ``encode_bytes_elements``; BadRequest when ``raw`` does not hold exactly ``count`` elements."""
    elements, offset = [], 0
    for _ in range(count):
        if offset + 4 > len(raw):
            raise BadRequest(f"The BYTES data ends after {len(elements)} of {count} elements.")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise BadRequest(f"BYTES element {len(elements)} claims {length} bytes; fewer are left.")
        elements.append(raw[offset:offset + length])
        offset += length
    if offset != len(raw):
        raise BadRequest(f"The BYTES data has {len(raw) - offset} bytes after its {count} elements.")
    return elements


# --- the generator's check of an answer -----------------------------------------------------------


def check_answer(status: int, body: bytes | str | None, count: int, outputs: Sequence[str] = OUTPUTS,
                 header_length: str | None = None) -> list[int]:
    """Check a v2 inference answer for ``count`` images; return the digits.

    BadAnswer with a sentence unless: HTTP 200, JSON (followed by the binary outputs when
    ``header_length``, the answer's Inference-Header-Content-Length, is given), the model's name, exactly
    the requested outputs with their datatypes and shapes, probabilities in [0, 1] summing to 1 per image,
    and each digit the most probable one (when both outputs are there).
    """
    data = body.encode() if isinstance(body, str) else (body or b"")
    if status != 200:
        raise BadAnswer(f"Expected HTTP 200, got {status}: {data[:200]!r}")
    try:
        length = len(data) if header_length is None else int(header_length)
        answer = json.loads(data[:length])
    except ValueError:
        raise BadAnswer(f"The body is not JSON: {data[:200]!r}") from None
    binary = data[length:]
    if not isinstance(answer, dict) or not isinstance(answer.get("outputs"), list):
        raise BadAnswer(f"Expected an object with 'outputs', got {str(answer)[:200]}")
    if answer.get("model_name") != MODEL_NAME:
        raise BadAnswer(f"Expected model_name {MODEL_NAME!r}, got {answer.get('model_name')!r}.")
    tensors = {item.get("name"): item for item in answer["outputs"] if isinstance(item, dict)}
    if set(tensors) != set(outputs) or len(answer["outputs"]) != len(outputs):
        raise BadAnswer(f"Expected outputs {sorted(outputs)}, got {[item.get('name') for item in answer['outputs']]}.")
    shapes = {PROBABILITIES_OUTPUT: [count, NUM_CLASSES], DIGIT_OUTPUT: [count]}
    values, offset = {}, 0
    for item in answer["outputs"]:  # binary outputs follow the JSON in the order the outputs are listed
        name = item.get("name")
        size = (item.get("parameters") or {}).get("binary_data_size")
        raw = None
        if size is not None:
            raw, offset = binary[offset:offset + size], offset + size
        values[name] = _tensor(item, OUTPUT_DATATYPES[name], shapes[name], raw)
    if offset != len(binary):
        raise BadAnswer(f"The answer has {len(binary) - offset} bytes beyond its outputs' binary data.")
    digits = values.get(DIGIT_OUTPUT)
    probabilities = values.get(PROBABILITIES_OUTPUT)
    if digits is not None and (digits.dtype.kind not in "iu" or digits.min() < 0 or digits.max() >= NUM_CLASSES):
        raise BadAnswer(f"'digit' must hold integers 0..{NUM_CLASSES - 1}, got {digits.tolist()[:10]}.")
    if probabilities is not None:
        if probabilities.min() < 0 or probabilities.max() > 1:
            raise BadAnswer("'probabilities' must lie in [0, 1].")
        sums = probabilities.sum(axis=1)
        if np.abs(sums - 1.0).max() > PROBABILITY_SUM_TOLERANCE:
            raise BadAnswer(f"'probabilities' rows must sum to 1, one sums to {sums[np.abs(sums - 1).argmax()]:.6f}.")
        if digits is None:
            return probabilities.argmax(axis=1).tolist()
        chosen = probabilities[np.arange(count), digits]
        if np.any(chosen < probabilities.max(axis=1)):
            raise BadAnswer("A 'digit' is not the most probable digit in its 'probabilities' row.")
    return digits.tolist()


def _tensor(item: dict, datatype: str, shape: list[int], raw: bytes | None = None) -> np.ndarray:
    """An output tensor's data (JSON ``data``, or ``raw`` little-endian bytes) as an array of ``shape``;
    BadAnswer when its datatype, shape or data disagree."""
    name = item.get("name")
    if item.get("datatype") != datatype:
        raise BadAnswer(f"Output {name!r} must be {datatype}, got {item.get('datatype')!r}.")
    if item.get("shape") != shape:
        raise BadAnswer(f"Output {name!r} must have shape {shape}, got {item.get('shape')!r}.")
    dtype = np.dtype("<f4") if datatype == "FP32" else np.dtype("<i8")
    try:
        if raw is not None:
            if len(raw) % dtype.itemsize:
                raise ValueError
            data = np.frombuffer(raw, dtype)
        else:
            data = np.asarray(item.get("data"), dtype=np.float64 if datatype == "FP32" else np.int64)
    except (TypeError, ValueError):
        raise BadAnswer(f"Output {name!r} holds data that is not {datatype} numbers.") from None
    if data.size != math.prod(shape):
        raise BadAnswer(f"Output {name!r} has {data.size} values for shape {shape}.")
    return data.reshape(shape)


# --- a hand-written v2 endpoint: decode a request, encode an answer -------------------------------


@dataclass(frozen=True)
class V2Request:
    """A decoded inference request: MNIST-style digits or encoded files, and the outputs asked for."""

    id: str | None
    digits: np.ndarray | None  # uint8 (n, 28, 28)
    files: list[bytes] | None
    outputs: tuple[str, ...]
    binary_outputs: frozenset[str] = frozenset()  # the outputs asked for as binary tensor data

    @property
    def count(self) -> int:
        return len(self.digits) if self.digits is not None else len(self.files)


def decode_request(body: bytes, header_length: str | None) -> V2Request:
    """Decode a v2 request body: JSON, or JSON and binary tensors when ``header_length`` is given.

    BadRequest, with a sentence, when it breaks the contract.
    """
    try:
        json_length = len(body) if header_length is None else int(header_length)
    except ValueError:
        raise BadRequest(f"{HEADER_LENGTH} must be an integer, got {header_length!r}.") from None
    if not 0 < json_length <= len(body):
        raise BadRequest(f"{HEADER_LENGTH} {json_length} does not fit a body of {len(body)} bytes.")
    try:
        header = json.loads(body[:json_length])
    except ValueError as error:
        raise BadRequest(f"The request header is not JSON: {error}.") from None
    inputs = header.get("inputs") if isinstance(header, dict) else None
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise BadRequest(f"Send exactly one input, {DIGITS_INPUT!r} or {IMAGES_INPUT!r}.")
    tensor, raw = inputs[0], body[json_length:]
    outputs = _requested_outputs(header.get("outputs"))
    binary_outputs = _binary_outputs(header, outputs)
    shape, datatype, name = tensor.get("shape"), tensor.get("datatype"), tensor.get("name")
    binary_size = (tensor.get("parameters") or {}).get("binary_data_size")
    if binary_size is not None and binary_size != len(raw):
        raise BadRequest(f"binary_data_size is {binary_size}, but {len(raw)} bytes follow the header.")
    if name == DIGITS_INPUT:
        if datatype != "UINT8" or not _is_shape(shape, 3) or shape[1:] != [IMAGE_SIZE, IMAGE_SIZE] or shape[0] < 1:
            raise BadRequest(f"{DIGITS_INPUT!r} must be UINT8 [n, {IMAGE_SIZE}, {IMAGE_SIZE}], got {datatype} {shape}.")
        return V2Request(header.get("id"), _uint8(tensor, raw, binary_size, shape), None, outputs, binary_outputs)
    if name == IMAGES_INPUT:
        if datatype != "BYTES" or not _is_shape(shape, 1) or shape[0] < 1:
            raise BadRequest(f"{IMAGES_INPUT!r} must be BYTES [n], got {datatype} {shape}.")
        if binary_size is not None:
            return V2Request(header.get("id"), None, decode_bytes_elements(raw, shape[0]), outputs, binary_outputs)
        data = tensor.get("data")
        if not isinstance(data, list) or len(data) != shape[0] or not all(isinstance(item, str) for item in data):
            raise BadRequest(f"{IMAGES_INPUT!r} in JSON must be {shape[0]} strings.")
        return V2Request(header.get("id"), None, [item.encode("utf-8") for item in data], outputs, binary_outputs)
    raise BadRequest(f"Unknown input {name!r}; send {DIGITS_INPUT!r} or {IMAGES_INPUT!r}.")


def _is_shape(shape: Any, ndim: int) -> bool:
    return isinstance(shape, list) and len(shape) == ndim and all(isinstance(size, int) for size in shape)


def _uint8(tensor: dict, raw: bytes, binary_size: int | None, shape: list[int]) -> np.ndarray:
    if binary_size is not None:
        if len(raw) != math.prod(shape):
            raise BadRequest(f"{len(raw)} bytes of UINT8 data cannot have shape {shape}.")
        return np.frombuffer(raw, dtype=np.uint8).reshape(shape)
    try:
        values = np.asarray(tensor.get("data"), dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise BadRequest("UINT8 data must be integers.") from None
    if values.size != math.prod(shape) or (values.size and (values.min() < 0 or values.max() > 255)):
        raise BadRequest(f"UINT8 data must be {math.prod(shape)} integers 0..255.")
    return values.astype(np.uint8).reshape(shape)


def _requested_outputs(requested: Any) -> tuple[str, ...]:
    if requested is None:
        return OUTPUTS
    names = tuple(item.get("name") for item in requested if isinstance(item, dict)) if isinstance(requested, list) else ()
    unknown = [name for name in names if name not in OUTPUTS]
    if not names or unknown or len(names) != len(requested):
        raise BadRequest(f"Outputs must be named from {list(OUTPUTS)}, got {requested!r:.200}.")
    return names


def encode_answer(probabilities: np.ndarray, request: V2Request, model_version: str | None = None) -> bytes:
    """The JSON answer to ``request``: the outputs it asked for, flat, in the order it asked for them.
    Outputs asked for as binary are not in it: see ``encode_binary_answer``."""
    return encode_binary_answer(probabilities, request, model_version)[0]


def encode_binary_answer(probabilities: np.ndarray, request: V2Request,
                         model_version: str | None = None) -> tuple[bytes, bytes]:
    """The answer to ``request`` as (JSON header, binary outputs); the binary part is empty unless asked for."""
    values = {PROBABILITIES_OUTPUT: probabilities.astype("<f4"), DIGIT_OUTPUT: probabilities.argmax(axis=1).astype("<i8")}
    datatypes = {PROBABILITIES_OUTPUT: "FP32", DIGIT_OUTPUT: "INT64"}
    tensors, chunks = [], []
    for name in request.outputs:
        tensor: dict[str, Any] = {"name": name, "datatype": datatypes[name], "shape": list(values[name].shape)}
        if name in request.binary_outputs:
            chunks.append(values[name].tobytes())
            tensor["parameters"] = {"binary_data_size": len(chunks[-1])}
        else:
            tensor["data"] = values[name].ravel().tolist()
        tensors.append(tensor)
    answer: dict[str, Any] = {"model_name": MODEL_NAME, "outputs": tensors}
    if model_version is not None:
        answer["model_version"] = model_version
    if request.id is not None:
        answer["id"] = request.id
    return json.dumps(answer, separators=(",", ":")).encode(), b"".join(chunks)


def answer_response_parts(probabilities: np.ndarray, request: V2Request,
                          model_version: str | None = None) -> tuple[bytes, dict[str, str]]:
    """The whole answer body and its headers: JSON alone, or the JSON header, the binary outputs, and the
    ``Inference-Header-Content-Length`` that splits them."""
    header, binary = encode_binary_answer(probabilities, request, model_version)
    if not binary:
        return header, {"Content-Type": JSON_TYPE}
    return header + binary, {"Content-Type": BINARY_TYPE, HEADER_LENGTH: str(len(header))}


def _binary_outputs(header: dict, outputs: tuple[str, ...]) -> frozenset[str]:
    default = bool((header.get("parameters") or {}).get("binary_data_output", False))
    asked = {item.get("name"): bool((item.get("parameters") or {}).get("binary_data", default))
             for item in header.get("outputs") or [] if isinstance(item, dict)}
    return frozenset(name for name in outputs if asked.get(name, default))


def error_body(message: str) -> bytes:
    """The protocol's error body: ``{"error": "..."}``."""
    return json.dumps({"error": message}).encode()
