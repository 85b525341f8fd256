"""``make bench``: the service beside what a user would otherwise run, in one run, on one machine.

    python -m loadtests.bench                                # about 2.5 minutes with the defaults (10 s a run)
    BENCH_SECONDS=5 python -m loadtests.bench                # about 1.5 minutes

It measures, in order:

1. the model's in-process limit: the compiled forward pass at batch 1, 32 and 256, and ``model.predict``
   at batch 1 (loadtests/model_limit.py, in a process of its own);
2. the service (``bentoml serve service:DigitClassifier``): ``/classify`` at each concurrency, then
   ``/classify_batch`` in images/s;
3. the hand-written server (loadtests/handwritten_server.py) and 4. the naive server
   (loadtests/naive_server.py), each ``/classify`` at each concurrency, under uvicorn with the service's
   worker count;
5. the peers, when BENCH_SERVERS names them (``make bench`` does): KServe's model server, Seldon MLServer
   and Ray Serve, each from its own environment (``make bench-peers``), on the same Open Inference
   Protocol (v2) requests. Any server that answers ``/v2/health/ready``, the service included, gets these
   v2 runs (loadtests/peers/compare.py).

It starts and stops every server itself. One load generator serves them all: Locust with ``FastHttpUser``
(loadtests/benchfile.py), headless, the same MNIST test digits as PNG and JPEG, every answer checked.
For each run it records requests/s, images/s, p50/p95/p99, errors, wrong digits, the server's CPU seconds
per 1,000 images and its peak RSS, all over the same window (Locust's first to last request). The
generator's own CPU use over that window is recorded too, to show whether it was the bottleneck.

Results: ``reports/bench.json`` and the table ``reports/bench.md``. Knobs (environment, or the flags of
the same name): BENCH_SECONDS, BENCH_CONCURRENCY, BENCH_BATCH_SIZE, BENCH_BATCH_USERS, BENCH_MODEL_SECONDS,
BENCH_LOCUST_PROCESSES, BENCH_SERVERS, BENCH_IMAGE_USERS, BENCH_REPORTS_DIR.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from loadtests.servers import REPO_ROOT, ServerProcess, start_service, start_uvicorn, venv_script

logger = logging.getLogger(__name__)

SERVERS = ("service", "handwritten", "naive")
PEERS = ("kserve", "mlserver", "rayserve")  # loadtests/peers/: measured only when BENCH_SERVERS names them
RATIO_CONCURRENCY = 64  # the ratios compare servers at this concurrency
MODEL_LIMIT_BATCH = 256  # /classify_batch is compared with the in-process limit at this batch size
# Figures the service aims at (issue 4); reported, never asserted.
TARGETS = {"service_vs_naive": 40.0, "service_vs_handwritten": 1.2, "batch_vs_model_limit": 0.6,
           "bulk_vs_model_limit": 0.6,
           "c64_p99_ms": 100.0, "ready_s": 10.0}
BENCHFILE = REPO_ROOT / "loadtests" / "benchfile.py"
SAMPLE_INTERVAL_S = 0.2
IDLE_CORES = 0.05  # a server using less CPU than this is idle between runs
LOCUST_GRACE_S = 120  # a run may outlast its duration by this much (start-up, in-flight requests)


@dataclass(frozen=True)
class BenchConfig:
    seconds: float = 10.0  # length of each load run
    concurrency: tuple[int, ...] = (1, 16, 64)
    batch_size: int = MODEL_LIMIT_BATCH  # digits per /classify_batch request
    batch_users: int = 2  # concurrent /classify_batch clients: one uploads while the other is classified
    model_seconds: float = 3.0  # each in-process model measurement
    locust_processes: int = 1  # raise if the generator's CPU use nears one core
    servers: tuple[str, ...] = SERVERS
    image_users: int = 16  # concurrent clients sending one PNG a request over v2
    warmup_requests: int = 20
    ready_timeout: float = 120.0
    reports_dir: Path = REPO_ROOT / "reports"

    def __post_init__(self) -> None:
        unknown = set(self.servers) - set(SERVERS) - set(PEERS)
        if unknown:
            raise ValueError(f"Unknown servers {sorted(unknown)}; choose from {', '.join(SERVERS + PEERS)}.")
        if self.seconds <= 0 or not self.concurrency or min(self.concurrency) < 1:
            raise ValueError(f"BENCH_SECONDS must be > 0 and BENCH_CONCURRENCY positive integers, "
                             f"got {self.seconds} and {self.concurrency}.")


def _csv_ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def _csv_names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def parse_config(argv: list[str] | None = None, environ: dict | None = None) -> BenchConfig:
    """The benchmark's settings: flags first, then BENCH_* environment variables, then defaults."""
    environ = os.environ if environ is None else environ
    defaults = BenchConfig()

    def env(name: str, default):
        return environ.get(f"BENCH_{name.upper()}", default)

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=float(env("seconds", defaults.seconds)))
    parser.add_argument("--concurrency", type=_csv_ints,
                        default=_csv_ints(env("concurrency", ",".join(map(str, defaults.concurrency)))))
    parser.add_argument("--batch-size", type=int, default=int(env("batch_size", defaults.batch_size)))
    parser.add_argument("--batch-users", type=int, default=int(env("batch_users", defaults.batch_users)))
    parser.add_argument("--model-seconds", type=float, default=float(env("model_seconds", defaults.model_seconds)))
    parser.add_argument("--locust-processes", type=int,
                        default=int(env("locust_processes", defaults.locust_processes)))
    parser.add_argument("--servers", type=_csv_names, default=_csv_names(env("servers", ",".join(defaults.servers))))
    parser.add_argument("--image-users", type=int, default=int(env("image_users", defaults.image_users)))
    parser.add_argument("--reports-dir", type=Path, default=Path(env("reports_dir", defaults.reports_dir)))
    args = parser.parse_args(argv)
    return BenchConfig(seconds=args.seconds, concurrency=args.concurrency, batch_size=args.batch_size,
                       batch_users=args.batch_users, model_seconds=args.model_seconds,
                       locust_processes=args.locust_processes, servers=args.servers, image_users=args.image_users,
                       reports_dir=args.reports_dir)


