"""What the reliability runs (``make soak``, ``make overload``, ``python -m loadtests.memory``) share.

- **The server under test** (``Target``): the service started here, from this checkout or another one
  (``--service-dir``, e.g. an older commit checked out as a git worktree), or one already running
  (``--url``, with ``--server-pid`` to watch its processes).
- **Its processes, watched** (``Watcher``): once a second, the server tree's CPU, each BentoML worker's RSS
  (the workers are the processes whose command line runs ``_bentoml_impl.worker.service``), the size of the
  Prometheus multiprocess directory the workers write to, the TCP connections on the server's port, the
  load generator's CPU and RSS, and the whole machine's CPU from ``/proc/stat`` (steal and everyone else's
  load included). ``Watcher.window`` sums any interval of that.
- **The load generator** (``run_locust``): loadtests/reliabilityfile.py in a Locust subprocess, which writes
  one JSON line per interval; the outcome of each answer is decided by ``classify_answer``.
- **The arithmetic** of the reports: latency histograms, percentiles, drift.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import subprocess
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from loadtests.checks import BadAnswer, check_classification, parse_json
from loadtests.servers import REPO_ROOT, ServerProcess, free_port, venv_script

logger = logging.getLogger(__name__)

RELIABILITYFILE = REPO_ROOT / "loadtests" / "reliabilityfile.py"
REPORTS_DIR = REPO_ROOT / "reports"
WORKER_MARK = "_bentoml_impl.worker.service"  # in the command line of each BentoML worker process
SAMPLE_INTERVAL_S = 1.0
CENSUS_INTERVAL_S = 10.0  # how often every process on the machine is read, to name the other load
LOCUST_GRACE_S = 90  # a run may outlast its duration by this much: start-up, the stop's drain
# Locust starts its run-time clock a second or two before its first user (and the recording) starts;
# the run is this much longer, so that the requested number of whole intervals is recorded.
START_SLACK_S = 5.0
MB = 2**20

# Outcomes of one request. Everything that is neither accepted nor refused is a failure of some kind:
# "wrong_body" (a 200 whose body is not a classification), "refused_without_retry_after" (a 503
# overloaded that does not say when to come back), "http_<status>" (any other status, other 503s
# included), "timeout", "connection_<ErrorName>" (a reset, a refused connection, ...).
ACCEPTED, REFUSED = "accepted", "refused"


# --- what one answer was --------------------------------------------------------------------------


def classify_answer(status: int, retry_after: str | None, text: str | None,
                    error: BaseException | None) -> tuple[str, int | None]:
    """The outcome of one ``/classify`` request, and the digit it answered (None unless accepted).

    A 200 is accepted only with a well-formed classification (loadtests/checks.py); a 503 is a refusal
    only with the service's overload answer, ``{"reason": "overloaded"}`` and a numeric ``Retry-After``.
    """
    if not status:  # no answer at all: the request never got a status line
        return _transport_failure(error), None
    if status == 200:
        try:
            return ACCEPTED, check_classification(parse_json(status, text))
        except BadAnswer:
            return "wrong_body", None
    if status == 503:
        try:
            body = parse_json(status, text, expected_status=503)
        except BadAnswer:
            body = None
        if isinstance(body, dict) and body.get("reason") == "overloaded":
            if retry_after is not None and re.fullmatch(r"\d+(\.\d+)?", retry_after.strip()):
                return REFUSED, None
            return "refused_without_retry_after", None
    return f"http_{status}", None


def _transport_failure(error: BaseException | None) -> str:
    if error is None:
        return "connection_unknown"
    name = type(error).__name__
    if isinstance(error, TimeoutError) or "timeout" in name.lower():
        return "timeout"
    return f"connection_{name}"


# --- latency histograms ---------------------------------------------------------------------------


def round_ms(milliseconds: float) -> int:
    """A latency rounded to two significant digits (as Locust keeps them): a bounded set of keys."""
    if milliseconds < 100:
        return int(round(milliseconds))
    magnitude = 10 ** (int(math.log10(milliseconds)) - 1)
    return int(round(milliseconds / magnitude) * magnitude)


def percentile(histogram: Mapping[int | str, int], share: float) -> float | None:
    """The latency (ms) below which ``share`` of the requests in ``histogram`` ({ms: count}) fall."""
    items = sorted((int(key), count) for key, count in histogram.items() if count)
    total = sum(count for _, count in items)
    if not total:
        return None
    rank = share * total
    seen = 0
    for milliseconds, count in items:
        seen += count
        if seen >= rank:
            return float(milliseconds)
    return float(items[-1][0])


def merge_histograms(histograms: Iterable[Mapping[int | str, int]]) -> dict[int, int]:
    merged: Counter = Counter()
    for histogram in histograms:
        for key, count in histogram.items():
            merged[int(key)] += count
    return dict(merged)


class IntervalRecorder:
    """Counts outcomes and latencies as they come, and hands them over interval by interval (``cut``)."""

    def __init__(self, started: float) -> None:
        self.started = started
        self._since = started
        self._reset()

    def _reset(self) -> None:
        self.counts: Counter = Counter()
        self.latency: dict[str, Counter] = {}
        self.right = self.wrong = 0

    def record(self, outcome: str, latency_ms: float | None, right_digit: bool | None = None) -> None:
        self.counts[outcome] += 1
        if latency_ms is not None:
            group = outcome if outcome in (ACCEPTED, REFUSED) else "failed"
            self.latency.setdefault(group, Counter())[round_ms(latency_ms)] += 1
        if right_digit is not None:
            self.right += right_digit
            self.wrong += not right_digit

    def cut(self, now: float, partial: bool = False) -> dict:
        """This interval's record, from the previous cut to ``now``; counting starts afresh."""
        record = {"start": self._since, "end": now, "partial": partial, "counts": dict(self.counts),
                  "latency_ms": {group: dict(histogram) for group, histogram in self.latency.items()},
                  "right_digits": self.right, "wrong_digits": self.wrong}
        self._since = now
        self._reset()
        return record


