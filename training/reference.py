"""The seed's reference run: its from-scratch models and its Keras perceptron on toy 2-D problems.

``python -m training.reference --out reports`` shows, with plots and a JSON of the numbers:

1. the scratch perceptron separating a linearly separable set (its boundary from ``predict_boundary``);
2. the same perceptron failing on XOR: its error count per epoch never reaches zero;
3. the two-layer FFNN solving XOR (its decision surface);
4. the Keras perceptron trained as the seed trains it, next to the scratch one on the separable set.

Everything is deterministic: the data come from a seeded generator, the scratch perceptron starts
from the seed's weights, the FFNN from a seeded RNG and the Keras perceptron from zeros.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from models.ffnn import FFNN
from models.perceptron import Perceptron

logger = logging.getLogger(__name__)

KERAS_THRESHOLD = 0.5  # the Keras perceptron is a linear output fitted to 0/1 targets: >= 0.5 is class 1
PLOT_NAMES = (
    "perceptron_separable.png",
    "perceptron_xor_errors.png",
    "ffnn_xor_surface.png",
    "perceptron_vs_keras.png",
)
REPORT_NAME = "reference.json"


@dataclass(frozen=True)
class ReferenceConfig:
    """What the reference run trains, and for how long."""

    seed: int = 0
    n_samples: int = 100  # enough points to pin down a line; each scratch epoch stays instant
    margin: float = 0.1  # no point lies closer than this to the true line, so the set is separable
    perceptron_epochs: int = 50  # the scratch perceptron separates the set well before this
    xor_epochs: int = 30  # enough to see the error count cycle without ever reaching 0
    perceptron_step: float = 0.1  # the seed's default
    ffnn_hidden_size: int = 4  # the FFNN's defaults (see models.ffnn): they solved XOR from every seed tried
    ffnn_epochs: int = 5000
    ffnn_step: float = 0.5
    keras_epochs: int = 20  # the seed fitted 1; by 10 SGD(0.01) has settled, close to the least-squares line


# --- Data --------------------------------------------------------------------------------------


def make_separable_data(n_samples: int = 100, margin: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Points uniform in [-1, 1]^2 labelled 1 above the line x2 = 0.5*x1 + 0.2, none within ``margin`` of it.

    Returns X (n_samples, 2) and y (n_samples,) of 0/1; the same seed gives the same set.
    """
    if n_samples < 2:
        raise ValueError(f"n_samples must be at least 2, got {n_samples}.")
    if not 0 <= margin < 0.5:
        raise ValueError(f"margin must be in [0, 0.5) to leave room for points, got {margin}.")
    rng = np.random.default_rng(seed)
    kept: list[np.ndarray] = []
    while sum(len(chunk) for chunk in kept) < n_samples:
        candidates = rng.uniform(-1, 1, size=(2 * n_samples, 2))
        # Perpendicular distance to the line 0.5*x1 - x2 + 0.2 = 0.
        distance = np.abs(0.5 * candidates[:, 0] - candidates[:, 1] + 0.2) / np.hypot(0.5, 1)
        kept.append(candidates[distance >= margin])
    X = np.concatenate(kept)[:n_samples]
    y = (X[:, 1] > 0.5 * X[:, 0] + 0.2).astype(int)
    return X, y


def xor_data() -> tuple[np.ndarray, np.ndarray]:
    """The four XOR points (4, 2) and their labels (4,): 1 when exactly one input is 1."""
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
    return X, np.array([0, 1, 1, 0])


def accuracy(predicted: np.ndarray, y: np.ndarray) -> float:
    """Fraction of labels predicted right."""
    return float(np.mean(np.asarray(predicted).ravel() == np.asarray(y).ravel()))


# --- Models ------------------------------------------------------------------------------------


