"""What a load test checks in each answer, how it counts right and wrong digits, and its pass/fail verdict.

Plain Python with no Locust import, so the rules are unit-tested on their own.

A wrong digit is not a failed request: the service answered, correctly shaped, in time. Wrong digits are
counted apart, and the accuracy they add up to is checked against its own floor, so that an accuracy
collapse under load (a race that mixes up answers, a batching bug) fails the run without a merely
imperfect model failing every run.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from models.preprocessing import NUM_CLASSES

CLASSIFICATION_KEYS = frozenset({"digit", "confidence", "probabilities", "model"})
PROBABILITY_SUM_TOLERANCE = 1e-3  # the service rounds each probability to 6 decimals


class BadAnswer(ValueError):
    """An answer whose status, JSON or shape is not what the API promises."""


def check_classification(item: Any) -> int:
    """Check one classification object from ``/classify`` or ``/classify_batch``; return its digit.

    Raises BadAnswer with a sentence when a key is missing or extra, the digit is not 0..9, the
    probabilities are not 10 numbers summing to 1, or the digit and confidence disagree with them.
    """
    if not isinstance(item, dict):
        raise BadAnswer(f"Expected a JSON object, got {type(item).__name__}.")
    if set(item) != CLASSIFICATION_KEYS:
        raise BadAnswer(f"Expected keys {sorted(CLASSIFICATION_KEYS)}, got {sorted(item)}.")
    digit, confidence, probabilities = item["digit"], item["confidence"], item["probabilities"]
    if not isinstance(digit, int) or isinstance(digit, bool) or not 0 <= digit < NUM_CLASSES:
        raise BadAnswer(f"'digit' must be an integer 0..{NUM_CLASSES - 1}, got {digit!r}.")
    if (not isinstance(probabilities, list) or len(probabilities) != NUM_CLASSES
            or not all(isinstance(p, (int, float)) and 0 <= p <= 1 for p in probabilities)):
        raise BadAnswer(f"'probabilities' must be {NUM_CLASSES} numbers in [0, 1], got {probabilities!r:.200}.")
    if abs(sum(probabilities) - 1.0) > PROBABILITY_SUM_TOLERANCE:
        raise BadAnswer(f"'probabilities' sum to {sum(probabilities):.6f}, not 1.")
    if probabilities[digit] != max(probabilities):
        raise BadAnswer(f"'digit' {digit} is not the most probable digit in {probabilities}.")
    if not isinstance(confidence, (int, float)) or not math.isclose(confidence, probabilities[digit], abs_tol=1e-6):
        raise BadAnswer(f"'confidence' {confidence!r} is not the digit's probability {probabilities[digit]}.")
    if not isinstance(item["model"], str) or not item["model"]:
        raise BadAnswer("'model' must name the model that answered.")
    return digit


def parse_json(status: int, text: str | None, expected_status: int = 200) -> Any:
    """The JSON body of an answer that must have ``expected_status``; BadAnswer otherwise."""
    if status != expected_status:
        raise BadAnswer(f"Expected HTTP {expected_status}, got {status}: {(text or '')[:200]}")
    try:
        return json.loads(text or "")
    except ValueError:
        raise BadAnswer(f"The body is not JSON: {(text or '')[:200]!r}") from None


def check_rejection(status: int, text: str | None, expected_status: int, reason: str | None,
                    message_contains: str | None = None) -> None:
    """Check a refusal: exactly ``expected_status``, a JSON body with a sentence in ``error``, and its reason."""
    body = parse_json(status, text, expected_status)
    if not isinstance(body, dict) or not isinstance(body.get("error"), str) or not body["error"]:
        raise BadAnswer(f"A refusal must carry an 'error' sentence, got {body!r:.200}.")
    if reason is not None and body.get("reason") != reason:
        raise BadAnswer(f"Expected reason {reason!r}, got {body.get('reason')!r}.")
    if message_contains is not None and message_contains not in body["error"]:
        raise BadAnswer(f"Expected the error to say {message_contains!r}, got {body['error']!r}.")


@dataclass
class Tally:
    """Right and wrong digits, overall and by upload kind; adds up across Locust worker processes."""

    correct: int = 0
    wrong: int = 0
    wrong_by_kind: dict[str, int] = field(default_factory=dict)

    def record(self, predicted: int, label: int, kind: str) -> bool:
        if predicted == label:
            self.correct += 1
            return True
        self.wrong += 1
        self.wrong_by_kind[kind] = self.wrong_by_kind.get(kind, 0) + 1
        return False

    @property
    def total(self) -> int:
        return self.correct + self.wrong

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.total if self.total else None

    def as_dict(self) -> dict:
        return asdict(self)

    def add(self, other: dict) -> None:
        """Add a tally sent by a worker (``as_dict()`` form)."""
        self.correct += int(other.get("correct", 0))
        self.wrong += int(other.get("wrong", 0))
        for kind, count in other.get("wrong_by_kind", {}).items():
            self.wrong_by_kind[kind] = self.wrong_by_kind.get(kind, 0) + int(count)

    def reset(self) -> None:
        self.correct, self.wrong, self.wrong_by_kind = 0, 0, {}

    def share_across_workers(self, events, key: str = "digitserve_tally") -> None:
        """Hook into Locust's ``events``: workers send what they counted since their last report; the master adds it up."""

        def send(client_id, data, **kwargs) -> None:
            data[key] = self.as_dict()
            self.reset()

        def receive(client_id, data, **kwargs) -> None:
            self.add(data.get(key, {}))

        events.report_to_master.add_listener(send)
        events.worker_report.add_listener(receive)


