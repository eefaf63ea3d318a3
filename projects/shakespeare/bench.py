"""Benchmark: training throughput and generation speed, measured in one run on this machine.

    python -m projects.shakespeare.bench        # or: make bench-shakespeare

Prints characters per second for

* training the default model, and the TensorFlow text-generation tutorial's
  model (Embedding 256, GRU 1024, sequence 100, batch 64), on the real data
  pipeline, after a warm-up that excludes tracing;
* generating 300 characters with the stateful generator, against naively
  re-running the whole growing text through the model for every character.

Figures only; nothing is asserted. Model weights are untrained: speed does not
depend on them.
"""

from __future__ import annotations

from shared.cli import load_tensorflow_quietly

if __name__ == "__main__":
    load_tensorflow_quietly()  # without TensorFlow's start-up banner

import logging
import time

import keras
import numpy as np
import tensorflow as tf

from projects.shakespeare.config import ShakespeareConfig
from projects.shakespeare.data import (
    build_vocabulary,
    encode,
    load_text,
    split_text,
    training_dataset,
)
from projects.shakespeare.generate import Generator
from projects.shakespeare.model import build_char_model, compile_char_model, core_of
from shared.cli import setup_logging

log = logging.getLogger("shakespeare")

WARMUP_STEPS = 5
TIMED_STEPS = 20
GENERATED = 300


def training_throughput(model: keras.Model, ids, seq_length: int, batch: int) -> float:
    """Characters per second of ``model.fit`` over TIMED_STEPS steps, after a warm-up."""
    data = training_dataset(ids, seq_length, batch, seed=0)
    model.fit(data, steps_per_epoch=WARMUP_STEPS, epochs=1, shuffle=False, verbose=0)
    started = time.perf_counter()
    model.fit(data, steps_per_epoch=TIMED_STEPS, epochs=1, shuffle=False, verbose=0)
    return TIMED_STEPS * batch * seq_length / (time.perf_counter() - started)


def naive_generation(model: keras.Model, prompt: str, length: int) -> str:
    """Re-run the whole text through the model for each new character (greedy)."""
    vocabulary = model.get_layer("char_to_id").get_vocabulary()
    text = prompt
    forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    for _ in range(length):
        logits = forward(tf.constant([list(text)]))[0, -1].numpy()
        logits[0] = -np.inf
        text += vocabulary[int(np.argmax(logits))]
    return text[len(prompt) :]


def main() -> None:
    setup_logging()
    keras.utils.set_random_seed(0)
    train_text, _ = split_text(load_text(None, 100))
    vocabulary = build_vocabulary(train_text)
    ids = encode(train_text, vocabulary)
    default = ShakespeareConfig()
    models = {
        f"default ({default.cell.upper()} {default.units}, embedding {default.embedding_dim}, "
        f"seq {default.seq_length}, batch {default.batch_size})": (
            build_char_model(
                vocabulary,
                default.embedding_dim,
                default.cell,
                default.units,
                default.layers,
                default.dropout,
            ),
            default.seq_length,
            default.batch_size,
        ),
        "TF tutorial (GRU 1024, embedding 256, seq 100, batch 64)": (
            build_char_model(vocabulary, 256, "gru", 1024, 1, 0.0),
            100,
            64,
        ),
    }
    results = []
    for name, (model, seq_length, batch) in models.items():
        core = compile_char_model(core_of(model), 1e-3)
        speed = training_throughput(core, ids, seq_length, batch)
        results.append((f"train: {name}", speed))
        log.info("%s: %.0f characters/s", name, speed)

    model = models[next(iter(models))][0]
    generator = Generator(model)
    generator.generate("ROMEO:", 10, seed=0)  # trace once
    started = time.perf_counter()
    generator.generate("ROMEO:", GENERATED, seed=0)
    stateful = GENERATED / (time.perf_counter() - started)
    naive_generation(model, "ROMEO:", 10)
    started = time.perf_counter()
    naive_generation(model, "ROMEO:", GENERATED)
    naive = GENERATED / (time.perf_counter() - started)
    results.append((f"generate {GENERATED} chars: stateful generator (default model)", stateful))
    results.append((f"generate {GENERATED} chars: re-run whole text each step", naive))

    print(f"\n{'measurement':<78}{'chars/s':>10}")
    for name, speed in results:
        print(f"{name:<78}{speed:>10.0f}")
    print(f"\nstateful generation is {stateful / naive:.1f}x faster than re-running the text")


if __name__ == "__main__":
    main()
