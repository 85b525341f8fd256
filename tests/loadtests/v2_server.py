"""A minimal Open Inference Protocol (v2) server for the peer harness's tests, run in the service's .venv.

    uvicorn tests.loadtests.v2_server:app      # BENTOML_HOME must hold a registered mnist_cnn

The project's model (loadtests/peers/model.py, as every peer loads it) behind the v2 paths, decoded and
encoded by loadtests/v2wire.py, and nothing else: no batching, no metrics. It stands in for a peer, or
for the service before it speaks v2, so that ``make test`` runs the v2 harness end to end without
installing any peer.

``V2_TEST_SERVER_FAULT=digit_shape`` makes every answer's ``digit`` output the wrong shape, with a 200: the
harness must count those as failures.
"""

from __future__ import annotations

import json
import os
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from loadtests.peers.model import PeerModel
from loadtests.v2wire import (DIGIT_OUTPUT, HEADER_LENGTH, INFER_PATH, READY_PATH, BadRequest, decode_request,
                              answer_response_parts, error_body)

FAULT = os.environ.get("V2_TEST_SERVER_FAULT", "")
STATE: dict[str, PeerModel] = {}


async def ready(request: Request) -> Response:
    if "model" not in STATE:
        return Response(b'{"ready":false}', status_code=503, media_type="application/json")
    return Response(b'{"ready":true}', media_type="application/json")


async def infer(request: Request) -> Response:
    model = STATE["model"]
    try:
        decoded = decode_request(await request.body(), request.headers.get(HEADER_LENGTH))
        digits = decoded.digits if decoded.digits is not None else model.normalise(decoded.files)
    except (BadRequest, ValueError) as error:
        return Response(error_body(str(error)), status_code=400, media_type="application/json")
    body, headers = answer_response_parts(model.probabilities(digits), decoded, model.version)
    if FAULT == "digit_shape":
        length = int(headers.get(HEADER_LENGTH, len(body)))
        answer = json.loads(body[:length])
        for tensor in answer["outputs"]:
            if tensor["name"] == DIGIT_OUTPUT:
                tensor["shape"] = [tensor["shape"][0], 1]
        header = json.dumps(answer).encode()
        body, headers = header + body[length:], {**headers, HEADER_LENGTH: str(len(header))} if HEADER_LENGTH in headers else headers
    return Response(body, headers=headers)


@asynccontextmanager
async def lifespan(app: Starlette):
    STATE["model"] = PeerModel(tf_threads=1)
    yield
    STATE.clear()


app = Starlette(routes=[Route(READY_PATH, ready), Route(INFER_PATH, infer, methods=["POST"])], lifespan=lifespan)
