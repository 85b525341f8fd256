"""The Open Inference Protocol, proved with clients no one here wrote, against a real ``bentoml serve``:

- NVIDIA's ``tritonclient[http]`` (PyPI, in the dev extra): health, metadata, config and inference with
  UINT8 and BYTES inputs, in JSON and in binary, outputs in both;
- KServe's own Python client (``kserve`` 0.21, in ``.venv-kserve``: its pins of pandas, protobuf and psutil
  conflict with TensorFlow's environment, so ``make v2-clients`` gives it one of its own), run as a script;
- Triton's ``perf_analyzer`` (the binary in the tritonclient 2.50.0 wheel for x86-64 Linux; ``make
  v2-clients`` puts it in ``.venv/opt/perf_analyzer``). It reads ``/v2``, the model metadata and
  ``/v2/models/{name}/config``, then drives ``/infer`` with the binary extension; it is given real MNIST
  digits with ``--input-data``. On other machines it does not exist, and the test says so and skips.

In every case the digits must equal what the project's own routes answer for the same data.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.server import start_server
from tests.uploads import encode

pytestmark = [pytest.mark.slow, pytest.mark.server]

REPO = Path(__file__).resolve().parents[2]
KSERVE_PYTHON = REPO / ".venv-kserve" / "bin" / "python"
MODEL = "mnist_cnn"


@pytest.fixture(scope="module")
def server(trained):
    with start_server(timeout=90) as handle:
        yield handle


@pytest.fixture(scope="module")
def cases(subset_data):
    """Twenty MNIST test digits, two of each, as arrays and as a person's JPEG photo of each."""
    indices = np.concatenate([np.flatnonzero(subset_data.y_test == digit)[:2] for digit in range(10)])
    digits = subset_data.x_test[indices]
    files = []
    for digit in digits:
        page = np.full((120, 100), 235, np.uint8)
        big = 255 - np.repeat(np.repeat(digit, 3, axis=0), 3, axis=1)  # (84, 84), dark ink
        page[20:104, 10:94] = np.minimum(page[20:104, 10:94], big)
        files.append(encode(page, "JPEG", quality=85))
    return digits, files


@pytest.fixture(scope="module")
def expected(server, cases):
    """What the project's own routes answer: /infer for the digits, /classify for the files."""
    digits, files = cases
    with httpx.Client(base_url=server.url, timeout=60) as client:
        by_infer = np.array(client.post("/infer", json={"digits": digits.tolist()}).json()).argmax(axis=1).tolist()
        by_classify = [client.post("/classify", files={"image": ("d.jpg", f)}).json()["digit"] for f in files]
    return by_infer, by_classify


def test_tritonclient(server, cases, expected, trained):
    import tritonclient.http as triton

    digits, files = cases
    by_infer, by_classify = expected
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    metadata = client.get_model_metadata(MODEL)
    assert f"{MODEL}:{metadata['versions'][0]}" == trained.tag
    assert client.get_model_config(MODEL)["name"] == MODEL

    for binary in (False, True):
        tensor = triton.InferInput("digits", list(digits.shape), "UINT8")
        tensor.set_data_from_numpy(digits, binary_data=binary)
        outputs = [triton.InferRequestedOutput(name, binary_data=binary) for name in ("digit", "probabilities")]
        result = client.infer(MODEL, [tensor], outputs=outputs, request_id=f"t-{binary}")
        assert result.as_numpy("digit").tolist() == by_infer
        assert result.as_numpy("probabilities").shape == (len(digits), 10)
        assert result.get_response()["id"] == f"t-{binary}"

    tensor = triton.InferInput("images", [len(files)], "BYTES")
    tensor.set_data_from_numpy(np.array(files, dtype=np.object_), binary_data=True)
    assert client.infer(MODEL, [tensor]).as_numpy("digit").tolist() == by_classify  # outputs binary by default
    # JSON cannot carry raw bytes: in JSON each file is its base64 text.
    tensor = triton.InferInput("images", [len(files)], "BYTES")
    tensor.set_data_from_numpy(np.array([base64.b64encode(f) for f in files], dtype=np.object_), binary_data=False)
    result = client.infer(MODEL, [tensor], outputs=[triton.InferRequestedOutput("digit", binary_data=False)])
    assert result.as_numpy("digit").tolist() == by_classify

    with pytest.raises(triton.InferenceServerException, match="not served"):
        client.get_model_metadata(MODEL, model_version="no-such-version")
    client.close()


def test_kserve_client(server, cases, expected, tmp_path, trained):
    if not KSERVE_PYTHON.exists():
        pytest.fail(f"KServe's client is not installed at {KSERVE_PYTHON}: run `make v2-clients` (make test does).")
    digits, files = cases
    by_infer, by_classify = expected
    case_file = tmp_path / "cases.json"
    case_file.write_text(json.dumps({"digits": digits.tolist(), "files": [base64.b64encode(f).decode() for f in files]}))
    run = subprocess.run([str(KSERVE_PYTHON), str(Path(__file__).with_name("clients") / "kserve_check.py"),
                          server.url, str(case_file)], capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["live"] is True and result["ready"] is True and result["model_ready"] is True
    for mode in ("uint8_json", "uint8_binary"):
        assert result[mode]["digit"] == by_infer, mode
        assert result[mode]["probabilities_shape"] == [len(digits), 10]
        assert result[mode]["id"] == f"uint8-{mode == 'uint8_binary'}"
        assert result[mode]["model_name"] == MODEL  # (KServe's InferResponse does not keep model_version)
    assert result["bytes_binary"]["digit"] == by_classify


def test_perf_analyzer(server):
    from loadtests import perf_analyzer

    if problem := perf_analyzer.available():
        if "no build for" in problem:
            pytest.skip(problem)
        pytest.fail(problem + " (make test does)")
    with httpx.Client(base_url=server.url) as client:
        before = _v2_infer_answers(client)
    figures = perf_analyzer.run(server.url, concurrency=2, requests=100, timeout=300)
    assert figures["rps"] > 0 and 0 < figures["p50_ms"] <= figures["p99_ms"]
    with httpx.Client(base_url=server.url) as client:
        after = _v2_infer_answers(client)
    assert after.get("200", 0) - before.get("200", 0) >= 100  # it really drove the v2 endpoint
    assert {status for status, count in after.items() if count} == {"200"}, f"perf_analyzer's requests got {after}"


def _v2_infer_answers(client: httpx.Client) -> dict[str, float]:
    """Answers of /v2/models/{name}/infer by status, from the service's own metrics."""
    counts: dict[str, float] = {}
    for line in client.get("/metrics").text.splitlines():
        if line.startswith('digitserve_http_requests_total{endpoint="/v2/models/{name}/infer"'):
            status = line.split('status="', 1)[1].split('"', 1)[0]
            counts[status] = counts.get(status, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts
