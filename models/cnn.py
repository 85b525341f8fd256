"""The seed's Keras networks: the MNIST CNN and the one-neuron perceptron.

Both are written exactly as the article describes them, in Keras 3 spelling. The article's
Keras 2 arguments (``init=``, ``lr=``, ``nb_epoch=``) no longer exist; their Keras 3 names are
``kernel_initializer=``, ``learning_rate=`` and ``epochs=``.
"""

from __future__ import annotations

import keras
from keras import layers

from models.preprocessing import INPUT_SHAPE, NUM_CLASSES

# The seed's layer settings, named so that tests and readers can check them against the article.
CONV_FILTERS = 32
KERNEL_SIZE = (3, 3)
POOL_SIZE = (2, 2)
CONV_DROPOUT_RATE = 0.25
DENSE_UNITS = 128
DENSE_DROPOUT_RATE = 0.3
CNN_PARAMETER_COUNT = 600_810  # what the seed's network has for 28x28x1 inputs and 10 classes


def build_cnn(learning_rate: float = 1e-3) -> keras.Sequential:
    """Return the seed's CNN, compiled with categorical cross-entropy, Adam and accuracy.

    Conv2D(32, 3x3, relu) -> Conv2D(32, 3x3, relu) -> MaxPooling2D(2x2) -> Dropout(0.25)
    -> Flatten -> Dense(128, relu) -> Dropout(0.3) -> Dense(10, softmax).
    ``learning_rate`` defaults to Adam's own default, which is what the seed's ``optimizer='adam'`` used.
    """
    model = keras.Sequential(
        [
            keras.Input(shape=INPUT_SHAPE),  # (28, 28, 1)
            layers.Conv2D(CONV_FILTERS, kernel_size=KERNEL_SIZE, activation="relu"),
            layers.Conv2D(CONV_FILTERS, KERNEL_SIZE, activation="relu"),
            layers.MaxPooling2D(pool_size=POOL_SIZE),
            layers.Dropout(CONV_DROPOUT_RATE),
            layers.Flatten(),
            layers.Dense(DENSE_UNITS, activation="relu"),
            layers.Dropout(DENSE_DROPOUT_RATE),
            layers.Dense(NUM_CLASSES, activation="softmax"),
        ],
        name="mnist_cnn",
    )
    model.compile(
        loss="categorical_crossentropy",
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        metrics=["accuracy"],
    )
    return model


def build_keras_perceptron(learning_rate: float = 0.01) -> keras.Sequential:
    """Return the seed's Keras perceptron: one linear neuron over two inputs, zero weights, MSE, SGD.

    The seed wrote ``Dense(1, input_dim=2, init="zero", activation="linear")`` and ``SGD(lr=0.01)``.
    """
    model = keras.Sequential(
        [
            keras.Input(shape=(2,)),
            layers.Dense(1, kernel_initializer="zeros", bias_initializer="zeros", activation="linear"),
        ],
        name="keras_perceptron",
    )
    model.compile(loss="mse", optimizer=keras.optimizers.SGD(learning_rate=learning_rate))
    return model


def make_inference_fn(model: keras.Model):
    """Return ``model``'s forward pass as one compiled graph for inputs of shape (batch, 28, 28, 1).

    ``model.predict`` builds a data pipeline on every call (about 80 ms for one image on a 2-core CPU);
    the compiled call costs about a millisecond. The fixed input signature means a single trace serves
    every batch size, so no request ever pays for retracing.
    """
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec(shape=(None, *INPUT_SHAPE), dtype=tf.float32)])
    def infer(images):
        return model(images, training=False)

    return lambda images: infer(images).numpy()  # (batch, 10) softmax probabilities
