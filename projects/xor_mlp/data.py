"""Truth tables of the AND, OR and XOR gates, as arrays and as a tf.data pipeline."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

INPUTS = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)

_OUTPUTS = {
    "and": [0, 0, 0, 1],
    "or": [0, 1, 1, 1],
    "xor": [0, 1, 1, 0],
}


def truth_table(gate: str) -> tuple[np.ndarray, np.ndarray]:
    """The four input rows and the gate's outputs, shapes (4, 2) and (4, 1)."""
    if gate not in _OUTPUTS:
        raise ValueError(f"unknown gate {gate!r}; choose one of {sorted(_OUTPUTS)}")
    return INPUTS.copy(), np.array(_OUTPUTS[gate], dtype=np.float32).reshape(4, 1)


def training_dataset(gate: str, repeats: int, batch_size: int, seed: int) -> tf.data.Dataset:
    """The truth table repeated ``repeats`` times, shuffled once, batched.

    Four examples make a poor epoch: repeating them gives each epoch enough
    optimizer steps for the per-epoch logs and checkpoints to mean something.
    The shuffled order is the same every epoch: the repeats already make every
    batch a different mix, and a fixed order keeps a resumed run and a
    multi-replica run identical to a plain one (tf.data's reshuffle-per-epoch
    order changes when a strategy distributes the dataset).
    """
    inputs, targets = truth_table(gate)
    return (
        tf.data.Dataset.from_tensor_slices((inputs, targets))
        .repeat(repeats)
        .shuffle(4 * repeats, seed=seed, reshuffle_each_iteration=False)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
