"""The SimpleRNN and LSTM cells written out in NumPy from the lecture's equations.

They take Keras's own weight arrays, so ``tests/test_stock_lstm.py`` can check
that they reproduce ``keras.layers.SimpleRNN`` and ``keras.layers.LSTM``
exactly, which shows what those layers compute.

Keras stores the LSTM's four gates side by side in one kernel, in the order
input, forget, candidate (cell), output.
"""

from __future__ import annotations

import numpy as np


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def simple_rnn(
    inputs: np.ndarray, kernel: np.ndarray, recurrent_kernel: np.ndarray, bias: np.ndarray
) -> np.ndarray:
    """h_t = tanh(W_x x_t + W_h h_{t-1} + b) over (batch, time, features); returns the last h."""
    batch, steps, _ = inputs.shape
    h = np.zeros((batch, kernel.shape[1]))
    for t in range(steps):
        h = np.tanh(inputs[:, t] @ kernel + h @ recurrent_kernel + bias)
    return h


def lstm(
    inputs: np.ndarray, kernel: np.ndarray, recurrent_kernel: np.ndarray, bias: np.ndarray
) -> np.ndarray:
    """The LSTM over (batch, time, features); returns the last hidden state h.

    i = sigmoid(W_i x + U_i h + b_i)     input gate: how much new content to write
    f = sigmoid(W_f x + U_f h + b_f)     forget gate: how much old cell state to keep
    g = tanh(W_g x + U_g h + b_g)        candidate content
    o = sigmoid(W_o x + U_o h + b_o)     output gate: how much of the cell to expose
    c = f * c + i * g                    cell state: the long-term memory
    h = o * tanh(c)                      hidden state: the output at this step
    """
    batch, steps, _ = inputs.shape
    units = recurrent_kernel.shape[0]
    h = np.zeros((batch, units))
    c = np.zeros((batch, units))
    for t in range(steps):
        z = inputs[:, t] @ kernel + h @ recurrent_kernel + bias
        i = sigmoid(z[:, :units])
        f = sigmoid(z[:, units : 2 * units])
        g = np.tanh(z[:, 2 * units : 3 * units])
        o = sigmoid(z[:, 3 * units :])
        c = f * c + i * g
        h = o * np.tanh(c)
    return h
