"""The seed's feed-forward network, with its bugs fixed: it learns XOR and its gradients are right."""

import numpy as np
import pytest

from models.ffnn import FFNN, sigmoid, sigmoid_prime

XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
XOR_Y = np.array([0, 1, 1, 0])


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_learns_xor(seed: int) -> None:
    network = FFNN(seed=seed)
    losses = network.fit(XOR_X, XOR_Y)
    assert np.array_equal(np.round(network.predict(XOR_X)).ravel(), XOR_Y)
    assert losses[-1] < losses[0]


def test_predict_runs_and_agrees_with_forward() -> None:
    # Regression for bug 1: the seed's predict called an undefined free function.
    network = FFNN(seed=0)
    predictions = network.predict(XOR_X)
    assert predictions.shape == (4, 1)
    assert ((predictions > 0) & (predictions < 1)).all()
    assert np.array_equal(predictions, network.forward(XOR_X))
    assert np.array_equal(network(XOR_X), predictions)


def numerical_gradient(network: FFNN, weights: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Central differences of network.loss on XOR with respect to each entry of ``weights``."""
    gradient = np.zeros_like(weights)
    for index in np.ndindex(weights.shape):
        original = weights[index]
        weights[index] = original + eps
        loss_plus = network.loss(XOR_X, XOR_Y)
        weights[index] = original - eps
        loss_minus = network.loss(XOR_X, XOR_Y)
        weights[index] = original
        gradient[index] = (loss_plus - loss_minus) / (2 * eps)
    return gradient


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a) + np.abs(b)), 1e-12))


@pytest.mark.parametrize(("hidden_size", "seed"), [(2, 0), (4, 1), (5, 7)])
def test_backward_gradients_match_numerical_ones(hidden_size: int, seed: int) -> None:
    # Regressions for bugs 2, 4 and 5: a wrong derivative, an unused or missing bias, or a
    # double step would each make the backward pass disagree with the loss it claims to lower.
    network = FFNN(hidden_size=hidden_size, seed=seed)
    grad_w1, grad_w2 = network.gradients(XOR_X, XOR_Y)
    assert grad_w1.shape == network.w1.shape == (3, hidden_size)
    assert grad_w2.shape == network.w2.shape == (hidden_size + 1, 1)
    assert relative_error(grad_w1, numerical_gradient(network, network.w1)) < 1e-6
    assert relative_error(grad_w2, numerical_gradient(network, network.w2)) < 1e-6


def test_backward_takes_one_step_down_the_gradient() -> None:
    network = FFNN(seed=3)
    w1, w2 = network.w1.copy(), network.w2.copy()
    grad_w1, grad_w2 = network.gradients(XOR_X, XOR_Y)
    network.backward(XOR_X, XOR_Y, network.forward(XOR_X), step=0.1)
    assert np.allclose(network.w1, w1 - 0.1 * grad_w1)
    assert np.allclose(network.w2, w2 - 0.1 * grad_w2)


def test_every_weight_is_trained() -> None:
    # Regression for bug 4: the hidden bias row of w2 and the input bias row of w1 both move.
    network = FFNN(seed=0)
    w1, w2 = network.w1.copy(), network.w2.copy()
    network.fit(XOR_X, XOR_Y, epochs=50)
    assert (network.w1 != w1).all()
    assert (network.w2 != w2).all()


def test_forward_leaves_a_numpy_input_unchanged() -> None:
    inputs = XOR_X.copy()
    network = FFNN(seed=0)
    network.fit(inputs, XOR_Y, epochs=5)
    network.predict(inputs)
    assert np.array_equal(inputs, XOR_X)


def test_forward_leaves_a_dataframe_unchanged() -> None:
    # Regression for bug 3: the seed added a 'bias' column to the caller's DataFrame.
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(XOR_X, columns=["x1", "x2"])
    before = frame.copy()
    network = FFNN(seed=0)
    network.fit(frame, pd.Series(XOR_Y), epochs=5)
    network.predict(frame)
    pd.testing.assert_frame_equal(frame, before)
    assert list(frame.columns) == ["x1", "x2"]


def test_same_seed_same_network() -> None:
    first, second = FFNN(seed=11), FFNN(seed=11)
    assert np.array_equal(first.w1, second.w1) and np.array_equal(first.w2, second.w2)
    assert not np.array_equal(first.w1, FFNN(seed=12).w1)


def test_sigmoid_prime_is_the_derivative_at_the_pre_activation() -> None:
    s = np.linspace(-4, 4, 9)
    eps = 1e-6
    assert np.allclose(sigmoid_prime(s), (sigmoid(s + eps) - sigmoid(s - eps)) / (2 * eps), atol=1e-8)
    assert np.allclose(sigmoid_prime(s), sigmoid(s) * (1 - sigmoid(s)))


def test_loss_is_half_the_summed_squared_error() -> None:
    network = FFNN(seed=0)
    output = network.predict(XOR_X).ravel()
    assert network.loss(XOR_X, XOR_Y) == pytest.approx(0.5 * np.sum((XOR_Y - output) ** 2))


@pytest.mark.parametrize(
    ("X", "y"),
    [
        (np.zeros((4, 3)), np.zeros(4)),  # three features for a two-input network
        (np.zeros(4), np.zeros(4)),  # 1-D X
        (np.zeros((4, 2)), np.zeros(3)),  # lengths differ
    ],
)
def test_bad_shapes_raise_value_error(X: np.ndarray, y: np.ndarray) -> None:
    with pytest.raises(ValueError, match="must have shape"):
        FFNN(seed=0).fit(X, y, epochs=1)


def test_repr_names_the_sizes() -> None:
    assert repr(FFNN(hidden_size=3, seed=5)) == "FFNN(input_size=2, hidden_size=3, output_size=1, seed=5)"
