"""The v2 side of ``make bench``: the same v2 runs for the service and each peer, the ratios, and their table.

For every server that answers ``GET /v2/health/ready`` (the service once it speaks v2, and each peer),
loadtests/bench.py measures, with the generator in loadtests/v2users.py and the same MNIST test digits:

- ``v2_c1``, ``v2_c16``, ``v2_c64``: one digit a request, UINT8 ``[1, 28, 28]`` in JSON, at each concurrency;
- ``v2_bulk``: ``BENCH_BATCH_SIZE`` (256) digits a request, UINT8 binary tensor data, from
  ``BENCH_BATCH_USERS`` (2) clients; JSON for a server without the binary extension (MLServer), marked so;
- ``v2_png``: one PNG a request, BYTES ``[1]`` binary, at ``BENCH_IMAGE_USERS`` (16) clients, for servers
  that accept image files that way (KServe and MLServer do not: see loadtests/peers/launch.py).

``ratios.service_vs_<peer>`` is the service's v2 requests/s at 64 clients over the peer's (target 1.5,
with the service's p99 no worse than the peer's; both are in ``peer_comparison``).
"""

from __future__ import annotations

import urllib.error
import urllib.request

from loadtests.peers.launch import PEERS, PROJECT_PACKAGES, start_peer
from loadtests.servers import REPO_ROOT
from loadtests.v2wire import INFER_PATH, READY_PATH, digits_request

V2USERS = REPO_ROOT / "loadtests" / "v2users.py"
PEER_TARGET = 1.5  # the service's v2 requests/s at 64 clients over each peer's (issue 13)
ROW_LABELS = {"v2_bulk": "bulk", "v2_png": "PNG file"}


