"""The peer harness without the peers: their environments, command lines, settings, ratios and report.

None of these tests imports kserve, mlserver or ray; ``make test`` never installs them. The end-to-end runs
are in test_v2_harness.py.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from loadtests import bench
from loadtests.peers import compare, launch
from loadtests.servers import REPO_ROOT

PEER_PACKAGES = ("kserve", "mlserver", "ray")
PEER_MODULES = {"kserve": "kserve_server", "mlserver": "mlserver_runtime", "rayserve": "rayserve_app"}


def requirement_names(path: Path) -> set[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return {re.split(r"[\[=<>~ ]", line, maxsplit=1)[0].lower() for line in lines if line}


def test_the_peers_are_no_dependency_of_the_service_nor_of_its_tests():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"].values()
    declared = [*project["dependencies"], *(item for extra in extras for item in extra)]
    names = {re.split(r"[\[=<>~;! ]", item, maxsplit=1)[0].lower() for item in declared}
    assert names.isdisjoint(PEER_PACKAGES)


def test_importing_the_harness_imports_no_peer_package():
    code = ("import sys, loadtests.bench, loadtests.peers.compare, loadtests.peers.launch, loadtests.v2wire\n"
            f"print([name for name in {PEER_PACKAGES!r} if name in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_each_environment_pins_its_stack_and_the_model_side_of_the_service():
    model_side = {"tensorflow", "numpy", "pillow", "bentoml"}
    assert requirement_names(launch.KSERVE_RAY.requirements) >= {"kserve", "ray", *model_side}
    assert requirement_names(launch.MLSERVER.requirements) >= {"mlserver", *model_side}
    assert "ray" not in requirement_names(launch.MLSERVER.requirements)  # their fastapi pins cannot meet
    text = launch.KSERVE_RAY.requirements.read_text() + launch.MLSERVER.requirements.read_text()
    for pin in ("kserve==0.21.0", "ray[serve]==2.60.0", "mlserver==1.7.1", "tensorflow==2.21.0"):
        assert pin in text


def test_the_peer_environments_are_ignored_by_git():
    done = subprocess.run(["git", "check-ignore", "-q", ".venv-peers/kserve-ray/bin/python"], cwd=REPO_ROOT)
    assert done.returncode == 0


def make_targets() -> dict[str, str]:
    """Each Makefile target's prerequisites line."""
    targets = {}
    for line in (REPO_ROOT / "Makefile").read_text().splitlines():
        match = re.match(r"^([a-z][\w-]*):(?!=)(.*)$", line)
        if match:
            targets[match.group(1)] = match.group(2).split("##")[0]
    return targets


def test_make_bench_creates_the_peer_environments_and_serve_and_test_do_not():
    targets = make_targets()
    assert "bench-peers" in targets["bench"]
    for target in ("serve", "test", "test-fast", "install"):
        assert "peers" not in targets[target].lower(), target


def test_a_missing_environment_says_to_run_make_bench_peers(monkeypatch, tmp_path):
    monkeypatch.setattr(launch, "PEERS_DIR", tmp_path)
    with pytest.raises(launch.PeerNotInstalled, match="make bench-peers"):
        launch.start_peer("kserve")


def test_every_setting_of_every_peer_says_why():
    for peer in launch.PEERS.values():
        assert peer.settings, peer.name
        for name, setting in peer.settings.items():
            assert len(setting.reason) > 20, (peer.name, name)
        json.dumps(peer.describe())  # it goes into bench.json as it is


def test_kserve_runs_its_workers_from_its_own_environment_with_the_stated_settings():
    command = launch.kserve_command(launch.KSERVE, 8123)
    assert command[0] == str(REPO_ROOT / ".venv-peers" / "kserve-ray" / "bin" / "python")
    assert command[1:3] == ["-m", "loadtests.peers.kserve_server"]
    options = dict(zip(command[3::2], command[4::2]))
    assert options["--http_port"] == "8123" and options["--workers"] == str(launch.KSERVE.value("workers"))
    assert options["--enable_grpc"] == "false" and options["--enable_latency_logging"] == "false"


