"""How the benchmark starts each peer: its environment, its command line, and its settings with their reasons.

Each peer runs from an environment of its own under ``.venv-peers/`` (``make bench-peers`` creates them
from the requirement files beside this module), never from the service's ``.venv``. The repository is
put on the peer's PYTHONPATH, so the peer loads the model through the project's own code
(loadtests/peers/model.py). Nothing here imports a peer package: the service's tests check these command
lines and settings without installing any peer.

On settings: the machine has 2 cores. Each peer gets what its own documentation suggests for using them
(worker or replica count, batch size and wait), set the same way as the service where the knob is the
same (one model process per core with one TensorFlow thread each; a largest batch of 64; no per-request
log line). Every setting carries its reason, and both go into the report.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from loadtests.servers import REPO_ROOT, ServerProcess, free_port
from loadtests.v2wire import MODEL_NAME, MODEL_READY_PATH

logger = logging.getLogger(__name__)

PEERS_DIR = REPO_ROOT / ".venv-peers"
REQUIREMENTS_DIR = Path(__file__).resolve().parent
READY_TIMEOUT_S = 180.0  # a Ray cluster takes 20-30 s to come up on 2 busy cores; give it room


class PeerNotInstalled(RuntimeError):
    """A peer's environment has not been created yet."""


@dataclass(frozen=True)
class Environment:
    """A virtual environment under .venv-peers/, created from ``requirements-<name>.txt``."""

    name: str

    @property
    def path(self) -> Path:
        return PEERS_DIR / self.name

    @property
    def requirements(self) -> Path:
        return REQUIREMENTS_DIR / f"requirements-{self.name}.txt"

    def executable(self, name: str) -> Path:
        return self.path / "bin" / name

    def check(self) -> None:
        """PeerNotInstalled, with what to run, unless the environment's Python exists."""
        if not self.executable("python").exists():
            raise PeerNotInstalled(f"The peers' environment {self.path} does not exist: run `make bench-peers`.")

    def versions(self, packages: tuple[str, ...]) -> dict[str, str]:
        """The installed versions of ``packages`` in this environment, as its own pip sees them."""
        script = ("import importlib.metadata as m, json, sys\n"
                  "found = {}\n"
                  "for name in sys.argv[1:]:\n"
                  "    try: found[name] = m.version(name)\n"
                  "    except m.PackageNotFoundError: found[name] = 'not installed'\n"
                  "print(json.dumps(found))")
        done = subprocess.run([str(self.executable("python")), "-c", script, *packages], capture_output=True,
                              text=True, check=True, timeout=60)
        return json.loads(done.stdout)


KSERVE_RAY = Environment("kserve-ray")
MLSERVER = Environment("mlserver")  # MLServer's fastapi < 0.116 cannot live beside ray[serve]'s >= 0.133
ENVIRONMENTS = (KSERVE_RAY, MLSERVER)
PROJECT_PACKAGES = ("tensorflow", "keras", "numpy", "pillow", "bentoml")  # the model's side, same as .venv


@dataclass(frozen=True)
class Setting:
    value: object
    reason: str


@dataclass(frozen=True)
class Peer:
    """A peer serving stack: where it runs from, what it speaks, and how it is set up here."""

    name: str
    title: str
    environment: Environment
    packages: tuple[str, ...]  # the serving stack's own packages, whose versions the report records
    protocol: str  # what the generator speaks to it
    binary: bool  # accepts the binary tensor data extension (else bulk requests go as JSON)
    image_files: bool  # accepts encoded image files as BYTES (which needs the binary extension)
    settings: dict[str, Setting] = field(default_factory=dict)

    def value(self, name: str):
        return self.settings[name].value

    def describe(self) -> dict:
        """The report's record of this peer: what it is, what it speaks, each setting and why."""
        return {"title": self.title, "environment": str(self.environment.path.relative_to(REPO_ROOT)),
                "protocol": self.protocol, "binary_tensors": self.binary, "image_files": self.image_files,
                "settings": {name: {"value": setting.value, "reason": setting.reason}
                             for name, setting in self.settings.items()}}


PER_REQUEST_LOGS_OFF = "no log line per request, as the service's access log is off by default"

