"""What the reliability runs share (loadtests/reliability.py): how an answer is judged, the latency
arithmetic, and the watcher, on a real process tree."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from loadtests import reliability
from loadtests.reliability import (
    ACCEPTED,
    REFUSED,
    IntervalRecorder,
    Outcomes,
    classify_answer,
    drift_percent,
    full_intervals,
    percentile,
    round_ms,
    worker_label,
)

GOOD = json.dumps({"digit": 7, "confidence": 0.9, "probabilities": [0.0] * 7 + [0.9, 0.1, 0.0], "model": "m:1"})
OVERLOADED = json.dumps({"error": "This worker is answering 64 requests...", "reason": "overloaded"})


@pytest.mark.parametrize(("status", "retry_after", "text", "error", "expected"), [
    (200, None, GOOD, None, (ACCEPTED, 7)),
    (200, None, '{"digit": 7}', None, ("wrong_body", None)),
    (200, None, "<html>", None, ("wrong_body", None)),
    (503, "1", OVERLOADED, None, (REFUSED, None)),
    (503, None, OVERLOADED, None, ("refused_without_retry_after", None)),
    (503, "Wed, 21 Oct 2015 07:28:00 GMT", OVERLOADED, None, ("refused_without_retry_after", None)),
    (503, "1", "Service Unavailable", None, ("http_503", None)),  # BentoML's own plain 503 is not the overload answer
    (503, "1", json.dumps({"error": "not ready", "reason": "not_ready"}), None, ("http_503", None)),
    (500, None, "{}", None, ("http_500", None)),
    (0, None, None, TimeoutError("timed out"), ("timeout", None)),
    (0, None, None, ConnectionResetError(104, "reset"), ("connection_ConnectionResetError", None)),
    (0, None, None, None, ("connection_unknown", None)),
])
def test_each_answer_is_accepted_refused_or_a_named_failure(status, retry_after, text, error, expected):
    assert classify_answer(status, retry_after, text, error) == expected


def test_latencies_round_to_two_significant_digits_so_histograms_stay_small():
    assert [round_ms(x) for x in (0.4, 7.6, 99.4, 147, 3432, 58760)] == [0, 8, 99, 150, 3400, 59000]
    assert len({round_ms(x / 10) for x in range(1, 600_000)}) < 400


def test_percentiles_come_from_the_histogram():
    histogram = {"10": 90, "20": 9, "500": 1}  # JSON keys arrive as strings
    assert percentile(histogram, 0.5) == 10.0
    assert percentile(histogram, 0.95) == 20.0
    assert percentile(histogram, 0.999) == 500.0
    assert percentile({}, 0.99) is None


def test_the_recorder_hands_over_each_interval_and_starts_afresh():
    recorder = IntervalRecorder(started=100.0)
    recorder.record(ACCEPTED, 12.0, right_digit=True)
    recorder.record(ACCEPTED, 14.0, right_digit=False)
    recorder.record(REFUSED, 1.0)
    recorder.record("timeout", 30_000.0)
    first = recorder.cut(160.0)
    recorder.record(ACCEPTED, 20.0, right_digit=True)
    second = recorder.cut(190.0, partial=True)

    assert first["counts"] == {ACCEPTED: 2, REFUSED: 1, "timeout": 1}
    assert first["latency_ms"] == {ACCEPTED: {12: 1, 14: 1}, REFUSED: {1: 1}, "failed": {30000: 1}}
    assert (first["start"], first["end"], first["right_digits"], first["wrong_digits"]) == (100.0, 160.0, 1, 1)
    assert second["counts"] == {ACCEPTED: 1} and second["start"] == 160.0 and second["partial"]

    both = Outcomes.of(json.loads(json.dumps([first, second])))  # as read back from the JSON lines
    assert both.seconds == 90.0 and both.requests == 5 and both.accepted == 3
    assert both.failures(refusals_fail=False) == {"timeout": 1}
    assert both.failures(refusals_fail=True) == {REFUSED: 1, "timeout": 1}
    summary = both.summary(refusals_fail=False)
    assert summary["accepted_per_s"] == pytest.approx(3 / 90)
    assert summary["p50_ms"] == 14.0 and summary["refused_p99_ms"] == 1.0
    assert summary["right_digits"] == 2 and summary["wrong_digits"] == 1


def test_only_whole_intervals_count_never_the_drain_at_the_stop():
    records = [{"partial": False, "i": 1}, {"partial": False, "i": 2}, {"partial": False, "i": 3},
               {"partial": True, "i": 4}]
    assert [r["i"] for r in full_intervals(records, seconds=120, interval=60)] == [1, 2]
    assert [r["i"] for r in full_intervals(records, seconds=600, interval=60)] == [1, 2, 3]


def test_drift_is_the_change_from_first_to_last_in_percent():
    assert drift_percent(100.0, 95.0) == pytest.approx(-5.0)
    assert drift_percent(0.0, 5.0) is None and drift_percent(None, 5.0) is None


def test_workers_are_told_apart_by_their_worker_id():
    worker = [sys.executable, "-m", "_bentoml_impl.worker.service", "service:DigitClassifier", "--fd", "3",
              "--worker-id", "2"]
    assert worker_label(worker) == "2"
    assert worker_label([sys.executable, "-m", "bentoml", "serve"]) is None


def test_tcp_states_see_a_connection_on_the_port():
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):
            accepted, _ = server.accept()
            with accepted:
                assert reliability.tcp_states(port)["established"] >= 1


def test_the_watcher_finds_the_workers_in_a_real_process_tree_and_sums_their_cpu():
    """A parent with one child whose command line looks like a BentoML worker's, burning CPU."""
    child = ("import sys, time\nend = time.time() + 3\nwhile time.time() < end: pass\ntime.sleep(30)")
    parent = (f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {child!r}, "
              "'_bentoml_impl.worker.service', '--worker-id', '7'])")
    process = subprocess.Popen([sys.executable, "-c", parent])
    watcher = reliability.Watcher(process.pid, port=None, interval=0.2)
    try:
        start = time.time()
        time.sleep(2.5)
        window = watcher.window(start, time.time())
    finally:
        watcher.stop()
        for child_process in __import__("psutil").Process(process.pid).children(recursive=True):
            child_process.kill()
        process.kill()
        process.wait()
    assert list(window["workers"]) == ["7"]
    assert window["workers"]["7"]["rss_mb"] > 1
    assert window["workers"]["7"]["cores"] > 0.3  # the child was spinning
    assert window["server_cores"] >= window["workers"]["7"]["cores"] * 0.9
    assert 0 < window["machine"]["busy_cores"] <= (__import__("os").cpu_count() or 1) + 0.5