def test_mlserver_gets_its_ports_its_runtime_and_adaptive_batching_in_its_settings_files():
    files = launch.mlserver_files(launch.MLSERVER_PEER, 8123, 8124, 8125)
    server, model = files["settings.json"], files["model-settings.json"]
    assert (server["http_port"], server["grpc_port"], server["metrics_port"]) == (8123, 8124, 8125)
    assert server["parallel_workers"] == launch.MLSERVER_PEER.value("parallel_workers") and server["debug"] is False
    assert model["name"] == "mnist_cnn" and model["max_batch_size"] > 1 and model["max_batch_time"] > 0
    module, name = model["implementation"].rsplit(".", 1)
    source = (REPO_ROOT / Path(*module.split("."))).with_suffix(".py").read_text()
    assert name in {node.name for node in ast.parse(source).body if isinstance(node, ast.ClassDef)}


def test_ray_serve_gets_every_setting_on_its_command_line():
    command = launch.rayserve_command(launch.RAYSERVE, 8123, Path("/tmp/dsp-x"))
    options = dict(zip(command[3::2], command[4::2]))
    assert options["--port"] == "8123" and options["--temp-dir"] == "/tmp/dsp-x"
    for setting in ("replicas", "max_ongoing_requests", "max_batch_size", "batch_wait_timeout_s", "tf_threads"):
        assert options["--" + setting.replace("_", "-")] == str(launch.RAYSERVE.value(setting)), setting
    assert launch.RAYSERVE.value("max_ongoing_requests") >= launch.RAYSERVE.value("max_batch_size")


def test_a_peer_finds_the_project_on_its_path_and_keeps_what_was_there():
    env = launch.peer_env({"PYTHONPATH": "/opt/extra"})
    assert env["PYTHONPATH"].split(":") == [str(REPO_ROOT), "/opt/extra"]
    assert launch.peer_env({})["PYTHONPATH"] == str(REPO_ROOT)


@pytest.mark.parametrize("module", PEER_MODULES.values())
def test_each_peer_module_parses(module):
    ast.parse((REPO_ROOT / "loadtests" / "peers" / f"{module}.py").read_text())


def test_bench_accepts_the_peers_by_name_and_still_refuses_unknown_servers():
    config = bench.parse_config([], {"BENCH_SERVERS": "service,kserve,mlserver,rayserve", "BENCH_IMAGE_USERS": "4"})
    assert config.servers == ("service", "kserve", "mlserver", "rayserve") and config.image_users == 4
    with pytest.raises(ValueError, match="Unknown servers"):
        bench.parse_config([], {"BENCH_SERVERS": "triton"})


# --- ratios and report, on made-up runs -----------------------------------------------------------


def run(rps: float, p99: float, concurrency: int = 64, batch_size: int = 1, **extra) -> dict:
    return {"rps": rps, "images_per_s": rps * batch_size, "p50_ms": p99 / 3, "p95_ms": p99 / 1.5, "p99_ms": p99,
            "errors": 0, "requests": int(rps * 10), "wrong_digits": 1, "cpu_s_per_1000_images": 1.0,
            "generator_cores": 0.2, "seconds": 10.0, "concurrency": concurrency, **extra}


def peer_result(name: str, rps: float, p99: float) -> dict:
    peer = launch.PEERS[name]
    result = {"ready_s": 5.0, "rss_mb": 800.0, "rss_total_mb": 1500.0, "cores_at_rest": 0.1,
              "v2_c1": run(rps / 4, 10, 1), "v2_c64": run(rps, p99),
              "v2_bulk": run(10, 300, 2, 256, encoding="binary" if peer.binary else "JSON"),
              "peer": peer.describe(), "versions": {"tensorflow": "2.21.0"}}
    if peer.image_files:
        result["v2_png"] = run(rps / 2, p99, 16)
    return result


