"""The benchmark's load generator: one Locust user class, the same for every server ``make bench`` measures.

    locust -f loadtests/benchfile.py --headless -u 64 -r 64 -t 10s -H http://127.0.0.1:8001 \
        --bench-path /classify --summary-json /tmp/run.json

Each user sends MNIST test digits (PNG and JPEG, light ink on black: the kind every server compared
classifies correctly) back to back, with no pause, and checks every answer as the load test does. With
``--bench-batch-size N`` it sends ``N`` digits per request to ``/classify_batch`` instead. At exit the
counts, throughput and latency percentiles go to ``--summary-json`` for ``loadtests/bench.py`` to read.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from locust import FastHttpUser, constant, events, task
from locust.runners import MasterRunner, WorkerRunner

from loadtests.checks import BadAnswer, Tally, check_classification, parse_json, stats_summary
from loadtests.payloads import PayloadSet, load_payloads

BENCH_KINDS = ("png", "jpeg")
BATCH_COUNT = 8  # distinct batch bodies to rotate through

PAYLOADS: PayloadSet | None = None
TALLY = Tally()
TALLY.share_across_workers(events)


@events.init_command_line_parser.add_listener
def add_arguments(parser) -> None:
    group = parser.add_argument_group("bench", "The side-by-side benchmark's load generator")
    group.add_argument("--bench-path", default="/classify", help="the endpoint to load")
    group.add_argument("--bench-batch-size", type=int, default=0,
                       help="digits per request, sent as repeated 'images' fields; 0 sends one 'image'")
    group.add_argument("--summary-json", default="", help="write counts, throughput and latencies here")


@events.init.add_listener
def on_init(environment, **kwargs) -> None:
    global PAYLOADS
    if not isinstance(environment.runner, MasterRunner):
        batch_size = environment.parsed_options.bench_batch_size
        PAYLOADS = load_payloads(batch_size=max(batch_size, 1), batch_count=BATCH_COUNT, kinds=BENCH_KINDS)


@events.quitting.add_listener
def write_summary(environment, **kwargs) -> None:
    if isinstance(environment.runner, WorkerRunner) or not environment.parsed_options.summary_json:
        return
    summary = stats_summary(environment.stats.total, TALLY)
    summary["batch_size"] = max(environment.parsed_options.bench_batch_size, 1)
    Path(environment.parsed_options.summary_json).write_text(json.dumps(summary, indent=2))


class BenchUser(FastHttpUser):
    wait_time = constant(0)

    @task
    def send(self) -> None:
        options = self.environment.parsed_options
        if options.bench_batch_size:
            batch = random.choice(PAYLOADS.batches)
            body, labels = batch.body, batch.labels
        else:
            upload = random.choice(PAYLOADS.uploads)
            body, labels = upload.body, (upload.label,)
        with self.client.post(options.bench_path, data=body.data, headers={"Content-Type": body.content_type},
                              catch_response=True) as response:
            try:
                answer = parse_json(response.status_code, response.text)
                answers = answer if options.bench_batch_size else [answer]
                if not isinstance(answers, list) or len(answers) != len(labels):
                    raise BadAnswer(f"Expected {len(labels)} answers, got {str(answers)[:200]}")
                digits = [check_classification(item) for item in answers]
            except BadAnswer as error:
                response.failure(str(error))
                return
            for digit, label in zip(digits, labels):
                TALLY.record(digit, label, "bench")
            response.success()
