"""The reliability runs' load generator (``make soak``, ``make overload``): Locust users on ``/classify``
that record what happened, interval by interval.

    locust -f loadtests/reliabilityfile.py --headless -u 32 -r 32 -t 60s -H http://127.0.0.1:3000 \
        --record-path /tmp/run.jsonl --record-interval 10 --user-rate 20 --honour-retry-after

Each user sends MNIST test digits (PNG and JPEG, light ink on black, as ``make bench`` does) and checks
every answer: a 200 must carry a well-formed classification, and a 503 ``overloaded`` must say when to come
back (``Retry-After``). ``--user-rate R`` paces each user at R requests/s (``constant_throughput``); 0 sends
back to back. With ``--honour-retry-after``, a refused user waits Retry-After x uniform(0.5, 1.5) seconds
before its next request: the server's hint, jittered so that refused clients do not return in lockstep.

Every ``--record-interval`` seconds one JSON line goes to ``--record-path``: the requests that completed in
that interval by outcome (``loadtests.reliability.classify_answer``), their latency histograms, and the
generator's own state (CPU, RSS, the size of Locust's statistics), so a run that slows down can tell the
generator's growth from the server's. The harness (``loadtests.reliability.run_locust``) reads them.
"""

from __future__ import annotations

import gc
import json
import random
import resource
import time
from pathlib import Path

import gevent
from locust import FastHttpUser, constant, constant_throughput, events, task

from loadtests.payloads import PayloadSet, load_payloads
from loadtests.reliability import IntervalRecorder, classify_answer

UPLOAD_KINDS = ("png", "jpeg")  # light ink on black: what every server compared in make bench classifies well
RETRY_JITTER = (0.5, 1.5)  # a refused client waits Retry-After times a factor drawn from this range

PAYLOADS: PayloadSet | None = None
RECORDER: IntervalRecorder | None = None


@events.init_command_line_parser.add_listener
def add_arguments(parser) -> None:
    group = parser.add_argument_group("reliability", "Soak and overload runs")
    group.add_argument("--record-path", default="", help="append one JSON line per interval here")
    group.add_argument("--record-interval", type=float, default=60.0, help="seconds per recorded interval")
    group.add_argument("--user-rate", type=float, default=0.0, help="requests/s per user; 0 sends back to back")
    group.add_argument("--honour-retry-after", action="store_true",
                       help="after a 503 with Retry-After, wait that long (jittered) before the next request")
    group.add_argument("--request-timeout", type=float, default=60.0, help="seconds before a request times out")


@events.init.add_listener
def on_init(environment, **kwargs) -> None:
    global PAYLOADS
    PAYLOADS = load_payloads(batch_size=1, batch_count=1, kinds=UPLOAD_KINDS)


@events.test_start.add_listener
def start_recording(environment, **kwargs) -> None:
    global RECORDER
    options = environment.parsed_options
    if not options.record_path or RECORDER is not None:
        return
    RECORDER = IntervalRecorder(time.time())
    path = Path(options.record_path)

    def write(record: dict) -> None:
        record["generator"] = generator_state(environment)
        with path.open("a") as output:
            output.write(json.dumps(record) + "\n")

    def every_interval() -> None:
        deadline = RECORDER.started
        while True:
            deadline += options.record_interval
            gevent.sleep(max(0.0, deadline - time.time()))  # absolute deadlines: no drift over a long run
            write(RECORDER.cut(time.time()))

    environment.reliability_writer = write
    environment.reliability_greenlet = gevent.spawn(every_interval)


@events.quitting.add_listener
def stop_recording(environment, **kwargs) -> None:
    """The last, partial interval: requests that completed after the last cut, the stop's drain included."""
    greenlet = getattr(environment, "reliability_greenlet", None)
    if greenlet is None or RECORDER is None:
        return
    greenlet.kill()
    environment.reliability_writer(RECORDER.cut(time.time(), partial=True))


def generator_state(environment) -> dict:
    """What the generator process itself looks like now: its CPU and peak RSS, and Locust's statistics' size."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    total = environment.stats.total
    return {
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "max_rss_mb": usage.ru_maxrss / 1024,  # kilobytes on Linux
        "locust_response_time_keys": len(total.response_times),
        "locust_per_second_keys": len(total.num_reqs_per_sec),
        "locust_cache_entries": len(total.response_times_cache or ()),
        "locust_history_entries": len(environment.stats.history),
        "locust_error_keys": len(environment.stats.errors),
        "gc_collections": [generation["collections"] for generation in gc.get_stats()],
        "gc_tracked_objects": len(gc.get_objects()),
    }


class ClassifyUser(FastHttpUser):
    """Someone sending digits to ``/classify``, paced or back to back, who may honour Retry-After."""

    def __init__(self, environment) -> None:
        super().__init__(environment)
        options = environment.parsed_options
        self.network_timeout = self.connection_timeout = options.request_timeout
        self._pacing = constant_throughput(options.user_rate) if options.user_rate > 0 else constant(0)

    def wait_time(self) -> float:
        return self._pacing(self)

    @task
    def classify(self) -> None:
        upload = random.choice(PAYLOADS.uploads)
        with self.client.post("/classify", data=upload.body.data, headers={"Content-Type": upload.body.content_type},
                              catch_response=True) as response:
            latency_ms = response.request_meta["response_time"]
            retry_after = response.headers.get("Retry-After") if response.headers else None
            outcome, digit = classify_answer(response.status_code, retry_after, response.text,
                                             response.request_meta.get("exception"))
            if RECORDER is not None:
                RECORDER.record(outcome, latency_ms, None if digit is None else digit == upload.label)
            if outcome in ("accepted", "refused"):
                response.success()  # a refusal with Retry-After is the answer overload must get
            else:
                response.failure(outcome)
        if outcome == "refused" and self.environment.parsed_options.honour_retry_after:
            gevent.sleep(float(retry_after) * random.uniform(*RETRY_JITTER))
