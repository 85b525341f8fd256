"""``make overload``: its verdict, and a short flood against a real ``bentoml serve`` with a small admission
limit (slow): many clients get both 200s and 503 ``overloaded`` answers with ``Retry-After``, and nothing else."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from loadtests import overload


def flood(**changes) -> dict:
    figures = {"users": 512, "requests": 1000, "accepted": 800, "refused": 200, "failures": 0, "failures_by_kind": {},
               "p99_ms": 120.0}
    return {**figures, **changes}


def test_a_flood_answered_with_200s_and_refusals_passes():
    assert overload.verdict(flood()) == []


@pytest.mark.parametrize(("changes", "missed"), [
    ({"failures": 3, "failures_by_kind": {"timeout": 2, "http_503": 1}}, "3 of 1000 requests failed"),
    ({"p99_ms": 4000.0}, "p99 was 4000 ms, above 1000 ms"),
    ({"accepted": 0}, "No request was accepted"),
])
def test_failures_an_unbounded_p99_or_no_service_at_all_miss(changes, missed):
    sentences = overload.verdict(flood(**changes))
    assert any(missed in sentence for sentence in sentences), sentences


@pytest.mark.slow
@pytest.mark.server
def test_a_flood_beyond_the_admission_limit_gets_200s_and_fast_503s_with_retry_after(trained, tmp_path):
    command = [sys.executable, "-m", "loadtests.overload", "--ramp-users", "4", "--step-seconds", "3",
               "--flood-seconds", "6", "--interval-s", "3", "--reports-dir", str(tmp_path),
               "--env", "DIGITSERVE_MAX_CONCURRENCY=4", "--env", "DIGITSERVE_WORKERS=1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert (tmp_path / "overload.json").exists(), output[-3000:]
    report = json.loads((tmp_path / "overload.json").read_text())

    assert done.returncode == (0 if report["passed"] else 1), output[-3000:]
    result = report["flood"]
    assert result["users"] == 32  # 8x the peak of a one-step ramp
    assert result["accepted"] > 0  # well-formed classifications
    # Refused means a 503 with {"reason": "overloaded"} and a numeric Retry-After (loadtests.reliability).
    assert result["refused"] > 0
    assert result["failures"] == 0, result["failures_by_kind"]  # no timeouts, resets or other statuses
    assert result["p99_ms"] is not None and result["refused_p99_ms"] is not None
    assert "Verdict" in (tmp_path / "overload.md").read_text()


def test_the_markdown_shows_the_ramp_the_flood_and_the_peak_beside_it():
    step = {"users": 64, "accepted_per_s": 900.0, "refused_per_s": 0.0, "failures": 0, "p50_ms": 30.0, "p99_ms": 80.0,
            "refused_p50_ms": None, "refused_p99_ms": None, "server_cores": 1.7, "generator_cores": 0.3}
    result = {**step, **flood(), "accepted_per_s": 850.0, "refused_per_s": 2_000.0, "refused_p50_ms": 2.0,
              "refused_p99_ms": 9.0, "p50_ms": 60.0, "p99_ms": 160.0, "p99_vs_peak_p99": 2.0,
              "worker_rss_max_mb": {"1": 900.0}, "server_p50_ms": 50.0, "server_p99_ms": 250.0,
              "machine": {"other_cores": 0.5, "steal_cores": 0.0}}
    machine = {"cpu": "Test CPU", "logical_cpus": 2, "load_at_start": {"load_average": [1.0, 1.0, 1.0]},
               "load_at_end": {"load_average": [2.0, 1.0, 1.0]}}
    report = {"date": "2026-01-01", "source": "here", "machine": machine, "settings": vars(overload.OverloadConfig()),
              "client": "back to back", "ramp": [step], "flood": result, "flood_intervals": [result],
              "peak": {"users": 64, "accepted_per_s": 900.0, "p50_ms": 30.0, "p99_ms": 80.0},
              "passed": True, "missed": []}
    markdown = overload.render_markdown(report)
    assert "| 64 (peak) | 900.0 | 0.0 | 0 | 30 | 80 | – |" in markdown
    assert "| 512 (flood) | 850.0 | 2,000.0 | 0 | 60 | 160 | 9 |" in markdown
    assert "| p99 at the flood / p99 at the peak | 2.00 |" in markdown
    assert "≤ 50 / ≤ 250 ms |" in markdown


METRICS = """\
# HELP digitserve_http_request_duration_seconds Time from a request's arrival to the end of its answer
digitserve_http_request_duration_seconds_bucket{endpoint="/classify",le="0.01"} 50.0
digitserve_http_request_duration_seconds_bucket{endpoint="/classify",le="0.1"} 90.0
digitserve_http_request_duration_seconds_bucket{endpoint="/classify",le="1.0"} 100.0
digitserve_http_request_duration_seconds_bucket{endpoint="/classify",le="+Inf"} 100.0
digitserve_http_request_duration_seconds_bucket{endpoint="/infer",le="0.01"} 7.0
bentoml_service_request_duration_seconds_bucket{endpoint="/classify",http_response_code="503",le="0.01"} 10.0
bentoml_service_request_duration_seconds_bucket{endpoint="/classify",http_response_code="503",le="0.1"} 10.0
bentoml_service_request_duration_seconds_bucket{endpoint="/classify",http_response_code="503",le="1.0"} 10.0
bentoml_service_request_duration_seconds_bucket{endpoint="/classify",http_response_code="503",le="+Inf"} 10.0
"""


def test_the_servers_own_latency_comes_from_its_request_duration_histograms():
    after = overload.duration_buckets(METRICS, "/classify")  # every series of the endpoint, any metric's name
    assert after == {0.01: 60.0, 0.1: 100.0, 1.0: 110.0, float("inf"): 110.0}
    before = {0.01: 10.0, 0.1: 10.0, 1.0: 10.0, float("inf"): 10.0}
    # 100 answers counted in between: 50 within 10 ms, 90 within 100 ms, all within 1 s
    assert overload.histogram_quantile(before, after, 0.5) == 10.0
    assert overload.histogram_quantile(before, after, 0.9) == 100.0
    assert overload.histogram_quantile(before, after, 0.99) == 1000.0
    assert overload.histogram_quantile(after, after, 0.99) is None  # nothing counted in between