# --- measuring a process tree ---------------------------------------------------------------------


class TreeSampler:
    """Samples a process and its descendants in a thread: total CPU seconds over time, and each one's peak RSS."""

    def __init__(self, pid: int, interval: float = SAMPLE_INTERVAL_S) -> None:
        import psutil

        self._psutil = psutil
        self.root = psutil.Process(pid)
        self.interval = interval
        self.times: list[float] = []
        self.cpu: list[float] = []
        self.peak_rss: dict[int, int] = {}
        self.peak_total_rss = 0  # the largest sum of every process's RSS in one sample
        self._known: dict[int, object] = {}
        self._last_cpu: dict[int, float] = {}  # CPU seconds per pid at its latest reading
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sampler-{pid}", daemon=True)
        self._thread.start()

    def _processes(self) -> list:
        try:
            found = [self.root, *self.root.children(recursive=True)]
        except self._psutil.Error:
            found = []
        for process in found:  # keep one Process object per pid: its cpu_times stay comparable
            self._known.setdefault(process.pid, process)
        return [self._known[process.pid] for process in found]

    def sample(self) -> None:
        total_rss = 0
        for process in self._processes():
            try:
                with process.oneshot():
                    times = process.cpu_times()
                    rss = process.memory_info().rss
            except self._psutil.Error:
                continue  # it has just exited: its last reading stands
            self._last_cpu[process.pid] = times.user + times.system
            self.peak_rss[process.pid] = max(self.peak_rss.get(process.pid, 0), rss)
            total_rss += rss
        self.peak_total_rss = max(self.peak_total_rss, total_rss)
        self.times.append(time.time())
        self.cpu.append(sum(self._last_cpu.values()))  # never decreases, even as processes exit

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def cpu_between(self, start: float, end: float) -> float:
        """CPU seconds the tree used between two wall-clock times (interpolated between samples)."""
        if len(self.times) < 2:
            return 0.0
        return float(np.interp(end, self.times, self.cpu) - np.interp(start, self.times, self.cpu))

    def cores_lately(self, seconds: float = 1.0) -> float:
        """Average cores in use over the last ``seconds``."""
        now = time.time()
        return self.cpu_between(now - seconds, now) / seconds

    def peak_rss_mb(self) -> float:
        """The largest process's peak RSS: the worker that holds the model."""
        return max(self.peak_rss.values(), default=0) / 2**20

    def peak_total_rss_mb(self) -> float:
        """The tree's peak RSS, all processes together (shared pages count once per process, so it overstates)."""
        return self.peak_total_rss / 2**20


