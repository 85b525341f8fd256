"""deploy/k8s: the manifests validate offline against the Kubernetes schemas and agree with the service.

kubernetes-validate ships the schemas, so nothing is fetched. The GPU overlay's JSON patch is applied here
by a few lines of code; where ``kubectl`` is installed, its built-in kustomize renders both for real too.
"""

from __future__ import annotations

import copy
import subprocess

import kubernetes_validate
import pytest
import yaml

from service.settings import Settings
from tests.deploy import stack
from tests.deploy.test_compose import bentoml_default_port

KUBERNETES_VERSION = "1.30.0"  # the oldest release still maintained upstream when this was written


def validate(resource: dict) -> None:
    kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def by_kind(resources: list[dict]) -> dict[str, dict]:
    return {resource["kind"]: resource for resource in resources}


def apply_json_patch(document: dict, operations: list[dict]) -> dict:
    """RFC 6902 ``add`` and ``replace``: all the GPU overlay uses."""
    patched = copy.deepcopy(document)
    for operation in operations:
        *parents, last = [part.replace("~1", "/").replace("~0", "~") for part in operation["path"].split("/")[1:]]
        node = patched
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if operation["op"] == "replace" and last not in node:
            raise KeyError(f"replace at {operation['path']}: nothing there")
        if operation["op"] not in ("add", "replace"):
            raise ValueError(f"Unsupported op {operation['op']!r}")
        node[last] = operation["value"]
    return patched


def gpu_deployment() -> dict:
    overlay = stack.kustomization(stack.K8S_GPU)
    (patch,) = overlay["patches"]
    assert patch["target"]["kind"] == "Deployment"
    return apply_json_patch(by_kind(stack.k8s_base_resources())["Deployment"], stack.load_yaml(stack.K8S_GPU / patch["path"]))


def container(deployment: dict) -> dict:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


# --- schemas ---------------------------------------------------------------------------------------

def is_operator_resource(resource: dict) -> bool:
    """A Prometheus Operator custom resource: kubernetes-validate has no schema for it (checked by hand below)."""
    return resource["apiVersion"].startswith("monitoring.coreos.com/")


@pytest.mark.parametrize("resource", [r for r in stack.k8s_base_resources() if not is_operator_resource(r)],
                         ids=lambda resource: resource["kind"])
def test_base_manifests_validate_against_the_kubernetes_schemas(resource):
    validate(resource)


def test_the_gpu_overlay_deployment_validates():
    validate(gpu_deployment())


def test_validation_is_not_vacuous():
    deployment = by_kind(stack.k8s_base_resources())["Deployment"]
    broken = copy.deepcopy(deployment)
    container(broken)["ports"][0]["containerPort"] = "http"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)
    misspelt = copy.deepcopy(deployment)
    container(misspelt)["readinesProbe"] = container(misspelt).pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(misspelt)


