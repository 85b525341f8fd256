"""``make overload``: what the service answers at eight times the concurrency where its throughput peaks.

    python -m loadtests.overload                                     # ramp 1..128 clients, then 8x the peak
    python -m loadtests.overload --service-dir /work/scratch/old     # another checkout's service, same client
    python -m loadtests.overload --ramp-users 4 --step-seconds 3 --flood-seconds 6 \
        --env DIGITSERVE_MAX_CONCURRENCY=4 --env DIGITSERVE_WORKERS=1     # the short version the tests run

It starts the service (or drives ``--url``), warms it up, ramps back-to-back clients on ``/classify``
(1, 4, 16, 32, 64, 128 by default, ``--step-seconds`` each) to find the concurrency with the most accepted
requests/s, then runs eight times that many clients for ``--flood-seconds``.

Every answer is one of: accepted (a well-formed 200), refused (a 503 ``{"reason": "overloaded"}`` with a
numeric ``Retry-After``), or a failure (a timeout, a reset, any other status, a 503 without that shape,
a 200 with a wrong body). The clients behave as a well-written client would: a refused client waits
Retry-After x uniform(0.5, 1.5) seconds before its next request (the server's hint, jittered so refused
clients do not come back in lockstep); nothing else is retried.

It reports accepted and refused requests/s, the failures by kind, the p50/p99 of the accepted requests
beside their p99 at the peak, and how fast the refusals were. Targets (issue 9, item 3): no failure at all,
and a bounded p99 for the accepted requests: at most 1 s, the bound of the DigitserveHighLatencyP99 alert.
Writes ``reports/overload.{json,md}``; exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import re
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from loadtests.reliability import (
    REPORTS_DIR,
    Outcomes,
    TargetSpec,
    Watcher,
    add_target_arguments,
    full_intervals,
    machine_load,
    number,
    open_target,
    run_and_report,
    run_locust,
)

logger = logging.getLogger(__name__)

# The accepted requests' p99 bound is the DigitserveHighLatencyP99 alert's (deploy/prometheus/alerts.yml).
TARGETS = {"failures": 0, "accepted_p99_ms": 1000.0}
SETTLE_S = 3.0  # after each step: refused clients' back-offs and the server's queue run out


@dataclass(frozen=True)
class OverloadConfig:
    ramp_users: tuple[int, ...] = (1, 4, 16, 32, 64, 128)
    step_seconds: float = 10.0
    flood_factor: int = 8  # the flood's clients, in multiples of the peak concurrency
    flood_seconds: float = 30.0
    interval_s: float = 10.0  # the flood's rows
    request_timeout_s: float = 30.0  # a request unanswered this long is a failure ("timeout")
    warmup_requests: int = 20
    reports_dir: Path = REPORTS_DIR
    name: str = "overload"

    def __post_init__(self) -> None:
        if not self.ramp_users or min(self.ramp_users) < 1 or self.flood_factor < 1:
            raise ValueError(f"--ramp-users must be positive integers and --flood-factor ≥ 1, got "
                             f"{self.ramp_users} and {self.flood_factor}.")
        if self.step_seconds <= 0 or self.flood_seconds <= 0 or self.interval_s <= 0:
            raise ValueError("--step-seconds, --flood-seconds and --interval-s must be > 0.")


def parse_args(argv: list[str] | None = None, environ: dict | None = None) -> tuple[OverloadConfig, TargetSpec]:
    environ = os.environ if environ is None else environ
    defaults = OverloadConfig()

    def env(name: str, default):
        return environ.get(f"OVERLOAD_{name.upper()}", default)

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ramp-users", default=env("ramp_users", ",".join(map(str, defaults.ramp_users))))
    parser.add_argument("--step-seconds", type=float, default=float(env("step_seconds", defaults.step_seconds)))
    parser.add_argument("--flood-factor", type=int, default=int(env("flood_factor", defaults.flood_factor)))
    parser.add_argument("--flood-seconds", type=float, default=float(env("flood_seconds", defaults.flood_seconds)))
    parser.add_argument("--interval-s", type=float, default=float(env("interval_s", defaults.interval_s)))
    parser.add_argument("--request-timeout-s", type=float,
                        default=float(env("request_timeout_s", defaults.request_timeout_s)))
    parser.add_argument("--reports-dir", type=Path, default=Path(env("reports_dir", defaults.reports_dir)))
    parser.add_argument("--name", default=env("name", defaults.name), help="write reports/<name>.{json,md}")
    add_target_arguments(parser)
    args = parser.parse_args(argv)
    config = OverloadConfig(ramp_users=tuple(int(part) for part in args.ramp_users.split(",") if part.strip()),
                            step_seconds=args.step_seconds, flood_factor=args.flood_factor,
                            flood_seconds=args.flood_seconds, interval_s=min(args.interval_s, args.flood_seconds),
                            request_timeout_s=args.request_timeout_s, reports_dir=args.reports_dir, name=args.name)
    return config, TargetSpec.from_args(args)


# A Prometheus histogram bucket of a request-duration metric: this service's
# (digitserve_http_request_duration_seconds) and BentoML's (bentoml_service_request_duration_seconds).
DURATION_BUCKET = re.compile(r'^\w+_request_duration_seconds_bucket\{(?P<labels>[^}]*)\} (?P<count>\S+)$')


def server_histogram(url: str, endpoint: str = "/classify") -> dict[float, float]:
    """The server's own request-duration histogram for ``endpoint``, all series added up: {le: cumulative count}.

    It times a request from the moment the app sees it to its answer; what the client measures beyond
    that was spent before the app: in the kernel's queues, or waiting for the worker's event loop.
    """
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=30) as response:
            return duration_buckets(response.read().decode(), endpoint)
    except OSError:
        return {}


def duration_buckets(text: str, endpoint: str) -> dict[float, float]:
    """{le: cumulative count} of every request-duration histogram series for ``endpoint`` in a /metrics text."""
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        match = DURATION_BUCKET.match(line)
        if match and f'endpoint="{endpoint}"' in match["labels"]:
            le = re.search(r'le="([^"]+)"', match["labels"])[1]
            bound = float("inf") if le == "+Inf" else float(le)
            buckets[bound] = buckets.get(bound, 0.0) + float(match["count"])
    return buckets


def histogram_quantile(before: dict[float, float], after: dict[float, float], share: float) -> float | None:
    """The upper bound (ms) of the bucket holding the ``share`` quantile of what was counted between two scrapes."""
    delta = sorted((bound, after[bound] - before.get(bound, 0.0)) for bound in after)
    total = delta[-1][1] if delta else 0
    if total <= 0:
        return None
    for bound, cumulative in delta:
        if cumulative >= share * total:
            return bound * 1000
    return None


def run_step(url: str, users: int, seconds: float, interval: float, config: OverloadConfig,
             watcher: Watcher) -> tuple[dict, list[dict]]:
    """``users`` back-to-back clients for ``seconds``: (the summary, one row per interval)."""
    histogram_before = server_histogram(url)
    records = full_intervals(run_locust(url, users, seconds, interval, watcher, honour_retry_after=True,
                                        request_timeout=config.request_timeout_s), seconds, interval)
    rows = []
    for record in records:
        usage = watcher.window(record["start"], record["end"])
        rows.append({**Outcomes.of([record]).summary(refusals_fail=False), "server_cores": usage.get("server_cores"),
                     "generator_cores": usage.get("generator_cores"),
                     "worker_rss_mb": {label: worker["rss_max_mb"]
                                       for label, worker in usage.get("workers", {}).items()}})
    usage = watcher.window(records[0]["start"], records[-1]["end"])
    summary = {"users": users, **Outcomes.of(records).summary(refusals_fail=False),
               "server_cores": usage.get("server_cores"), "generator_cores": usage.get("generator_cores"),
               "worker_rss_max_mb": {label: worker["rss_max_mb"] for label, worker in usage.get("workers", {}).items()},
               "machine": usage.get("machine", {}), "other_processes": usage.get("top_other_processes", [])}
    histogram_after = server_histogram(url)  # after the stop's drain: every answer of the step is counted
    summary["server_p50_ms"] = histogram_quantile(histogram_before, histogram_after, 0.50)
    summary["server_p99_ms"] = histogram_quantile(histogram_before, histogram_after, 0.99)
    logger.info("  %d clients: %.0f accepted/s, %.0f refused/s, p99 accepted %s ms, failures %s", users,
                summary["accepted_per_s"], summary["refused_per_s"], summary["p99_ms"],
                summary["failures_by_kind"] or 0)
    return summary, rows


def verdict(flood: dict) -> list[str]:
    missed = []
    if flood["accepted"] == 0:
        missed.append("No request was accepted during the flood.")
    if flood["failures"] > TARGETS["failures"]:
        missed.append(f"{flood['failures']} of {flood['requests']} requests failed (neither accepted nor refused "
                      f"with Retry-After): {flood['failures_by_kind']}.")
    if flood["p99_ms"] is not None and flood["p99_ms"] > TARGETS["accepted_p99_ms"]:
        missed.append(f"The accepted requests' p99 was {flood['p99_ms']:g} ms, "
                      f"above {TARGETS['accepted_p99_ms']:g} ms.")
    return missed


def run_overload(config: OverloadConfig, spec: TargetSpec) -> dict:
    from loadtests.bench import machine_info, warm_up

    date = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    machine = {**machine_info(), "load_at_start": machine_load()}
    with open_target(spec) as target:
        watcher = Watcher(target.pid, target.port)
        try:
            warm_up(target.url, config.warmup_requests)
            ramp = []
            for users in config.ramp_users:
                ramp.append(run_step(target.url, users, config.step_seconds, config.step_seconds, config, watcher)[0])
                time.sleep(SETTLE_S)
            peak = max(ramp, key=lambda step: step["accepted_per_s"])
            flood_users = config.flood_factor * peak["users"]
            logger.info("Peak: %.0f accepted/s at %d clients; flood: %d clients for %g s", peak["accepted_per_s"],
                        peak["users"], flood_users, config.flood_seconds)
            flood, rows = run_step(target.url, flood_users, config.flood_seconds, config.interval_s, config, watcher)
        finally:
            watcher.stop()
        source = target.source
    flood["p99_vs_peak_p99"] = flood["p99_ms"] / peak["p99_ms"] if flood["p99_ms"] and peak["p99_ms"] else None
    missed = verdict(flood)
    machine.update(load_at_end=machine_load())
    return {"date": date, "source": source, "machine": machine, "targets": TARGETS,
            "settings": {**asdict(config), "reports_dir": str(config.reports_dir), "target": spec.describe()},
            "client": "back to back; after a 503 overloaded, wait Retry-After x uniform(0.5, 1.5) s",
            "ramp": ramp, "peak": {"users": peak["users"], "accepted_per_s": peak["accepted_per_s"],
                                   "p50_ms": peak["p50_ms"], "p99_ms": peak["p99_ms"]},
            "flood": flood, "flood_intervals": rows, "passed": not missed, "missed": missed}


def render_markdown(report: dict) -> str:
    settings, peak, flood, machine = report["settings"], report["peak"], report["flood"], report["machine"]
    load = machine["load_at_start"]["load_average"]
    lines = [
        f"# Overload: {flood['users']} clients on /classify, {settings['flood_factor']}x the peak concurrency",
        "",
        f"Measured {report['date']} against {report['source']} on {machine['cpu']} ({machine['logical_cpus']} logical "
        f"CPUs; load average {load[0]:.2f} at the start, {machine['load_at_end']['load_average'][0]:.2f} at the end). "
        f"Clients: {report['client']}. Accepted: a well-formed 200. Refused: a 503 `overloaded` with `Retry-After`. "
        "Anything else is a failure.",
        "",
        f"Ramp ({settings['step_seconds']:g} s a step) and flood ({settings['flood_seconds']:g} s):",
        "",
        "| clients | accepted/s | refused/s | failures | p50 ms (accepted) | p99 ms (accepted) | p99 ms (refused) "
        "| server cores | generator cores |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for step in [*report["ramp"], flood]:
        marker = " (flood)" if step is flood else (" (peak)" if step["users"] == peak["users"] else "")
        lines.append(f"| {step['users']}{marker} | {number(step['accepted_per_s'])} | {number(step['refused_per_s'])} "
                     f"| {step['failures']} | {number(step['p50_ms'], 0)} | {number(step['p99_ms'], 0)} "
                     f"| {number(step['refused_p99_ms'], 0)} | {number(step['server_cores'], 2)} "
                     f"| {number(step['generator_cores'], 2)} |")
    lines += [
        "",
        "| at the flood | measured |",
        "|---|---:|",
        f"| accepted requests/s | {number(flood['accepted_per_s'])} (peak: {number(peak['accepted_per_s'])}) |",
        f"| refused requests/s (503 overloaded) | {number(flood['refused_per_s'])} |",
        f"| failures (timeouts, resets, other statuses) | {flood['failures']} {flood['failures_by_kind'] or ''} |",
        f"| accepted p50 / p99 | {number(flood['p50_ms'], 0)} / {number(flood['p99_ms'], 0)} ms |",
        f"| accepted p99 at the peak ({peak['users']} clients) | {number(peak['p99_ms'], 0)} ms |",
        f"| p99 at the flood / p99 at the peak | {number(flood['p99_vs_peak_p99'], 2)} |",
        f"| refusals p50 / p99 | {number(flood['refused_p50_ms'], 0)} / {number(flood['refused_p99_ms'], 0)} ms |",
        f"| the server's own p50 / p99, every /classify answer (bucket bounds) | "
        f"≤ {number(flood.get('server_p50_ms'), 0)} / ≤ {number(flood.get('server_p99_ms'), 0)} ms |",
        f"| machine: other load / steal during the flood | {number(flood['machine'].get('other_cores'), 2)} / "
        f"{number(flood['machine'].get('steal_cores'), 2)} cores |",
        f"| worker RSS, largest during the flood | "
        f"{', '.join(f'{label}: {number(mb, 0)} MB' for label, mb in flood['worker_rss_max_mb'].items())} |",
        "",
        "Flood, interval by interval:",
        "",
        "| # | accepted/s | refused/s | failures | p99 ms (accepted) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for index, row in enumerate(report["flood_intervals"], 1):
        lines.append(f"| {index} | {number(row['accepted_per_s'])} | {number(row['refused_per_s'])} "
                     f"| {row['failures']} | {number(row['p99_ms'], 0)} |")
    lines.append("")
    if report["passed"]:
        lines.append(f"**Verdict: no failures, accepted p99 ≤ {TARGETS['accepted_p99_ms']:g} ms.**")
    else:
        lines += ["**Verdict: targets missed.**", ""] + [f"- {sentence}" for sentence in report["missed"]]
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return run_and_report(argv, parse_args, run_overload, render_markdown)


if __name__ == "__main__":
    sys.exit(main())
