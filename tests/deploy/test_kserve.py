"""deploy/k8s/kserve: the InferenceService validates offline against KServe's own schema and agrees with
the service.

KServe's schema is its CRD's OpenAPI, from which its Python SDK (in .venv-kserve, installed by
``make v2-clients``) is generated; tests/deploy/kserve_schema_check.py walks the manifest through the SDK's
models and the Kubernetes client's, offline.
"""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import pytest
import yaml

from service.app import create_app
from service.settings import Settings
from tests.deploy import stack
from tests.deploy.test_compose import bentoml_default_port

MANIFEST = stack.DEPLOY / "k8s" / "kserve" / "inferenceservice.yaml"
CHECKER = Path(__file__).with_name("kserve_schema_check.py")
KSERVE_PYTHON = Path(__file__).resolve().parents[2] / ".venv-kserve" / "bin" / "python"


def inference_service() -> dict:
    return stack.load_yaml(MANIFEST)


def schema_problems(manifest: dict, tmp_path: Path) -> str:
    if not KSERVE_PYTHON.exists():
        pytest.fail(f"KServe's SDK is not installed at {KSERVE_PYTHON}: run `make v2-clients` (make test does).")
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump(manifest))
    run = subprocess.run([str(KSERVE_PYTHON), str(CHECKER), str(path)], capture_output=True, text=True, timeout=120)
    assert run.returncode in (0, 1), run.stderr
    return "" if run.returncode == 0 else run.stdout


def container() -> dict:
    (only,) = inference_service()["spec"]["predictor"]["containers"]
    return only


def test_validates_against_kserves_schema(tmp_path):
    assert schema_problems(inference_service(), tmp_path) == ""


def test_validation_is_not_vacuous(tmp_path):
    misspelt = copy.deepcopy(inference_service())
    serving = misspelt["spec"]["predictor"]["containers"][0]
    serving["readinesProbe"] = serving.pop("readinessProbe")
    assert "readinesProbe: not a field" in schema_problems(misspelt, tmp_path)
    wrong_type = copy.deepcopy(inference_service())
    wrong_type["spec"]["predictor"]["minReplicas"] = "two"
    assert "minReplicas: expected int" in schema_problems(wrong_type, tmp_path)


def v2_get_routes() -> set[str]:
    """The GET routes the service's app documents (its OpenAPI document)."""
    return {path for path, operations in create_app().openapi()["paths"].items() if "get" in operations}


def test_probes_are_the_protocols_health_routes_on_the_services_port():
    serving = container()
    assert serving["name"] == "kserve-container"  # what KServe calls a custom predictor's serving container
    (port,) = serving["ports"]
    assert port["containerPort"] == bentoml_default_port()
    routes = v2_get_routes()
    for probe, path in (("startupProbe", "/v2/health/ready"), ("readinessProbe", "/v2/health/ready"),
                        ("livenessProbe", "/v2/health/live")):
        assert serving[probe]["httpGet"] == {"path": path, "port": port["containerPort"]}, probe
        assert path in routes
    annotations = inference_service()["metadata"]["annotations"]
    assert int(annotations["prometheus.kserve.io/port"]) == port["containerPort"]
    assert annotations["prometheus.kserve.io/path"] in routes


def test_settings_are_real_settings_and_fit_the_cpu_limit():
    values = {item["name"]: item["value"] for item in container()["env"]}
    names = {f"DIGITSERVE_{name.upper()}" for name in Settings.model_fields}
    assert set(values) <= names, set(values) - names
    Settings(**{name.removeprefix("DIGITSERVE_").lower(): value for name, value in values.items()})
    assert int(values["DIGITSERVE_WORKERS"]) * int(values["DIGITSERVE_THREADS"]) <= int(container()["resources"]["limits"]["cpu"])


def test_same_image_and_user_as_the_deployment():
    deployment = next(r for r in stack.k8s_base_resources() if r["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    image = stack.kustomization(stack.K8S_BASE)["images"][0]
    assert container()["image"] == f"{image['newName']}:{image['newTag']}"
    assert container()["securityContext"]["runAsUser"] == pod["securityContext"]["runAsUser"]


def test_the_grace_period_covers_the_drain():
    values = {item["name"]: item["value"] for item in container()["env"]}
    settings = Settings(**{name.removeprefix("DIGITSERVE_").lower(): value for name, value in values.items()})
    grace = inference_service()["spec"]["predictor"]["terminationGracePeriodSeconds"]
    assert grace >= settings.drain_delay_s + settings.request_timeout_s + 5