# --- one load run ---------------------------------------------------------------------------------


def measurement(summary: dict, server_cpu_s: float, generator_cpu_s: float) -> dict:
    """One run's figures from the Locust summary and the CPU both sides used over its window."""
    requests, failures = summary["requests"], summary["failures"]
    batch = summary.get("batch_size", 1)
    window = summary["last_request_at"] - summary["started_at"] if requests else 0.0
    images = (requests - failures) * batch
    return {
        "rps": summary["rps"],
        "images_per_s": images / window if window > 0 else 0.0,
        "p50_ms": summary["p50_ms"], "p95_ms": summary["p95_ms"], "p99_ms": summary["p99_ms"],
        "errors": failures, "requests": requests, "wrong_digits": summary["wrong"],
        "cpu_s_per_1000_images": server_cpu_s / images * 1000 if images else None,
        "generator_cores": generator_cpu_s / window if window > 0 else None,
        "seconds": window,
    }


def run_locust(url: str, users: int, config: BenchConfig, path: str = "/classify", batch_size: int = 0,
               server: TreeSampler | None = None, locustfile: Path = BENCHFILE,
               options: list[str] | None = None) -> dict:
    """Load ``url`` with ``users`` back-to-back clients for ``config.seconds``; return the run's figures.

    ``locustfile`` is loadtests/benchfile.py (``path`` and ``batch_size`` become its options) unless
    given; another locustfile gets ``options`` (its own flags and user classes) and must write the same
    ``--summary-json``. ``path`` and ``batch_size`` still label the run and count its images.
    """
    with tempfile.TemporaryDirectory(prefix="digitserve-bench-") as scratch:
        summary_path = Path(scratch) / "summary.json"
        if options is None:
            options = ["--bench-path", path, "--bench-batch-size", str(batch_size)]
        command = [venv_script("locust"), "-f", str(locustfile), "--headless",
                   "--host", url, "--users", str(users), "--spawn-rate", str(users),
                   "--run-time", f"{config.seconds:g}s", "--stop-timeout", "60", "--only-summary",
                   "--loglevel", "WARNING", "--summary-json", str(summary_path), *options]
        if config.locust_processes > 1:
            command += ["--processes", str(config.locust_processes)]
        log = Path(scratch) / "locust.log"
        with log.open("w") as output:
            process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=output, stderr=subprocess.STDOUT)
            generator = TreeSampler(process.pid)
            try:
                process.wait(timeout=config.seconds + LOCUST_GRACE_S)
            finally:
                generator.stop()
                if process.poll() is None:
                    process.kill()
        if not summary_path.exists():
            raise RuntimeError(f"Locust wrote no summary (exit code {process.returncode}):\n{log.read_text()[-3000:]}")
        summary = json.loads(summary_path.read_text())
    summary["batch_size"] = max(batch_size, 1)
    start, end = summary["started_at"], summary["last_request_at"]
    server_cpu = server.cpu_between(start, end) if server is not None else 0.0
    figures = measurement(summary, server_cpu, generator.cpu_between(start, end))
    figures["concurrency"] = users
    logger.info("  %s c=%d%s: %.1f req/s, %.0f images/s, p50 %s ms, p99 %s ms, %d errors, %d wrong; "
                "generator %.2f cores", path, users, f" batch={batch_size}" if batch_size else "", figures["rps"],
                figures["images_per_s"], figures["p50_ms"], figures["p99_ms"], figures["errors"],
                figures["wrong_digits"], figures["generator_cores"] or 0)
    return figures


def warm_up(url: str, count: int) -> None:
    """A few sequential requests, so no measured request pays for a first call."""
    from loadtests.payloads import digit_uploads
    from training.data import load_subset

    data = load_subset()
    for upload in digit_uploads(data.x_test[:count], data.y_test[:count], kinds=("png",)):
        request = urllib.request.Request(url + "/classify", data=upload.body.data,
                                         headers={"Content-Type": upload.body.content_type})
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()


