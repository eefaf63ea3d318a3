"""A two-layer MLP from scratch in NumPy: forward pass, backpropagation, minibatch SGD.

This is the lecture's algorithm with nothing hidden, so it can be read next to
the Keras version in ``model.py``. ``tests/test_xor_mlp.py`` checks these
hand-written gradients against TensorFlow's automatic differentiation.

Network: ``h = tanh(x W1 + b1)``, ``p = sigmoid(h W2 + b2)``, loss = mean
binary cross-entropy ``-[y log p + (1 - y) log(1 - p)]``.
"""

from __future__ import annotations

import numpy as np

Params = dict[str, np.ndarray]


def init_params(inputs: int, hidden: int, outputs: int, rng: np.random.Generator) -> Params:
    """Glorot-uniform weights (as Keras uses) and zero biases, in float64."""

    def glorot(fan_in: int, fan_out: int) -> np.ndarray:
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, size=(fan_in, fan_out))

    return {
        "W1": glorot(inputs, hidden),
        "b1": np.zeros(hidden),
        "W2": glorot(hidden, outputs),
        "b2": np.zeros(outputs),
    }


def forward(params: Params, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the hidden activations ``h`` and the output probabilities ``p``."""
    h = np.tanh(x @ params["W1"] + params["b1"])
    z = h @ params["W2"] + params["b2"]
    p = 1.0 / (1.0 + np.exp(-z))
    return h, p


def loss(p: np.ndarray, y: np.ndarray) -> float:
    """Mean binary cross-entropy."""
    p = np.clip(p, 1e-12, 1.0 - 1e-12)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log(1.0 - p)))


def gradients(params: Params, x: np.ndarray, y: np.ndarray) -> Params:
    """Gradients of the mean loss with respect to every parameter (backpropagation).

    The chain rule, from the output back:
    dL/dz = (p - y) / N  (sigmoid and cross-entropy together),
    dL/dW2 = h^T dL/dz,  dL/db2 = sum over rows of dL/dz,
    dL/dh = dL/dz W2^T,  dL/da = dL/dh * (1 - h^2)  (tanh' = 1 - tanh^2),
    dL/dW1 = x^T dL/da,  dL/db1 = sum over rows of dL/da.
    """
    h, p = forward(params, x)
    dz = (p - y) / len(x)
    da = (dz @ params["W2"].T) * (1.0 - h**2)
    return {
        "W1": x.T @ da,
        "b1": da.sum(axis=0),
        "W2": h.T @ dz,
        "b2": dz.sum(axis=0),
    }


def train(
    x: np.ndarray,
    y: np.ndarray,
    hidden: int,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    seed: int,
) -> tuple[Params, list[float]]:
    """Minibatch SGD: each epoch, shuffle, then step once per minibatch.

    Returns:
        The trained parameters and the full-data loss after each epoch.
    """
    rng = np.random.default_rng(seed)
    x = x.astype(np.float64)
    y = y.astype(np.float64)
    params = init_params(x.shape[1], hidden, y.shape[1], rng)
    losses = []
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch_size):
            batch = order[start : start + batch_size]
            grads = gradients(params, x[batch], y[batch])
            for name in params:
                params[name] -= learning_rate * grads[name]
        losses.append(loss(forward(params, x)[1], y))
    return params, losses


def predict(params: Params, x: np.ndarray) -> np.ndarray:
    """Output probabilities for the rows of ``x``."""
    return forward(params, x.astype(np.float64))[1]