@dataclass
class Outcomes:
    """The requests of one or more intervals, added up."""

    seconds: float
    counts: Counter
    latency_ms: dict[str, dict[int, int]]
    right_digits: int = 0
    wrong_digits: int = 0

    @classmethod
    def of(cls, records: list[dict]) -> Outcomes:
        counts: Counter = Counter()
        for record in records:
            counts.update(record["counts"])
        groups = {group for record in records for group in record["latency_ms"]}
        latency = {group: merge_histograms(r["latency_ms"].get(group, {}) for r in records) for group in groups}
        seconds = (records[-1]["end"] - records[0]["start"]) if records else 0.0
        return cls(seconds, counts, latency, sum(r["right_digits"] for r in records),
                   sum(r["wrong_digits"] for r in records))

    @property
    def requests(self) -> int:
        return sum(self.counts.values())

    @property
    def accepted(self) -> int:
        return self.counts.get(ACCEPTED, 0)

    @property
    def refused(self) -> int:
        return self.counts.get(REFUSED, 0)

    def failures(self, refusals_fail: bool) -> dict[str, int]:
        """Every outcome that is a failure, by kind; refusals count as one when ``refusals_fail``."""
        return {kind: count for kind, count in sorted(self.counts.items())
                if kind != ACCEPTED and (refusals_fail or kind != REFUSED) and count}

    def rate(self, count: int) -> float:
        return count / self.seconds if self.seconds > 0 else 0.0

    def p(self, share: float, group: str = ACCEPTED) -> float | None:
        return percentile(self.latency_ms.get(group, {}), share)

    def summary(self, refusals_fail: bool) -> dict:
        failures = self.failures(refusals_fail)
        return {
            "seconds": self.seconds, "requests": self.requests, "accepted": self.accepted, "refused": self.refused,
            "accepted_per_s": self.rate(self.accepted), "refused_per_s": self.rate(self.refused),
            "failures": sum(failures.values()), "failures_by_kind": failures,
            "p50_ms": self.p(0.50), "p99_ms": self.p(0.99),
            "refused_p50_ms": self.p(0.50, REFUSED), "refused_p99_ms": self.p(0.99, REFUSED),
            "right_digits": self.right_digits, "wrong_digits": self.wrong_digits,
        }


def drift_percent(first: float | None, last: float | None) -> float | None:
    """How far ``last`` moved from ``first``, in per cent of ``first``."""
    if first is None or last is None or first == 0:
        return None
    return (last - first) / first * 100