@pytest.fixture
def report():
    service = {"ready_s": 4.0, "rss_mb": 850.0, "rss_total_mb": 1000.0, "c64": run(2000, 70),
               "v2_c1": run(500, 5, 1), "v2_c64": run(1800, 80), "v2_bulk": run(40, 100, 2, 256, encoding="binary")}
    results = {"service": service, "kserve": peer_result("kserve", 600, 300),
               "mlserver": peer_result("mlserver", 700, 60), "rayserve": peer_result("rayserve", 200, 600)}
    machine = {"cpu": "Test CPU", "logical_cpus": 2, "memory_gb": 8.0, "gpus": 0, "load_average_at_start": [0.5, 0, 0]}
    config = bench.BenchConfig(seconds=5, servers=("service", "kserve", "mlserver", "rayserve"))
    return bench.build_report(results, machine, config, "2026-01-01T00:00:00+00:00")


def test_the_peer_ratios_compare_v2_requests_per_second_at_64_clients(report):
    assert report["ratios"]["service_vs_kserve"] == pytest.approx(3.0)
    assert report["ratios"]["service_vs_mlserver"] == pytest.approx(1800 / 700)
    assert report["ratios"]["service_vs_rayserve"] == pytest.approx(9.0)
    assert report["ratios"]["service_vs_naive"] is None  # the own ratios stay, unmeasured here


def test_a_faster_ratio_with_a_worse_p99_does_not_meet_the_target(report):
    comparison = report["peer_comparison"]
    assert comparison["kserve"]["meets_target"] is True
    assert comparison["mlserver"]["p99_no_worse"] is False and comparison["mlserver"]["meets_target"] is False


def test_without_the_services_v2_rows_there_is_no_peer_ratio(report):
    for key in ("v2_c1", "v2_c64", "v2_bulk"):
        report["service"].pop(key)
    assert bench.ratios(report)["service_vs_kserve"] is None
    assert compare.peer_comparison(report, 64)["kserve"]["ratio"] is None


def test_the_markdown_has_a_v2_row_per_run_and_each_peers_settings_with_reasons(report):
    text = bench.render_markdown(report)
    row = re.compile(r"\| (service|kserve|mlserver|rayserve) \| (digit|bulk|PNG)")
    rows = [line for line in text.splitlines() if row.match(line)]
    assert len(rows) == 3 + 3 + 3 + 4  # ray also takes PNG files
    assert "| mlserver | bulk (JSON) | 2 |" in text and "| kserve | bulk (binary) | 2 |" in text
    assert "| `service_vs_kserve` | 3.00 | ≥ 1.5, p99 no worse | 80 | 300 |" in text
    assert "`max_batch_time` = `" in text and "Ray Serve has no v2" in text
    json.loads(json.dumps(report))


def test_a_report_without_peers_keeps_its_old_shape():
    results = {"service": {"ready_s": 4.0, "rss_mb": 850.0, "c64": run(2000, 70)}}
    machine = {"cpu": "Test CPU", "logical_cpus": 2, "memory_gb": 8.0, "gpus": 0, "load_average_at_start": [0.5, 0, 0]}
    report = bench.build_report(results, machine, bench.BenchConfig(seconds=5), "2026-01-01T00:00:00+00:00")
    assert set(report["ratios"]) == {"service_vs_naive", "service_vs_handwritten", "batch_vs_model_limit",
                                     "bulk_vs_model_limit"}
    assert "peer_comparison" not in report and "Open Inference Protocol" not in bench.render_markdown(report)


def test_the_services_own_v2_rows_show_without_peers_and_without_a_comparison(report):
    for name in launch.PEERS:
        report.pop(name)
    report.pop("peer_comparison")
    text = bench.render_markdown(report)
    assert "| service | digit | 64 |" in text and "service_vs_kserve" not in text and "How each peer" not in text


def test_the_sampler_adds_up_the_rss_of_every_process_in_the_tree():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(2)"])
    try:
        sampler = bench.TreeSampler(child.pid, interval=3600)  # one sample as it starts, then none
        sampler.stop()
    finally:
        child.kill()
        child.wait()
    assert sampler.peak_total_rss_mb() == pytest.approx(sum(sampler.peak_rss.values()) / 2**20)
    assert sampler.peak_total_rss_mb() >= sampler.peak_rss_mb() > 1
