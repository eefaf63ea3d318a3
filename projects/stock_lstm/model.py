"""The forecaster: normalise -> stacked SimpleRNN/LSTM/GRU -> next ``horizon`` log returns.

The normalisation statistics (from the training days only) and the scale of the
targets are constants inside the model, so the saved ``model.keras`` takes raw
feature windows and returns raw log returns: inference needs nothing else.
"""

from __future__ import annotations

import keras
import numpy as np

RECURRENT_LAYERS = {
    "simplernn": keras.layers.SimpleRNN,
    "lstm": keras.layers.LSTM,
    "gru": keras.layers.GRU,
}


def build_forecaster(
    window: int,
    feature_mean: np.ndarray,
    feature_variance: np.ndarray,
    target_scale: float,
    horizon: int,
    cell: str,
    units: int,
    layers: int,
    dropout: float,
) -> keras.Model:
    """Windows of shape (window, features) -> (horizon,) cumulative log returns.

    Default activations, no recurrent dropout and no unrolling keep LSTM and GRU
    on the fast cuDNN kernels on a GPU; dropout is applied between layers instead.
    """
    features = len(feature_mean)
    inputs = keras.Input(shape=(window, features), name="features")
    x = keras.layers.Normalization(mean=feature_mean, variance=feature_variance, name="normalise")(
        inputs
    )
    recurrent = RECURRENT_LAYERS[cell]
    for index in range(layers):
        last = index == layers - 1
        x = recurrent(units, return_sequences=not last, name=f"{cell}_{index + 1}")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"dropout_{index + 1}")(x)
    x = keras.layers.Dense(horizon, name="scaled_returns")(x)
    # Daily log returns are ~0.02: the network predicts in units of their spread.
    outputs = keras.layers.Rescaling(scale=target_scale, name="log_returns")(x)
    return keras.Model(inputs, outputs, name=f"{cell}_forecaster")


def compile_forecaster(model: keras.Model, learning_rate: float) -> keras.Model:
    """Mean squared error on log returns, Adam; returns the same model."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="mse",
        metrics=[keras.metrics.MeanAbsoluteError(name="mae")],
    )
    return model
