"""The v2 wire format the benchmark speaks to every server: request bodies, the answer check, and decoding."""

from __future__ import annotations

import json

import numpy as np
import pytest

from loadtests import v2wire
from loadtests.payloads import encode_digit


@pytest.fixture(scope="module")
def digits(subset_data):
    return subset_data.x_test[:8], subset_data.y_test[:8]


def probabilities_for(labels) -> np.ndarray:
    """Confident made-up probabilities that pick ``labels``: (n, 10) float32 rows summing to 1."""
    rows = np.full((len(labels), 10), 0.01, np.float32)
    rows[np.arange(len(labels)), labels] = 0.91
    return rows


def answer(labels, outputs=v2wire.OUTPUTS, request_id=None) -> str:
    request = v2wire.V2Request(request_id, np.zeros((len(labels), 28, 28), np.uint8), None, tuple(outputs))
    return v2wire.encode_answer(probabilities_for(labels), request, model_version="v1").decode()


def test_a_json_digit_request_holds_the_flat_pixels_and_its_labels(digits):
    images, labels = digits
    body = v2wire.digits_request(images[:1], labels[:1])
    request = json.loads(body.data)
    tensor = request["inputs"][0]
    assert (tensor["name"], tensor["datatype"], tensor["shape"]) == ("digits", "UINT8", [1, 28, 28])
    assert tensor["data"] == images[0].ravel().tolist()
    assert [output["name"] for output in request["outputs"]] == ["probabilities", "digit"]
    assert body.headers == {"Content-Type": "application/json"} and body.labels == (int(labels[0]),)


def test_a_binary_request_puts_the_raw_tensor_after_a_json_header_of_the_stated_length(digits):
    images, labels = digits
    body = v2wire.digits_request(images, labels, binary=True)
    length = int(body.headers["Inference-Header-Content-Length"])
    header = json.loads(body.data[:length])
    assert header["inputs"][0]["parameters"] == {"binary_data_size": 8 * 28 * 28}
    assert "data" not in header["inputs"][0]
    assert body.data[length:] == images.tobytes()
    assert body.headers["Content-Type"] == "application/octet-stream"


@pytest.mark.parametrize("binary", [False, True])
def test_a_hand_written_endpoint_decodes_the_digits_the_generator_sends(digits, binary):
    images, labels = digits
    body = v2wire.digits_request(images, labels, binary=binary, outputs=("digit",))
    decoded = v2wire.decode_request(body.data, body.headers.get("Inference-Header-Content-Length"))
    assert np.array_equal(decoded.digits, images) and decoded.digits.dtype == np.uint8
    assert decoded.outputs == ("digit",) and decoded.count == 8


def test_image_files_travel_as_length_prefixed_bytes_and_come_back_whole(digits):
    images, labels = digits
    files = [encode_digit(image, "png") for image in images[:3]]
    body = v2wire.images_request(files, labels[:3])
    decoded = v2wire.decode_request(body.data, body.headers["Inference-Header-Content-Length"])
    assert decoded.files == files and decoded.digits is None
    raw = v2wire.encode_bytes_elements([b"ab", b"", b"c"])
    assert raw == b"\x02\x00\x00\x00ab\x00\x00\x00\x00\x01\x00\x00\x00c"
    assert v2wire.decode_bytes_elements(raw, 3) == [b"ab", b"", b"c"]


@pytest.mark.parametrize("raw, count, message", [
    (b"\x05\x00\x00\x00ab", 1, "claims 5 bytes"),
    (b"\x01\x00\x00\x00a", 2, "ends after 1 of 2"),
    (b"\x01\x00\x00\x00ab", 1, "1 bytes after"),
])
def test_damaged_bytes_data_is_a_bad_request(raw, count, message):
    with pytest.raises(v2wire.BadRequest, match=message):
        v2wire.decode_bytes_elements(raw, count)


def _json(tensor: dict, outputs=None) -> bytes:
    request = {"inputs": [tensor]}
    if outputs is not None:
        request["outputs"] = outputs
    return json.dumps(request).encode()