# --- watching the processes and the machine -------------------------------------------------------


def worker_label(cmdline: list[str]) -> str | None:
    """``"1"`` for the BentoML worker started with ``--worker-id 1``; None for any other process."""
    if WORKER_MARK not in cmdline:  # `python -m _bentoml_impl.worker.service ...`: the module is one argument
        return None
    if "--worker-id" in cmdline and cmdline.index("--worker-id") + 1 < len(cmdline):
        return cmdline[cmdline.index("--worker-id") + 1]
    return "?"


def read_proc_stat(path: Path = Path("/proc/stat")) -> dict[str, int]:
    """The machine's CPU time so far, in clock ticks, by kind (user, system, idle, iowait, steal, ...)."""
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    for line in path.read_text().splitlines():
        if line.startswith("cpu "):
            return dict(zip(names, (int(value) for value in line.split()[1:9])))
    raise ValueError(f"No 'cpu' line in {path}.")


TCP_STATES = {"01": "established", "06": "time_wait", "08": "close_wait"}


def tcp_states(port: int) -> dict[str, int]:
    """Sockets by state on ``port``: the server's end of each connection, and TIME_WAITs on either end."""
    counts: Counter = Counter()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            local, remote, state = int(parts[1].rsplit(":", 1)[1], 16), int(parts[2].rsplit(":", 1)[1], 16), parts[3]
            kind = TCP_STATES.get(state)
            if kind == "time_wait" and port in (local, remote):
                counts[kind] += 1
            elif kind and local == port:
                counts[kind] += 1
    return {kind: counts.get(kind, 0) for kind in TCP_STATES.values()}


def directory_size(path: Path | None) -> tuple[int, int]:
    """(bytes, files) directly in ``path``; (0, 0) when it is missing."""
    if path is None:
        return 0, 0
    try:
        sizes = [entry.stat().st_size for entry in os.scandir(path) if entry.is_file()]
    except OSError:
        return 0, 0
    return sum(sizes), len(sizes)


