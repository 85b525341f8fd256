"""Start a server in a subprocess, wait until it answers ready, and stop it cleanly.

Used by the benchmark (the service, the naive and the hand-written servers) and by the tests that need a
real ``bentoml serve``. Each server runs in its own process group, so stopping it reaches its workers too,
and nothing else.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Mapping, Sequence

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
READY_PATH = "/readyz"
LOG_TAIL_CHARS = 4_000
STOP_GRACE_S = 20.0  # BentoML drains its workers on SIGINT; a few seconds is typical


class ServerFailed(RuntimeError):
    """The server process died, or did not answer ready in time; the message carries its log's tail."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def venv_script(name: str) -> str:
    """The console script ``name`` installed beside this interpreter (``.venv/bin/bentoml``), else the bare name."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


class ServerProcess:
    """A server subprocess listening on ``url``; ``ready_seconds`` is the time from start to its first ready 200.

    Use as a context manager, or call ``stop()``.
    """

    def __init__(self, command: Sequence[str], port: int, *, env: Mapping[str, str] | None = None,
                 cwd: Path = REPO_ROOT, ready_path: str = READY_PATH, name: str = "server") -> None:
        self.command = list(command)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.ready_path = ready_path
        self.name = name
        self.ready_seconds: float | None = None
        self._log = tempfile.NamedTemporaryFile(prefix=f"digitserve-{name}-", suffix=".log", delete=False)
        full_env = {**os.environ, "BENTOML_DO_NOT_TRACK": "true", "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
        self._started = time.perf_counter()
        self.process = subprocess.Popen(
            self.command, cwd=cwd, env=full_env, stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,  # its own process group: stop() reaches the workers
        )
        logger.info("Started %s (pid %d): %s", name, self.process.pid, " ".join(self.command))

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def log_path(self) -> Path:
        return Path(self._log.name)

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        """The last ``chars`` characters of the server's combined stdout and stderr."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Poll the ready path until it answers 200; return the seconds since start, or raise ServerFailed."""
        deadline = self._started + timeout
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise ServerFailed(
                    f"{self.name} exited with code {self.process.returncode} before it was ready. "
                    f"Its log ends:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=2) as response:
                    if response.status == 200:
                        self.ready_seconds = time.perf_counter() - self._started
                        logger.info("%s ready at %s after %.1f s", self.name, self.url, self.ready_seconds)
                        return self.ready_seconds
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass  # not listening yet, or listening but not ready (503)
            time.sleep(0.1)
        self.stop()
        raise ServerFailed(f"{self.name} was not ready within {timeout:.0f} s. Its log ends:\n{self.log_tail()}")

    def stop(self, grace: float = STOP_GRACE_S) -> int | None:
        """Ask the server to shut down (SIGINT, then SIGTERM), kill what lingers; return its exit code.

        BentoML starts its workers in sessions of their own, out of reach of a signal to the server's
        process group, so the workers are listed first and any that outlive the server are killed by pid.
        """
        descendants = self._descendants()
        if self.process.poll() is None:
            for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, 5.0)):
                self._signal_group(sig)
                try:
                    self.process.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    logger.warning("%s (pid %d) ignored %s", self.name, self.pid, sig.name)
            else:
                self._signal_group(signal.SIGKILL)
                self.process.wait(timeout=5.0)
        self._kill_survivors(descendants)
        self._log.close()
        return self.process.returncode

    def _descendants(self) -> list:
        try:
            import psutil

            return psutil.Process(self.pid).children(recursive=True)
        except Exception:  # psutil missing, or the server already gone
            return []

    def _kill_survivors(self, descendants: list) -> None:
        if not descendants:
            self._signal_group(signal.SIGKILL)  # whatever is left in the server's own group
            return
        import psutil

        _, alive = psutil.wait_procs(descendants, timeout=5.0)
        for process in alive:  # psutil checks that the pid still names the same process before it signals
            logger.warning("Killing %s's leftover process %d", self.name, process.pid)
            try:
                process.kill()
            except psutil.Error:
                pass

    def _signal_group(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self.process.pid, sig)  # the group this server leads, and only it
        except (ProcessLookupError, PermissionError):
            pass

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.process.poll() is None else f"exited {self.process.returncode}"
        return f"ServerProcess({self.name!r}, {self.url}, pid={self.pid}, {state})"


def start_service(port: int | None = None, env: Mapping[str, str] | None = None, timeout: float = 60.0,
                  service: str = "service:DigitClassifier") -> ServerProcess:
    """Start ``bentoml serve`` for the digit classifier on 127.0.0.1 and wait until ``/readyz`` answers 200."""
    port = port or free_port()
    command = [venv_script("bentoml"), "serve", service, "--host", "127.0.0.1", "--port", str(port)]
    return _ready(ServerProcess(command, port, env=env, name="bentoml-serve"), timeout)


def start_uvicorn(app: str, port: int | None = None, workers: int = 1, env: Mapping[str, str] | None = None,
                  timeout: float = 60.0) -> ServerProcess:
    """Start ``uvicorn app`` (an import path such as ``loadtests.naive_server:app``) and wait until it is ready."""
    port = port or free_port()
    command = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
               "--workers", str(workers), "--log-level", "warning", "--no-access-log"]
    return _ready(ServerProcess(command, port, env=env, name=app.rsplit(".", 1)[-1].split(":")[0]), timeout)


def _ready(server: ServerProcess, timeout: float) -> ServerProcess:
    """Wait for ``server`` to answer ready; stop it if it does not (or the wait is interrupted)."""
    try:
        server.wait_ready(timeout)
    except BaseException:
        server.stop()
        raise
    return server
