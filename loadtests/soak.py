"""``make soak``: the service under steady load for minutes, recorded minute by minute.

    python -m loadtests.soak                                   # 10 minutes at 70 % of the measured capacity
    SOAK_MINUTES=0.5 SOAK_INTERVAL_S=10 python -m loadtests.soak
    python -m loadtests.soak --closed-loop --users 32 --minutes 5   # back-to-back clients instead of a set rate
    python -m loadtests.soak --service-dir /work/scratch/old       # another checkout's service, same client

It starts the service (or drives ``--url``), warms it up, measures its capacity with a short ramp of
back-to-back clients on ``/classify`` (real MNIST test digits, every answer checked), then runs
``SOAK_MINUTES`` at ``SOAK_LOAD_FRACTION`` (70 %) of that capacity: the ramp's best concurrency in Locust
users, each paced with ``constant_throughput`` so that together they offer that rate.

Each interval (a minute by default) records the requests, throughput, p50/p99, failures (any answer but a
well-formed 200), each worker's RSS, the server's CPU per request, the generator's CPU and memory (and the
size of Locust's own statistics), the Prometheus multiprocess directory's size, TCP connections on the
port, and the machine's CPU from ``/proc/stat`` (steal, and everything that is neither the server nor the
generator). The drift from the first interval to the last is judged against the targets (issue 9): no
failures, each worker's RSS within +5 %, throughput within ±10 %. Writes ``reports/soak.{json,md}`` and
exits 1 when a target is missed.

Knobs (environment, or the flags of the same name): SOAK_MINUTES, SOAK_INTERVAL_S, SOAK_LOAD_FRACTION,
SOAK_CAPACITY_USERS, SOAK_CAPACITY_SECONDS, SOAK_USERS, SOAK_REPORTS_DIR, SOAK_NAME.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from loadtests.reliability import (
    REPORTS_DIR,
    Outcomes,
    TargetSpec,
    Watcher,
    add_target_arguments,
    drift_percent,
    full_intervals,
    machine_load,
    number,
    open_target,
    read_proc_stat,
    run_and_report,
    run_locust,
    signed,
)

logger = logging.getLogger(__name__)

TARGETS = {"failures": 0, "rss_drift_percent": 5.0, "throughput_drift_percent": 10.0}  # issue 9, item 6
SETTLE_S = 2.0  # between the capacity runs, so one run's tail does not load the next


@dataclass(frozen=True)
class SoakConfig:
    minutes: float = 10.0
    interval_s: float = 60.0  # one row of the table
    load_fraction: float = 0.7  # of the measured capacity
    capacity_users: tuple[int, ...] = (4, 16, 32, 64)  # the ramp that measures capacity
    capacity_seconds: float = 10.0  # each step of the ramp
    users: int = 0  # 0: the ramp's best concurrency
    closed_loop: bool = False  # no ramp: `users` clients back to back, as the first soak ran
    warmup_requests: int = 20
    reports_dir: Path = REPORTS_DIR
    name: str = "soak"  # reports/<name>.{json,md}

    def __post_init__(self) -> None:
        if self.minutes <= 0 or self.interval_s <= 0 or not 0 < self.load_fraction <= 1:
            raise ValueError(f"SOAK_MINUTES and SOAK_INTERVAL_S must be > 0 and SOAK_LOAD_FRACTION in (0, 1], got "
                             f"{self.minutes}, {self.interval_s} and {self.load_fraction}.")
        if self.closed_loop and self.users < 1:
            raise ValueError("--closed-loop needs --users: how many back-to-back clients to run.")
        if not self.closed_loop and (not self.capacity_users or min(self.capacity_users) < 1):
            raise ValueError(f"SOAK_CAPACITY_USERS must be positive integers, got {self.capacity_users}.")


def parse_args(argv: list[str] | None = None, environ: dict | None = None) -> tuple[SoakConfig, TargetSpec]:
    environ = os.environ if environ is None else environ
    defaults = SoakConfig()

    def env(name: str, default):
        return environ.get(f"SOAK_{name.upper()}", default)

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=float(env("minutes", defaults.minutes)))
    parser.add_argument("--interval-s", type=float, default=float(env("interval_s", defaults.interval_s)))
    parser.add_argument("--load-fraction", type=float, default=float(env("load_fraction", defaults.load_fraction)))
    parser.add_argument("--capacity-users", default=env("capacity_users", ",".join(map(str, defaults.capacity_users))))
    parser.add_argument("--capacity-seconds", type=float,
                        default=float(env("capacity_seconds", defaults.capacity_seconds)))
    parser.add_argument("--users", type=int, default=int(env("users", defaults.users)))
    parser.add_argument("--closed-loop", action="store_true", help="skip the ramp; --users clients back to back")
    parser.add_argument("--reports-dir", type=Path, default=Path(env("reports_dir", defaults.reports_dir)))
    parser.add_argument("--name", default=env("name", defaults.name), help="write reports/<name>.{json,md}")
    add_target_arguments(parser)
    args = parser.parse_args(argv)
    config = SoakConfig(minutes=args.minutes, interval_s=args.interval_s, load_fraction=args.load_fraction,
                        capacity_users=tuple(int(part) for part in args.capacity_users.split(",") if part.strip()),
                        capacity_seconds=args.capacity_seconds, users=args.users, closed_loop=args.closed_loop,
                        reports_dir=args.reports_dir, name=args.name)
    return config, TargetSpec.from_args(args)


# --- measuring ------------------------------------------------------------------------------------


def measure_capacity(url: str, config: SoakConfig, watcher: Watcher) -> list[dict]:
    """Back-to-back clients at each of ``config.capacity_users``: one row per step."""
    steps = []
    for users in config.capacity_users:
        records = run_locust(url, users, config.capacity_seconds, config.capacity_seconds, watcher)
        window = full_intervals(records, config.capacity_seconds, config.capacity_seconds)
        outcomes = Outcomes.of(window)
        usage = watcher.window(window[0]["start"], window[-1]["end"]) if window else {}
        steps.append({"users": users, **outcomes.summary(refusals_fail=True),
                      "server_cores": usage.get("server_cores"), "generator_cores": usage.get("generator_cores")})
        logger.info("  capacity: %d clients -> %.0f req/s, p99 %s ms, %d failures", users,
                    steps[-1]["accepted_per_s"], steps[-1]["p99_ms"], steps[-1]["failures"])
        time.sleep(SETTLE_S)
    return steps


def minute_row(index: int, record: dict, usage: dict) -> dict:
    """One row of the soak table: the Locust interval joined with what the watcher saw over it."""
    outcomes = Outcomes.of([record])
    summary = outcomes.summary(refusals_fail=True)  # in a soak at 70 % nothing should be refused
    requests = summary["requests"]
    server_cpu = usage.get("server_cores", 0.0) * usage.get("seconds", 0.0)
    generator = record.get("generator", {})
    return {
        "interval": index + 1, "start": record["start"], "end": record["end"],
        **summary, "throughput_per_s": summary["accepted_per_s"],
        "workers": {label: {"pids": worker["pids"], "rss_mb": worker["rss_mb"], "rss_max_mb": worker["rss_max_mb"],
                            "cores": worker["cores"], "threads": worker["threads"], "fds": worker["fds"]}
                    for label, worker in usage.get("workers", {}).items()},
        "server_cores": usage.get("server_cores"),
        "server_cpu_ms_per_request": server_cpu / requests * 1000 if requests else None,
        "generator_cores": usage.get("generator_cores"),
        "generator_cpu_ms_per_request": (usage.get("generator_cores", 0.0) * usage.get("seconds", 0.0)
                                         / requests * 1000 if requests else None),
        "generator_rss_mb": usage.get("generator_rss_mb"),
        "generator": generator,
        "machine": usage.get("machine", {}),
        "prometheus_dir_bytes": usage.get("prometheus_dir_bytes"), "prometheus_files": usage.get("prometheus_files"),
        "tcp": usage.get("tcp", {}),
        "other_processes": usage.get("top_other_processes", []),
    }


def drifts(rows: list[dict]) -> dict:
    """First interval -> last: RSS of each worker, throughput, and the figures that would explain a change."""
    if len(rows) < 2:
        return {}
    first, last = rows[0], rows[-1]
    workers = {}
    for label in sorted(set(first["workers"]) | set(last["workers"])):
        before, after = first["workers"].get(label), last["workers"].get(label)
        workers[label] = {
            "first_rss_mb": before and before["rss_mb"], "last_rss_mb": after and after["rss_mb"],
            "rss_drift_percent": drift_percent(before and before["rss_mb"], after and after["rss_mb"]),
            "restarted": bool(before and after and before["pids"] != after["pids"]) or not (before and after),
        }

    def change(key: str) -> float | None:
        return drift_percent(first.get(key), last.get(key))

    return {
        "workers": workers,
        "throughput_drift_percent": change("throughput_per_s"),
        # throughput = server cores / server CPU per request: which of the two moved explains a drift
        "server_cores_drift_percent": change("server_cores"),
        "p99_drift_percent": change("p99_ms"),
        "server_cpu_per_request_drift_percent": change("server_cpu_ms_per_request"),
        "generator_cpu_per_request_drift_percent": change("generator_cpu_ms_per_request"),
        "generator_rss_drift_percent": change("generator_rss_mb"),
        "machine_busy_cores": [first["machine"].get("busy_cores"), last["machine"].get("busy_cores")],
        "other_load_cores": [first["machine"].get("other_cores"), last["machine"].get("other_cores")],
        "steal_cores": [first["machine"].get("steal_cores"), last["machine"].get("steal_cores")],
        "prometheus_dir_bytes": [first["prometheus_dir_bytes"], last["prometheus_dir_bytes"]],
    }


def verdict(rows: list[dict], drift: dict) -> list[str]:
    """Each target the soak missed, as a sentence; an empty list means it passed."""
    missed = []
    if not rows:
        return ["No full interval was recorded, so nothing was measured."]
    failures = sum(row["failures"] for row in rows)
    if failures > TARGETS["failures"]:
        kinds = {}
        for row in rows:
            for kind, count in row["failures_by_kind"].items():
                kinds[kind] = kinds.get(kind, 0) + count
        missed.append(f"{failures} of {sum(row['requests'] for row in rows)} requests failed: {kinds}.")
    for label, worker in drift.get("workers", {}).items():
        if worker["restarted"]:
            missed.append(f"Worker {label} was restarted or went missing during the soak.")
        elif worker["rss_drift_percent"] is not None and worker["rss_drift_percent"] > TARGETS["rss_drift_percent"]:
            missed.append(f"Worker {label}'s RSS grew {worker['rss_drift_percent']:.1f} % "
                          f"(target ≤ {TARGETS['rss_drift_percent']:g} %).")
    throughput = drift.get("throughput_drift_percent")
    if throughput is None:
        missed.append("Throughput drift needs at least two intervals.")
    elif abs(throughput) > TARGETS["throughput_drift_percent"]:
        missed.append(f"Throughput moved {throughput:+.1f} % from the first interval to the last "
                      f"(target within ±{TARGETS['throughput_drift_percent']:g} %).")
    return missed


def run_soak(config: SoakConfig, spec: TargetSpec) -> dict:
    """Measure capacity, soak, and return the report (not yet written)."""
    from loadtests.bench import machine_info, warm_up

    date = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    machine = {**machine_info(), "load_at_start": machine_load(), "proc_stat_at_start": read_proc_stat()}
    with open_target(spec) as target:
        watcher = Watcher(target.pid, target.port)
        try:
            warm_up(target.url, config.warmup_requests)
            capacity_steps: list[dict] = []
            if config.closed_loop:
                users, user_rate, capacity = config.users, 0.0, None
                logger.info("Soak: %d clients back to back for %g minutes", users, config.minutes)
            else:
                capacity_steps = measure_capacity(target.url, config, watcher)
                best = max(capacity_steps, key=lambda step: step["accepted_per_s"])
                capacity = best["accepted_per_s"]
                if capacity <= 0:
                    raise RuntimeError(f"The service answered nothing during the capacity ramp: {capacity_steps}")
                users = config.users or best["users"]
                user_rate = config.load_fraction * capacity / users
                logger.info("Capacity %.0f req/s at %d clients; soak: %d clients at %.2f req/s each "
                            "(%.0f req/s) for %g minutes", capacity, best["users"], users, user_rate,
                            user_rate * users, config.minutes)
            records = run_locust(target.url, users, config.minutes * 60, config.interval_s, watcher,
                                 user_rate=user_rate, honour_retry_after=True)
            intervals = full_intervals(records, config.minutes * 60, config.interval_s)
            rows = [minute_row(index, record, watcher.window(record["start"], record["end"]))
                    for index, record in enumerate(intervals)]
        finally:
            watcher.stop()
        source = target.source
    drift = drifts(rows)
    missed = verdict(rows, drift)
    machine.update(load_at_end=machine_load())
    return {
        "date": date, "source": source, "machine": machine, "targets": TARGETS, "settings": {
            **asdict(config), "reports_dir": str(config.reports_dir), "target": spec.describe()},
        "capacity": {"steps": capacity_steps, "requests_per_s": capacity,
                     "offered_per_s": user_rate * users if user_rate else None, "users": users,
                     "user_rate": user_rate or None},
        "intervals": rows, "partial_intervals_left_out": len(records) - len(intervals),
        "totals": Outcomes.of(intervals).summary(refusals_fail=True) if intervals else {},
        "drift": drift, "passed": not missed, "missed": missed,
    }


# --- the report -----------------------------------------------------------------------------------


def render_markdown(report: dict) -> str:
    settings, capacity, rows, drift = report["settings"], report["capacity"], report["intervals"], report["drift"]
    machine = report["machine"]
    labels = sorted({label for row in rows for label in row["workers"]})
    load = machine["load_at_start"]["load_average"]
    mode = (f"{capacity['users']} clients back to back" if settings["closed_loop"] else
            f"{capacity['users']} clients offering {number(capacity['offered_per_s'], 0)} req/s together "
            f"({settings['load_fraction']:.0%} of the measured capacity, "
            f"{number(capacity['requests_per_s'], 0)} req/s)")
    lines = [
        f"# Soak: {settings['minutes']:g} minutes on /classify",
        "",
        f"Measured {report['date']} against {report['source']} on {machine['cpu']} ({machine['logical_cpus']} "
        f"logical CPUs; load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} at the start, "
        f"{machine['load_at_end']['load_average'][0]:.2f} at the end): {mode}, "
        f"{settings['interval_s']:g} s a row. Failures are any answer but a well-formed 200.",
        "",
    ]
    if capacity["steps"]:
        lines += ["Capacity ramp (clients back to back, "
                  f"{settings['capacity_seconds']:g} s each):", "",
                  "| clients | req/s | p50 ms | p99 ms | failures | server cores | generator cores |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        for step in capacity["steps"]:
            lines.append(f"| {step['users']} | {number(step['accepted_per_s'])} | {number(step['p50_ms'], 0)} "
                         f"| {number(step['p99_ms'], 0)} | {step['failures']} | {number(step['server_cores'], 2)} "
                         f"| {number(step['generator_cores'], 2)} |")
        lines.append("")
    worker_columns = "".join(f" worker {label} RSS MB |" for label in labels)
    lines += [
        f"| # | requests | req/s | p50 ms | p99 ms | failures |{worker_columns} server CPU ms/req "
        "| generator cores | generator RSS MB | other load (cores) | steal (cores) | metrics dir KB | TIME_WAIT |",
        "|---:|---:|---:|---:|---:|---:|" + "---:|" * len(labels) + "---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        rss = "".join(f" {number(row['workers'].get(label, {}).get('rss_mb'), 0)} |" for label in labels)
        machine_row = row["machine"]
        lines.append(
            f"| {row['interval']} | {row['requests']:,} | {number(row['throughput_per_s'])} "
            f"| {number(row['p50_ms'], 0)} | {number(row['p99_ms'], 0)} | {row['failures']} |{rss} "
            f"{number(row['server_cpu_ms_per_request'], 3)} "
            f"| {number(row['generator_cores'], 2)} | {number(row['generator_rss_mb'], 0)} "
            f"| {number(machine_row.get('other_cores'), 2)} | {number(machine_row.get('steal_cores'), 2)} "
            f"| {number((row['prometheus_dir_bytes'] or 0) / 1024, 0)} | {row['tcp'].get('time_wait', '–')} |"
        )
    lines += ["", "| drift, first interval -> last | measured | target |", "|---|---:|---:|"]
    for label, worker in drift.get("workers", {}).items():
        note = " (restarted)" if worker["restarted"] else ""
        lines.append(f"| worker {label} RSS ({number(worker['first_rss_mb'], 0)} -> "
                     f"{number(worker['last_rss_mb'], 0)} MB){note} | {signed(worker['rss_drift_percent'])} % "
                     f"| ≤ +{TARGETS['rss_drift_percent']:g} % |")
    lines.append(f"| throughput | {signed(drift.get('throughput_drift_percent'))} % "
                 f"| ±{TARGETS['throughput_drift_percent']:g} % |")
    for key, label in (("p99_drift_percent", "p99"), ("server_cores_drift_percent", "server CPU (cores)"),
                       ("server_cpu_per_request_drift_percent", "server CPU per request"),
                       ("generator_cpu_per_request_drift_percent", "generator CPU per request"),
                       ("generator_rss_drift_percent", "generator RSS")):
        lines.append(f"| {label} | {signed(drift.get(key))} % | |")
    named = [f"{row['interval']}: " + ", ".join(f"`{short_command(p['command'])}` {p['cores']:.2f}"
                                                for p in row.get("other_processes", [])[:2])
             for row in rows if row.get("other_processes")]
    if named:
        lines += ["", "The other jobs that used the most CPU, interval by interval (cores): " + "; ".join(named) + "."]
    busy, other = drift.get("machine_busy_cores") or [None, None], drift.get("other_load_cores") or [None, None]
    lines += ["", f"Throughput is the server's CPU divided by its CPU per request. The machine was busy "
              f"{number(busy[0], 2)} -> {number(busy[1], 2)} cores of {machine['logical_cpus']}, of which other jobs "
              f"{number(other[0], 2)} -> {number(other[1], 2)}: when the machine is full, the server's CPU is what "
              "the other jobs leave it."]
    totals = report["totals"]
    lines += ["", f"Failures: {totals.get('failures', 0)} of {totals.get('requests', 0):,} requests "
              f"{totals.get('failures_by_kind') or ''} (target {TARGETS['failures']}); wrong digits (answered, "
              f"not failures): {totals.get('wrong_digits', 0):,}.", ""]
    if report["passed"]:
        lines.append("**Verdict: every target met.**")
    else:
        lines += ["**Verdict: targets missed.**", ""] + [f"- {sentence}" for sentence in report["missed"]]
    lines += ["", "Server CPU per request is the server's processes' CPU over the interval divided by its requests: "
              "at a steady offered rate it is what would show the server slowing down. Other load is the machine's "
              "busy CPU (/proc/stat) minus the server's and the generator's: other jobs on the same cores, and the "
              "kernel's interrupt work, which no process is charged for.", ""]
    return "\n".join(lines)


def short_command(command: str, width: int = 48) -> str:
    """A process's command line without its interpreter's path: ``python -m training.levers ...``."""
    words = command.split()
    if "-m" in words[:-1]:
        words = words[words.index("-m") + 1:]
    else:
        words = [word.rsplit("/", 1)[-1] for word in words[:1]] + words[1:]
    text = " ".join(words)
    return text if len(text) <= width else text[: width - 1] + "…"


def main(argv: list[str] | None = None) -> int:
    return run_and_report(argv, parse_args, run_soak, render_markdown)


if __name__ == "__main__":
    sys.exit(main())
