"""The reference run: scratch perceptron, FFNN and Keras perceptron on toy data, with plots and numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.reference import (
    PLOT_NAMES,
    REPORT_NAME,
    KerasPerceptronResult,
    make_separable_data,
    run_reference,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out_dir = tmp_path_factory.mktemp("reference")
    return out_dir, run_reference(out_dir)


def test_writes_every_plot_as_a_png(reference_run: tuple[Path, dict]) -> None:
    from PIL import Image

    out_dir, report = reference_run
    assert report["plots"] == list(PLOT_NAMES)
    for name in PLOT_NAMES:
        path = out_dir / name
        assert path.read_bytes()[:8] == PNG_SIGNATURE, name
        with Image.open(path) as image:
            width, height = image.size
        assert width >= 400 and height >= 300, name


def test_report_file_holds_the_returned_numbers(reference_run: tuple[Path, dict]) -> None:
    out_dir, report = reference_run
    assert json.loads((out_dir / REPORT_NAME).read_text()) == report


def test_numbers_make_sense(reference_run: tuple[Path, dict]) -> None:
    _, report = reference_run
    separable, xor = report["separable"], report["xor"]
    scratch = separable["scratch_perceptron"]
    assert scratch["accuracy"] == 1.0
    assert scratch["errors_per_epoch"][-1] == 0
    assert len(scratch["errors_per_epoch"]) == report["config"]["perceptron_epochs"]
    assert separable["keras_perceptron"]["accuracy"] >= 0.95
    losses = separable["keras_perceptron"]["loss_per_epoch"]
    assert losses[-1] < losses[0]
    assert min(xor["scratch_perceptron"]["errors_per_epoch"]) > 0
    assert xor["scratch_perceptron"]["accuracy"] < 1.0
    assert xor["ffnn"]["accuracy"] == 1.0
    assert xor["ffnn"]["final_loss"] < xor["ffnn"]["initial_loss"]


def test_separable_data_is_deterministic_and_keeps_its_margin() -> None:
    X, y = make_separable_data(n_samples=200, margin=0.1, seed=3)
    again_X, again_y = make_separable_data(n_samples=200, margin=0.1, seed=3)
    assert X.shape == (200, 2) and y.shape == (200,)
    assert np.array_equal(X, again_X) and np.array_equal(y, again_y)
    assert not np.array_equal(X, make_separable_data(n_samples=200, margin=0.1, seed=4)[0])
    assert set(np.unique(y)) == {0, 1}
    distance = np.abs(0.5 * X[:, 0] - X[:, 1] + 0.2) / np.hypot(0.5, 1)
    assert distance.min() >= 0.1


@pytest.mark.parametrize(("n_samples", "margin"), [(1, 0.1), (100, 0.6), (100, -0.1)])
def test_separable_data_rejects_bad_arguments(n_samples: int, margin: float) -> None:
    with pytest.raises(ValueError, match="must"):
        make_separable_data(n_samples=n_samples, margin=margin)


def test_keras_perceptron_output_is_thresholded_at_one_half() -> None:
    # output = 0.5 + 1 * x1: class 1 from x1 = 0 on.
    result = KerasPerceptronResult(bias=0.5, w1=1.0, w2=0.0, loss_per_epoch=[])
    assert result.predict(np.array([[-0.01, 5.0], [0.0, -5.0], [0.3, 0.0]])).tolist() == [0, 1, 1]
