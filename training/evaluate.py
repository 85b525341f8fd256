"""Evaluate a classifier on labelled digits: accuracy, per-class accuracy and the confusion matrix."""

from __future__ import annotations

from typing import Callable

import numpy as np

from models.preprocessing import NUM_CLASSES, normalize_digit, to_model_input

EVAL_BATCH_SIZE = 1024


def predict_probabilities(infer: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
                          model_input: Callable[[np.ndarray], np.ndarray] = to_model_input) -> np.ndarray:
    """Class probabilities (n, 10) for uint8 digits (n, 28, 28), through the service's own preprocessing.

    Each image goes through ``normalize_digit`` as an upload would (MNIST digits come out unchanged), then
    ``model_input`` (the model's pipeline, ``models.preprocessing.model_input_function``), so the accuracy
    reported is the accuracy the service gives on the same pixels.
    """
    digits = np.stack([normalize_digit(image) for image in images])
    return infer_in_batches(infer, digits, model_input)


def infer_in_batches(infer: Callable[[np.ndarray], np.ndarray], digits: np.ndarray,
                     model_input: Callable[[np.ndarray], np.ndarray] = to_model_input) -> np.ndarray:
    """Class probabilities (n, 10) for normalised uint8 digits (n, 28, 28): each ``EVAL_BATCH_SIZE`` of them
    made into the model's input by ``model_input`` and passed to ``infer``."""
    return np.concatenate([infer(model_input(digits[start:start + EVAL_BATCH_SIZE]))
                           for start in range(0, len(digits), EVAL_BATCH_SIZE)])


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """(10, 10) counts; rows are the true digit, columns the predicted one."""
    matrix = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(matrix, (labels.astype(np.int64), predictions.astype(np.int64)), 1)
    return matrix


def classification_report(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    """Accuracy, per-class accuracy and the confusion matrix, as JSON-ready values."""
    predictions = probabilities.argmax(axis=1)
    matrix = confusion_matrix(labels, predictions)
    per_class = matrix.diagonal() / np.maximum(matrix.sum(axis=1), 1)
    return {
        "accuracy": float((predictions == labels).mean()),
        "per_class_accuracy": {str(digit): round(float(acc), 5) for digit, acc in enumerate(per_class)},
        "confusion_matrix": matrix.tolist(),
        "samples": int(len(labels)),
    }
