"""The Open Inference Protocol front door, in process: every route, JSON and binary, and every malformed
request a client could send. The real clients (tritonclient, KServe's, perf_analyzer) are driven against
a real server in tests/e2e/test_v2_clients.py."""

from __future__ import annotations

import base64
import gzip
import io
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from tests.uploads import encode

pytestmark = pytest.mark.slow

INFER = "/v2/models/mnist_cnn/infer"
HEADER = "Inference-Header-Content-Length"


@pytest.fixture
def client(service_client):
    return service_client


def digits_input(digits: np.ndarray) -> dict:
    return {"name": "digits", "datatype": "UINT8", "shape": list(digits.shape), "data": digits.ravel().tolist()}


def binary_request(header: dict, *chunks: bytes) -> tuple[bytes, dict]:
    head = json.dumps(header).encode()
    return head + b"".join(chunks), {HEADER: str(len(head)), "Content-Type": "application/octet-stream"}


def bytes_tensor(files: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(f)) + f for f in files)


def split_answer(response) -> tuple[dict, bytes]:
    length = int(response.headers.get(HEADER, len(response.content)))
    return json.loads(response.content[:length]), response.content[length:]


def assert_v2_error(response, status: int, reason: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body["error"], str) and len(body["error"]) > 15
    if reason:
        assert body["reason"] == reason, body
    return body


def test_health_and_server_metadata(client):
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    metadata = client.get("/v2").json()
    assert metadata["name"] == "digitserve" and metadata["version"]
    assert "binary_tensor_data" in metadata["extensions"]


def test_model_metadata_names_the_served_version(client, trained):
    name, version = trained.tag.split(":")
    metadata = client.get(f"/v2/models/{name}").json()
    assert metadata["versions"] == [version]
    assert {t["name"]: (t["datatype"], t["shape"]) for t in metadata["inputs"]} == {
        "digits": ("UINT8", [-1, 28, 28]), "images": ("BYTES", [-1])}
    assert {t["name"]: (t["datatype"], t["shape"]) for t in metadata["outputs"]} == {
        "probabilities": ("FP32", [-1, 10]), "digit": ("INT64", [-1])}
    assert client.get(f"/v2/models/{name}/versions/{version}").json() == metadata
    assert client.get(f"/v2/models/{name}/ready").json() == {"name": name, "ready": True}
    assert client.get(f"/v2/models/{name}/versions/{version}/ready").status_code == 200
    config = client.get(f"/v2/models/{name}/config").json()
    assert config["max_batch_size"] == 0 and {i["name"] for i in config["input"]} == {"digits", "images"}


@pytest.mark.parametrize("path", ["/v2/models/resnet", "/v2/models/mnist_cnn/versions/nope", "/v2/models/resnet/ready",
                                  "/v2/models/mnist_cnn/versions/nope/ready", "/v2/models/mnist_cnn/versions/1/config"])
def test_a_model_or_version_not_served_is_a_404(client, path):
    assert_v2_error(client.get(path), 404, "not_found")


def test_unknown_version_infer_is_a_404(client, subset_data):
    body = {"inputs": [digits_input(subset_data.x_test[:1])]}
    assert_v2_error(client.post("/v2/models/mnist_cnn/versions/nope/infer", json=body), 404, "not_found")
    assert_v2_error(client.post("/v2/models/other/infer", json=body), 404, "not_found")


def test_json_digits_match_infer_and_echo_the_id(client, subset_data, trained):
    digits = subset_data.x_test[:12]
    response = client.post(INFER, json={"id": "req-7", "inputs": [digits_input(digits)]})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["id"] == "req-7"
    assert f"{answer['model_name']}:{answer['model_version']}" == trained.tag
    outputs = {o["name"]: o for o in answer["outputs"]}
    probabilities = np.array(outputs["probabilities"]["data"], np.float32).reshape(outputs["probabilities"]["shape"])
    rest = np.array(client.post("/infer", json={"digits": digits.tolist()}).json())
    np.testing.assert_allclose(probabilities, rest, atol=1e-5)
    assert outputs["digit"]["data"] == rest.argmax(axis=1).tolist()
    assert outputs["digit"]["datatype"] == "INT64" and outputs["probabilities"]["datatype"] == "FP32"


