"""The load test's rules, without Locust: what counts as a good answer, a refusal, and a passed run."""

from __future__ import annotations

import json

import pytest

from loadtests.checks import BadAnswer, Slo, Tally, check_classification, check_rejection, parse_json, slo_violations


def answer(**changes) -> dict:
    """A well-formed answer for the digit 7, with ``changes`` applied."""
    probabilities = [0.0] * 10
    probabilities[7], probabilities[8] = 0.9, 0.1
    return {"digit": 7, "confidence": 0.9, "probabilities": probabilities, "model": "mnist_cnn:abc", **changes}


def test_a_good_answer_gives_its_digit():
    assert check_classification(answer()) == 7


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        ({"digit": 10}, "integer 0..9"),
        ({"digit": "7"}, "integer 0..9"),
        ({"digit": True}, "integer 0..9"),
        ({"probabilities": [0.1] * 9}, "10 numbers"),
        ({"probabilities": [0.2] * 10}, "sum to"),
        ({"confidence": 0.5}, "confidence"),
        ({"digit": 8, "confidence": 0.1}, "not the most probable"),
        ({"model": ""}, "model"),
        ({"extra": 1}, "Expected keys"),
    ],
)
def test_a_wrongly_shaped_answer_is_refused(changes, complaint):
    with pytest.raises(BadAnswer, match=complaint):
        check_classification(answer(**changes))


def test_a_missing_key_and_a_non_object_are_refused():
    incomplete = answer()
    del incomplete["confidence"]
    with pytest.raises(BadAnswer, match="Expected keys"):
        check_classification(incomplete)
    with pytest.raises(BadAnswer, match="JSON object"):
        check_classification([answer()])


def test_parse_json_checks_the_status_and_the_body():
    assert parse_json(200, json.dumps(answer())) == answer()
    with pytest.raises(BadAnswer, match="Expected HTTP 200, got 503"):
        parse_json(503, "overloaded")
    with pytest.raises(BadAnswer, match="not JSON"):
        parse_json(200, "<html>")


def test_a_refusal_must_have_its_status_reason_and_a_sentence():
    body = json.dumps({"error": "The upload is empty: send the bytes of an image file.", "reason": "empty"})
    check_rejection(400, body, 400, "empty")
    check_rejection(400, body, 400, None, "bytes of an image")
    with pytest.raises(BadAnswer, match="Expected HTTP 422"):
        check_rejection(400, body, 422, "empty")
    with pytest.raises(BadAnswer, match="reason 'no_ink'"):
        check_rejection(400, body, 400, "no_ink")
    with pytest.raises(BadAnswer, match="say 'never fetched'"):
        check_rejection(400, body, 400, None, "never fetched")
    with pytest.raises(BadAnswer, match="'error' sentence"):
        check_rejection(400, json.dumps({"reason": "empty"}), 400, "empty")


def test_tally_counts_right_and_wrong_and_adds_up_across_workers():
    master, worker = Tally(), Tally()
    worker.record(3, 3, "png")
    worker.record(5, 3, "jpeg")
    worker.record(1, 7, "jpeg")
    assert (worker.correct, worker.wrong, worker.wrong_by_kind) == (1, 2, {"jpeg": 2})
    master.record(2, 2, "png")
    master.add(worker.as_dict())
    assert (master.correct, master.wrong, master.wrong_by_kind) == (2, 2, {"jpeg": 2})
    assert master.accuracy == 0.5
    worker.reset()
    assert worker.total == 0 and worker.accuracy is None


def tally(correct: int, wrong: int) -> Tally:
    return Tally(correct=correct, wrong=wrong)


def test_a_run_within_every_objective_passes():
    assert slo_violations(Slo(p95_ms=500, min_accuracy=0.9), 1000, 0, 120.0, tally(95, 5)) == []


@pytest.mark.parametrize(
    ("requests", "failures", "p95", "right_wrong", "complaint"),
    [
        (1000, 1, 120.0, (95, 5), "1 of 1000 requests failed"),
        (1000, 0, 501.0, (95, 5), "p95 latency was 501 ms"),
        (1000, 0, 120.0, (89, 11), "Accuracy under load was 89.00%"),
        (1000, 0, 120.0, (0, 0), "accuracy under load is unknown"),
        (0, 0, None, (0, 0), "No requests"),
    ],
)
def test_each_missed_objective_is_named(requests, failures, p95, right_wrong, complaint):
    violations = slo_violations(Slo(p95_ms=500, min_accuracy=0.9), requests, failures, p95, tally(*right_wrong))
    assert any(complaint in violation for violation in violations), violations


def test_slo_thresholds_out_of_range_are_refused():
    with pytest.raises(ValueError, match="p95_ms must be > 0"):
        Slo(p95_ms=0)
    with pytest.raises(ValueError, match="min_accuracy"):
        Slo(min_accuracy=1.5)
