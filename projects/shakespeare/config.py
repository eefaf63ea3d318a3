"""Settings of the Shakespeare character-level project (every field is a command-line flag)."""

from __future__ import annotations

from dataclasses import dataclass

from shared.config import ConfigError, TrainConfig, option

CELLS = ("gru", "lstm", "simplernn", "transformer")
# nanoGPT scores tiny-shakespeare on windows of this many characters (its block size).
NANOGPT_BLOCK_SIZE = 256
# The default run: as many epochs as fit in this many minutes (the budget; the
# LSTM in bfloat16 reached 1.451 nats/char within it on 2 CPU cores, README.md).
DEFAULT_MINUTES = 20.0


@dataclass(frozen=True)
class ShakespeareConfig(TrainConfig):
    """Train a character-level language model (RNN or attention) and sample text from it."""

    QUICK = {
        "epochs": 1,
        "units": 32,
        "embedding_dim": 16,
        "seq_length": 50,
        "steps_per_epoch": 20,
        "sample_length": 40,
    }
    # --cell transformer: defaults of a small GPT (nanoGPT's shape, scaled to what 2 CPU
    # cores train in 20 minutes: in 5-minute runs, width 128 with 4 blocks beat width 256,
    # 2.19 against 2.53 nats/char, at twice the characters per second; README.md).
    PRESETS = {
        "cell": {
            # 20-minute runs (seed 0): peak 2e-3 ended at 1.466-1.475 nats/char, still
            # improving; 3e-3 reached 1.453 after 17 epochs (README.md).
            "lstm": {"learning_rate": 3e-3},
            "transformer": {
                "embedding_dim": 128,
                "units": 512,
                "layers": 4,
                "dropout": 0.1,
                "seq_length": 128,
                "learning_rate": 2e-3,
            },
        }
    }

    epochs: int = option(
        0,
        "Epochs; one epoch sees about every training character once. 0: as many as fit in "
        "--minutes, which defaults to 20 then.",
        minimum=0,
    )
    batch_size: int = option(64, "Global batch size (sequences per step).", minimum=1)
    text: str = option("", "Train on this UTF-8 text file (default: bundled tiny-shakespeare).")
    seq_length: int = option(100, "Characters per training window (truncated BPTT).", minimum=2)
    embedding_dim: int = option(
        128,
        "Size of each character's embedding vector (transformer: the width of every block).",
        minimum=1,
    )
    cell: str = option(
        "lstm", "Recurrent cell, or transformer (causal self-attention blocks).", choices=CELLS
    )
    units: int = option(
        512, "Units per recurrent layer (transformer: hidden units of each MLP).", minimum=1
    )
    layers: int = option(1, "Stacked recurrent layers (transformer: blocks).", minimum=1)
    heads: int = option(
        4, "transformer: attention heads per block (must divide --embedding-dim).", minimum=1
    )
    dropout: float = option(
        0.5,
        "Dropout after each recurrent layer (transformer: in every block).",
        minimum=0.0,
        maximum=0.9,
    )
    learning_rate: float = option(
        2e-3,
        "Adam learning rate (the peak, with --lr-schedule cosine).",
        minimum=0.0,
        exclusive_minimum=True,
    )
    lr_schedule: str = option(
        "cosine",
        "Learning rate over training: cosine decay to 5%, or constant.",
        choices=("cosine", "constant"),
    )
    steps_per_epoch: int = option(
        0, "Training steps per epoch (0: training characters / (batch * seq-length)).", minimum=0
    )
    sample_prompt: str = option("ROMEO:", "Prompt of the sample printed after each epoch.")
    sample_length: int = option(200, "Characters sampled after each epoch.", minimum=0)
    sample_temperature: float = option(
        0.8, "Temperature of the per-epoch sample (0: greedy).", minimum=0.0
    )

    eval_length: int = option(
        0,
        "Characters per validation window, each read from an empty state and scored at every "
        "position; 0: 256 (nanoGPT's block size, so the figures compare) for the RNNs, "
        "--seq-length for the transformer (it reads no more).",
        minimum=0,
    )
    minutes: float = option(
        0.0,
        "Time budget: > 0 sets --epochs so that training (validation included) takes about "
        "this many minutes on this machine, from a short timing before training. 0: 20 "
        "minutes when --epochs is 0, else off.",
        minimum=0.0,
    )
    mixed_precision: str = option(
        "auto",
        "auto: float16 on GPUs with tensor cores; on CPUs that compute bfloat16 natively "
        "(AVX512-BF16 or AMX), bfloat16 for the transformer, the GRU and the LSTM (measured "
        "faster, and the RNNs' 20-minute results better) and float32 for the SimpleRNN (not "
        "measured); else float32. on: 16 bits anyway; off: float32.",
        choices=("auto", "on", "off"),
    )

    @property
    def budget_minutes(self) -> float:
        """The time budget in force: --minutes, else 20 when --epochs is 0, else 0 (none)."""
        if self.minutes:
            return self.minutes
        return 0.0 if self.epochs else DEFAULT_MINUTES

    @property
    def validation_window(self) -> int:
        """Characters per validation window (``--eval-length``, resolved)."""
        if self.eval_length:
            return self.eval_length
        return self.seq_length if self.cell == "transformer" else NANOGPT_BLOCK_SIZE

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cell == "transformer" and self.eval_length > self.seq_length:
            raise ConfigError(
                f"--eval-length {self.eval_length} is longer than --seq-length "
                f"{self.seq_length}, the most the transformer reads at once; lower it or "
                "raise --seq-length."
            )
        if self.cell == "transformer" and self.embedding_dim % self.heads:
            raise ConfigError(
                f"--embedding-dim {self.embedding_dim} must be divisible by --heads "
                f"{self.heads} (each head gets an equal slice of the width)."
            )
