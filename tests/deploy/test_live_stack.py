"""A real Prometheus, on deploy/prometheus's own configuration, scraping a real ``bentoml serve``.

The configuration is copied with only the target address rewritten (compose's ``classifier:3000`` becomes
the test server's ``127.0.0.1:PORT``); the scrape interval, the job and the rules are deploy's. After real
traffic, the request counter is queried over Prometheus's HTTP API, and every Grafana panel's query must
return data: the proof that the dashboard and the metric names the service exports agree. The traffic ends
with a deliberate overload, so the load-shedding series (503 ``overloaded``, requests in progress) have
data too.

Prometheus is Debian's ``prometheus`` package (``make system-deps``); its binary is run directly.
The same live service also answers compose's healthcheck command and the Kubernetes probes.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import math
import secrets
import select
import shutil
import socket
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
# Admission control, low enough to overload on purpose and above what a wave ever has in progress (its
# CONCURRENT_CLIENTS, one request each), so the waves are never refused.
MAX_CONCURRENCY = CONCURRENT_CLIENTS + 2
# The held requests of the overload wait for a scrape; these keep the service from timing them out first.
SERVER_ENV = {"DIGITSERVE_MAX_CONCURRENCY": str(MAX_CONCURRENCY), "DIGITSERVE_BODY_TIMEOUT_S": "90",
              "DIGITSERVE_REQUEST_TIMEOUT_S": "120"}
MOST_WORKERS = 16  # bounds the overload's held requests: MAX_CONCURRENCY on each worker, then one more
V2_READY_PATH = "/v2/health/ready"  # the Open Inference Protocol's readiness route

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

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        """``expr`` evaluated now, or at the Unix time ``at``."""
        params = {"query": expr} if at is None else {"query": expr, "time": at}
        response = self.client.get("/api/v1/query", params=params)
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


class HeldRequest:
    """A ``POST /infer`` sent but for the last byte of its body: once admitted, it stays in progress (the
    service waits for the rest of the body) until ``finish()``."""

    def __init__(self, port: int, body: bytes) -> None:
        self.socket = socket.create_connection(("127.0.0.1", port), timeout=60)
        head = (f"POST /infer HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.socket.sendall(head + body[:-1])
        self.rest = body[-1:]

    def answered(self, wait: float) -> bool:
        """Whether an answer came, within ``wait`` seconds, before the body was complete: a refusal."""
        readable, _, _ = select.select([self.socket], [], [], wait)
        return bool(readable)

    def finish(self) -> tuple[int, dict, dict[str, str]]:
        """Send the rest of the body (unless already refused) and read the answer: (status, JSON body, headers)."""
        try:
            if not self.answered(0):
                self.socket.sendall(self.rest)
        except OSError:
            pass  # refused meanwhile, and the connection closed: the answer is still there to read
        response = http.client.HTTPResponse(self.socket)
        try:
            response.begin()
            return response.status, json.loads(response.read()), {k.lower(): v for k, v in response.getheaders()}
        finally:
            self.socket.close()


class Traffic:
    """Real requests of every kind the dashboard shows, counted as they are sent."""

    def __init__(self, base_url: str, port: int) -> None:
        from loadtests.payloads import load_payloads
        from training.data import load_subset

        # The subset's real test digits (all ten classes): as PNG uploads, as arrays for /infer, in batches
        # of 4; and the known-bad inputs, each with the status it must get.
        self.payloads = load_payloads(batch_size=4, batch_count=4, kinds=("png",))
        subset = load_subset()
        self.digits, self.labels = subset.x_test, subset.y_test  # (1000, 28, 28) uint8, in the uploads' order
        self.base_url, self.port = base_url, port
        self.classified = 0  # /classify requests answered 200
        self.unmatched = 0  # requests to paths no route takes, answered 404
        self.overloaded = 0  # requests refused with 503 "overloaded"
        self.healthy_at: float | None = None  # a moment after the waves, before the overload (Unix time)
        # The Open Inference Protocol's routes, where the service has them (they are on their way): until
        # then this probe is one more unmatched 404, and no v2 request is sent.
        self.v2 = httpx.get(base_url + V2_READY_PATH, timeout=30).status_code == 200
        self.unmatched += not self.v2

    def _post(self, client: httpx.Client, path: str, body) -> httpx.Response:
        return client.post(path, content=body.data, headers={"Content-Type": body.content_type})

    def _one_client(self, indices: list[int]) -> int:
        with httpx.Client(base_url=self.base_url, timeout=60) as client:
            for i in indices:
                assert self._post(client, "/classify", self.payloads.uploads[i].body).status_code == 200
                assert client.post("/infer", json={"digits": [self.digits[i].tolist()]}).status_code == 200
        return len(indices)

    def wave(self, per_client: int = 5) -> None:
        """Concurrent /classify and /infer (adaptive batching merges them), then batches, a preview, bad inputs,
        paths no route takes, and a v2 request where the service has v2."""
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
            # Paths no route takes, each new: they must all count as the one endpoint "unmatched".
            for _ in range(3):
                response = client.get(f"/no-such-route/{secrets.token_hex(8)}")
                assert (response.status_code, response.json()["reason"]) == (404, "not_found")
                self.unmatched += 1
            if self.v2:
                from loadtests.v2wire import INFER_PATH, digits_request

                request = digits_request(self.digits[:4], self.labels[:4].tolist())
                assert client.post(INFER_PATH, content=request.data, headers=request.headers).status_code == 200

    def hold_until_refused(self) -> list[HeldRequest]:
        """Open requests that stay in progress until one is refused as ``overloaded``: every worker admits
        MAX_CONCURRENCY, so at most that many on each worker, and one more, are needed."""
        body = json.dumps({"digits": [self.digits[0].tolist()]}).encode()
        held: list[HeldRequest] = []
        for _ in range(MAX_CONCURRENCY * MOST_WORKERS + 1):
            held.append(HeldRequest(self.port, body))
            if held[-1].answered(wait=0.3):
                return held
        raise AssertionError(f"{len(held)} requests in progress, and none refused (DIGITSERVE_MAX_CONCURRENCY)")

    def release(self, held: list[HeldRequest]) -> None:
        """Finish the held requests: each is answered 200, or was refused with a 503 ``overloaded``."""
        answers = [request.finish() for request in held]
        refused = [(body, headers) for status, body, headers in answers if status == 503]
        assert all(status in (200, 503) for status, _, _ in answers), [status for status, _, _ in answers]
        assert refused, "the request that looked refused was answered 200"
        for body, headers in refused:
            assert body["reason"] == "overloaded" and "retry-after" in headers, (body, headers)
        self.overloaded += len(refused)


CLASSIFIED = 'sum(digitserve_http_requests_total{job="digitserve", endpoint="/classify", method="POST", status="200"})'
IN_PROGRESS = 'sum(digitserve_http_requests_in_progress{job="digitserve"})'
OVERLOADED_SERIES = 'digitserve_rejected_inputs_total{job="digitserve", reason="overloaded"}'
OVERLOADED = f"sum({OVERLOADED_SERIES})"


@pytest.fixture(scope="module")
def live(trained, tmp_path_factory):
    """A live service, a live Prometheus scraping it, two waves of traffic, then an overload, all scraped.

    ``traffic.healthy_at`` is the moment between the waves and the overload, when the service was healthy.
    """
    directory = tmp_path_factory.mktemp("prometheus")
    with start_server(timeout=180, env=SERVER_ENV) as server:
        prometheus = Prometheus(rewritten_config(directory / "config", server.port), directory / "data")
        try:
            prometheus.wait_ready()
            prometheus.wait_for('up{job="digitserve"}', lambda up: up == 1, "the service is scraped")
            traffic = Traffic(server.url, server.port)
            # Two waves, each seen by a scrape, so every rate() over the window has an increase to show.
            for _ in range(2):
                traffic.wave()
                expected = traffic.classified
                prometheus.wait_for(CLASSIFIED, lambda value: value >= expected, "the request counter is scraped")
            traffic.healthy_at = time.time()
            held = traffic.hold_until_refused()
            try:
                prometheus.wait_for(IN_PROGRESS, lambda value: value >= MAX_CONCURRENCY,
                                    "a full worker's requests in progress are scraped")
            finally:
                traffic.release(held)
            prometheus.wait_for(IN_PROGRESS, lambda value: value == 0, "the finished requests leave the gauge")
            prometheus.wait_for(OVERLOADED, lambda value: value >= traffic.overloaded, "the refusals are scraped")
            # The refusal counter appeared with the overload: a rate() of it needs a second scrape.
            prometheus.wait_for(f"count_over_time({OVERLOADED_SERIES}[1m])", lambda samples: samples >= 2,
                                "the refusals are scraped twice")
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


def test_prometheus_scrapes_the_request_counter_by_route_template(live):
    _, prometheus, traffic = live
    assert prometheus.value(CLASSIFIED) == traffic.classified
    by_endpoint = {series["metric"]["endpoint"] for series in prometheus.query(
        'digitserve_http_requests_total{job="digitserve"} > 0')}
    # The v2 route only where the service has it (see Traffic.v2).
    expected = {"/classify", "/classify_batch", "/infer", "/normalized", "/metrics", "unmatched"}
    assert expected | ({"/v2/models/{name}/infer"} if traffic.v2 else set()) <= by_endpoint
    assert not [endpoint for endpoint in by_endpoint if "no-such-route" in endpoint], "a raw path became a label"
    unmatched = 'sum(digitserve_http_requests_total{job="digitserve", endpoint="unmatched", status="404"})'
    assert prometheus.value(unmatched) == traffic.unmatched


def test_load_shedding_is_a_503_that_the_error_ratio_counts(live):
    """The overload's refusals are 503s on /infer, the series the 5xx-ratio alert counts, and ``overloaded``
    in the refusals by reason."""
    _, prometheus, traffic = live
    shed = 'sum(digitserve_http_requests_total{job="digitserve", endpoint="/infer", status="503"})'
    assert prometheus.value(shed) == traffic.overloaded
    (series,) = prometheus.query(OVERLOADED_SERIES)
    assert series["metric"]["protocol"] == "rest" and float(series["value"][1]) == traffic.overloaded


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
    assert {bad.reason for bad in traffic.payloads.bad if bad.reason} | {"not_found", "overloaded"} <= reasons
    protocols = {series["metric"]["protocol"] for series in prometheus.query('digitserve_predictions_total{job="digitserve"}')}
    assert protocols == ({"rest", "v2"} if traffic.v2 else {"rest"})  # v2 once the service has it (Traffic.v2)


def test_the_rules_load_and_stay_quiet_on_a_healthy_service(live):
    _, prometheus, traffic = live
    groups = prometheus.client.get("/api/v1/rules").json()["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert {rule["name"] for rule in rules} == {rule["alert"] for rule in stack.alert_rules()}
    assert all(rule["health"] in ("ok", "unknown") for rule in rules), [(r["name"], r.get("lastError")) for r in rules]
    # Each condition, evaluated after the two waves: a healthy, busy service meets none. (Not now: the
    # overload since then was slow and shed load on purpose.)
    for rule in stack.alert_rules():
        assert prometheus.query(rule["expr"], at=traffic.healthy_at) == [], rule["alert"]


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
