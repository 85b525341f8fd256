"""The CNN is exactly the seed's network; the Keras perceptron is the seed's, in Keras 3 spelling."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from models.cnn import build_cnn, build_keras_perceptron, make_inference_fn  # noqa: E402

SEED_LAYERS = [
    ("Conv2D", {"filters": 32, "kernel_size": (3, 3), "activation": "relu"}),
    ("Conv2D", {"filters": 32, "kernel_size": (3, 3), "activation": "relu"}),
    ("MaxPooling2D", {"pool_size": (2, 2)}),
    ("Dropout", {"rate": 0.25}),
    ("Flatten", {}),
    ("Dense", {"units": 128, "activation": "relu"}),
    ("Dropout", {"rate": 0.3}),
    ("Dense", {"units": 10, "activation": "softmax"}),
]


def test_cnn_matches_the_seed_layer_by_layer():
    model = build_cnn()
    assert len(model.layers) == len(SEED_LAYERS)
    for layer, (kind, settings) in zip(model.layers, SEED_LAYERS):
        assert type(layer).__name__ == kind
        config = layer.get_config()
        for key, value in settings.items():
            actual = tuple(config[key]) if isinstance(value, tuple) else config[key]
            assert actual == value, f"{layer.name}.{key} is {actual}, the seed has {value}"


def test_cnn_has_the_seeds_parameter_count_and_shapes():
    model = build_cnn()
    assert model.count_params() == 600_810
    assert model.input_shape == (None, 28, 28, 1)
    assert model.output_shape == (None, 10)


def test_cnn_is_compiled_as_the_seed_says():
    model = build_cnn()
    assert model.loss == "categorical_crossentropy"
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert "accuracy" in [m for m in model.metrics_names] or model.compiled_metrics is not None


def test_compiled_inference_matches_the_model_for_any_batch_size():
    model = build_cnn()
    infer = make_inference_fn(model)
    for batch in (1, 7, 64):
        images = np.random.default_rng(batch).random((batch, 28, 28, 1), dtype=np.float32)
        expected = model(images, training=False).numpy()
        np.testing.assert_allclose(infer(images), expected, rtol=1e-5, atol=1e-6)


def test_keras_perceptron_is_the_seeds():
    model = build_keras_perceptron()
    (dense,) = model.layers
    assert model.input_shape == (None, 2)
    assert dense.units == 1 and dense.get_config()["activation"] == "linear"
    assert not np.any(dense.get_weights()[0]) and not np.any(dense.get_weights()[1])  # zero initialised
    assert model.loss == "mse"
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.01)