@dataclass(frozen=True)
class Slo:
    """The service-level objectives a load test must meet."""

    p95_ms: float = 500.0
    min_accuracy: float = 0.9
    max_failures: int = 0

    def __post_init__(self) -> None:
        if self.p95_ms <= 0 or not 0 <= self.min_accuracy <= 1 or self.max_failures < 0:
            raise ValueError(
                f"SLO thresholds out of range: p95_ms must be > 0 (got {self.p95_ms}), min_accuracy in "
                f"[0, 1] (got {self.min_accuracy}), max_failures >= 0 (got {self.max_failures})."
            )


def slo_violations(slo: Slo, requests: int, failures: int, p95_ms: float | None, tally: Tally) -> list[str]:
    """Each objective the run missed, as a sentence; an empty list means the run passed."""
    violations = []
    if requests == 0:
        violations.append("No requests were made, so nothing was measured.")
    if failures > slo.max_failures:
        violations.append(f"{failures} of {requests} requests failed (allowed: {slo.max_failures}).")
    if p95_ms is not None and p95_ms > slo.p95_ms:
        violations.append(f"p95 latency was {p95_ms:g} ms, above the {slo.p95_ms:g} ms objective.")
    if tally.accuracy is None:
        violations.append("No digit was classified, so accuracy under load is unknown.")
    elif tally.accuracy < slo.min_accuracy:
        violations.append(
            f"Accuracy under load was {tally.accuracy:.2%} ({tally.wrong} wrong of {tally.total}), "
            f"below the {slo.min_accuracy:.0%} floor."
        )
    return violations


def stats_summary(total, tally: Tally) -> dict:
    """Counts, throughput and latency percentiles of a Locust run, from its ``stats.total`` entry, and the tally."""
    measured = total.num_requests > 0

    def percentile(share: float) -> float | None:
        return float(total.get_response_time_percentile(share)) if measured else None

    return {
        "requests": total.num_requests, "failures": total.num_failures, "rps": total.total_rps,
        "p50_ms": percentile(0.50), "p95_ms": percentile(0.95), "p99_ms": percentile(0.99),
        "accuracy": tally.accuracy, **tally.as_dict(),
        # The window the figures cover, as Unix times: from the start of the run to its last request.
        "started_at": total.start_time, "last_request_at": total.last_request_timestamp,
    }
