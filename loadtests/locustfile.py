"""Locust load test for the digit classifier: real MNIST digits in, every answer checked.

    make loadtest HOST=http://127.0.0.1:3000                    # headless, with the SLO verdict as exit code
    make loadtest-ui HOST=http://127.0.0.1:3000                 # Locust's web UI on :8089
    locust -f loadtests/locustfile.py --headless -u 8 -t 30s -H http://127.0.0.1:3000

Each user mixes, by weight: single ``/classify`` uploads (MNIST test digits as PNG, JPEG, and dark ink on
light paper), ``/classify_batch`` requests of ``--batch-size`` digits, and a small share of deliberately bad
inputs, each of which must get exactly its 4xx. A right status is not enough: every answer's JSON shape is
checked, and every digit is compared with its label. Wrong digits are counted apart (see loadtests/checks.py).

At exit, a ``quitting`` listener checks the service-level objectives (no failed request, p95 latency,
accuracy under load) and sets the exit code to 1 if one is missed. Thresholds: ``--slo-p95-ms``
(LOADTEST_P95_MS, default 500) and ``--slo-min-accuracy`` (LOADTEST_MIN_ACCURACY, default 0.9).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
from pathlib import Path

from locust import FastHttpUser, events, task
from locust.runners import MasterRunner, WorkerRunner

from loadtests.checks import (
    BadAnswer,
    Slo,
    Tally,
    check_classification,
    check_rejection,
    parse_json,
    slo_violations,
    stats_summary,
)
from loadtests.payloads import PayloadSet, load_payloads

logger = logging.getLogger(__name__)

# Weights of the three kinds of request.
SINGLE_WEIGHT = 20
BATCH_WEIGHT = 2
BAD_INPUT_WEIGHT = 1

DEFAULT_SLO = Slo()
PAYLOADS: PayloadSet | None = None  # loaded once per process, in on_init
TALLY = Tally()  # this process's right and wrong digits; the master adds up its workers'
TALLY.share_across_workers(events)


@events.init_command_line_parser.add_listener
def add_arguments(parser) -> None:
    group = parser.add_argument_group("digitserve", "The digit classifier's load test")
    group.add_argument("--slo-p95-ms", type=float, default=DEFAULT_SLO.p95_ms, env_var="LOADTEST_P95_MS",
                       help="fail the run when the p95 latency of all requests is above this (ms)")
    group.add_argument("--slo-min-accuracy", type=float, default=DEFAULT_SLO.min_accuracy,
                       env_var="LOADTEST_MIN_ACCURACY",
                       help="fail the run when the share of right digits under load is below this")
    group.add_argument("--batch-size", type=int, default=16, env_var="LOADTEST_BATCH_SIZE",
                       help="digits per /classify_batch request (a page of a form, say)")
    group.add_argument("--think-ms", type=float, default=0.0, env_var="LOADTEST_THINK_MS",
                       help="mean pause between a user's requests (ms); 0 sends back to back")
    group.add_argument("--summary-json", default="", env_var="LOADTEST_SUMMARY_JSON",
                       help="write the SLO verdict, counts and accuracy to this JSON file")


@events.init.add_listener
def on_init(environment, **kwargs) -> None:
    global PAYLOADS
    if isinstance(environment.runner, MasterRunner):
        return  # the master sends no requests
    PAYLOADS = load_payloads(batch_size=environment.parsed_options.batch_size)
    logger.info("Loaded %d uploads, %d batches and %d bad inputs", len(PAYLOADS.uploads),
                len(PAYLOADS.batches), len(PAYLOADS.bad))


@events.quitting.add_listener
def check_slo(environment, **kwargs) -> None:
    """Set the exit code from the service-level objectives; write the verdict to --summary-json if asked."""
    if isinstance(environment.runner, WorkerRunner):
        return
    options = environment.parsed_options
    slo = Slo(p95_ms=options.slo_p95_ms, min_accuracy=options.slo_min_accuracy)
    total = environment.stats.total
    p95 = total.get_response_time_percentile(0.95) if total.num_requests else None
    violations = slo_violations(slo, total.num_requests, total.num_failures, p95, TALLY)
    accuracy = "n/a" if TALLY.accuracy is None else f"{TALLY.accuracy:.2%}"
    logger.info("Digits: %d right, %d wrong (accuracy %s); wrong by kind: %s",
                TALLY.correct, TALLY.wrong, accuracy, TALLY.wrong_by_kind or "none")
    for violation in violations:
        logger.error("SLO missed: %s", violation)
    if violations:
        environment.process_exit_code = 1
    else:
        logger.info("SLO met: %d requests, 0 failed, p95 %s ms <= %g ms, accuracy %s >= %g",
                    total.num_requests, p95, slo.p95_ms, accuracy, slo.min_accuracy)
    if options.summary_json:
        summary = {"passed": not violations, "violations": violations, "slo": dataclasses.asdict(slo),
                   **stats_summary(total, TALLY)}
        path = Path(options.summary_json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=2))


class DigitUser(FastHttpUser):
    """Someone, or some system, sending digits to classify."""

    def wait_time(self) -> float:
        think_s = self.environment.parsed_options.think_ms / 1000
        return random.uniform(0.0, 2.0 * think_s)  # mean think_s

    def _post(self, path: str, body, name: str):
        return self.client.post(path, data=body.data, headers={"Content-Type": body.content_type},
                                name=name, catch_response=True)

    @task(SINGLE_WEIGHT)
    def classify(self) -> None:
        upload = random.choice(PAYLOADS.uploads)
        with self._post("/classify", upload.body, f"/classify ({upload.kind})") as response:
            try:
                digit = check_classification(parse_json(response.status_code, response.text))
            except BadAnswer as error:
                response.failure(str(error))
                return
            TALLY.record(digit, upload.label, upload.kind)
            response.success()

    @task(BATCH_WEIGHT)
    def classify_batch(self) -> None:
        batch = random.choice(PAYLOADS.batches)
        with self._post("/classify_batch", batch.body, f"/classify_batch ({len(batch.labels)})") as response:
            try:
                answers = parse_json(response.status_code, response.text)
                if not isinstance(answers, list) or len(answers) != len(batch.labels):
                    raise BadAnswer(f"Expected a list of {len(batch.labels)} answers, got {str(answers)[:200]}")
                digits = [check_classification(answer) for answer in answers]
            except BadAnswer as error:
                response.failure(str(error))
                return
            for digit, label in zip(digits, batch.labels):
                TALLY.record(digit, label, "batch")
            response.success()

    @task(BAD_INPUT_WEIGHT)
    def bad_input(self) -> None:
        bad = random.choice(PAYLOADS.bad)
        with self._post("/classify", bad.body, f"/classify (bad: {bad.name})") as response:
            try:
                check_rejection(response.status_code, response.text, bad.status, bad.reason, bad.message_contains)
            except BadAnswer as error:
                response.failure(str(error))
                return
            response.success()  # exactly the refusal we expected is a success