class Watcher:
    """Samples the server's process tree, the load generator's, and the machine, once a second, in a thread."""

    def __init__(self, server_pid: int | None, port: int | None, interval: float = SAMPLE_INTERVAL_S) -> None:
        import psutil

        self._psutil = psutil
        self.server_pid = server_pid
        self.port = port
        self.interval = interval
        self.generator_pid: int | None = None
        self.samples: list[dict] = []
        self.census: list[tuple[float, dict[int, tuple[str, float]]]] = []  # (time, {pid: (command, CPU s)})
        self.prometheus_dir: Path | None = None
        self._known: dict[int, object] = {}
        self._cpu: dict[str, dict[int, float]] = {"server": {}, "generator": {}}  # last CPU s per pid
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reliability-watcher", daemon=True)
        self._thread.start()

    def watch_generator(self, pid: int | None) -> None:
        """Watch this load generator's process tree too (None: stop watching it)."""
        self.generator_pid = pid

    def _tree(self, pid: int | None) -> list:
        if pid is None:
            return []
        try:
            root = self._known.setdefault(pid, self._psutil.Process(pid))
            found = [root, *root.children(recursive=True)]
        except self._psutil.Error:
            return []
        return [self._known.setdefault(process.pid, process) for process in found]  # one object per pid

    def _read_tree(self, pid: int | None, side: str) -> tuple[float, int, list[tuple[object, int]]]:
        """(CPU seconds so far, never decreasing; RSS of the tree; [(process, rss)])."""
        rows, total_rss = [], 0
        for process in self._tree(pid):
            try:
                with process.oneshot():
                    times, rss = process.cpu_times(), process.memory_info().rss
            except self._psutil.Error:
                continue
            self._cpu[side][process.pid] = times.user + times.system
            rows.append((process, rss))
            total_rss += rss
        return sum(self._cpu[side].values()), total_rss, rows

    def sample(self) -> dict:
        now = time.time()
        server_cpu, server_rss, server_rows = self._read_tree(self.server_pid, "server")
        workers = {}
        for process, rss in server_rows:
            try:
                label = worker_label(process.cmdline())
                if label is None:
                    continue
                workers[label] = {"pid": process.pid, "rss": rss, "cpu_s": self._cpu["server"][process.pid],
                                  "threads": process.num_threads(), "fds": process.num_fds()}
                if self.prometheus_dir is None:
                    found = process.environ().get("PROMETHEUS_MULTIPROC_DIR")
                    self.prometheus_dir = Path(found) if found else None
            except self._psutil.Error:
                continue
        generator_cpu, generator_rss, generator_rows = self._read_tree(self.generator_pid, "generator")
        generator_pids = [process.pid for process, _ in generator_rows]
        prometheus_bytes, prometheus_files = directory_size(self.prometheus_dir)
        sample = {"t": now, "server_cpu_s": server_cpu, "server_rss": server_rss, "workers": workers,
                  "pids": [process.pid for process, _ in server_rows] + generator_pids,
                  "generator_pid": self.generator_pid, "generator_cpu_s": generator_cpu,
                  "generator_rss": generator_rss, "machine": read_proc_stat(),
                  "prometheus_bytes": prometheus_bytes, "prometheus_files": prometheus_files,
                  "tcp": tcp_states(self.port) if self.port else {}}
        with self._lock:
            self.samples.append(sample)
        return sample

    def take_census(self) -> None:
        """Every process's CPU time so far: who else was using the machine (see ``others``)."""
        processes = {}
        for process in self._psutil.process_iter(["cmdline", "name", "cpu_times"]):
            times, cmdline = process.info["cpu_times"], process.info["cmdline"] or [process.info["name"] or "?"]
            if times is not None:  # with its exited children's CPU: a test run's short-lived servers count too
                cpu = times.user + times.system + times.children_user + times.children_system
                processes[process.pid] = (" ".join(cmdline)[:120], cpu)
        with self._lock:
            self.census.append((time.time(), processes))

    def _run(self) -> None:
        next_census = 0.0
        while not self._stop.is_set():
            try:
                self.sample()
                if time.time() >= next_census:
                    self.take_census()
                    next_census = time.time() + CENSUS_INTERVAL_S
            except Exception:  # a sampling hiccup must not end the watch
                logger.exception("Sampling failed")
            self._stop.wait(self.interval)

    def others(self, start: float, end: float, top: int = 3) -> list[dict]:
        """The processes outside the server's and the generator's trees that used the most CPU between two
        times (from the censuses nearest them), as {"command", "cores"}."""
        with self._lock:
            inside = [census for census in self.census if start - CENSUS_INTERVAL_S <= census[0] <= end + 1]
        if len(inside) < 2:
            return []
        (t0, first), (t1, last) = inside[0], inside[-1]
        ours = {pid for sample in self.between(start, end) for pid in sample.get("pids", ())}
        used = [(command, (cpu - first[pid][1]) / (t1 - t0)) for pid, (command, cpu) in last.items()
                if pid in first and pid not in ours and pid != os.getpid()]
        return [{"command": command, "cores": cores} for command, cores in sorted(used, key=lambda x: -x[1])[:top]]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def between(self, start: float, end: float) -> list[dict]:
        with self._lock:
            return [sample for sample in self.samples if start <= sample["t"] <= end]

    def worker_rss_mb(self) -> dict[str, float]:
        """Each worker's RSS now, in MB (a fresh sample)."""
        return {label: worker["rss"] / MB for label, worker in sorted(self.sample()["workers"].items())}

    def window(self, start: float, end: float) -> dict:
        """What the server, the generator and the machine did between two wall-clock times."""
        samples = self.between(start, end)
        if len(samples) < 2:
            return {}
        first, last = samples[0], samples[-1]
        seconds = last["t"] - first["t"]
        ticks = os.sysconf("SC_CLK_TCK")
        machine = {kind: (last["machine"][kind] - first["machine"][kind]) / ticks / seconds
                   for kind in first["machine"]}  # cores busy at each kind of work
        busy = sum(value for kind, value in machine.items() if kind not in ("idle", "iowait"))
        server_cores = (last["server_cpu_s"] - first["server_cpu_s"]) / seconds
        generator_cores = (last["generator_cpu_s"] - first["generator_cpu_s"]) / seconds
        workers = {}
        for label in sorted({label for sample in samples for label in sample["workers"]}):
            seen = [sample["workers"][label] for sample in samples if label in sample["workers"]]
            rss = [worker["rss"] / MB for worker in seen]
            workers[label] = {"pids": sorted({worker["pid"] for worker in seen}), "rss_mb": sum(rss) / len(rss),
                              "rss_max_mb": max(rss), "rss_last_mb": rss[-1],
                              "cores": (seen[-1]["cpu_s"] - seen[0]["cpu_s"]) / seconds,
                              "threads": seen[-1]["threads"], "fds": seen[-1]["fds"]}
        return {
            "seconds": seconds, "server_cores": server_cores, "generator_cores": generator_cores,
            "generator_rss_mb": last["generator_rss"] / MB, "workers": workers,
            "machine": {"busy_cores": busy, "steal_cores": machine["steal"], "iowait_cores": machine["iowait"],
                        "user_cores": machine["user"] + machine["nice"], "system_cores": machine["system"],
                        # interrupts, loopback networking's softirqs included: charged to no process
                        "irq_cores": machine["irq"] + machine["softirq"],
                        # everything else running on the machine: other jobs, the kernel's work, this harness
                        "other_cores": busy - server_cores - generator_cores},
            "prometheus_dir_bytes": last["prometheus_bytes"], "prometheus_files": last["prometheus_files"],
            "tcp": last["tcp"],
            "top_other_processes": self.others(start, end),
        }


