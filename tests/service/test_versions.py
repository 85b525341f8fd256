"""The pinned version, the run directory its workers share, and the gate's fixed digits (fast, no server).
The whole update path under load is in tests/e2e/test_lifecycle.py."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from service import versions
from service.versions import RunDir, State, is_moving


@pytest.mark.parametrize("tag,moving", [("mnist_cnn", True), ("mnist_cnn:latest", True),
                                        ("mnist_cnn:fbea5fhlekv5qax4", False)])
def test_only_latest_moves(tag, moving):
    assert is_moving(tag) is moving


def test_the_state_file_round_trips_and_is_replaced_whole(tmp_path):
    run_dir = RunDir(tmp_path)
    run_dir.write(State(tag="mnist_cnn:a", follows="mnist_cnn:latest"))
    state = run_dir.read()
    state.tag, state.refused["mnist_cnn:b"] = "mnist_cnn:c", "below_accuracy_floor"
    run_dir.write(state)
    assert run_dir.read() == State(tag="mnist_cnn:c", follows="mnist_cnn:latest",
                                   refused={"mnist_cnn:b": "below_accuracy_floor"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["serving.json"]  # no temporary file left


def test_one_worker_at_a_time_decides(tmp_path):
    run_dir = RunDir(tmp_path)
    pid = os.fork()
    if pid == 0:  # the child holds the lock for a moment
        with run_dir.try_lock() as mine:
            (tmp_path / "held").write_text(str(mine))
            time.sleep(1.0)
        os._exit(0)
    deadline = time.monotonic() + 10
    while not (tmp_path / "held").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    with run_dir.try_lock() as mine:
        assert mine is False  # the child has it: this process does not wait, it looks again later
    os.waitpid(pid, 0)
    with run_dir.try_lock() as mine:
        assert mine is True


def test_the_server_process_pins_and_its_workers_inherit(monkeypatch, trained):
    import bentoml

    monkeypatch.delenv(versions.RUN_DIR_ENV, raising=False)
    tag, run_dir = versions.pin("mnist_cnn:latest")  # as `bentoml serve` does when it imports the service
    assert tag == trained.tag and run_dir.read() == State(tag=trained.tag, follows="mnist_cnn:latest")
    owner, _, directory = os.environ[versions.RUN_DIR_ENV].partition(":")
    assert owner == str(os.getpid()) and directory == str(run_dir.path)

    run_dir.write(State(tag="mnist_cnn:decided-by-a-sibling", follows="mnist_cnn:latest"))
    monkeypatch.setattr(bentoml.server_context, "worker_index", 2)  # a worker, whose parent is the server
    monkeypatch.setattr(os, "getppid", lambda: int(owner))
    assert versions.pin("mnist_cnn:latest")[0] == "mnist_cnn:decided-by-a-sibling"

    monkeypatch.setattr(os, "getppid", lambda: 1)  # a server started by that process: a run directory of its own
    monkeypatch.setattr(bentoml.server_context, "worker_index", None)
    assert versions.pin("mnist_cnn:latest")[0] == trained.tag


def test_the_gate_digits_are_30_of_each_class_from_the_mnist_test_set():
    digits, labels = versions.gate_digits()
    assert digits.shape == (300, 28, 28) and digits.dtype == np.uint8
    assert np.bincount(labels, minlength=10).tolist() == [30] * 10
    with np.load(versions.GATE_DIGITS) as data:
        indices = data["test_indices"]
    assert len(set(indices.tolist())) == 300 and indices.max() < 10_000


def test_the_test_suites_model_passes_the_gate_and_an_untrained_one_does_not(trained):
    import bentoml

    from service.settings import Settings

    floor = Settings().gate_min_accuracy
    model = versions.validate(bentoml.models.get(trained.tag), floor)
    assert model.tag == trained.tag
    from loadtests.chaos import register_untrained

    untrained = register_untrained()
    try:
        with pytest.raises(versions.ModelRefused) as refusal:
            versions.validate(bentoml.models.get(untrained), floor)
    finally:
        bentoml.models.delete(untrained)
    assert refusal.value.reason == "below_accuracy_floor"


@pytest.mark.parametrize("pipeline,served", [("mnist-norm-1-deskew", True), ("mnist-norm-1-strokes-deskew", True),
                                             ("mnist-norm-99", False)])
def test_a_version_is_served_with_the_preprocessing_it_was_trained_for(trained, pipeline, served):
    """The gate, and then the engine, make a version's input by the pipeline its metadata names; a pipeline
    this service does not have is refused before the model is loaded."""
    import bentoml

    from models.preprocessing import deskew, model_input_function, normalize_strokes, to_model_input
    from service.served_model import load_served_model
    from service.settings import Settings
    from training.registry import ModelLoadError, register

    tag = register(trained.model, metadata={"preprocessing_version": pipeline}, config={})
    try:
        if not served:
            with pytest.raises(versions.ModelRefused) as refusal:
                versions.validate(bentoml.models.get(tag), Settings().gate_min_accuracy)
            assert refusal.value.reason == "preprocessing_mismatch" and pipeline in str(refusal.value)
            with pytest.raises(ValueError, match=pipeline):
                model_input_function(pipeline)
            with pytest.raises(ModelLoadError, match=pipeline):  # at start-up: the server stops with a sentence
                load_served_model(bentoml.models.get(tag))
            return
        model = versions.validate(bentoml.models.get(tag), Settings().gate_min_accuracy)
    finally:
        bentoml.models.delete(tag)
    assert model.pipeline == pipeline and model.model_input is model_input_function(pipeline)
    digits, _ = versions.gate_digits()
    wide = digits[:8]  # drawn with a marker: each stroke a pixel wider, so that the normalisation has work to do
    for shift in ((0, 1), (1, 0), (1, 1)):
        wide = np.maximum(wide, np.roll(digits[:8], shift, axis=(1, 2)))
    seen = deskew(normalize_strokes(wide) if "strokes" in pipeline else wide)
    assert ("strokes" in pipeline) == (not np.array_equal(seen, deskew(wide)))
    np.testing.assert_allclose(model.infer(model.model_input(wide)), model.infer(to_model_input(seen)))
    np.testing.assert_array_equal(model.as_seen(wide), seen)  # what /normalized shows