def wait_until_idle(sampler: TreeSampler, timeout: float = 30.0, idle_cores: float = IDLE_CORES) -> None:
    """Wait until the server has finished whatever the last run left it, so runs do not overlap.

    ``idle_cores``: what the server uses at rest (see ``cores_at_rest``); a Ray cluster never drops to zero.
    """
    deadline = time.time() + timeout
    time.sleep(1.0)
    while time.time() < deadline and sampler.cores_lately(1.0) > idle_cores:
        time.sleep(0.5)


def cores_at_rest(sampler: TreeSampler, seconds: float = 2.0) -> float:
    """The cores the server uses with no request in flight, over ``seconds`` after a second's settling."""
    time.sleep(1.0 + seconds)
    return sampler.cores_lately(seconds)


def idle_threshold(at_rest: float) -> float:
    """Below this the server counts as idle between runs: its own resting use, with a margin."""
    return max(IDLE_CORES, 1.5 * at_rest + 0.02)


def measure_server(name: str, start: Callable[[], ServerProcess], config: BenchConfig, batch: bool = False,
                   classify: bool = True, binary: bool = True, image_files: bool = True) -> dict:
    """Start a server, load ``/classify`` at each concurrency (and ``/classify_batch`` if ``batch``), stop it.

    ``classify=False`` skips the ``/classify`` runs (the peers have no such endpoint). A server that
    answers ``/v2/health/ready`` also gets the v2 runs; ``binary`` and ``image_files`` say whether its
    v2 endpoint takes binary tensor data and encoded image files (loadtests/peers/compare.py).
    """
    from loadtests.peers.compare import measure_v2, speaks_v2

    logger.info("%s: starting", name)
    server = start()
    sampler = TreeSampler(server.pid)
    try:
        result: dict = {"ready_s": server.ready_seconds, "cores_at_rest": cores_at_rest(sampler)}
        idle = idle_threshold(result["cores_at_rest"])
        if classify:
            warm_up(server.url, config.warmup_requests)
            for users in config.concurrency:
                wait_until_idle(sampler, idle_cores=idle)
                result[f"c{users}"] = run_locust(server.url, users, config, server=sampler)
        if batch:
            wait_until_idle(sampler, idle_cores=idle)
            result["batch"] = run_locust(server.url, config.batch_users, config, "/classify_batch",
                                         config.batch_size, server=sampler)
        if speaks_v2(server.url):
            result.update(measure_v2(server.url, sampler, config, binary=binary, image_files=image_files,
                                     idle_cores=idle))
            if name == "service":
                wait_until_idle(sampler, idle_cores=idle)
                result["perf_analyzer"] = cross_check(server.url, max(config.concurrency), config)
        result["rss_mb"] = sampler.peak_rss_mb()
        result["rss_total_mb"] = sampler.peak_total_rss_mb()
        result["rss_mb_by_process"] = {str(pid): rss / 2**20 for pid, rss in sampler.peak_rss.items()}
    finally:
        sampler.stop()
        server.stop()
    logger.info("%s: ready in %.1f s, peak RSS %.0f MB", name, result["ready_s"], result["rss_mb"])
    return result


def cross_check(url: str, concurrency: int, config: BenchConfig) -> dict:
    """Triton's perf_analyzer on the same v2 endpoint as the one-digit Locust runs, or why it could not run."""
    from loadtests import perf_analyzer

    if problem := perf_analyzer.available():
        return {"error": problem}
    try:
        return perf_analyzer.run(url, concurrency, requests=max(500, int(config.seconds * 200)))
    except (RuntimeError, subprocess.TimeoutExpired, ValueError) as error:
        return {"error": str(error)[-500:]}


def service_workers() -> int:
    """The service's worker count, computed by the service's own rule."""
    from service.device import worker_count
    from service.settings import get_settings

    return worker_count(get_settings().workers)


