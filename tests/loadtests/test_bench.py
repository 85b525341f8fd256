"""The benchmark's arithmetic and report, on made-up runs; and one very short real run (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from loadtests import bench

RUN_KEYS = {"rps", "images_per_s", "p50_ms", "p95_ms", "p99_ms", "errors", "requests", "wrong_digits",
            "cpu_s_per_1000_images", "generator_cores", "seconds", "concurrency"}


def locust_summary(requests=1000, failures=0, seconds=10.0, batch_size=1, wrong=3) -> dict:
    return {"requests": requests, "failures": failures, "rps": requests / seconds, "p50_ms": 10.0,
            "p95_ms": 40.0, "p99_ms": 90.0, "wrong": wrong, "batch_size": batch_size,
            "started_at": 1000.0, "last_request_at": 1000.0 + seconds}


def run(rps: float, concurrency: int = 64, batch_size: int = 1) -> dict:
    figures = bench.measurement(locust_summary(requests=int(rps * 10), batch_size=batch_size), 5.0, 1.0)
    return {**figures, "concurrency": concurrency}


def server(rps_at_64: float, batch: dict | None = None) -> dict:
    result = {"ready_s": 4.0, "rss_mb": 800.0, "c1": run(rps_at_64 / 4, 1), "c64": run(rps_at_64), "workers": 1}
    if batch:
        result["batch"] = batch
    return result


def model_limit(images_per_s_256: float) -> dict:
    figures = {"batch_size": 256, "images_per_s": images_per_s_256, "ms_per_call": 20.0,
               "cpu_s_per_1000_images": 0.07, "calls": 100}
    return {"tag": "mnist_cnn:x", "tf_threads": {"intra_op": 2, "inter_op": 2}, "batch_256": figures,
            "predict_batch_1": {**figures, "batch_size": 1, "images_per_s": 25.0}}


@pytest.fixture
def report():
    results = {"service": server(600.0, batch=run(10.0, 2, batch_size=256)), "handwritten": server(400.0),
               "naive": server(12.0), "model_limit": model_limit(12_000.0)}
    machine = {"cpu": "Test CPU", "logical_cpus": 2, "memory_gb": 8.0, "gpus": 0, "load_average_at_start": [0.5, 0, 0]}
    return bench.build_report(results, machine, bench.BenchConfig(seconds=5), "2026-01-01T00:00:00+00:00")


def test_a_run_counts_images_cpu_and_the_generator_over_its_window():
    figures = bench.measurement(locust_summary(requests=1000, failures=10, seconds=10.0, batch_size=4), 8.0, 2.0)
    assert figures["rps"] == 100.0
    assert figures["images_per_s"] == pytest.approx(990 * 4 / 10)  # failed requests carry no images
    assert figures["cpu_s_per_1000_images"] == pytest.approx(8.0 / 3960 * 1000)
    assert figures["generator_cores"] == pytest.approx(0.2)
    assert figures["errors"] == 10 and figures["wrong_digits"] == 3


def test_a_run_with_no_requests_has_no_rates():
    figures = bench.measurement(locust_summary(requests=0), 1.0, 1.0)
    assert figures["images_per_s"] == 0.0 and figures["cpu_s_per_1000_images"] is None


def test_ratios_compare_the_service_at_64_clients_and_batches_with_the_model_limit(report):
    assert report["ratios"] == pytest.approx(
        {"service_vs_naive": 600 / 12, "service_vs_handwritten": 600 / 400, "batch_vs_model_limit": 2560 / 12_000,
         "bulk_vs_model_limit": 2560 / 12_000}
    )


def test_the_bulk_ratio_takes_the_best_bulk_path(report):
    report["service"]["v2_bulk"] = {"images_per_s": 9_000.0}
    assert bench.ratios(report)["bulk_vs_model_limit"] == pytest.approx(9_000 / 12_000)
    assert bench.ratios(report)["batch_vs_model_limit"] == pytest.approx(2560 / 12_000)


def test_a_missing_server_gives_no_ratio_rather_than_a_wrong_one(report):
    report["naive"] = None
    report["service"].pop("batch")
    assert bench.ratios(report)["service_vs_naive"] is None
    assert bench.ratios(report)["batch_vs_model_limit"] is None
    assert bench.ratios(report)["service_vs_handwritten"] == pytest.approx(1.5)


def test_the_report_has_the_keys_the_issue_asks_for(report):
    assert {"ratios", "service", "naive", "handwritten", "model_limit", "machine"} <= set(report)
    assert set(report["ratios"]) == {"service_vs_naive", "service_vs_handwritten", "batch_vs_model_limit",
                                     "bulk_vs_model_limit"}
    for key in ("c1", "c64", "batch"):
        assert RUN_KEYS <= set(report["service"][key])
    assert {"images_per_s", "errors"} <= set(report["service"]["batch"])
    assert isinstance(report["service"]["ready_s"], float) and isinstance(report["service"]["rss_mb"], float)
    json.loads(json.dumps(report))  # it is plain JSON


def test_the_markdown_table_has_a_row_per_run_and_the_date_and_machine(report):
    text = bench.render_markdown(report)
    assert "2026-01-01" in text and "Test CPU" in text
    rows = [line for line in text.splitlines() if line.startswith(("| service |", "| service /classify_batch",
                                                                    "| naive |", "| handwritten |"))]
    assert len(rows) == 7  # 3 servers x 2 concurrencies, and the batch run
    assert "| `service_vs_naive` | 50.00 | ≥ 40 |" in text


def test_settings_come_from_flags_then_environment_then_defaults():
    assert bench.parse_config([], {}) == bench.BenchConfig()
    config = bench.parse_config(["--seconds", "3"], {"BENCH_SECONDS": "7", "BENCH_CONCURRENCY": "2,8",
                                                     "BENCH_SERVERS": "service,naive"})
    assert config.seconds == 3 and config.concurrency == (2, 8) and config.servers == ("service", "naive")
    with pytest.raises(ValueError, match="Unknown servers"):
        bench.parse_config([], {"BENCH_SERVERS": "fastapi"})


def test_cpu_between_interpolates_between_samples():
    sampler = bench.TreeSampler.__new__(bench.TreeSampler)  # no thread: feed it samples by hand
    sampler.times, sampler.cpu = [0.0, 1.0, 2.0], [0.0, 0.5, 1.5]
    assert sampler.cpu_between(0.5, 1.5) == pytest.approx(0.75)
    assert sampler.cpu_between(0.0, 2.0) == pytest.approx(1.5)


@pytest.mark.server
@pytest.mark.slow
def test_a_very_short_bench_writes_both_reports(trained, tmp_path):
    env = {**os.environ, "BENCH_SECONDS": "2", "BENCH_CONCURRENCY": "4", "BENCH_MODEL_SECONDS": "0.5",
           "BENCH_BATCH_SIZE": "32", "BENCH_REPORTS_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "loadtests.bench"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    report = json.loads((tmp_path / "bench.json").read_text())
    for name in ("service", "handwritten", "naive"):
        assert report[name]["c4"]["requests"] > 0 and report[name]["c4"]["errors"] == 0, name
        assert report[name]["rss_mb"] > 50
    assert report["service"]["batch"]["images_per_s"] > 0 and report["service"]["batch"]["errors"] == 0
    assert report["model_limit"]["batch_256"]["images_per_s"] > 0
    assert report["ratios"]["service_vs_naive"] is None  # no c=64 run, so no ratio
    assert report["ratios"]["batch_vs_model_limit"] > 0
    assert "| service |" in (tmp_path / "bench.md").read_text()


def test_the_sampler_measures_a_busy_child_and_keeps_its_cpu_after_it_exits():
    # The child burns one second of CPU time, not of wall time: on a busy machine that takes longer, but
    # it is still one second of CPU for the sampler to find.
    child = subprocess.Popen([sys.executable, "-c", "import time\nwhile time.process_time() < 1.0: pass"])
    sampler = bench.TreeSampler(child.pid, interval=0.05)
    child.wait()
    time.sleep(0.3)  # samples after the exit must not lose what it used
    sampler.stop()
    assert 0.5 < sampler.cpu_between(sampler.times[0], sampler.times[-1]) < 1.5
    assert sampler.cpu == sorted(sampler.cpu)
    assert sampler.peak_rss_mb() > 1