def test_the_service_monitor_has_what_the_operator_requires():
    monitor = by_kind(stack.k8s_base_resources())["ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["interval"].endswith("s")


# --- agreement with the service and with each other ---------------------------------------------------

def test_probes_and_ports_agree_with_the_service():
    deployment = by_kind(stack.k8s_base_resources())["Deployment"]
    classifier = container(deployment)
    (port,) = classifier["ports"]
    assert port["containerPort"] == bentoml_default_port()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert classifier[probe]["httpGet"]["port"] == port["name"], probe
    assert classifier["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert classifier["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert classifier["livenessProbe"]["httpGet"]["path"] == "/livez"
    startup = classifier["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60, "model loading takes tens of seconds"


def test_service_monitor_and_service_reach_the_pods_port():
    resources = by_kind(stack.k8s_base_resources())
    pod_labels = resources["Deployment"]["spec"]["template"]["metadata"]["labels"]
    service = resources["Service"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] == container(resources["Deployment"])["ports"][0]["name"]
    monitor = resources["ServiceMonitor"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service_port["name"]
    # The job label the alerts and the dashboard select on.
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "digitserve"


def test_autoscaler_and_disruption_budget_target_the_deployment():
    resources = by_kind(stack.k8s_base_resources())
    deployment = resources["Deployment"]
    target = resources["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    hpa = resources["HorizontalPodAutoscaler"]["spec"]
    assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    # Utilisation is measured against the request: the container must request CPU.
    assert "cpu" in container(deployment)["resources"]["requests"]
    pdb = resources["PodDisruptionBudget"]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert pdb["minAvailable"] < hpa["minReplicas"], "a drain must be able to evict a pod"


def test_resources_have_requests_and_limits():
    resources = container(by_kind(stack.k8s_base_resources())["Deployment"])["resources"]
    for kind in ("cpu", "memory"):
        assert kind in resources["requests"] and kind in resources["limits"]


def test_the_gpu_overlay_asks_for_one_gpu_and_the_gpu_image():
    deployment = gpu_deployment()
    resources = container(deployment)["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert any(toleration["key"] == "nvidia.com/gpu" for toleration in deployment["spec"]["template"]["spec"]["tolerations"])
    assert "nvidia.com/gpu" not in container(by_kind(stack.k8s_base_resources())["Deployment"])["resources"]["limits"]
    (image,) = stack.kustomization(stack.K8S_GPU)["images"]
    assert image["newTag"] == "gpu"
    assert image["name"] == container(deployment)["image"]


def test_config_map_settings_are_real_settings_with_valid_values():
    (generator,) = stack.kustomization(stack.K8S_BASE)["configMapGenerator"]
    (env_file,) = generator["envs"]
    values = stack.read_env_file(stack.K8S_BASE / env_file)
    names = {f"DIGITSERVE_{name.upper()}" for name in Settings.model_fields}
    assert set(values) <= names, set(values) - names
    Settings(**{name.removeprefix("DIGITSERVE_").lower(): value for name, value in values.items()})
    (source,) = container(by_kind(stack.k8s_base_resources())["Deployment"])["envFrom"]
    assert source["configMapRef"]["name"] == generator["name"]
    # Threads per worker fit in the CPU limit.
    limit = container(by_kind(stack.k8s_base_resources())["Deployment"])["resources"]["limits"]["cpu"]
    assert int(values["DIGITSERVE_WORKERS"]) * int(values["DIGITSERVE_THREADS"]) <= int(limit)


@pytest.mark.parametrize("directory", [stack.K8S_BASE, stack.K8S_GPU], ids=["base", "gpu"])
def test_kustomize_renders_valid_manifests(directory):
    kubectl = stack.require_tool("kubectl", how="optional: its built-in kustomize renders the overlays",
                                 ci_must_have=False)
    result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    resources = [document for document in yaml.safe_load_all(result.stdout) if document]
    kinds = sorted(resource["kind"] for resource in resources)
    assert kinds == ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service",
                     "ServiceMonitor"]
    for resource in resources:
        if not is_operator_resource(resource):
            validate(resource)
    deployment = by_kind(resources)["Deployment"]
    expected = gpu_deployment() if directory == stack.K8S_GPU else by_kind(stack.k8s_base_resources())["Deployment"]
    assert container(deployment)["resources"] == container(expected)["resources"]
    assert container(deployment)["image"] == f"digitserve:{'gpu' if directory == stack.K8S_GPU else 'cpu'}"
    config_map = by_kind(resources)["ConfigMap"]
    assert container(deployment)["envFrom"][0]["configMapRef"]["name"] == config_map["metadata"]["name"]


def test_the_grace_period_covers_the_drain():
    """SIGTERM: DIGITSERVE_DRAIN_DELAY_S not ready but serving, then up to DIGITSERVE_REQUEST_TIMEOUT_S for
    the requests accepted. Kubernetes kills the pod at the end of its grace period, whatever is left."""
    (generator,) = stack.kustomization(stack.K8S_BASE)["configMapGenerator"]
    values = stack.read_env_file(stack.K8S_BASE / generator["envs"][0])
    settings = Settings(**{name.removeprefix("DIGITSERVE_").lower(): value for name, value in values.items()})
    pod = by_kind(stack.k8s_base_resources())["Deployment"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= settings.drain_delay_s + settings.request_timeout_s + 5
    assert "preStop" not in container(by_kind(stack.k8s_base_resources())["Deployment"]).get("lifecycle", {})