def test_nested_json_data_is_taken_too(client, subset_data):
    digits = subset_data.x_test[:2]
    tensor = {"name": "digits", "datatype": "UINT8", "shape": [2, 28, 28], "data": digits.tolist()}
    assert client.post(INFER, json={"inputs": [tensor]}).status_code == 200


def test_binary_digits_in_and_binary_outputs_out(client, subset_data):
    digits = np.ascontiguousarray(subset_data.x_test[:16])
    header = {"inputs": [{"name": "digits", "datatype": "UINT8", "shape": [16, 28, 28],
                          "parameters": {"binary_data_size": digits.nbytes}}],
              "outputs": [{"name": "digit", "parameters": {"binary_data": True}},
                          {"name": "probabilities", "parameters": {"binary_data": True}}]}
    body, headers = binary_request(header, digits.tobytes())
    response = client.post(INFER, content=body, headers=headers)
    assert response.status_code == 200, response.text
    answer, binary = split_answer(response)
    sizes = [o["parameters"]["binary_data_size"] for o in answer["outputs"]]
    assert [o["name"] for o in answer["outputs"]] == ["digit", "probabilities"] and sizes == [16 * 8, 16 * 10 * 4]
    predicted = np.frombuffer(binary[:sizes[0]], "<i8")
    probabilities = np.frombuffer(binary[sizes[0]:], "<f4").reshape(16, 10)
    assert (predicted == probabilities.argmax(axis=1)).all()
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-3)


def test_binary_data_output_parameter_makes_every_output_binary(client, subset_data):
    body = {"parameters": {"binary_data_output": True}, "inputs": [digits_input(subset_data.x_test[:3])]}
    answer, binary = split_answer(client.post(INFER, json=body))
    assert len(binary) == 3 * 8 + 3 * 40 and all("data" not in o for o in answer["outputs"])


def test_only_the_requested_outputs_come_back(client, subset_data):
    body = {"inputs": [digits_input(subset_data.x_test[:3])], "outputs": [{"name": "digit"}]}
    answer = client.post(INFER, json=body).json()
    assert [o["name"] for o in answer["outputs"]] == ["digit"]


def persons_photos(subset_data, count: int) -> tuple[list[bytes], list[int]]:
    files = []
    for image in subset_data.x_test[:count]:
        page = np.full((90, 70), 240, np.uint8)
        page[10:66, 8:64] = np.minimum(page[10:66, 8:64], 255 - np.asarray(Image.fromarray(image).resize((56, 56))))
        files.append(encode(page, "JPEG", quality=85))
    return files, subset_data.y_test[:count].tolist()


def test_image_files_as_bytes_match_classify(client, subset_data):
    files, _ = persons_photos(subset_data, 8)
    classify = [client.post("/classify", files={"image": ("d.jpg", f)}).json()["digit"] for f in files]
    header = {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [8],
                          "parameters": {"binary_data_size": len(bytes_tensor(files))}}],
              "outputs": [{"name": "digit"}]}
    body, headers = binary_request(header, bytes_tensor(files))
    binary_answer = client.post(INFER, content=body, headers=headers).json()
    json_answer = client.post(INFER, json={"inputs": [{"name": "images", "datatype": "BYTES", "shape": [8],
                                                        "data": [base64.b64encode(f).decode() for f in files]}],
                                            "outputs": [{"name": "digit"}]}).json()
    assert binary_answer["outputs"][0]["data"] == classify == json_answer["outputs"][0]["data"]


def test_base64_with_line_breaks_is_taken(client, subset_data):
    """The ``base64`` tool breaks its output every 76 characters unless told not to: a person pastes that."""
    files, _ = persons_photos(subset_data, 2)
    wrapped = [base64.encodebytes(f).decode() for f in files]  # MIME style: a newline every 76 characters
    assert all("\n" in text.strip() for text in wrapped)
    response = client.post(INFER, json={"inputs": [{"name": "images", "datatype": "BYTES", "shape": [2], "data": wrapped}],
                                        "outputs": [{"name": "digit"}]})
    assert response.status_code == 200, response.text
    plain = client.post(INFER, json={"inputs": [{"name": "images", "datatype": "BYTES", "shape": [2],
                                                 "data": [base64.b64encode(f).decode() for f in files]}],
                                     "outputs": [{"name": "digit"}]})
    assert response.json()["outputs"] == plain.json()["outputs"]