# --- the server under test ------------------------------------------------------------------------


@dataclass
class Target:
    """A server to drive: its URL, the pid of its process tree's root (when known), and how it was started."""

    url: str
    pid: int | None = None
    server: ServerProcess | None = None
    source: str = ""  # what is being served: this checkout, another directory, or a URL

    @property
    def port(self) -> int | None:
        match = re.search(r":(\d+)$", self.url.rstrip("/"))
        return int(match.group(1)) if match else None

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


def start_target(service_dir: Path | None = None, env: Mapping[str, str] | None = None,
                 timeout: float = 120.0) -> Target:
    """Start ``bentoml serve service:DigitClassifier`` from ``service_dir`` (this checkout by default)."""
    directory = (service_dir or REPO_ROOT).resolve()
    port = free_port()
    command = [venv_script("bentoml"), "serve", "service:DigitClassifier", "--host", "127.0.0.1", "--port", str(port)]
    server = ServerProcess(command, port, env=env, cwd=directory, name="bentoml-serve")
    try:
        server.wait_ready(timeout)
    except BaseException:
        server.stop()
        raise
    return Target(server.url, server.pid, server, source=f"{directory} ({git_describe(directory)})")


def git_describe(directory: Path) -> str:
    """The commit checked out in ``directory``, and whether its tracked files differ from it."""
    try:
        commit = subprocess.run(["git", "-C", str(directory), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(directory), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "not a git checkout"
    return f"commit {commit}{' with uncommitted changes' if dirty else ''}"


def parse_env(pairs: Iterable[str]) -> dict[str, str]:
    """``["KEY=VALUE", ...]`` -> a dict; ValueError with a sentence for anything else."""
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--env takes KEY=VALUE, got {pair!r}.")
        env[key] = value
    return env


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("the server under test")
    group.add_argument("--service-dir", type=Path, default=None,
                       help="start the service from this checkout (a git worktree of another commit, say)")
    group.add_argument("--url", default=None, help="drive a service that is already running instead")
    group.add_argument("--server-pid", type=int, default=None,
                       help="with --url: the pid of its `bentoml serve` process, to watch its workers")
    group.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                       help="set this in the started service's environment (repeatable)")


@dataclass
class TargetSpec:
    service_dir: Path | None = None
    url: str | None = None
    server_pid: int | None = None
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TargetSpec:
        if args.url and (args.service_dir or args.env):
            raise ValueError("--url drives a running service: --service-dir and --env apply only to one started here.")
        return cls(args.service_dir, args.url, args.server_pid, parse_env(args.env))

    def describe(self) -> dict:
        return {"service_dir": str(self.service_dir) if self.service_dir else None, "url": self.url,
                "server_pid": self.server_pid, "env": self.env}


class open_target:  # noqa: N801 (used as a context manager, like open())
    """``with open_target(spec) as target``: the server ``spec`` names; started and stopped here unless it is a URL."""

    def __init__(self, spec: TargetSpec, timeout: float = 120.0) -> None:
        self.spec, self.timeout = spec, timeout
        self.target: Target | None = None

    def __enter__(self) -> Target:
        if self.spec.url:
            self.target = Target(self.spec.url.rstrip("/"), self.spec.server_pid, source=self.spec.url)
        else:
            self.target = start_target(self.spec.service_dir, self.spec.env, self.timeout)
        return self.target

    def __exit__(self, *exc_info) -> None:
        if self.target is not None:
            self.target.stop()


# --- driving Locust -------------------------------------------------------------------------------


def run_locust(url: str, users: int, seconds: float, interval: float, watcher: Watcher | None = None,
               user_rate: float = 0.0, honour_retry_after: bool = True, request_timeout: float = 60.0) -> list[dict]:
    """Run loadtests/reliabilityfile.py with ``users`` users for ``seconds``; return its interval records.

    The generator is watched by ``watcher`` while it runs. The last record is the partial interval after
    the last full one (``"partial": true``); it holds the requests drained at the stop. ``full_intervals``
    keeps the whole ones.
    """
    with tempfile.TemporaryDirectory(prefix="digitserve-reliability-") as scratch:
        records_path = Path(scratch) / "intervals.jsonl"
        command = [venv_script("locust"), "-f", str(RELIABILITYFILE), "--headless", "--host", url,
                   "--users", str(users), "--spawn-rate", str(users), "--run-time", f"{seconds + START_SLACK_S:g}s",
                   "--stop-timeout", "30", "--only-summary", "--loglevel", "WARNING",
                   "--record-path", str(records_path), "--record-interval", f"{interval:g}",
                   "--user-rate", f"{user_rate:g}", "--request-timeout", f"{request_timeout:g}"]
        if honour_retry_after:
            command.append("--honour-retry-after")
        log = Path(scratch) / "locust.log"
        with log.open("w") as output:
            process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=output, stderr=subprocess.STDOUT)
            if watcher is not None:
                watcher.watch_generator(process.pid)
            try:
                process.wait(timeout=seconds + START_SLACK_S + LOCUST_GRACE_S)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
                if watcher is not None:
                    watcher.sample()  # the generator's last reading, before it is forgotten
                    watcher.watch_generator(None)
        records = [json.loads(line) for line in records_path.read_text().splitlines()] if records_path.exists() else []
        output = log.read_text(errors="replace")
        if "Traceback" in output:  # a task or listener raised: the tool is broken, not the server
            raise RuntimeError(f"The load generator raised an exception:\n{output[-3000:]}")
        if not records:
            raise RuntimeError(f"Locust recorded nothing (exit code {process.returncode}):\n{log.read_text()[-3000:]}")
    return records


