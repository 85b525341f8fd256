"""A real Prometheus, on deploy/prometheus's own configuration, scraping a real ``bentoml serve``.

The configuration is copied with only the target address rewritten (compose's ``classifier:3000`` becomes
the test server's ``127.0.0.1:PORT``); the scrape interval, the job and the rules are deploy's. After real
traffic, the request counter is queried over Prometheus's HTTP API, and every Grafana panel's query must
return data: the proof that the dashboard and the metric names the service exports agree.

Prometheus is Debian's ``prometheus`` package (``make system-deps``); its binary is run directly.
The same live service also answers compose's healthcheck command and the Kubernetes probes.
"""

from __future__ import annotations

import concurrent.futures
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.deploy import stack
from tests.server import free_port, start_server

SCRAPE_WAIT_S = 60  # at most this long for a change to show in Prometheus; a scrape is every 5 s
CONCURRENT_CLIENTS = 8  # enough concurrency for adaptive batching to merge requests

pytestmark = [pytest.mark.prometheus, pytest.mark.slow, pytest.mark.server]


def rewritten_config(directory: Path, server_port: int) -> Path:
    """deploy/prometheus copied into ``directory`` with only the classifier's address changed."""
    shutil.copytree(stack.PROMETHEUS_DIR, directory)
    config = directory / stack.PROMETHEUS_CONFIG.name
    original = config.read_text()
    assert original.count(stack.CLASSIFIER_TARGET) == 1
    config.write_text(original.replace(stack.CLASSIFIER_TARGET, f"127.0.0.1:{server_port}"))
    return config


