"""Triton's ``perf_analyzer`` against a v2 endpoint: a load generator no one here wrote, as a cross-check of the
project's own (Locust) figures for the same endpoint.

``make v2-clients`` puts the binary in ``.venv/opt/perf_analyzer`` (from the tritonclient 2.50.0 wheel for
x86-64 Linux; see the Makefile). It reads ``/v2``, the model metadata and ``/v2/models/{name}/config``,
then sends one-digit requests (UINT8 ``[1, 28, 28]``, real MNIST test digits given with ``--input-data``)
with the binary tensor data extension, ``concurrency`` at a time.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import tempfile
from pathlib import Path

from loadtests.servers import REPO_ROOT

PERF_ANALYZER_DIR = REPO_ROOT / ".venv" / "opt" / "perf_analyzer"
BINARY = PERF_ANALYZER_DIR / "perf_analyzer"
MODEL = "mnist_cnn"


def available() -> str | None:
    """None when perf_analyzer can run here, else why not."""
    unavailable = PERF_ANALYZER_DIR / "UNAVAILABLE"
    if unavailable.exists():
        return unavailable.read_text().strip()
    if not BINARY.exists():
        return f"perf_analyzer is not installed at {BINARY}: run `make v2-clients`."
    return None


def input_data(path: Path, count: int = 100) -> Path:
    """``count`` MNIST test digits in perf_analyzer's --input-data format, one request each."""
    from training.data import load_subset

    digits = load_subset().x_test[:count]
    path.write_text(json.dumps({"data": [{"digits": {"content": digit.ravel().tolist(), "shape": [1, 28, 28]}}
                                         for digit in digits]}))
    return path


def run(url: str, concurrency: int, requests: int = 2000, timeout: float = 600) -> dict:
    """Drive ``url``'s v2 infer endpoint at ``concurrency`` until ``requests`` are measured (three windows
    at most); return perf_analyzer's throughput and client-side latencies."""
    problem = available()
    if problem:
        raise RuntimeError(problem)
    with tempfile.TemporaryDirectory(prefix="digitserve-perf-analyzer-") as scratch:
        data, report = input_data(Path(scratch) / "digits.json"), Path(scratch) / "report.csv"
        command = [str(BINARY), "-m", MODEL, "-u", url.removeprefix("http://"), "-i", "http", "--input-data", str(data),
                   "--concurrency-range", str(concurrency), "--measurement-mode", "count_windows",
                   "--measurement-request-count", str(requests), "--stability-percentage", "100",
                   "--max-trials", "3", "-f", str(report)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "LD_LIBRARY_PATH": str(PERF_ANALYZER_DIR)})
        if done.returncode != 0:
            raise RuntimeError(f"perf_analyzer failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-1000:]}")
        (row,) = list(csv.DictReader(report.open()))
    return {"concurrency": concurrency, "rps": float(row["Inferences/Second"]),
            **{f"p{q}_ms": float(row[f"p{q} latency"]) / 1000 for q in (50, 90, 95, 99)}}