@pytest.mark.parametrize("body, header_length, message", [
    (_json({"name": "digits", "datatype": "FP32", "shape": [1, 28, 28], "data": [0] * 784}), None, "must be UINT8"),
    (_json({"name": "digits", "datatype": "UINT8", "shape": [1, 28, 27], "data": [0] * 756}), None, "must be UINT8"),
    (_json({"name": "digits", "datatype": "UINT8", "shape": [1, 28, 28], "data": [256] * 784}), None, "0..255"),
    (_json({"name": "digits", "datatype": "UINT8", "shape": [1, 28, 28], "data": [0] * 783}), None, "784 integers"),
    (_json({"name": "pixels", "datatype": "UINT8", "shape": [1, 28, 28], "data": [0] * 784}), None, "Unknown input"),
    (_json({"name": "digits", "datatype": "UINT8", "shape": [1, 28, 28], "data": [0] * 784}, [{"name": "logits"}]),
     None, "Outputs must be named"),
    (b'{"inputs": []}', None, "exactly one input"),
    (b"not json", None, "not JSON"),
    (b'{"inputs": []}', "999", "does not fit"),
])
def test_requests_that_break_the_contract_are_refused_with_a_sentence(body, header_length, message):
    with pytest.raises(v2wire.BadRequest, match=message):
        v2wire.decode_request(body, header_length)


def test_a_binary_size_that_disagrees_with_the_bytes_sent_is_refused(digits):
    images, labels = digits
    body = v2wire.digits_request(images[:2], labels[:2], binary=True)
    with pytest.raises(v2wire.BadRequest, match="binary_data_size"):
        v2wire.decode_request(body.data[:-1], body.headers["Inference-Header-Content-Length"])


def test_the_check_accepts_a_right_answer_and_returns_its_digits():
    assert v2wire.check_answer(200, answer([7, 2, 1]), 3) == [7, 2, 1]
    assert v2wire.check_answer(200, answer([4], outputs=("digit",)), 1, outputs=("digit",)) == [4]


def test_an_answer_holds_only_the_requested_outputs_in_order_and_echoes_the_id():
    body = json.loads(answer([3, 3], outputs=("digit", "probabilities"), request_id="42"))
    assert [tensor["name"] for tensor in body["outputs"]] == ["digit", "probabilities"]
    assert body["id"] == "42" and body["model_name"] == "mnist_cnn" and body["model_version"] == "v1"
    assert body["outputs"][1]["shape"] == [2, 10] and body["outputs"][0]["datatype"] == "INT64"


def _tamper(text: str, change) -> str:
    body = json.loads(text)
    change(body)
    return json.dumps(body)


def _output(body: dict, name: str) -> dict:
    return next(tensor for tensor in body["outputs"] if tensor["name"] == name)


@pytest.mark.parametrize("change, message", [
    (lambda body: body.update(model_name="other"), "model_name"),
    (lambda body: body["outputs"].pop(), "Expected outputs"),
    (lambda body: _output(body, "digit").update(shape=[2, 1]), "shape"),
    (lambda body: _output(body, "digit").update(datatype="INT32"), "INT64"),
    (lambda body: _output(body, "digit").update(data=[7]), "1 values"),
    (lambda body: _output(body, "digit").update(data=[7, 11]), "0..9"),
    (lambda body: _output(body, "digit").update(data=[7, 3]), "most probable"),
    (lambda body: _output(body, "probabilities").update(data=[0.5] * 20), "sum to 1"),
])
def test_the_check_catches_a_200_whose_body_is_wrong(change, message):
    with pytest.raises(v2wire.BadAnswer, match=message):
        v2wire.check_answer(200, _tamper(answer([7, 2]), change), 2)


def test_the_check_refuses_an_error_status_and_a_body_that_is_not_json():
    with pytest.raises(v2wire.BadAnswer, match="HTTP 200, got 500"):
        v2wire.check_answer(500, '{"error": "boom"}', 1)
    with pytest.raises(v2wire.BadAnswer, match="not JSON"):
        v2wire.check_answer(200, "<html>", 1)


def test_nested_output_data_is_accepted_as_long_as_the_shape_holds():
    body = _tamper(answer([5]), lambda body: _output(body, "probabilities").update(
        data=[_output(body, "probabilities")["data"]]))
    assert v2wire.check_answer(200, body, 1) == [5]
