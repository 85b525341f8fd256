"""``make soak``: its verdict on made-up intervals, and a 30-second soak against a real ``bentoml serve`` (slow)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from loadtests import soak


def row(throughput: float = 100.0, rss: dict | None = None, failures: dict | None = None, pids=(11, 12)) -> dict:
    rss = rss or {"1": 800.0, "2": 800.0}
    failures = failures or {}
    return {
        "requests": int(throughput * 60) + sum(failures.values()), "throughput_per_s": throughput,
        "failures": sum(failures.values()), "failures_by_kind": failures, "p50_ms": 8.0, "p99_ms": 20.0,
        "server_cores": 0.6, "generator_cores": 0.1, "tcp": {"time_wait": 3},
        "server_cpu_ms_per_request": 1.0, "generator_cpu_ms_per_request": 0.2, "generator_rss_mb": 80.0,
        "workers": {label: {"pids": [pid], "rss_mb": mb} for (label, mb), pid in zip(rss.items(), pids)},
        "machine": {"busy_cores": 1.0, "other_cores": 0.1, "steal_cores": 0.0}, "prometheus_dir_bytes": 65536,
    }


def test_a_steady_soak_meets_every_target():
    rows = [row(100.0), row(104.0, {"1": 810.0, "2": 820.0}), row(95.0, {"1": 830.0, "2": 839.0})]
    drift = soak.drifts(rows)
    assert drift["throughput_drift_percent"] == pytest.approx(-5.0)
    assert drift["workers"]["1"]["rss_drift_percent"] == pytest.approx(3.75)
    assert soak.verdict(rows, drift) == []


@pytest.mark.parametrize(("last", "missed"), [
    (row(88.0), "Throughput moved -12.0 %"),
    (row(113.0), "Throughput moved +13.0 %"),  # at a steady offered rate, a jump means the start was unsteady
    (row(100.0, {"1": 800.0, "2": 850.0}), "Worker 2's RSS grew 6.2 %"),
    (row(100.0, pids=(11, 99)), "Worker 2 was restarted"),
    (row(100.0, {"1": 800.0}), "Worker 2 was restarted or went missing"),
])
def test_each_missed_target_is_named(last, missed):
    rows = [row(100.0), last]
    sentences = soak.verdict(rows, soak.drifts(rows))
    assert any(missed in sentence for sentence in sentences), sentences


def test_any_failure_misses_the_target_and_is_counted_by_kind():
    rows = [row(100.0), row(100.0, failures={"http_503": 2, "timeout": 1})]
    sentences = soak.verdict(rows, soak.drifts(rows))
    assert sentences == [f"3 of {12003} requests failed: {{'http_503': 2, 'timeout': 1}}."]


def test_the_markdown_has_a_row_per_interval_each_workers_rss_and_the_verdict():
    busy = {"command": "/usr/bin/python3 -m training --preset best --epochs 15", "cores": 0.81}
    rows = [{**row(100.0), "interval": 1}, {**row(80.0, {"1": 900.0, "2": 800.0}), "interval": 2,
                                           "other_processes": [busy]}]
    drift = soak.drifts(rows)
    machine = {"cpu": "Test CPU", "logical_cpus": 2, "load_at_start": {"load_average": [1.0, 1.0, 1.0]},
               "load_at_end": {"load_average": [2.0, 1.0, 1.0]}}
    report = {"date": "2026-01-01", "source": "here", "machine": machine, "settings": {**vars(soak.SoakConfig())},
              "capacity": {"steps": [{"users": 4, "accepted_per_s": 140.0, "p50_ms": 9.0, "p99_ms": 30.0,
                                      "failures": 0, "server_cores": 1.0, "generator_cores": 0.1}],
                           "requests_per_s": 140.0, "offered_per_s": 98.0, "users": 4},
              "intervals": rows, "drift": drift, "totals": {"failures": 0, "requests": 10_800},
              "missed": soak.verdict(rows, drift)}
    report["passed"] = not report["missed"]
    markdown = soak.render_markdown(report)
    assert "| 1 | 6,000 | 100.0 | 8 | 20 | 0 | 800 | 800 |" in markdown
    assert "| 2 | 4,800 | 80.0 | 8 | 20 | 0 | 900 | 800 |" in markdown
    assert "| worker 1 RSS (800 -> 900 MB) | +12.5 % | ≤ +5 % |" in markdown
    assert "| throughput | -20.0 % | ±10 % |" in markdown
    assert "| server CPU (cores) | +0.0 % | |" in markdown and "| server CPU per request | +0.0 % | |" in markdown
    assert "**Verdict: targets missed.**" in markdown and "Worker 1's RSS grew 12.5 %" in markdown
    assert "2: `training --preset best --epochs 15` 0.81" in markdown  # who else used the machine


def test_settings_come_from_flags_then_the_environment():
    config, spec = soak.parse_args(["--minutes", "2", "--env", "DIGITSERVE_WORKERS=1"],
                                   environ={"SOAK_MINUTES": "7", "SOAK_CAPACITY_USERS": "2,8"})
    assert config.minutes == 2.0 and config.capacity_users == (2, 8) and spec.env == {"DIGITSERVE_WORKERS": "1"}
    with pytest.raises(ValueError, match="--users"):
        soak.parse_args(["--closed-loop"], environ={})
    with pytest.raises(ValueError, match="--url drives a running service"):
        soak.parse_args(["--url", "http://127.0.0.1:3000", "--env", "A=1"], environ={})


@pytest.mark.slow
@pytest.mark.server
def test_a_short_soak_against_a_real_service_writes_sane_figures_and_fails_nothing(trained, tmp_path):
    command = [sys.executable, "-m", "loadtests.soak", "--minutes", "0.5", "--interval-s", "10",
               "--capacity-users", "2,4", "--capacity-seconds", "3", "--reports-dir", str(tmp_path),
               "--env", "DIGITSERVE_WORKERS=2"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert (tmp_path / "soak.json").exists(), output[-3000:]
    report = json.loads((tmp_path / "soak.json").read_text())

    assert done.returncode == (0 if report["passed"] else 1), output[-3000:]
    assert report["totals"]["failures"] == 0, report["totals"]
    assert [step["users"] for step in report["capacity"]["steps"]] == [2, 4]
    assert report["capacity"]["requests_per_s"] > 0
    assert report["capacity"]["offered_per_s"] == pytest.approx(0.7 * report["capacity"]["requests_per_s"])
    rows = report["intervals"]
    assert len(rows) == 3
    for interval in rows:
        assert interval["requests"] > 0 and interval["failures"] == 0
        assert 0 < interval["p50_ms"] <= interval["p99_ms"]
        assert sorted(interval["workers"]) == ["1", "2"]  # each worker's RSS, every interval
        assert all(worker["rss_mb"] > 100 for worker in interval["workers"].values())  # each holds TensorFlow
        assert interval["server_cpu_ms_per_request"] > 0 and interval["generator_cores"] > 0
        assert interval["prometheus_dir_bytes"] > 0  # the workers' metric files were found and measured
        assert interval["generator"]["locust_response_time_keys"] > 0
    assert set(report["drift"]["workers"]) == {"1", "2"}
    assert report["drift"]["throughput_drift_percent"] is not None
    markdown = (tmp_path / "soak.md").read_text()
    assert "| worker 1 RSS" in markdown and "Verdict" in markdown