KSERVE = Peer(
    name="kserve", title="KServe model server (kserve.ModelServer, a kserve.Model subclass)",
    environment=KSERVE_RAY, packages=("kserve", "fastapi", "uvicorn", "uvloop", "httptools", "orjson"),
    protocol="Open Inference Protocol v2 REST (KServe's own endpoints)", binary=True,
    # KServe 0.21 turns every binary input back into a JSON list, and BYTES through UTF-8, so a PNG's
    # bytes fail with "Failed to encode ... using UTF-8" (a 500) before the model sees them.
    image_files=False,
    settings={
        "workers": Setting(1, "KServe's default. --workers 2 (one process per core, 1 TensorFlow thread each, as "
                              "the service runs) measured the same throughput on the busy machine (155-532 against "
                              "187-421 requests/s at 64 clients) with p99 tails of 0.7-4.4 s against 0.3-0.8 s, and "
                              "2.3 GB against 0.8 GB: the parent keeps a copy of the model and the workers share "
                              "one accept queue unevenly. KServe's Python server has no request batching (KServe "
                              "batches in a Kubernetes sidecar, absent here)"),
        "tf_threads": Setting(2, "the one process may use both cores for the model"),
        "enable_grpc": Setting(False, "only REST is measured; the gRPC server would idle beside it"),
        "logging": Setting("--configure_logging false --enable_latency_logging false", PER_REQUEST_LOGS_OFF),
    },
)

MLSERVER_PEER = Peer(
    name="mlserver", title="Seldon MLServer (a custom MLModel runtime, adaptive batching on)",
    environment=MLSERVER, packages=("mlserver", "fastapi", "starlette", "uvicorn", "uvloop", "orjson"),
    protocol="Open Inference Protocol v2 REST (MLServer's own endpoints)",
    binary=False,  # MLServer's REST endpoint parses JSON only; the binary extension is for its gRPC and clients
    image_files=False,
    settings={
        "parallel_workers": Setting(0, "inference in the HTTP process (MLServer documents 0 as turning parallel "
                                       "inference off). Its default, 1 worker process, measured 470 against 708 "
                                       "requests/s at 64 clients here, and 2 workers 501: handing every batch to "
                                       "another process over a pipe costs more than this 1 ms model"),
        "max_batch_size": Setting(64, "the service's largest batch; 64 clients can fill it"),
        "max_batch_time": Setting(0.002, "seconds a batch waits to fill: MLServer always waits this long "
                                         "unless the batch fills, so a lone request pays it; 2 ms is about "
                                         "two model calls and keeps c=1 close to the model's own latency"),
        "tf_threads": Setting(2, "the one process that runs the model may use both cores for it"),
        "debug": Setting(False, PER_REQUEST_LOGS_OFF + " (debug mode logs every request)"),
    },
)

RAYSERVE = Peer(
    name="rayserve", title="Ray Serve (a deployment with @serve.batch behind Serve's HTTP proxy)",
    environment=KSERVE_RAY, packages=("ray", "fastapi", "starlette", "uvicorn", "uvloop", "httptools"),
    protocol=("Ray Serve has no v2: the same v2 paths and bodies (JSON and binary), decoded and encoded in "
              "the deployment by loadtests/v2wire.py"),
    binary=True, image_files=True,
    settings={
        "num_cpus": Setting(2, "the local Ray cluster schedules the machine's 2 cores"),
        "replicas": Setting(1, "one replica: the proxy, the controller and Ray's own processes need the other "
                               "core. 2 replicas (1 TensorFlow thread each) measured 158 against 146 requests/s "
                               "at 64 clients, within the noise, for 780 MB more"),
        "replica_cpus": Setting(1, "ray_actor_options num_cpus: Ray's default reservation for a replica"),
        "max_ongoing_requests": Setting(64, "at least max_batch_size, so that a batch can fill (the default, 5, "
                                            "caps every batch at 5)"),
        "max_batch_size": Setting(32, "@serve.batch, a power of two as Ray's batching guide advises; 64 measured "
                                      "the same (163 against 146 requests/s, within the noise): Ray's batches are "
                                      "never that full, its proxy and RPCs are the bottleneck"),
        "batch_wait_timeout_s": Setting(0.002, "Ray waits this long for a batch to fill; as for MLServer, 2 ms"),
        "tf_threads": Setting(2, "the one replica may use both cores for the model"),
        "dashboard": Setting(False, "include_dashboard=False: no dashboard process taking memory and CPU"),
    },
)

PEERS: dict[str, Peer] = {peer.name: peer for peer in (KSERVE, MLSERVER_PEER, RAYSERVE)}


# --- command lines --------------------------------------------------------------------------------


