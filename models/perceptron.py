"""The seed article's perceptron, from scratch in NumPy.

Kept as the article wrote it: weights ``w0`` (bias), ``w1``, ``w2``, a step activation and
Rosenblatt's update rule applied one sample at a time. Two changes, neither altering what it
learns: ``fit`` accepts any array-like (the seed required a pandas DataFrame) and logs each
epoch instead of printing it.
"""

from __future__ import annotations

import logging

import numpy as np
from numpy.typing import ArrayLike

logger = logging.getLogger(__name__)


class Perceptron:
    """A single neuron over two inputs with a step activation: fires (1) when w0 + w1*x1 + w2*x2 >= 0."""

    def __init__(self, w0: float = 1.0, w1: float = 0.1, w2: float = 0.1) -> None:
        # The seed's starting weights; training moves them, nothing else changes.
        self.w0 = float(w0)  # bias
        self.w1 = float(w1)
        self.w2 = float(w2)
        self.errors: list[int] = []  # misclassifications per epoch of the last fit

    def weighted_sum_inputs(self, x1: ArrayLike, x2: ArrayLike) -> float | np.ndarray:
        """The pre-activation z = w0 + w1*x1 + w2*x2 (scalars or broadcastable arrays)."""
        return 1 * self.w0 + np.asarray(x1) * self.w1 + np.asarray(x2) * self.w2

    def step_function(self, z: ArrayLike) -> int | np.ndarray:
        """1 where z >= 0, else 0: lets the signal pass or blocks it."""
        fired = np.where(np.asarray(z) >= 0, 1, 0)
        return int(fired) if fired.ndim == 0 else fired

    def predict(self, x1: ArrayLike, x2: ArrayLike) -> int | np.ndarray:
        """The class (0 or 1) the perceptron gives the point (x1, x2)."""
        return self.step_function(self.weighted_sum_inputs(x1, x2))

    def predict_many(self, X: ArrayLike) -> np.ndarray:
        """Classes for the rows of X, shape (n, 2) -> (n,); used for accuracies and plots."""
        points = _as_points(X)
        return np.asarray(self.predict(points[:, 0], points[:, 1]), dtype=int).reshape(-1)

    def __call__(self, X: ArrayLike) -> np.ndarray:
        return self.predict_many(X)

    def predict_boundary(self, x: ArrayLike) -> float | np.ndarray:
        """The x2 where the decision line crosses x1 = x, i.e. where w0 + w1*x + w2*x2 = 0."""
        if self.w2 == 0:
            raise ValueError(
                "The decision line is vertical (w2 == 0), so it cannot be written as x2 = f(x1)."
            )
        return -(self.w1 * np.asarray(x) + self.w0) / self.w2

    def fit(
        self,
        X: ArrayLike,
        y: ArrayLike,
        epochs: int = 1,
        step: float = 0.1,
        verbose: bool = True,
    ) -> list[int]:
        """Train with the perceptron rule, one sample at a time in the given order.

        Returns (and keeps in ``self.errors``) the number of misclassified samples in each
        epoch; a last entry of 0 means the data were separated.
        """
        points = _as_points(X)
        targets = np.asarray(y)
        if targets.ndim != 1 or targets.shape[0] != points.shape[0]:
            raise ValueError(
                f"y must be a 1-D array with one label per row of X ({points.shape[0]}), "
                f"got shape {targets.shape}."
            )
        if not np.isin(targets, (0, 1)).all():
            raise ValueError("y must contain only the labels 0 and 1, the step function's outputs.")
        if epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {epochs}.")
        if step <= 0:
            raise ValueError(f"step must be positive, got {step}; with 0 nothing is learnt.")

        self.errors = []
        for epoch in range(epochs):
            error = 0
            for (x1, x2), target in zip(points, targets):
                # The update is proportional to the step size and the error (0 when right).
                update = step * (int(target) - self.predict(x1, x2))
                self.w1 += update * x1
                self.w2 += update * x2
                self.w0 += update
                error += int(update != 0.0)
            self.errors.append(error)
            if verbose:
                logger.info("epoch %d: %d errors (all epochs: %s)", epoch, error, self.errors)
        return self.errors

    def __repr__(self) -> str:
        return f"Perceptron(w0={self.w0:.4g}, w1={self.w1:.4g}, w2={self.w2:.4g})"


def _as_points(X: ArrayLike) -> np.ndarray:
    """X as a float array of shape (n, 2), or a ValueError saying what was wrong."""
    points = np.asarray(X, dtype=float)
    if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] == 0:
        raise ValueError(
            f"X must have shape (n, 2) with n >= 1: one row (x1, x2) per sample, got shape {points.shape}."
        )
    if not np.isfinite(points).all():
        raise ValueError("X must contain only finite numbers.")
    return points
