"""The two Keras models of the lecture: an MLP with one hidden layer, and a perceptron."""

from __future__ import annotations

import keras


def build_mlp(hidden_units: int) -> keras.Model:
    """2 inputs -> ``hidden_units`` tanh neurons -> 1 sigmoid output."""
    inputs = keras.Input(shape=(2,), name="bits")
    hidden = keras.layers.Dense(hidden_units, activation="tanh", name="hidden")(inputs)
    output = keras.layers.Dense(1, activation="sigmoid", name="output")(hidden)
    return keras.Model(inputs, output, name="mlp")


def build_perceptron() -> keras.Model:
    """2 inputs -> 1 sigmoid output: a single linear decision boundary."""
    inputs = keras.Input(shape=(2,), name="bits")
    output = keras.layers.Dense(1, activation="sigmoid", name="output")(inputs)
    return keras.Model(inputs, output, name="perceptron")


def compile_classifier(model: keras.Model, learning_rate: float) -> keras.Model:
    """Binary cross-entropy, Adam and accuracy; returns the same model."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="binary_crossentropy",
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy")],
    )
    return model
