"""The seed's perceptron: learns what a line can separate, and only that."""

import numpy as np
import pytest

from models.perceptron import Perceptron

XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
XOR_Y = np.array([0, 1, 1, 0])


def separable_data(n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Points labelled by the line x2 = 0.5 * x1 + 0.2, none closer to it than 0.1."""
    rng = np.random.default_rng(0)
    points = rng.uniform(-1, 1, size=(4 * n, 2))
    offset = points[:, 1] - (0.5 * points[:, 0] + 0.2)
    points = points[np.abs(offset) > 0.1][:n]
    return points, (points[:, 1] > 0.5 * points[:, 0] + 0.2).astype(int)


def test_converges_on_separable_data() -> None:
    X, y = separable_data()
    perceptron = Perceptron()
    errors = perceptron.fit(X, y, epochs=100, verbose=False)
    assert errors[0] > 0  # it starts wrong, so the zero below was learnt
    assert errors[-1] == 0
    assert perceptron.errors == errors
    assert np.array_equal(perceptron.predict_many(X), y)


def test_never_fits_xor() -> None:
    errors = Perceptron().fit(XOR_X, XOR_Y, epochs=200, verbose=False)
    assert len(errors) == 200
    assert min(errors) > 0


def test_starts_from_the_seed_weights() -> None:
    perceptron = Perceptron()
    assert (perceptron.w0, perceptron.w1, perceptron.w2) == (1, 0.1, 0.1)
    assert repr(perceptron) == "Perceptron(w0=1, w1=0.1, w2=0.1)"


def test_scalar_api_matches_the_seed() -> None:
    perceptron = Perceptron(w0=-1, w1=1, w2=1)
    assert perceptron.weighted_sum_inputs(2, 3) == pytest.approx(4)
    assert perceptron.step_function(0) == 1
    assert perceptron.step_function(-0.01) == 0
    assert perceptron.predict(1, 1) == 1
    assert perceptron.predict(0, 0) == 0


def test_accepts_lists_as_well_as_arrays() -> None:
    from_lists = Perceptron()
    from_arrays = Perceptron()
    from_lists.fit(XOR_X.tolist(), XOR_Y.tolist(), epochs=3, verbose=False)
    from_arrays.fit(XOR_X, XOR_Y, epochs=3, verbose=False)
    assert from_lists.errors == from_arrays.errors
    assert (from_lists.w0, from_lists.w1, from_lists.w2) == (from_arrays.w0, from_arrays.w1, from_arrays.w2)
    assert from_lists.predict_many([[0, 0], [1, 1]]).shape == (2,)


def test_accepts_pandas() -> None:
    pd = pytest.importorskip("pandas")
    X, y = separable_data()
    frame = pd.DataFrame(X, columns=["x1", "x2"])
    errors = Perceptron().fit(frame, pd.Series(y), epochs=100, verbose=False)
    assert errors == Perceptron().fit(X, y, epochs=100, verbose=False)


@pytest.mark.parametrize(
    ("X", "y"),
    [
        (np.zeros((4, 3)), np.zeros(4)),  # three features
        (np.zeros(4), np.zeros(4)),  # 1-D X
        (np.zeros((4, 2)), np.zeros(3)),  # lengths differ
        (np.zeros((4, 2)), np.zeros((4, 1))),  # y not 1-D
        (np.zeros((0, 2)), np.zeros(0)),  # no samples
        (np.zeros((2, 2)), np.array([0, 2])),  # a label the step function cannot output
    ],
)
def test_bad_shapes_raise_value_error(X: np.ndarray, y: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"must"):
        Perceptron().fit(X, y, verbose=False)


def test_logs_each_epoch_when_verbose(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="models.perceptron")
    Perceptron().fit(XOR_X, XOR_Y, epochs=3)
    assert sum("errors" in message for message in caplog.messages) == 3


def test_predict_boundary_lies_on_the_decision_line() -> None:
    X, y = separable_data()
    perceptron = Perceptron()
    perceptron.fit(X, y, epochs=100, verbose=False)
    xs = np.linspace(-1, 1, 11)
    on_line = perceptron.predict_boundary(xs)
    assert np.allclose(perceptron.weighted_sum_inputs(xs, on_line), 0, atol=1e-9)
    # Just above the line is class 1, just below class 0, when w2 > 0 as here.
    assert perceptron.w2 > 0
    assert (perceptron.predict(xs, on_line + 1e-3) == 1).all()
    assert (perceptron.predict(xs, on_line - 1e-3) == 0).all()


def test_predict_boundary_refuses_a_vertical_line() -> None:
    with pytest.raises(ValueError, match="vertical"):
        Perceptron(w2=0).predict_boundary(0.5)