def test_gzip_and_deflate_bodies(client, subset_data):
    payload = json.dumps({"inputs": [digits_input(subset_data.x_test[:2])]}).encode()
    for encoding, data in (("gzip", gzip.compress(payload)), ("deflate", zlib.compress(payload))):
        response = client.post(INFER, content=data, headers={"Content-Encoding": encoding, "Content-Type": "application/json"})
        assert response.status_code == 200, response.text


def test_another_content_coding_is_a_415_that_names_the_ones_taken(client, subset_data):
    payload = json.dumps({"inputs": [digits_input(subset_data.x_test[:1])]}).encode()
    for encoding in ("br", "zstd", "gzip, gzip"):
        response = client.post(INFER, content=payload, headers={"Content-Encoding": encoding, "Content-Type": "application/json"})
        assert_v2_error(response, 415, "unsupported_media_type")
        assert response.headers["Accept-Encoding"] == "gzip, deflate"
    response = client.post(INFER, content=payload, headers={"Content-Encoding": "identity", "Content-Type": "application/json"})
    assert response.status_code == 200, response.text


def test_an_inflation_bomb_is_a_413(client):
    bomb = gzip.compress(b"{" + b" " * 20_000_000 + b"}")
    assert len(bomb) < 100_000
    response = client.post(INFER, content=bomb, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert_v2_error(response, 413, "too_large")


DIGIT = [[0] * 28] * 28


@pytest.mark.parametrize("body,reason", [
    ({"inputs": []}, "invalid_input"),
    ({"inputs": [{"name": "digits", "datatype": "UINT8", "shape": [1, 28, 28], "data": [0] * 784},
                 {"name": "images", "datatype": "BYTES", "shape": [1], "data": ["aGk="]}]}, "invalid_input"),
    ({"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, 28, 28], "data": [0] * 784}]}, "invalid_input"),
    ({"inputs": [{"name": "digits", "datatype": "FP32", "shape": [1, 28, 28], "data": [0.0] * 784}]}, "invalid_input"),
    ({"inputs": [{"name": "digits", "datatype": "UINT8", "shape": [28, 28], "data": [0] * 784}]}, "invalid_input"),
    ({"inputs": [{"name": "digits", "datatype": "UINT8", "shape": [1, 28, 28], "data": [0] * 783}]}, "invalid_input"),
    ({"inputs": [{"name": "digits", "datatype": "UINT8", "shape": [1, 28, 28], "data": [256] * 784}]}, "invalid_input"),
    ({"inputs": [{"name": "digits", "datatype": "UINT8", "shape": [1, 28, 28], "data": [0.5] * 784}]}, "invalid_input"),
    ({"inputs": [{"name": "digits", "datatype": "UINT8", "shape": [1, 28, 28], "data": [True] + [0] * 783}]}, "invalid_input"),
    ({"inputs": [{"name": "digits", "datatype": "UINT8", "shape": [1, 28, 28], "data": ["0"] * 784}]}, "invalid_input"),
    ({"inputs": [{"name": "digits", "datatype": "UINT8", "shape": [1, 28, 28], "data": [[0] * 28] * 27 + [[0] * 27]}]},
     "invalid_input"),
    ({"inputs": [{"name": "digits", "datatype": "UINT8", "shape": [1, 28, 28], "data": [10**30] * 784}]}, "invalid_input"),
    ({"inputs": [{"name": "digits", "datatype": "UINT8", "shape": [1, 28, 28]}]}, "invalid_input"),
    ({"inputs": [{"name": "digits", "datatype": "UINT8", "shape": [300, 28, 28], "data": [0] * 784 * 300}]},
     "batch_too_large"),
    ({"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": [7]}]}, "invalid_input"),
    ({"inputs": [{"name": "images", "datatype": "BYTES", "shape": [2], "data": ["aGk="]}]}, "invalid_input"),
    ({"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": ["not base64, not an image"]}]},
     "not_an_image"),
    ({"inputs": [{"name": "digits", "datatype": "UINT8", "shape": [1, 28, 28], "data": [0] * 784}],
      "outputs": [{"name": "logits"}]}, "invalid_input"),
    ({"inputs": [{"name": "digits", "datatype": "UINT8", "shape": [1, 28, 28], "data": [0] * 784}],
      "outputs": [{"name": "digit"}, {"name": "digit"}]}, "invalid_input"),
    # A flag is a JSON boolean: "false" would be truthy. A shape is integers: not true, "1" or 1.0.
    ({"inputs": [{"name": "digits", "datatype": "UINT8", "shape": [1, 28, 28], "data": [0] * 784}],
      "outputs": [{"name": "digit", "parameters": {"binary_data": "false"}}]}, "invalid_input"),
    ({"inputs": [{"name": "digits", "datatype": "UINT8", "shape": [1, 28, 28], "data": [0] * 784}],
      "parameters": {"binary_data_output": 1}}, "invalid_input"),
    ({"inputs": [{"name": "digits", "datatype": "UINT8", "shape": [True, 28, 28], "data": [0] * 784}]}, "invalid_input"),
    ({"inputs": [{"name": "digits", "datatype": "UINT8", "shape": ["1", 28, 28], "data": [0] * 784}]}, "invalid_input"),
    ({"inputs": [{"name": "digits", "datatype": "UINT8", "shape": [1.0, 28, 28], "data": [0] * 784}]}, "invalid_input"),
], ids=lambda value: json.dumps(value)[:60] if isinstance(value, dict) else value)
def test_malformed_inference_requests_are_4xx(client, body, reason):
    status = 413 if reason == "batch_too_large" else 400
    assert_v2_error(client.post(INFER, json=body), status, reason)


