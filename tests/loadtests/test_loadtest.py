"""Real load tests: Locust, headless, in a subprocess, against a real ``bentoml serve`` (or a broken stand-in).

These are the CI runs the issue asks for: at least 15 s with several users and zero failures, and proof
that the SLO check fails the run when it should.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.server import start_server

pytestmark = pytest.mark.slow

USERS = 8


def run_load_test(host: str, reports: Path, seconds: int, *extra: str) -> tuple[int, dict, str]:
    """Run ``python -m loadtests.run`` (what ``make loadtest`` runs); return its exit code, summary and output."""
    command = [sys.executable, "-m", "loadtests.run", "--host", host, "--reports-dir", str(reports),
               "--users", str(USERS), "--spawn-rate", str(USERS), "--run-time", f"{seconds}s", *extra]
    result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 90)
    output = result.stdout + result.stderr
    summary_path = reports / "loadtest_summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return result.returncode, summary, output


@pytest.fixture(scope="module")
def service_url(trained):
    with start_server() as server:
        yield server.url


@pytest.mark.server
def test_a_real_load_test_passes_with_zero_failures(service_url, tmp_path):
    code, summary, output = run_load_test(service_url, tmp_path, 15)

    assert code == 0, output[-3000:]
    assert summary["passed"] and summary["violations"] == []
    assert summary["failures"] == 0
    assert summary["requests"] > 15 * 10  # it really put load on the service
    assert summary["accuracy"] >= 0.9
    assert (tmp_path / "loadtest.html").stat().st_size > 0
    stats = (tmp_path / "loadtest_stats.csv").read_text()
    # Every kind of request ran, bad inputs included, and none failed.
    for name in ("/classify (png)", "/classify (jpeg)", "/classify (paper)", "/classify_batch (16)",
                 "/classify (bad: not_an_image)", "/classify (bad: empty)", "/classify (bad: blank_canvas)",
                 "/classify (bad: pickle)", "/classify (bad: url_field)"):
        assert name in stats, f"no {name} requests were made"


@pytest.mark.server
def test_the_slo_check_fails_the_run_when_an_objective_is_missed(service_url, tmp_path):
    # No latency is under a microsecond, and the subset-trained model is not 100 % right.
    code, summary, output = run_load_test(service_url, tmp_path, 5, "--slo-p95-ms", "0.001",
                                          "--slo-min-accuracy", "1.0")

    assert code != 0, output[-3000:]
    assert not summary["passed"]
    assert any("p95 latency" in violation for violation in summary["violations"])
    assert any("Accuracy under load" in violation for violation in summary["violations"])
    assert summary["failures"] == 0  # the requests themselves were fine


class WrongShapeHandler(http.server.BaseHTTPRequestHandler):
    """A service stand-in that answers every request 200 with a body that is not a classification."""

    def do_POST(self):  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b'{"digit": 3}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_200_with_the_wrong_body_is_a_failure(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), WrongShapeHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        code, summary, output = run_load_test(f"http://127.0.0.1:{server.server_address[1]}", tmp_path, 3)
    finally:
        server.shutdown()
        server.server_close()

    assert code != 0, output[-3000:]
    assert summary["failures"] > 0
    assert any("requests failed" in violation for violation in summary["violations"])
    failures = (tmp_path / "loadtest_failures.csv").read_text()
    assert "Expected keys" in failures