def train_scratch_perceptron(X: np.ndarray, y: np.ndarray, epochs: int, step: float = 0.1) -> Perceptron:
    """The seed's perceptron from its default weights, fitted in order; its ``errors`` hold each epoch's count."""
    perceptron = Perceptron()
    perceptron.fit(X, y, epochs=epochs, step=step, verbose=False)
    return perceptron


def train_ffnn_xor(config: ReferenceConfig) -> FFNN:
    """The FFNN fitted to XOR with the configured size, step and epochs."""
    X, y = xor_data()
    network = FFNN(hidden_size=config.ffnn_hidden_size, seed=config.seed)
    network.fit(X, y, epochs=config.ffnn_epochs, step=config.ffnn_step)
    return network


@dataclass(frozen=True)
class KerasPerceptronResult:
    """What the trained Keras perceptron learnt: output = bias + w1*x1 + w2*x2."""

    bias: float
    w1: float
    w2: float
    loss_per_epoch: list[float]

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Classes (n,) for X (n, 2): the linear output thresholded at KERAS_THRESHOLD."""
        X = np.asarray(X, dtype=float)
        return (self.bias + self.w1 * X[:, 0] + self.w2 * X[:, 1] >= KERAS_THRESHOLD).astype(int)


def train_keras_perceptron(X: np.ndarray, y: np.ndarray, epochs: int, seed: int = 0) -> KerasPerceptronResult:
    """Fit the seed's Keras perceptron as the seed does (batch_size=1, shuffle=False) and read its weights."""
    import keras  # imported here: TensorFlow takes seconds to load and the scratch models do not need it

    from models.cnn import build_keras_perceptron

    keras.utils.set_random_seed(seed)  # zeros init and no shuffling make it deterministic already; belt and braces
    model = build_keras_perceptron()
    history = model.fit(
        np.asarray(X, dtype="float32"),
        np.asarray(y, dtype="float32"),
        epochs=epochs,
        batch_size=1,
        shuffle=False,
        verbose=0,
    )
    kernel, bias = model.layers[-1].get_weights()  # kernel (2, 1), bias (1,)
    return KerasPerceptronResult(
        bias=float(bias[0]),
        w1=float(kernel[0, 0]),
        w2=float(kernel[1, 0]),
        loss_per_epoch=[float(loss) for loss in history.history["loss"]],
    )


# --- Plots -------------------------------------------------------------------------------------


def _new_figure(width: float = 6, height: float = 5.5) -> Figure:
    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)  # render with Agg, without touching pyplot's global state
    return figure


def _scatter_classes(axis: Axes, X: np.ndarray, y: np.ndarray) -> None:
    for label, colour, marker in ((0, "tab:blue", "o"), (1, "tab:orange", "s")):
        chosen = np.asarray(y) == label
        axis.scatter(X[chosen, 0], X[chosen, 1], c=colour, marker=marker, edgecolors="k", label=f"class {label}")


def _frame(axis: Axes, low: float, high: float, title: str) -> None:
    axis.set_xlim(low, high)
    axis.set_ylim(low, high)
    axis.set_aspect("equal")
    axis.set_xlabel("x1")
    axis.set_ylabel("x2")
    axis.set_title(title)
    # Below the axes, so it never hides a point.
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=8, frameon=False)