def speaks_v2(url: str) -> bool:
    """Whether the server at ``url`` answers the v2 readiness path with a 200."""
    try:
        with urllib.request.urlopen(url + READY_PATH, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def warm_up_v2(url: str, count: int) -> None:
    """A few sequential v2 requests, so no measured request pays for a first call."""
    from training.data import load_subset

    data = load_subset()
    for index in range(count):
        body = digits_request(data.x_test[index:index + 1], data.y_test[index:index + 1])
        request = urllib.request.Request(url + INFER_PATH, data=body.data, headers=body.headers)
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()


def measure_v2(url: str, sampler, config, binary: bool = True, image_files: bool = True,
               idle_cores: float | None = None) -> dict:
    """The v2 runs (module docstring) against ``url``, with the server's tree sampled by ``sampler``.

    Before each run it waits until the server uses under ``idle_cores`` (default: bench's threshold).
    """
    from loadtests.bench import IDLE_CORES, run_locust, wait_until_idle

    def run(users: int, user_class: str, *options: str, batch_size: int = 0) -> dict:
        wait_until_idle(sampler, idle_cores=IDLE_CORES if idle_cores is None else idle_cores)
        return run_locust(url, users, config, path=f"{INFER_PATH} {user_class}", batch_size=batch_size,
                          server=sampler, locustfile=V2USERS, options=[*options, user_class])

    warm_up_v2(url, config.warmup_requests)
    result = {f"v2_c{users}": run(users, "V2DigitUser") for users in config.concurrency}
    encoding = "binary" if binary else "JSON"
    bulk_options = ["--v2-batch-size", str(config.batch_size)] + ([] if binary else ["--v2-json"])
    result["v2_bulk"] = {**run(config.batch_users, "V2BulkUser", *bulk_options, batch_size=config.batch_size),
                         "encoding": encoding}
    if image_files:
        result["v2_png"] = run(config.image_users, "V2ImageUser")
    return result


def measure_peer(name: str, config) -> dict:
    """Start peer ``name`` from its own environment, run the v2 runs against it, stop it; with its settings."""
    from loadtests.bench import measure_server

    peer = PEERS[name]
    versions = peer.environment.versions(PROJECT_PACKAGES + peer.packages)
    result = measure_server(name, lambda: start_peer(name, timeout=max(config.ready_timeout, 180.0)), config,
                            classify=False, binary=peer.binary, image_files=peer.image_files)
    return {**result, "peer": peer.describe(), "versions": versions}


# --- ratios and the report ------------------------------------------------------------------------


def _run(report: dict, server: str, run: str) -> dict:
    return (report.get(server) or {}).get(run) or {}


def peer_comparison(report: dict, concurrency: int) -> dict:
    """Per peer measured: the service's v2 requests/s over the peer's at ``concurrency``, and both p99s."""
    service = _run(report, "service", f"v2_c{concurrency}")
    comparison = {}
    for name in PEERS:
        peer = _run(report, name, f"v2_c{concurrency}")
        if not peer:
            continue
        ratio = service["rps"] / peer["rps"] if service and peer.get("rps") else None
        comparison[name] = {
            "concurrency": concurrency, "service_rps": service.get("rps"), "peer_rps": peer["rps"], "ratio": ratio,
            "service_p99_ms": service.get("p99_ms"), "peer_p99_ms": peer["p99_ms"],
            "p99_no_worse": (service["p99_ms"] <= peer["p99_ms"]) if service else None,
            "meets_target": (ratio >= PEER_TARGET and service["p99_ms"] <= peer["p99_ms"]) if ratio else None,
        }
    return comparison


def peer_ratios(report: dict, concurrency: int) -> dict:
    """``service_vs_kserve``, ``service_vs_mlserver``, ``service_vs_rayserve``: None where either side is missing."""
    comparison = peer_comparison(report, concurrency)
    return {f"service_vs_{name}": (comparison.get(name) or {}).get("ratio") for name in PEERS}


def _number(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def render_v2(report: dict, concurrency: int) -> list[str]:
    """bench.md's v2 section: the service and the peers on the same v2 requests, their settings, the ratios."""
    servers = [name for name in ("service", *PEERS)
               if any(key.startswith("v2_") for key in (report.get(name) or {}))]
    if not servers:
        return []
    settings = report["settings"]
    lines = [
        "", "## The service beside KServe, MLServer and Ray Serve (Open Inference Protocol v2)", "",
        "The same generator (loadtests/v2users.py) and digits for every server. *digit*: one MNIST digit a request, "
        "UINT8 [1, 28, 28] in JSON; *bulk*: "
        f"{settings['batch_size']} digits a request, UINT8 binary tensor data (JSON where the server has no binary "
        "extension); *PNG file*: one PNG a request, BYTES [1], binary. Every answer's outputs, shapes and digit are "
        "checked. Peak RSS is the largest process's; *all processes* adds up every process of the server's tree "
        "(Ray's GCS, raylet, agents, controller, proxy and replicas; KServe's and MLServer's parent and workers) "
        "at its peak, counting shared pages once per process.", "",
        "| server | request | clients | req/s | images/s | p50 ms | p95 ms | p99 ms | errors | wrong digits "
        "| server CPU s / 1,000 images | peak RSS MB | all processes MB | generator CPU (cores) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in servers:
        result = report[name]
        runs = sorted((key for key in result if key.startswith("v2_c")), key=lambda key: int(key[4:]))
        runs += [key for key in ("v2_bulk", "v2_png") if key in result]
        for run in runs:
            figures = result[run]
            request = ROW_LABELS.get(run, "digit") + (f" ({figures['encoding']})" if "encoding" in figures else "")
            lines.append(
                f"| {name} | {request} | {figures['concurrency']} | {_number(figures['rps'])} "
                f"| {_number(figures['images_per_s'], 0)} | {_number(figures['p50_ms'], 0)} "
                f"| {_number(figures['p95_ms'], 0)} "
                f"| {_number(figures['p99_ms'], 0)} | {figures['errors']} | {figures['wrong_digits']} "
                f"| {_number(figures['cpu_s_per_1000_images'], 2)} | {_number(result.get('rss_mb'), 0)} "
                f"| {_number(result.get('rss_total_mb'), 0)} | {_number(figures['generator_cores'], 2)} |")
    comparison = report.get("peer_comparison") or {}
    if not comparison:
        return lines
    lines += ["", f"| figure (at {concurrency} clients, v2 digit) | measured | target | service p99 ms | peer p99 ms |",
              "|---|---:|---:|---:|---:|"]
    for name in PEERS:
        if name in comparison:
            row = comparison[name]
            lines.append(f"| `service_vs_{name}` | {_number(row['ratio'], 2)} | ≥ {PEER_TARGET:g}, p99 no worse "
                         f"| {_number(row['service_p99_ms'], 0)} | {_number(row['peer_p99_ms'], 0)} |")
    lines += ["", "How each peer was served (loadtests/peers/launch.py):", ""]
    for name in PEERS:
        result = report.get(name)
        if not result or "peer" not in result:
            continue
        peer, versions = result["peer"], result.get("versions", {})
        lines.append(f"- **{name}**: {peer['title']}; {peer['protocol']}; ready in {_number(result.get('ready_s'))} s; "
                     + ", ".join(f"{package} {version}" for package, version in versions.items()) + ".")
        for setting, detail in peer["settings"].items():
            lines.append(f"  - `{setting}` = `{detail['value']}`: {detail['reason']}.")
        if not peer["image_files"]:
            lines.append("  - no *PNG file* row: it does not accept image files as binary BYTES (see launch.py).")
    return lines
