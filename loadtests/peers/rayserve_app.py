"""Ray Serve (``ray[serve]`` 2.60) serving the digit classifier: a deployment whose model calls go through
``@serve.batch``, behind Serve's HTTP proxy, the way Ray's "Dynamic Request Batching" guide builds one.

    PYTHONPATH=. .venv-peers/kserve-ray/bin/python -m loadtests.peers.rayserve_app --port 8000

Ray Serve has no Open Inference Protocol. The closest equivalent, used here, is the same requests on the
same paths: the deployment itself answers ``GET /v2/health/ready``, ``GET /v2/models/mnist_cnn/ready`` and
``POST /v2/models/mnist_cnn/infer``, decoding the v2 JSON and binary bodies and encoding the v2 JSON answer
with ``loadtests/v2wire.py``. So every byte on the wire is the same as for the v2 servers, but that
decoding is this project's code running inside Ray, not Ray's.

This process is the Ray driver: it starts a private local Ray cluster (GCS, raylet, the Serve controller
and proxy, the replicas), deploys the application, and on SIGINT shuts Serve and Ray down. Every process
of that cluster descends from it, so the benchmark counts their CPU and memory as the server's.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

import numpy as np
from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from loadtests.peers.model import PeerModel
from loadtests.v2wire import (HEADER_LENGTH, INFER_PATH, MODEL_NAME, MODEL_READY_PATH, READY_PATH, BadRequest,
                              answer_response_parts, decode_request, error_body)

logger = logging.getLogger(__name__)

JSON = "application/json"


@serve.deployment
class DigitDeployment:
    """One replica: the model, and the v2 paths answered by hand."""

    def __init__(self, tf_threads: int, max_batch_size: int, batch_wait_timeout_s: float) -> None:
        self.model = PeerModel(tf_threads=tf_threads)
        # The documented way to set @serve.batch's parameters from the deployment's own arguments.
        self.classify.set_max_batch_size(max_batch_size)
        self.classify.set_batch_wait_timeout_s(batch_wait_timeout_s)

    @serve.batch
    async def classify(self, requests: list[np.ndarray]) -> list[np.ndarray]:
        """Concurrent requests' digits (each (n_i, 28, 28)) in one model call; each request's (n_i, 10) back."""
        probabilities = self.model.probabilities(np.concatenate(requests))
        return np.split(probabilities, np.cumsum([len(digits) for digits in requests])[:-1])

    async def __call__(self, request: Request) -> Response:
        path = request.url.path
        if request.method == "GET" and path in (READY_PATH, MODEL_READY_PATH):
            return Response(b'{"ready":true}' if path == READY_PATH else
                            f'{{"name":"{MODEL_NAME}","ready":true}}'.encode(), media_type=JSON)
        if request.method != "POST" or path != INFER_PATH:
            return Response(error_body(f"No route for {request.method} {path}."), status_code=404, media_type=JSON)
        try:
            decoded = decode_request(await request.body(), request.headers.get(HEADER_LENGTH))
            digits = decoded.digits if decoded.digits is not None else self.model.normalise(decoded.files)
        except (BadRequest, ValueError) as error:  # ValueError: the service's InputError for a bad image
            return Response(error_body(str(error)), status_code=400, media_type=JSON)
        probabilities = await self.classify(digits)
        body, headers = answer_response_parts(probabilities, decoded, self.model.version)
        return Response(body, headers=headers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs the local Ray cluster may schedule")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--replica-cpus", type=float, default=1.0, help="ray_actor_options num_cpus per replica")
    parser.add_argument("--max-ongoing-requests", type=int, default=64)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-wait-timeout-s", type=float, default=0.002)
    parser.add_argument("--tf-threads", type=int, default=1)
    parser.add_argument("--temp-dir", default=None, help="Ray's session folder (logs, sockets)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    import ray

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    # address="local": always a new private cluster, never one some other program left running.
    ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, _temp_dir=args.temp_dir)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": args.port})
        deployment = DigitDeployment.options(
            num_replicas=args.replicas, max_ongoing_requests=args.max_ongoing_requests,
            ray_actor_options={"num_cpus": args.replica_cpus})
        serve.run(deployment.bind(args.tf_threads, args.max_batch_size, args.batch_wait_timeout_s),
                  name="digits", route_prefix="/")
        logger.info("Ray Serve is serving %s on 127.0.0.1:%d", MODEL_NAME, args.port)
        while not stop.wait(1.0):
            pass
    finally:
        logger.info("Shutting down Serve and Ray")
        serve.shutdown()
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
