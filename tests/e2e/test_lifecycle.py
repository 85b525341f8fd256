"""Operating the service under load, against a real ``bentoml serve``, while the clients of
``loadtests/chaos.py`` keep sending (each request on a new connection, every answer checked):

- a new version registered by ``python -m training`` is served by every worker, with no failed request;
- a damaged version, and a whole one that reads digits no better than chance, are refused by the gate,
  with no failed request, and the old version keeps serving;
- ``kill -9`` of a worker: it comes back serving the version its siblings serve (the updated one, not the
  one the server started with);
- SIGTERM: /readyz turns 503 at once, no accepted request is reset, and ``bentoml serve`` exits 0.

The versions these tests register are deleted afterwards, so the store's newest version is again the one
the rest of the suite serves.
"""

from __future__ import annotations

import os
import signal

import bentoml
import httpx
import pytest

from loadtests import chaos
from tests.server import start_server

pytestmark = [pytest.mark.slow, pytest.mark.server]

CLIENTS = 8
FAST = {"DIGITSERVE_MODEL_POLL_S": "1", "DIGITSERVE_DRAIN_DELAY_S": "2"}


@pytest.fixture(scope="module")
def digits():
    return chaos.load_digits(16)


@pytest.fixture(scope="module")
def registered(trained):
    """Tags registered by these tests; deleted once the module is done."""
    tags: list[str] = []
    yield tags
    for tag in tags:
        bentoml.models.delete(tag)
    assert chaos.newest_tag() == trained.tag


@pytest.fixture(scope="module")
def server(trained, registered):
    with start_server(env=FAST, timeout=120) as handle:
        yield handle


def assert_no_request_lost(result: dict) -> None:
    assert result["clean"], result
    assert set(result["total"]) == {"ok"}, result["total"]


def refusals(url: str) -> dict[tuple[str, str], float]:
    counts = {}
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith("digitserve_model_refusals_total{"):
            labels = dict(part.split("=") for part in line[line.index("{") + 1:line.index("}")].replace('"', "").split(","))
            counts[(labels["version"], labels["reason"])] = float(line.rsplit(" ", 1)[1])
    return counts


def test_a_new_version_from_training_is_served_with_no_failed_request(server, digits, registered, trained, tmp_path):
    def train() -> str:
        registered.append(chaos.register_by_training(tmp_path))
        return registered[-1]

    result = chaos.update_scenario(server, server.url, CLIENTS, digits, train, expect_adopted=True)
    result["clean"] = chaos.verdict(result)
    assert_no_request_lost(result)
    new = registered[-1]
    assert result["served_after"] == new and result["models_answering"].get(new, 0) > 0
    assert result["all_answers_from_expected_at_s"] is not None, "some worker kept the old version"
    name, version = new.split(":")
    assert httpx.get(f"{server.url}/v2/models/{name}").json()["versions"] == [version]
    for pid, before in result["worker_rss_mb_before"].items():  # the switch frees the replaced model
        assert result["worker_rss_mb_after"][pid] < 1.25 * before, result


@pytest.mark.parametrize("register,reason", [(chaos.register_damaged, "damaged_archive"),
                                             (chaos.register_untrained, "below_accuracy_floor")],
                         ids=["damaged-archive", "untrained"])
def test_a_failing_version_is_refused_with_no_failed_request(server, digits, registered, register, reason):
    serving = httpx.get(server.url + "/model").json()["tag"]

    def register_and_record() -> str:
        registered.append(register())
        return registered[-1]

    result = chaos.update_scenario(server, server.url, CLIENTS, digits, register_and_record, expect_adopted=False,
                                   settle_s=6.0)
    result["clean"] = chaos.verdict(result)
    assert_no_request_lost(result)
    assert result["served_after"] == serving and set(result["models_answering"]) == {serving}
    assert refusals(server.url).get((registered[-1].split(":")[1], reason)) == 1.0
    assert f"Model {registered[-1]} refused ({reason})" in server.log_tail(2_000_000)


def test_a_killed_worker_comes_back_serving_its_siblings_version(server, digits, registered):
    """The server started with the suite's model and has since moved to a newer one: a worker started
    now must serve the newer one, as its siblings do."""
    current = httpx.get(server.url + "/model").json()["tag"]
    assert current in registered, "run after the update test: the point is a version other than the first"
    result = chaos.kill_worker_scenario(server, server.url, CLIENTS, digits, after_s=8.0)
    result["clean"] = chaos.verdict(result)
    assert result["clean"], result
    assert set(result["models_answering"]) == {current}, result
    assert all(code == 200 for code in result["readyz_after"])


def test_sigterm_resets_no_accepted_request(trained, digits):
    server = start_server(env=FAST, timeout=120)
    try:
        result = chaos.sigterm_scenario(server, server.url, 16, digits)
    finally:
        if server.process.poll() is None:
            os.kill(server.pid, signal.SIGKILL)
            server.stop()
    result["clean"] = chaos.verdict(result)
    assert result["clean"], result
    assert result["exit_code"] == 0
    # Not ready at once: the signal reaches every worker within milliseconds, and /readyz never says 200 again.
    assert result["not_ready_after_s"] is not None and result["not_ready_after_s"] < 0.5, result["readyz_after_sigterm"]
    assert result["during"].get("ok", 0) > 0, "nothing was served while draining"
    assert result["drain_s"] >= float(FAST["DIGITSERVE_DRAIN_DELAY_S"])