def test_a_blank_digit_is_classified_but_a_blank_image_file_has_no_ink(client):
    """UINT8 digits are already MNIST-style: the model answers whatever they hold. An image file goes through
    the upload pipeline, which refuses a page with no digit."""
    assert client.post(INFER, json={"inputs": [digits_input(np.zeros((1, 28, 28), np.uint8))]}).status_code == 200
    blank = base64.b64encode(encode(np.full((50, 50), 255, np.uint8), "PNG")).decode()
    response = client.post(INFER, json={"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": [blank]}]})
    assert_v2_error(response, 422, "no_ink")


@pytest.mark.parametrize("header_length,chunks,reason", [
    ("abc", [b""], "invalid_input"),
    ("999999", [b""], "invalid_input"),
    (None, [b"\x00" * 10], "invalid_input"),  # binary_data_size 784 but 10 bytes follow
    (None, [b"\x00" * 784, b"extra"], "invalid_input"),
])
def test_malformed_binary_requests_are_400(client, header_length, chunks, reason):
    header = {"inputs": [{"name": "digits", "datatype": "UINT8", "shape": [1, 28, 28],
                          "parameters": {"binary_data_size": 784}}]}
    body, headers = binary_request(header, *chunks)
    if header_length is not None:
        headers[HEADER] = header_length
    assert_v2_error(client.post(INFER, content=body, headers=headers), 400, reason)


def test_a_bytes_element_longer_than_the_body_is_400_and_over_the_file_limit_413(client):
    for element, status in ((struct.pack("<I", 1000) + b"x" * 10, 400), (struct.pack("<I", 2**31), 413)):
        header = {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1],
                              "parameters": {"binary_data_size": len(element)}}]}
        body, headers = binary_request(header, element)
        assert_v2_error(client.post(INFER, content=body, headers=headers), status)


def test_v2_requests_are_counted_with_their_protocol(client, subset_data):
    client.post(INFER, json={"inputs": [digits_input(subset_data.x_test[:1])]})
    client.post(INFER, json={"inputs": []})
    text = client.get("/metrics").text
    assert 'protocol="v2"' in text
    assert 'digitserve_http_requests_total{endpoint="/v2/models/{name}/infer",method="POST",status="200"}' in text


def test_both_readiness_routes_turn_503_while_the_worker_drains(client):
    import bentoml

    engine = bentoml.get_current_service().engine
    engine.ready = False  # what the worker's SIGTERM handler does first (service/lifecycle.py)
    try:
        v2 = client.get("/v2/health/ready")
        assert v2.status_code == 503 and v2.json()["ready"] is False and v2.json()["reason"] == "not_ready"
        assert client.get("/v2/models/mnist_cnn/ready").status_code == 503
        readyz = client.get("/readyz")
        assert readyz.status_code == 503 and readyz.json()["reason"] == "not_ready"
        assert client.get("/v2/health/live").status_code == 200  # alive all the same
    finally:
        engine.ready = True
    assert client.get("/readyz").status_code == 200