def measure_model_limit(config: BenchConfig) -> dict:
    command = [sys.executable, "-m", "loadtests.model_limit", "--seconds", f"{config.model_seconds:g}",
               "--batches", f"1,32,{MODEL_LIMIT_BATCH}"]
    logger.info("model limit: measuring in process (%s s each)", config.model_seconds)
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if done.returncode != 0:
        raise RuntimeError(f"loadtests.model_limit failed (exit code {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the report -----------------------------------------------------------------------------------


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def ratios(report: dict) -> dict:
    """The headline ratios; None where a figure was not measured."""
    key = f"c{RATIO_CONCURRENCY}"

    def figure(server: str, run: str, name: str) -> float | None:
        return (report.get(server) or {}).get(run, {}).get(name)

    limit = figure("model_limit", f"batch_{MODEL_LIMIT_BATCH}", "images_per_s")
    bulk_paths = [value for value in (figure("service", "batch", "images_per_s"),
                                      figure("service", "v2_bulk", "images_per_s")) if value is not None]
    own = {
        "service_vs_naive": _ratio(figure("service", key, "rps"), figure("naive", key, "rps")),
        "service_vs_handwritten": _ratio(figure("service", key, "rps"), figure("handwritten", key, "rps")),
        "batch_vs_model_limit": _ratio(figure("service", "batch", "images_per_s"), limit),
        # The best bulk path (multipart /classify_batch, or v2 binary tensors) over the model alone (issue 10).
        "bulk_vs_model_limit": _ratio(max(bulk_paths), limit) if bulk_paths else None,
    }
    if not any(report.get(name) for name in PEERS):
        return own
    from loadtests.peers.compare import peer_ratios

    return {**own, **peer_ratios(report, RATIO_CONCURRENCY)}


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict:
    """What the numbers were measured on, including how busy the machine already was."""
    import psutil

    cpu_model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from service.device import count_gpus

    return {
        "cpu": cpu_model, "logical_cpus": os.cpu_count(), "physical_cores": psutil.cpu_count(logical=False),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1), "gpus": count_gpus(),
        "load_average_at_start": list(os.getloadavg()), "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in ("tensorflow", "keras", "bentoml", "locust", "starlette", "uvicorn")},
    }


def build_report(results: dict, machine: dict, config: BenchConfig, date: str) -> dict:
    """bench.json: the issue's keys (ratios, service, naive, handwritten, model_limit, machine) and the settings."""
    report = {"ratios": {}, **{name: results.get(name) for name in (*SERVERS, "model_limit")},
              "machine": machine, "date": date, "targets": TARGETS,
              "settings": {**asdict(config), "reports_dir": str(config.reports_dir)}}
    report.update({name: results[name] for name in PEERS if name in results})
    report["ratios"] = ratios(report)
    if any(report.get(name) for name in PEERS):
        from loadtests.peers.compare import peer_comparison

        report["peer_comparison"] = peer_comparison(report, RATIO_CONCURRENCY)
    return report


