"""A real ``bentoml serve service:DigitClassifier`` for tests that need a socket, not an in-process client.

    from tests.server import start_server

    def test_something(trained):                 # `trained` registers a model in the test store
        with start_server() as server:           # waits for /readyz 200; stops the server on exit
            httpx.get(server.url + "/model")

The subprocess inherits this process's environment (conftest.py points BENTOML_HOME at the test store);
``env`` adds to it, e.g. ``{"DIGITSERVE_WORKERS": "2"}``. If the server dies or is not ready within
``timeout`` seconds, ``ServerFailed`` is raised with the tail of its log.
"""

from __future__ import annotations

from typing import Mapping

from loadtests.servers import ServerFailed, ServerProcess, free_port, start_service

ServerHandle = ServerProcess

__all__ = ["ServerFailed", "ServerHandle", "free_port", "start_server"]


def start_server(port: int | None = None, env: Mapping[str, str] | None = None, timeout: float = 60) -> ServerHandle:
    """Start the service on 127.0.0.1 (a free port unless ``port``) and return once ``/readyz`` answers 200.

    The handle has ``.url``, ``.ready_seconds``, ``.log_tail()`` and ``.stop()``, and is a context manager.
    """
    # No drain delay unless a test asks for one: no load balancer waits to take a test's server out.
    return start_service(port=port, env={"DIGITSERVE_DRAIN_DELAY_S": "0", **(env or {})}, timeout=timeout)
