"""The peer harness end to end, in the service's .venv: a short v2 run against a real v2 server, and each real
peer when ``make bench-peers`` has created its environment (skipped otherwise; ``make test`` never does).

The v2 server is tests/loadtests/v2_server.py: the project's model behind the v2 paths, nothing else.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request

import pytest

from loadtests import bench
from loadtests.peers import compare, launch
from loadtests.servers import ServerProcess, free_port
from loadtests.v2wire import INFER_PATH, READY_PATH, check_answer, digits_request, images_request

pytestmark = [pytest.mark.slow, pytest.mark.server]

V2_SERVER = "tests.loadtests.v2_server:app"


def v2_command(port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", V2_SERVER, "--port", str(port), "--log-level", "warning"]


def start_v2_server(env: dict | None = None) -> ServerProcess:
    """The stand-in v2 server, once its readiness path answers 200."""
    port = free_port()
    server = ServerProcess(v2_command(port), port, env=env, ready_path=READY_PATH, name="v2-server")
    try:
        server.wait_ready(120)
    except BaseException:
        server.stop()
        raise
    return server
SHORT = bench.BenchConfig(seconds=2, concurrency=(4,), batch_size=32, batch_users=1, image_users=2,
                          warmup_requests=3)


def test_the_v2_runs_load_a_v2_server_and_record_every_figure(trained):
    result = bench.measure_server("v2", start_v2_server, SHORT, classify=False)

    assert set(result) >= {"v2_c4", "v2_bulk", "v2_png", "rss_mb", "rss_total_mb", "cores_at_rest", "ready_s"}
    assert "c4" not in result  # no /classify runs for a v2-only server
    for key in ("v2_c4", "v2_bulk", "v2_png"):
        run = result[key]
        assert run["requests"] > 0 and run["errors"] == 0, (key, run)
        assert run["wrong_digits"] <= 0.2 * run["requests"] * (32 if key == "v2_bulk" else 1), key
        assert run["cpu_s_per_1000_images"] > 0 and run["p99_ms"] >= run["p50_ms"] > 0
    bulk = result["v2_bulk"]
    assert bulk["encoding"] == "binary" and bulk["images_per_s"] == pytest.approx(
        bulk["requests"] * 32 / bulk["seconds"], rel=0.01)
    assert result["rss_total_mb"] >= result["rss_mb"] > 100  # a process that holds TensorFlow and the model


def test_the_generator_counts_a_200_with_a_wrong_body_as_a_failure(trained):
    server = start_v2_server(env={"V2_TEST_SERVER_FAULT": "digit_shape"})
    try:
        figures = bench.run_locust(server.url, 2, SHORT, locustfile=compare.V2USERS, options=["V2DigitUser"])
    finally:
        server.stop()
    assert figures["requests"] > 0 and figures["errors"] == figures["requests"]


def test_bulk_json_is_sent_to_a_server_without_the_binary_extension(trained):
    server = start_v2_server()
    sampler = bench.TreeSampler(server.pid)
    try:
        result = compare.measure_v2(server.url, sampler, SHORT, binary=False, image_files=False)
    finally:
        sampler.stop()
        server.stop()
    assert result["v2_bulk"]["encoding"] == "JSON" and result["v2_bulk"]["errors"] == 0
    assert "v2_png" not in result


def test_a_peer_server_removes_its_scratch_folder_when_stopped(trained, tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "settings.json").write_text("{}")
    port = free_port()
    server = launch.PeerServer(v2_command(port), port, ready_path=READY_PATH, name="stand-in", scratch=scratch)
    try:
        server.wait_ready(120)
        assert compare.speaks_v2(server.url)
    finally:
        server.stop()
    assert not scratch.exists() and server.process.poll() is not None


def _infer(url: str, body) -> tuple[int, str]:
    request = urllib.request.Request(url + INFER_PATH, data=body.data, headers=body.headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.mark.parametrize("name", list(launch.PEERS))
def test_each_installed_peer_answers_the_v2_contract_and_stops_without_leftovers(trained, subset_data, name):
    peer = launch.PEERS[name]
    try:
        peer.environment.check()
    except launch.PeerNotInstalled as error:
        pytest.skip(str(error))
    import psutil

    digits, labels = subset_data.x_test[:16], subset_data.y_test[:16]
    server = launch.start_peer(name)
    tree = [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)]
    try:
        for body in (digits_request(digits[:1], labels[:1]), digits_request(digits, labels, binary=peer.binary)):
            answer = check_answer(*_infer(server.url, body), len(body.labels))
            assert sum(a == b for a, b in zip(answer, body.labels)) >= 0.8 * len(body.labels)
        from loadtests.payloads import encode_digit

        status, text = _infer(server.url, images_request([encode_digit(digits[0], "png")], labels[:1]))
        if peer.image_files:
            assert check_answer(status, text, 1) == [int(labels[0])]
        else:
            assert status >= 400, text  # launch.py says why this peer cannot take image files
    finally:
        server.stop()
    gone, alive = psutil.wait_procs(tree, timeout=10)
    assert not alive, [process.pid for process in alive]
    assert not server.scratch.exists()
    json.dumps(peer.describe())


def test_kserve_workers_load_their_model_without_being_killed_for_it(trained, subset_data):
    """KServe's parent kills a worker that does not answer its ping within 5 s of starting, and says so in
    its log; ours load in a thread (loadtests/peers/kserve_server.py), so two workers come up once and stay."""
    import dataclasses
    import time

    try:
        launch.KSERVE_RAY.check()
    except launch.PeerNotInstalled as error:
        pytest.skip(str(error))
    settings = {**launch.KSERVE.settings, "workers": launch.Setting(2, "test"), "tf_threads": launch.Setting(1, "test"),
                "logging": launch.Setting("--enable_latency_logging false", "KServe's own log, to read its restarts")}
    server = launch.start_peer("kserve", peer=dataclasses.replace(launch.KSERVE, settings=settings))
    try:
        body = digits_request(subset_data.x_test[:4], subset_data.y_test[:4], binary=True)
        for _ in range(6):  # requests reach either worker; each must answer
            check_answer(*_infer(server.url, body), 4)
        time.sleep(6)  # longer than KServe's ping timeout
        log = server.log_tail(200_000)
    finally:
        server.stop()
    assert log.count("Started child process") == 2, log[-2000:]
    assert "Started new child process" not in log, log[-2000:]
