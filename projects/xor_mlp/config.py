"""Settings of the XOR MLP project (every field is a command-line flag)."""

from __future__ import annotations

from dataclasses import dataclass

from shared.config import TrainConfig, option

GATES = ("and", "or", "xor")


@dataclass(frozen=True)
class XorConfig(TrainConfig):
    """Train an MLP (and, for contrast, a single-layer perceptron) on a logic gate."""

    QUICK = {"epochs": 3, "repeats": 16, "numpy_epochs": 200}

    epochs: int = option(40, "Passes over the repeated truth table.", minimum=1)
    batch_size: int = option(16, "Global batch size.", minimum=1)
    gate: str = option("xor", "Logic gate to learn.", choices=GATES)
    hidden_units: int = option(8, "Neurons in the MLP's hidden layer.", minimum=1)
    learning_rate: float = option(0.02, "Adam learning rate.", minimum=0.0, exclusive_minimum=True)
    repeats: int = option(64, "Copies of the 4-row truth table in one epoch (shuffled).", minimum=1)
    numpy_epochs: int = option(
        2000, "Epochs of the from-scratch NumPy MLP (minibatch SGD).", minimum=1
    )
    numpy_learning_rate: float = option(
        0.5, "SGD step size of the NumPy MLP.", minimum=0.0, exclusive_minimum=True
    )
