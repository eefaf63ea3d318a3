"""The layer-by-layer parameter count: the lecture's formulas, and totals Keras agrees with."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from projects.cifar_cnn import airbench
from projects.cifar_cnn.config import MODELS
from projects.cifar_cnn.model import build_classifier
from projects.cifar_cnn.parameters import explain_parameters, leaf_layers, parameter_table

MEAN, VARIANCE = np.array([125.0, 123.0, 114.0]), np.array([3900.0, 3800.0, 4400.0])


def test_the_lectures_example_64_kernels_of_7x7():
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(64, 7, name="conv")])
    (row,) = parameter_table(model)
    assert (row.formula, row.count) == ("(7·7·1 + 1)·64", 3200)
    # Weight sharing: the count does not grow with the image.
    bigger = keras.Sequential([keras.Input((224, 224, 1)), keras.layers.Conv2D(64, 7)])
    assert parameter_table(bigger)[0].count == 3200


def test_dense_and_bias_free_layers_follow_the_formula():
    model = keras.Sequential(
        [
            keras.Input((10,)),
            keras.layers.Dense(4, name="hidden"),
            keras.layers.Dense(3, use_bias=False, name="out"),
        ]
    )
    rows = parameter_table(model)
    assert [(row.formula, row.count) for row in rows] == [("(10 + 1)·4", 44), ("(4)·3", 12)]


def airbench_model():
    images = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    whitening = airbench.patch_whitening_filters(images, MEAN, VARIANCE)
    return airbench.build_airbench(10, 32, MEAN, VARIANCE, whitening)


@pytest.mark.parametrize("architecture", MODELS)
def test_the_table_adds_up_to_keras_count_for_every_architecture(architecture):
    if architecture == "airbench":
        model = airbench_model()
    else:
        model = build_classifier(architecture, 10, 32, 16, MEAN, VARIANCE)
    rows = parameter_table(model)
    assert sum(row.count for row in rows) == model.count_params()
    text = explain_parameters(model)
    assert text.splitlines()[-1].split()[-1] == f"{model.count_params():,}"
    layers = {layer.name: layer for layer in leaf_layers(model)}
    for row in rows:  # each layer's formula gives that layer's own count
        assert row.count == layers[row.layer].count_params(), row
    convolutions = [row for row in rows if isinstance(layers[row.layer], keras.layers.Conv2D)]
    assert convolutions and all(row.formula.startswith("(") for row in convolutions)