def full_intervals(records: list[dict], seconds: float, interval: float) -> list[dict]:
    """The whole intervals of the run's first ``seconds`` (at most ``round(seconds / interval)``, at least
    one); never the partial record of the stop, which holds the drained requests of a shrinking load."""
    wanted = max(1, round(seconds / interval))
    whole = [record for record in records if not record["partial"]]
    return whole[:wanted]


# --- reports --------------------------------------------------------------------------------------


def number(value: float | None, digits: int = 1) -> str:
    """A figure for a Markdown table; "–" when it was not measured."""
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def signed(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:+.{digits}f}"


def machine_load() -> dict:
    """How busy the machine is right now: load averages and the CPUs there are."""
    return {"load_average": list(os.getloadavg()), "logical_cpus": os.cpu_count()}


def write_report(report: dict, markdown: str, reports_dir: Path, name: str) -> tuple[Path, Path]:
    reports_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = reports_dir / f"{name}.json", reports_dir / f"{name}.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    md_path.write_text(markdown)
    return json_path, md_path


def run_and_report(argv: list[str] | None, parse_args, run, render_markdown) -> int:
    """A reliability run's command line: parse, run, write ``<name>.{json,md}``, log each missed target.

    Exits 0 when every target was met, 1 otherwise (``make soak``, ``make overload``, ``make memory``).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    config, spec = parse_args(argv)
    report = run(config, spec)
    json_path, md_path = write_report(report, render_markdown(report), config.reports_dir, config.name)
    logger.info("Wrote %s and %s", json_path, md_path)
    for sentence in report["missed"]:
        logger.error("Target missed: %s", sentence)
    return 0 if report["passed"] else 1