def kserve_command(peer: Peer, port: int) -> list[str]:
    python = str(peer.environment.executable("python"))
    return [python, "-m", "loadtests.peers.kserve_server", "--http_port", str(port),
            "--workers", str(peer.value("workers")), "--tf_threads", str(peer.value("tf_threads")),
            "--enable_grpc", str(peer.value("enable_grpc")).lower(), *peer.value("logging").split()]


def mlserver_files(peer: Peer, port: int, grpc_port: int, metrics_port: int) -> dict[str, dict]:
    """settings.json and model-settings.json for ``mlserver start``."""
    return {
        "settings.json": {
            "host": "127.0.0.1", "http_port": port, "grpc_port": grpc_port, "metrics_port": metrics_port,
            "parallel_workers": peer.value("parallel_workers"), "debug": peer.value("debug"),
        },
        "model-settings.json": {
            "name": MODEL_NAME, "implementation": "loadtests.peers.mlserver_runtime.DigitRuntime",
            "max_batch_size": peer.value("max_batch_size"), "max_batch_time": peer.value("max_batch_time"),
            "parameters": {"extra": {"tf_threads": peer.value("tf_threads")}},
        },
    }


def mlserver_command(peer: Peer, folder: Path) -> list[str]:
    return [str(peer.environment.executable("mlserver")), "start", str(folder)]


def rayserve_command(peer: Peer, port: int, temp_dir: Path) -> list[str]:
    python = str(peer.environment.executable("python"))
    return [python, "-m", "loadtests.peers.rayserve_app", "--port", str(port),
            "--num-cpus", str(peer.value("num_cpus")), "--replicas", str(peer.value("replicas")),
            "--replica-cpus", str(peer.value("replica_cpus")),
            "--max-ongoing-requests", str(peer.value("max_ongoing_requests")),
            "--max-batch-size", str(peer.value("max_batch_size")),
            "--batch-wait-timeout-s", str(peer.value("batch_wait_timeout_s")),
            "--tf-threads", str(peer.value("tf_threads")), "--temp-dir", str(temp_dir)]


def peer_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """What a peer process adds to the environment: the repository on PYTHONPATH, and no usage reports."""
    base = os.environ if base is None else base
    path = os.pathsep.join(part for part in (str(REPO_ROOT), base.get("PYTHONPATH", "")) if part)
    return {"PYTHONPATH": path, "RAY_USAGE_STATS_ENABLED": "0"}


class PeerServer(ServerProcess):
    """A peer's ServerProcess that also removes its scratch folder (settings files, Ray's session) when stopped."""

    def __init__(self, *args, scratch: Path, **kwargs) -> None:
        self.scratch = scratch
        super().__init__(*args, **kwargs)

    def stop(self, grace: float | None = None) -> int | None:
        code = super().stop() if grace is None else super().stop(grace)
        shutil.rmtree(self.scratch, ignore_errors=True)
        return code


def start_peer(name: str, port: int | None = None, timeout: float = READY_TIMEOUT_S,
               peer: Peer | None = None) -> PeerServer:
    """Start peer ``name`` (or the given ``peer``) on 127.0.0.1; return once its model answers ready (200)."""
    peer = peer or PEERS[name]
    peer.environment.check()
    port = port or free_port()
    # Short, under /tmp: Ray puts Unix sockets in its session folder, and their paths must stay under 108 bytes.
    scratch = Path(tempfile.mkdtemp(prefix=f"dsp-{peer.name}-"))
    cwd = REPO_ROOT
    if peer.name == "kserve":
        command = kserve_command(peer, port)
    elif peer.name == "mlserver":
        for filename, content in mlserver_files(peer, port, free_port(), free_port()).items():
            (scratch / filename).write_text(json.dumps(content, indent=2))
        command, cwd = mlserver_command(peer, scratch), scratch  # MLServer keeps .metrics/ and .envs/ in its cwd
    elif peer.name == "rayserve":
        command = rayserve_command(peer, port, scratch)
    else:
        raise ValueError(f"Unknown peer {peer.name!r}; choose from {', '.join(PEERS)}.")
    # The model's readiness, not the server's: KServe's /v2/health/ready answers 200 before its workers have loaded.
    server = PeerServer(command, port, env=peer_env(), cwd=cwd, ready_path=MODEL_READY_PATH, name=peer.name,
                        scratch=scratch)
    try:
        server.wait_ready(timeout)
    except BaseException:
        server.stop()
        raise
    return server