class Prometheus:
    """``/usr/bin/prometheus`` on a free port with its data in a temporary directory."""

    def __init__(self, config: Path, data_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / "prometheus.log"
        binary = stack.require_tool("prometheus", how="apt-get install prometheus, or make system-deps")
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={data_dir}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.client = httpx.Client(base_url=self.url, timeout=10)

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Prometheus exited: {self.log_path.read_text()[-3000:]}")
            try:
                if self.client.get("/-/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"Prometheus not ready in {timeout} s: {self.log_path.read_text()[-3000:]}")

    def query(self, expr: str) -> list[dict]:
        response = self.client.get("/api/v1/query", params={"query": expr})
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", f"{expr}: {body}"
        return body["data"]["result"]

    def value(self, expr: str) -> float | None:
        """The single value ``expr`` returns now, or None when it returns nothing."""
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, expr: str, predicate, what: str) -> float:
        """Poll ``expr`` until ``predicate(value)`` holds; return the value."""
        deadline = time.monotonic() + SCRAPE_WAIT_S
        while time.monotonic() < deadline:
            value = self.value(expr)
            if value is not None and predicate(value):
                return value
            time.sleep(0.5)
        raise AssertionError(f"{what}: {expr} is still {self.value(expr)} after {SCRAPE_WAIT_S} s")

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


class Traffic:
    """Real requests of every kind the dashboard shows, counted as they are sent."""

    def __init__(self, base_url: str) -> None:
        from loadtests.payloads import load_payloads
        from training.data import load_subset

        # The subset's real test digits (all ten classes): as PNG uploads, as arrays for /infer, in batches
        # of 4; and the known-bad inputs, each with the status it must get.
        self.payloads = load_payloads(batch_size=4, batch_count=4, kinds=("png",))
        self.digits = load_subset().x_test  # (1000, 28, 28) uint8, in the uploads' order
        self.base_url = base_url
        self.classified = 0  # /classify requests answered 200

    def _post(self, client: httpx.Client, path: str, body) -> httpx.Response:
        return client.post(path, content=body.data, headers={"Content-Type": body.content_type})

    def _one_client(self, indices: list[int]) -> int:
        with httpx.Client(base_url=self.base_url, timeout=60) as client:
            for i in indices:
                assert self._post(client, "/classify", self.payloads.uploads[i].body).status_code == 200
                assert client.post("/infer", json={"digits": [self.digits[i].tolist()]}).status_code == 200
        return len(indices)

    def wave(self, per_client: int = 5) -> None:
        """Concurrent /classify and /infer (adaptive batching merges them), then batches, a preview, bad inputs."""
        # Digits spread evenly over the set, which is ordered by class: every class is sent.
        count = per_client * CONCURRENT_CLIENTS
        spread = list(range(0, len(self.digits), len(self.digits) // count))[:count]
        indices = [spread[client::CONCURRENT_CLIENTS] for client in range(CONCURRENT_CLIENTS)]
        with concurrent.futures.ThreadPoolExecutor(CONCURRENT_CLIENTS) as pool:
            self.classified += sum(pool.map(self._one_client, indices))
        with httpx.Client(base_url=self.base_url, timeout=60) as client:
            for batch in self.payloads.batches[:2]:
                assert self._post(client, "/classify_batch", batch.body).status_code == 200
            assert self._post(client, "/normalized", self.payloads.uploads[0].body).status_code == 200
            for bad in self.payloads.bad:
                assert self._post(client, "/classify", bad.body).status_code == bad.status, bad.name


@pytest.fixture(scope="module")
def live(trained, tmp_path_factory):
    """A live service, a live Prometheus scraping it, and two waves of traffic, both scraped."""
    directory = tmp_path_factory.mktemp("prometheus")
    with start_server(timeout=180) as server:
        prometheus = Prometheus(rewritten_config(directory / "config", server.port), directory / "data")
        try:
            prometheus.wait_ready()
            prometheus.wait_for('up{job="digitserve"}', lambda up: up == 1, "the service is scraped")
            traffic = Traffic(server.url)
            counter = 'sum(bentoml_service_request_total{job="digitserve", endpoint="/classify", http_response_code="200"})'
            # Two waves, each seen by a scrape, so every rate() over the window has an increase to show.
            for _ in range(2):
                traffic.wave()
                expected = traffic.classified
                prometheus.wait_for(counter, lambda value: value >= expected, "the request counter is scraped")
            yield server, prometheus, traffic
        finally:
            prometheus.stop()


def test_the_rewritten_config_is_deploys_but_for_the_target_and_passes_promtool(live, tmp_path):
    server, _, _ = live
    config = rewritten_config(tmp_path / "config", server.port)
    original, rewritten = stack.PROMETHEUS_CONFIG.read_text().splitlines(), config.read_text().splitlines()
    changed = [(a, b) for a, b in zip(original, rewritten) if a != b]
    assert len(original) == len(rewritten) and len(changed) == 1
    assert changed[0][1] == changed[0][0].replace(stack.CLASSIFIER_TARGET, f"127.0.0.1:{server.port}")
    promtool = stack.require_tool("promtool", how="apt-get install prometheus, or make system-deps")
    for args in (["check", "config", str(config)], ["check", "rules", str(config.parent / "alerts.yml")]):
        result = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_scrapes_the_request_counter(live):
    _, prometheus, traffic = live
    counter = 'sum(bentoml_service_request_total{job="digitserve", endpoint="/classify", http_response_code="200"})'
    assert prometheus.value(counter) == traffic.classified
    by_endpoint = {series["metric"]["endpoint"] for series in prometheus.query(
        'bentoml_service_request_total{job="digitserve"} > 0')}
    assert {"/classify", "/classify_batch", "/infer", "/normalized"} <= by_endpoint


@pytest.mark.parametrize("title, ref, expr", stack.dashboard_queries(), ids=lambda v: v if isinstance(v, str) and len(v) < 40 else None)
def test_every_dashboard_query_returns_data(live, title, ref, expr):
    _, prometheus, _ = live
    result = prometheus.query(stack.concrete(expr))
    assert result, f"panel {title!r} ({ref}) returns nothing: {expr}"
    values = [float(series["value"][1]) for series in result]
    assert any(math.isfinite(value) for value in values), f"panel {title!r} ({ref}): only {values}"


def test_predictions_and_rejections_carry_their_labels(live):
    _, prometheus, traffic = live
    digits = {series["metric"]["digit"] for series in prometheus.query('digitserve_predictions_total{job="digitserve"}')}
    assert len(digits) >= 8, f"real test digits of every class were sent; predicted only {sorted(digits)}"
    reasons = {series["metric"]["reason"] for series in prometheus.query('digitserve_rejected_inputs_total{job="digitserve"}')}
    assert {bad.reason for bad in traffic.payloads.bad if bad.reason} <= reasons


def test_the_rules_load_and_stay_quiet_on_a_healthy_service(live):
    _, prometheus, _ = live
    groups = prometheus.client.get("/api/v1/rules").json()["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert {rule["name"] for rule in rules} == {rule["alert"] for rule in stack.alert_rules()}
    assert all(rule["health"] in ("ok", "unknown") for rule in rules), [(r["name"], r.get("lastError")) for r in rules]
    for rule in stack.alert_rules():  # each condition, evaluated now: a healthy, busy service meets none
        assert prometheus.query(rule["expr"]) == [], rule["alert"]


def compose_healthcheck(port: int) -> subprocess.CompletedProcess:
    """docker-compose.yml's healthcheck command for the classifier, run here against ``port``."""
    test = stack.compose()["services"]["classifier"]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "python"]
    command = [sys.executable, *(part.replace("127.0.0.1:3000", f"127.0.0.1:{port}") for part in test[2:])]
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


def test_the_compose_healthcheck_passes_on_the_live_service(live):
    server, _, _ = live
    result = compose_healthcheck(server.port)
    assert result.returncode == 0, result.stderr


def test_the_kubernetes_probes_answer_200(live):
    server, _, _ = live
    deployment = next(d for d in stack.k8s_base_resources() if d["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        path = container[probe]["httpGet"]["path"]
        assert httpx.get(server.url + path, timeout=5).status_code == 200, f"{probe} {path}"


def test_model_not_ready_fires_and_the_healthcheck_fails_when_the_service_goes_away(live):
    """Last in the module: it stops the server."""
    server, prometheus, _ = live
    (rule,) = [rule for rule in stack.alert_rules() if rule["alert"] == "DigitserveModelNotReady"]
    server.stop()
    assert compose_healthcheck(server.port).returncode != 0
    prometheus.wait_for('up{job="digitserve"}', lambda up: up == 0, "the stopped service is seen down")
    (series,) = prometheus.query(rule["expr"])
    assert series["metric"]["job"] == "digitserve"
