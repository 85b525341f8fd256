"""The Grafana provisioning and dashboard: valid, loadable as Grafana's file provider loads them, complete.

That every panel's query returns data from the real service is tested in test_live_stack.py.
"""

from __future__ import annotations

import json
import re

import pytest

from service.errors import REJECT_REASONS
from service.metrics import METRIC_NAMES
from tests.deploy import stack

# What the dashboard must show, and a metric each of those panels must query.
REQUIRED_PANELS = {
    "request rate by endpoint and status": METRIC_NAMES["requests"],
    "latency p50/p95/p99": METRIC_NAMES["request_seconds"] + "_bucket",
    "inference requests in progress": METRIC_NAMES["in_progress"],
    "adaptive batch size": METRIC_NAMES["batch_size"],
    "predictions by digit": METRIC_NAMES["predictions"],
    "confidence distribution": METRIC_NAMES["confidence"],
    "refusals by reason": METRIC_NAMES["rejected"],
    "inference time": METRIC_NAMES["inference"],
    "model info": METRIC_NAMES["model_info"],
}
# The routes that run the model, as the alerts and the latency panels select them (route templates).
INFERENCE_ENDPOINTS = "/classify|/classify_batch|/infer|/normalized|/v2/models/.*infer"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def grafana_service() -> dict:
    return stack.compose()["services"]["grafana"]


def provisioning(kind: str) -> dict:
    (path,) = sorted((stack.GRAFANA_DIR / "provisioning" / kind).glob("*.yml"))
    return stack.load_yaml(path)


def test_dashboard_is_valid_json_with_what_grafana_requires():
    dashboard = stack.dashboard()
    assert dashboard["uid"] and dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert "id" not in dashboard or dashboard["id"] is None, "a provisioned dashboard gets its id from Grafana"


def test_panels_do_not_overlap_on_the_24_column_grid():
    cells = {}
    for panel in stack.dashboard()["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_the_provisioned_dashboard_folder_holds_the_dashboard():
    """Grafana's file provider loads every *.json in options.path: that path must be where compose mounts it."""
    (provider,) = provisioning("dashboards")["providers"]
    assert provider["type"] == "file"
    host_dir = stack.container_path_to_host(grafana_service(), provider["options"]["path"])
    assert host_dir == stack.DASHBOARD.parent
    loaded = [json.loads(path.read_text()) for path in sorted(host_dir.glob("*.json"))]
    assert [dashboard["uid"] for dashboard in loaded] == [stack.dashboard()["uid"]]
    provisioning_mount = stack.container_path_to_host(grafana_service(), "/etc/grafana/provisioning")
    assert provisioning_mount == stack.GRAFANA_DIR / "provisioning"


def test_the_home_dashboard_is_the_provisioned_one():
    home = grafana_service()["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert stack.container_path_to_host(grafana_service(), home) == stack.DASHBOARD


def test_every_panel_uses_the_provisioned_prometheus_datasource():
    (datasource,) = provisioning("datasources")["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    assert "prometheus" in stack.compose()["services"]
    assert any(port.endswith(":9090") for port in stack.compose()["services"]["prometheus"]["ports"])
    scrape_interval = stack.load_yaml(stack.PROMETHEUS_CONFIG)["global"]["scrape_interval"]
    assert datasource["jsonData"]["timeInterval"] == scrape_interval  # $__rate_interval is derived from it
    for panel in stack.dashboard()["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": datasource["uid"]}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == datasource["uid"], panel["title"]


@pytest.mark.parametrize("topic", REQUIRED_PANELS)
def test_the_dashboard_shows(topic):
    metric = REQUIRED_PANELS[topic]
    assert any(metric in expr for _, _, expr in stack.dashboard_queries()), f"no panel queries {metric}"


def test_queries_use_only_known_metrics_and_variables():
    """Only the service's own metrics: BentoML's request metrics are off (their raw-path labels were unbounded)."""
    domain = set(METRIC_NAMES.values())
    for title, ref, expr in stack.dashboard_queries():
        variables = set(re.findall(r"\$\w+", expr))
        assert variables <= set(stack.GRAFANA_VARIABLES), f"{title}/{ref}: unknown variables {variables}"
        for metric in re.findall(r"\b((?:digitserve|bentoml)_[a-z_]+)\b", expr):
            base = next((metric.removesuffix(s) for s in HISTOGRAM_SUFFIXES if metric.endswith(s)), metric)
            assert metric in domain or base in domain, f"{title}/{ref}: {metric} is not a metric the service exports"
        assert 'job="digitserve"' in expr or "up{" in expr, f"{title}/{ref} must select the digitserve job"


def test_latency_panels_cover_every_inference_route_rest_and_v2():
    latency = [expr for _, _, expr in stack.dashboard_queries() if METRIC_NAMES["request_seconds"] in expr]
    assert latency and all(f'endpoint=~"{INFERENCE_ENDPOINTS}"' in expr for expr in latency)
    alerts = {rule["alert"]: rule["expr"] for rule in stack.alert_rules()}
    for name in ("DigitserveHighLatencyP99", "DigitserveNoTraffic"):
        assert f'endpoint=~"{INFERENCE_ENDPOINTS}"' in alerts[name], name


def test_refusals_show_every_reason_and_the_split_by_protocol():
    """No reason is filtered out of "Refusals by reason", so a 503 overloaded shows beside the 4xx."""
    panels = {panel["title"]: [target["expr"] for target in panel["targets"]] for panel in stack.dashboard()["panels"]}
    (refusals,) = panels["Refusals by reason"]
    assert refusals.startswith("sum by (reason) (") and "reason=" not in refusals and "reason!" not in refusals
    assert any(f"sum by (protocol) (rate({METRIC_NAMES['predictions']}" in expr
               for exprs in panels.values() for expr in exprs)
    assert any('reason="overloaded"' in expr for exprs in panels.values() for expr in exprs)
    (refusals_panel,) = [panel for panel in stack.dashboard()["panels"] if panel["title"] == "Refusals by reason"]
    coloured = {override["matcher"]["options"] for override in refusals_panel["fieldConfig"]["overrides"]}
    assert coloured == {"overloaded", "not_ready", "timeout"} <= set(REJECT_REASONS)  # the server's own refusals


def test_rate_windows_are_grafanas_rate_interval():
    """A fixed window shorter than a few scrapes shows gaps; $__rate_interval never does."""
    for title, ref, expr in stack.dashboard_queries():
        windows = re.findall(r"\[([^\]]+)\]", expr)
        assert all(window == "$__rate_interval" for window in windows), f"{title}/{ref}: {windows}"