def _number(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def render_markdown(report: dict) -> str:
    """bench.md: the tables, with the date, the machine and the settings."""
    machine, settings = report["machine"], report["settings"]
    lines = [
        "# Side-by-side benchmark",
        "",
        f"Measured {report['date']} on {machine['cpu']} ({machine['logical_cpus']} logical CPUs, "
        f"{machine['memory_gb']} GB, {machine['gpus']} GPUs; load average {machine['load_average_at_start'][0]:.2f} "
        f"at start) with `make bench`: {settings['seconds']:g} s per run, one Locust generator "
        f"({settings['locust_processes']} Locust process{'es' if settings['locust_processes'] > 1 else ''}), "
        "the same MNIST test digits (PNG and JPEG) for every server. Peak RSS is the largest process's "
        "(the worker holding the model) while under load.",
        "",
        "| server | clients | req/s | images/s | p50 ms | p95 ms | p99 ms | errors | wrong digits "
        "| server CPU s / 1,000 images | peak RSS MB | generator CPU (cores) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for server in SERVERS:
        result = report.get(server)
        if not result:
            continue
        runs = [key for key in result if key.startswith("c") and key[1:].isdigit()]
        runs = sorted(runs, key=lambda key: int(key[1:])) + (["batch"] if "batch" in result else [])
        for run in runs:
            figures = result[run]
            label = f"{server} /classify_batch ({settings['batch_size']} a request)" if run == "batch" else server
            lines.append(
                f"| {label} | {figures['concurrency']} | {_number(figures['rps'])} | {_number(figures['images_per_s'], 0)} "
                f"| {_number(figures['p50_ms'], 0)} | {_number(figures['p95_ms'], 0)} | {_number(figures['p99_ms'], 0)} "
                f"| {figures['errors']} | {figures['wrong_digits']} | {_number(figures['cpu_s_per_1000_images'], 2)} "
                f"| {_number(result['rss_mb'], 0)} | {_number(figures['generator_cores'], 2)} |"
            )
    limit = report.get("model_limit")
    if limit:
        lines += ["", "In-process model limit (no server; TensorFlow with "
                  f"{limit['tf_threads']['intra_op']} intra-op threads):", "",
                  "| call | batch | images/s | ms per call | CPU s / 1,000 images |", "|---|---:|---:|---:|---:|"]
        for key, figures in limit.items():
            if key.startswith(("batch_", "predict_")):
                call = "`model.predict`" if key.startswith("predict") else "compiled (`make_inference_fn`)"
                lines.append(f"| {call} | {figures['batch_size']} | {_number(figures['images_per_s'], 0)} "
                             f"| {_number(figures['ms_per_call'], 2)} | {_number(figures['cpu_s_per_1000_images'], 3)} |")
    targets, ratio_values = report["targets"], report["ratios"]
    lines += ["", "| figure | measured | target |", "|---|---:|---:|"]
    for name in ("service_vs_naive", "service_vs_handwritten", "batch_vs_model_limit", "bulk_vs_model_limit"):
        lines.append(f"| `{name}` | {_number(ratio_values[name], 2)} | ≥ {targets[name]:g} |")
    service = report.get("service") or {}
    if f"c{RATIO_CONCURRENCY}" in service:
        lines.append(f"| service c={RATIO_CONCURRENCY} p99 | {_number(service[f'c{RATIO_CONCURRENCY}']['p99_ms'], 0)} ms "
                     f"| ≤ {targets['c64_p99_ms']:g} ms |")
    for server in SERVERS:
        if report.get(server):
            target = f"≤ {targets['ready_s']:g} s" if server == "service" else ""
            lines.append(f"| {server}: start to ready | {_number(report[server]['ready_s'])} s | {target} |")
    from loadtests.peers.compare import render_v2

    lines += render_v2(report, RATIO_CONCURRENCY)
    check = service.get("perf_analyzer")
    if check:
        run = service.get(f"v2_c{check.get('concurrency')}", {})
        lines += ["", (f"Cross-check with Triton's perf_analyzer on the service's v2 endpoint, one digit a request "
                       f"(binary), {check['concurrency']} at a time: {_number(check['rps'])} req/s, p50 "
                       f"{_number(check['p50_ms'], 1)} ms, p99 {_number(check['p99_ms'], 1)} ms; Locust's one-digit "
                       f"(JSON) run at the same concurrency: {_number(run.get('rps'))} req/s, p99 "
                       f"{_number(run.get('p99_ms'), 0)} ms.") if "rps" in check
                  else f"perf_analyzer did not run: {check['error']}"]
    lines += ["", "Generator CPU is the Locust process's CPU use over the run, in cores; near 1.0 a single "
              "process would be the bottleneck (raise BENCH_LOCUST_PROCESSES). On a small machine the generator "
              "and the server share the cores, so every figure here is a lower bound for the server alone.", ""]
    return "\n".join(lines)


def write_reports(report: dict, reports_dir: Path) -> tuple[Path, Path]:
    reports_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = reports_dir / "bench.json", reports_dir / "bench.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    md_path.write_text(render_markdown(report))
    return json_path, md_path


def run_bench(config: BenchConfig) -> dict:
    """Measure everything ``config`` asks for; return the report (not yet written)."""
    date = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    machine = machine_info()
    workers = service_workers()
    results: dict = {"model_limit": measure_model_limit(config)}
    timeout = config.ready_timeout
    starters = {
        "service": lambda: start_service(timeout=timeout),
        "handwritten": lambda: start_uvicorn("loadtests.handwritten_server:app", workers=workers, timeout=timeout),
        "naive": lambda: start_uvicorn("loadtests.naive_server:app", workers=workers, timeout=timeout),
    }
    for name in (name for name in config.servers if name in SERVERS):
        results[name] = measure_server(name, starters[name], config, batch=name == "service")
        results[name]["workers"] = workers
    if any(name in PEERS for name in config.servers):
        from loadtests.peers.compare import measure_peer

        for name in (name for name in config.servers if name in PEERS):
            results[name] = measure_peer(name, config)
    return build_report(results, machine, config, date)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    config = parse_config(argv)
    report = run_bench(config)
    json_path, md_path = write_reports(report, config.reports_dir)
    logger.info("Ratios: %s", json.dumps(report["ratios"]))
    logger.info("Wrote %s and %s", json_path, md_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
