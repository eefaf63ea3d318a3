"""The SimpleRNN and LSTM cells written out in NumPy from the lecture's equations,
forward and backward (backpropagation through time).

They take Keras's own weight arrays, so ``tests/test_stock_lstm.py`` can check
that they reproduce ``keras.layers.SimpleRNN`` and ``keras.layers.LSTM``
exactly, which shows what those layers compute, and that the hand-derived
gradients equal TensorFlow's automatic differentiation.

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
    return simple_rnn_sequence(inputs, kernel, recurrent_kernel, bias)[:, -1]


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
    return lstm_sequence(inputs, kernel, recurrent_kernel, bias)["h"][:, -1]


# ---------------------------------------------------------------------------
# Backpropagation through time
# ---------------------------------------------------------------------------
#
# Both backward passes take dL/dh_t from the loss at every step, ``output_gradients``
# of shape (batch, time, units) (zeros where the loss does not look), walk the
# sequence backwards adding what flows back from step t + 1, and return the weight
# gradients and ``hidden_gradients``: the total dL/dh_t at every step, the quantity
# whose size shows whether a distant input can still move the loss.


def _zero_gradients(inputs, kernel, recurrent_kernel, bias) -> dict[str, np.ndarray]:
    return {
        "kernel": np.zeros_like(kernel),
        "recurrent_kernel": np.zeros_like(recurrent_kernel),
        "bias": np.zeros_like(bias),
        "inputs": np.zeros_like(inputs),
    }


def simple_rnn_sequence(inputs, kernel, recurrent_kernel, bias) -> np.ndarray:
    """Every hidden state h_1..h_T of the SimpleRNN: (batch, time, units)."""
    batch, steps, _ = inputs.shape
    h = np.zeros((batch, kernel.shape[1]))
    states = []
    for t in range(steps):
        h = np.tanh(inputs[:, t] @ kernel + h @ recurrent_kernel + bias)
        states.append(h)
    return np.stack(states, axis=1)


def simple_rnn_backward(inputs, kernel, recurrent_kernel, bias, output_gradients) -> dict:
    """Gradients of a loss through the SimpleRNN, given dL/dh_t from the loss at every t.

    h_t = tanh(a_t), a_t = W_x x_t + W_h h_{t-1} + b, so going back one step:
    da_t = dh_t * (1 - h_t^2);  dW_x += x_t^T da_t;  dW_h += h_{t-1}^T da_t;
    db += sum da_t;  and dh_{t-1} gets da_t W_h^T. Each step back multiplies the
    gradient by W_h^T and by tanh's slope (at most 1): the product of T such
    factors is what vanishes (or explodes) over long distances.

    Returns:
        ``kernel``, ``recurrent_kernel``, ``bias``, ``inputs`` gradients and
        ``hidden_gradients`` (batch, time, units): the total dL/dh_t.
    """
    states = simple_rnn_sequence(inputs, kernel, recurrent_kernel, bias)
    batch, steps, units = states.shape
    grads = _zero_gradients(inputs, kernel, recurrent_kernel, bias)
    hidden_gradients = np.zeros_like(states)
    carried = np.zeros((batch, units))  # dL/dh_t arriving from step t + 1
    for t in reversed(range(steps)):
        dh = output_gradients[:, t] + carried
        hidden_gradients[:, t] = dh
        da = dh * (1.0 - states[:, t] ** 2)
        previous = states[:, t - 1] if t else np.zeros((batch, units))
        grads["kernel"] += inputs[:, t].T @ da
        grads["recurrent_kernel"] += previous.T @ da
        grads["bias"] += da.sum(axis=0)
        grads["inputs"][:, t] = da @ kernel.T
        carried = da @ recurrent_kernel.T
    grads["hidden_gradients"] = hidden_gradients
    return grads


def lstm_sequence(inputs, kernel, recurrent_kernel, bias) -> dict:
    """Every gate, cell state and hidden state of the LSTM over the sequence.

    Returns arrays of shape (batch, time, units) under ``i``, ``f``, ``g``,
    ``o``, ``c`` and ``h`` (what the backward pass needs).
    """
    batch, steps, _ = inputs.shape
    units = recurrent_kernel.shape[0]
    h = np.zeros((batch, units))
    c = np.zeros((batch, units))
    record = {name: [] for name in "ifgoch"}
    for t in range(steps):
        z = inputs[:, t] @ kernel + h @ recurrent_kernel + bias
        i = sigmoid(z[:, :units])
        f = sigmoid(z[:, units : 2 * units])
        g = np.tanh(z[:, 2 * units : 3 * units])
        o = sigmoid(z[:, 3 * units :])
        c = f * c + i * g
        h = o * np.tanh(c)
        for name, value in zip("ifgoch", (i, f, g, o, c, h), strict=True):
            record[name].append(value)
    return {name: np.stack(values, axis=1) for name, values in record.items()}


def lstm_backward(inputs, kernel, recurrent_kernel, bias, output_gradients) -> dict:
    """Gradients of a loss through the LSTM, given dL/dh_t from the loss at every t.

    One step back, with dh the total dL/dh_t and dc_next what the cell state of
    step t + 1 sends back (the lecture's derivation):

        do = dh * tanh(c_t)
        dc = dc_next + dh * o * (1 - tanh(c_t)^2)
        di = dc * g,   dg = dc * i,   df = dc * c_{t-1},   dc_{t-1} = dc * f
        dH = [di * i(1-i), df * f(1-f), dg * (1-g^2), do * o(1-o)]   (the gates
             joined, as Keras stores them: input, forget, candidate, output)
        dW += x_t^T dH,   dU += h_{t-1}^T dH,   db += sum dH
        dh_{t-1} = dH U^T,   dx_t = dH W^T

    The cell state's path back is dc_{t-1} = dc * f: a product of forget gates,
    not of weight matrices and tanh slopes, so where the forget gates stay near
    1 the gradient survives many steps. That is why the lecture moves from the
    simple RNN to the LSTM.

    Returns:
        ``kernel``, ``recurrent_kernel``, ``bias``, ``inputs`` gradients,
        ``hidden_gradients`` (batch, time, units): the total dL/dh_t, and
        ``cell_gradients``: the total dL/dc_t.
    """
    seen = lstm_sequence(inputs, kernel, recurrent_kernel, bias)
    i, f, g, o, c, h = (seen[name] for name in "ifgoch")
    batch, steps, units = h.shape
    grads = _zero_gradients(inputs, kernel, recurrent_kernel, bias)
    hidden_gradients = np.zeros_like(h)
    cell_gradients = np.zeros_like(c)
    carried_h = np.zeros((batch, units))
    carried_c = np.zeros((batch, units))
    zeros = np.zeros((batch, units))
    for t in reversed(range(steps)):
        dh = output_gradients[:, t] + carried_h
        hidden_gradients[:, t] = dh
        tanh_c = np.tanh(c[:, t])
        previous_c = c[:, t - 1] if t else zeros
        previous_h = h[:, t - 1] if t else zeros
        do = dh * tanh_c
        dc = carried_c + dh * o[:, t] * (1.0 - tanh_c**2)
        cell_gradients[:, t] = dc
        di, dg, df = dc * g[:, t], dc * i[:, t], dc * previous_c
        gates = np.concatenate(
            [
                di * i[:, t] * (1.0 - i[:, t]),
                df * f[:, t] * (1.0 - f[:, t]),
                dg * (1.0 - g[:, t] ** 2),
                do * o[:, t] * (1.0 - o[:, t]),
            ],
            axis=1,
        )
        grads["kernel"] += inputs[:, t].T @ gates
        grads["recurrent_kernel"] += previous_h.T @ gates
        grads["bias"] += gates.sum(axis=0)
        grads["inputs"][:, t] = gates @ kernel.T
        carried_h = gates @ recurrent_kernel.T
        carried_c = dc * f[:, t]
    grads["hidden_gradients"] = hidden_gradients
    grads["cell_gradients"] = cell_gradients
    return grads