def plot_separable(path: Path, X: np.ndarray, y: np.ndarray, perceptron: Perceptron) -> None:
    """The separable set and the scratch perceptron's line, drawn with ``predict_boundary``."""
    figure = _new_figure()
    axis = figure.add_subplot()
    _scatter_classes(axis, X, y)
    xs = np.linspace(-1.2, 1.2, 2)
    axis.plot(xs, perceptron.predict_boundary(xs), "k-", label="perceptron boundary")
    errors = perceptron.errors
    title = f"Scratch perceptron on separable data\n{len(errors)} epochs, last epoch {errors[-1]} errors"
    _frame(axis, -1.2, 1.2, title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def plot_xor_errors(path: Path, perceptron: Perceptron) -> None:
    """Errors per epoch of the perceptron on XOR, and the regions it ended with."""
    figure = _new_figure(11, 5)
    errors_axis, regions_axis = figure.subplots(1, 2)
    epochs = np.arange(1, len(perceptron.errors) + 1)
    errors_axis.bar(epochs, perceptron.errors, color="tab:red")
    errors_axis.set_ylim(0, 4.5)
    errors_axis.set_xlabel("epoch")
    errors_axis.set_ylabel("misclassified points (of 4)")
    errors_axis.set_title(f"Perceptron on XOR: fewest errors in an epoch {min(perceptron.errors)}")

    X, y = xor_data()
    grid_x1, grid_x2 = np.meshgrid(np.linspace(-0.5, 1.5, 201), np.linspace(-0.5, 1.5, 201))
    regions = perceptron.predict(grid_x1, grid_x2)
    regions_axis.contourf(grid_x1, grid_x2, regions, levels=[-0.5, 0.5, 1.5], colors=["#cfe0f3", "#fbdcc0"])
    _scatter_classes(regions_axis, X, y)
    _frame(regions_axis, -0.5, 1.5, "Its final regions: one line cannot split XOR")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def plot_ffnn_surface(path: Path, network: FFNN) -> None:
    """The FFNN's output over the plane around XOR, with its 0.5 contour as the decision boundary."""
    figure = _new_figure()
    axis = figure.add_subplot()
    grid_x1, grid_x2 = np.meshgrid(np.linspace(-0.5, 1.5, 201), np.linspace(-0.5, 1.5, 201))
    grid = np.column_stack([grid_x1.ravel(), grid_x2.ravel()])  # (201 * 201, 2)
    surface = network.predict(grid).reshape(grid_x1.shape)
    filled = axis.contourf(grid_x1, grid_x2, surface, levels=np.linspace(0, 1, 11), cmap="coolwarm", alpha=0.8)
    axis.contour(grid_x1, grid_x2, surface, levels=[0.5], colors="k", linewidths=2)
    figure.colorbar(filled, ax=axis, label="network output")
    X, y = xor_data()
    _scatter_classes(axis, X, y)
    _frame(axis, -0.5, 1.5, f"FFNN ({network.hidden_size} hidden) on XOR: black line is output 0.5")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def plot_comparison(
    path: Path, X: np.ndarray, y: np.ndarray, perceptron: Perceptron, keras_result: KerasPerceptronResult
) -> None:
    """Both perceptrons' boundaries over the separable set."""
    figure = _new_figure()
    axis = figure.add_subplot()
    _scatter_classes(axis, X, y)
    xs = np.linspace(-1.2, 1.2, 2)
    scratch_accuracy = accuracy(perceptron.predict_many(X), y)
    keras_accuracy = accuracy(keras_result.predict(X), y)
    axis.plot(xs, perceptron.predict_boundary(xs), "k-", label=f"scratch (accuracy {scratch_accuracy:.0%})")
    if keras_result.w2 != 0:  # zero only if training never moved it: then there is no line to draw
        keras_line = (KERAS_THRESHOLD - keras_result.bias - keras_result.w1 * xs) / keras_result.w2
        axis.plot(xs, keras_line, "g--", label=f"Keras, output = 0.5 (accuracy {keras_accuracy:.0%})")
    _frame(axis, -1.2, 1.2, "Scratch perceptron vs the seed's Keras perceptron")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


# --- The run -----------------------------------------------------------------------------------


def run_reference(out_dir: Path, config: ReferenceConfig = ReferenceConfig()) -> dict:
    """Train the four reference models, write the plots and reference.json into ``out_dir``; return the numbers."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    separable_X, separable_y = make_separable_data(config.n_samples, config.margin, config.seed)
    X_xor, y_xor = xor_data()

    # 1. The scratch perceptron on the separable set.
    perceptron = train_scratch_perceptron(
        separable_X, separable_y, config.perceptron_epochs, config.perceptron_step
    )
    plot_separable(out_dir / PLOT_NAMES[0], separable_X, separable_y, perceptron)

    # 2. The same perceptron on XOR.
    xor_perceptron = train_scratch_perceptron(X_xor, y_xor, config.xor_epochs, config.perceptron_step)
    plot_xor_errors(out_dir / PLOT_NAMES[1], xor_perceptron)
    # XOR is not linearly separable, so no epoch can end with 0 errors.
    logger.info("Perceptron on XOR: errors per epoch %s", xor_perceptron.errors)

    # 3. The FFNN on XOR.
    network = train_ffnn_xor(config)
    plot_ffnn_surface(out_dir / PLOT_NAMES[2], network)

    # 4. The seed's Keras perceptron on the separable set, against the scratch one.
    keras_result = train_keras_perceptron(separable_X, separable_y, config.keras_epochs, config.seed)
    plot_comparison(out_dir / PLOT_NAMES[3], separable_X, separable_y, perceptron, keras_result)

    xor_outputs = network.predict(X_xor).ravel()
    report = {
        "config": asdict(config),
        "separable": {
            "n_samples": int(len(separable_y)),
            "scratch_perceptron": {
                "accuracy": accuracy(perceptron.predict_many(separable_X), separable_y),
                "errors_per_epoch": perceptron.errors,
                "weights": {"w0": perceptron.w0, "w1": perceptron.w1, "w2": perceptron.w2},
            },
            "keras_perceptron": {
                "accuracy": accuracy(keras_result.predict(separable_X), separable_y),
                "threshold": KERAS_THRESHOLD,
                "loss_per_epoch": keras_result.loss_per_epoch,
                "weights": {"bias": keras_result.bias, "w1": keras_result.w1, "w2": keras_result.w2},
            },
        },
        "xor": {
            "scratch_perceptron": {
                "accuracy": accuracy(xor_perceptron.predict_many(X_xor), y_xor),
                "errors_per_epoch": xor_perceptron.errors,
            },
            "ffnn": {
                "accuracy": accuracy(np.round(xor_outputs), y_xor),
                "outputs": [float(output) for output in xor_outputs],
                "initial_loss": network.losses[0],
                "final_loss": network.losses[-1],
            },
        },
        "plots": list(PLOT_NAMES),
    }
    (out_dir / REPORT_NAME).write_text(json.dumps(report, indent=2))
    _log_summary(report, out_dir)
    return report


def _log_summary(report: dict, out_dir: Path) -> None:
    separable, xor = report["separable"], report["xor"]
    scratch = separable["scratch_perceptron"]
    first_clean_epoch = next((i + 1 for i, errors in enumerate(scratch["errors_per_epoch"]) if errors == 0), None)
    logger.info(
        "Separable set (%d points): scratch perceptron accuracy %.0f%% (first error-free epoch: %s), "
        "Keras perceptron accuracy %.0f%%",
        separable["n_samples"], 100 * scratch["accuracy"], first_clean_epoch,
        100 * separable["keras_perceptron"]["accuracy"],
    )
    logger.info(
        "XOR: scratch perceptron accuracy %.0f%% (fewest errors in an epoch: %d), "
        "FFNN accuracy %.0f%% (loss %.3g -> %.3g)",
        100 * xor["scratch_perceptron"]["accuracy"], min(xor["scratch_perceptron"]["errors_per_epoch"]),
        100 * xor["ffnn"]["accuracy"], xor["ffnn"]["initial_loss"], xor["ffnn"]["final_loss"],
    )
    logger.info("Wrote %s and %d plots to %s", REPORT_NAME, len(report["plots"]), out_dir)


def main(argv: list[str] | None = None) -> int:
    """``python -m training.reference [--out DIR]``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m training.reference", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path("reports"), help="where the plots and reference.json go (default reports/)"
    )
    args = parser.parse_args(argv)
    run_reference(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
