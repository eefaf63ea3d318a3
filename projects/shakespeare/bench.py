"""Benchmark: training throughput and generation speed, measured in one run on this machine.

    python -m projects.shakespeare.bench        # or: make bench-shakespeare

Prints characters per second for

* training the LSTM (the default), the GRU, the attention model (``--cell transformer``)
  and the TensorFlow text-generation tutorial's model (Embedding 256, GRU 1024),
  each in float32 and, on CPUs that compute bfloat16 natively, in mixed
  bfloat16, on the real data pipeline after a warm-up that excludes tracing
  (the fastest of three timings of 10 steps),
  with the arithmetic each achieves in GFLOP/s against a large float32 matrix
  product measured in the same run (the machine's practical peak);
* generating 300 characters with the stateful generator (carried RNN states,
  or the attention model's cached keys and values), against naively re-running
  the whole text (for the attention model: its last window) for every character.

Figures only; nothing is asserted. Model weights are untrained: speed does not
depend on them.
"""

from __future__ import annotations

import argparse

from shared.cli import parse_args_before_tensorflow
from shared.config import program_name


def build_parser() -> argparse.ArgumentParser:
    """The benchmark takes no options; the parser answers ``--help`` and refuses others."""
    return argparse.ArgumentParser(prog=program_name(), description=__doc__.split("\n")[0])


if __name__ == "__main__":
    # Answer --help and unknown flags at once, before TensorFlow loads (and before a
    # benchmark of minutes starts).
    parse_args_before_tensorflow(build_parser())

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
from projects.shakespeare.model import (
    compile_char_model,
    context_window,
    core_of,
    model_for,
)
from shared.benchmarks import fit_rate, matmul_gflops
from shared.cli import setup_logging
from shared.precision import cpu_supports_bfloat16

log = logging.getLogger("shakespeare")

WARMUP_STEPS = 5
TIMED_STEPS = 10
GENERATED = 300
RECURRENT_GATES = {"simplernn": 1, "gru": 3, "lstm": 4}


def forward_flops_per_character(config: ShakespeareConfig, vocabulary_size: int) -> int:
    """Multiply-adds x 2 of one character's forward pass (matrix products only).

    A training step costs about 3x this (the forward pass and two products per
    layer backward).
    """
    logits = 2 * config.units * (vocabulary_size + 1)
    if config.cell == "transformer":
        width, window = config.embedding_dim, config.seq_length
        logits = 2 * width * (vocabulary_size + 1)
        per_block = (
            2 * width * 3 * width  # queries, keys, values
            + 2 * width * width  # output projection
            + 2 * 2 * width * config.units  # MLP in and out
            + 2 * 2 * window * width  # scores q.k and the weighted sum, whole window
        )
        return config.layers * per_block + logits
    gates = RECURRENT_GATES[config.cell]
    total, inputs = 0, config.embedding_dim
    for _ in range(config.layers):
        total += 2 * gates * (inputs + config.units) * config.units
        inputs = config.units
    return total + logits


def training_throughput(model: keras.Model, ids, seq_length: int, batch: int) -> float:
    """Characters per second of ``model.fit``: the fastest of 3 runs of TIMED_STEPS steps."""
    data = training_dataset(ids, seq_length, batch, seed=0)
    model.fit(data, steps_per_epoch=WARMUP_STEPS, epochs=1, shuffle=False, verbose=0)
    return fit_rate(model, data, TIMED_STEPS, batch * seq_length)


def naive_generation(model: keras.Model, prompt: str, length: int) -> str:
    """Re-run the whole text (at most the model's window) for each new character (greedy)."""
    vocabulary = model.get_layer("char_to_id").get_vocabulary()
    window = context_window(model)
    text = prompt
    forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    for _ in range(length):
        context = text[-window:] if window else text
        logits = forward(tf.constant([list(context)]))[0, -1].numpy()
        logits[0] = -np.inf
        text += vocabulary[int(np.argmax(logits))]
    return text[len(prompt) :]


def generation_speeds(model: keras.Model) -> tuple[float, float]:
    """Characters/s of the stateful generator and of re-running the text, GENERATED each."""
    generator = Generator(model)
    generator.generate("ROMEO:", 10, seed=0)  # trace once
    started = time.perf_counter()
    generator.generate("ROMEO:", GENERATED, seed=0)
    stateful = GENERATED / (time.perf_counter() - started)
    naive_generation(model, "ROMEO:", 10)
    started = time.perf_counter()
    naive_generation(model, "ROMEO:", GENERATED)
    return stateful, GENERATED / (time.perf_counter() - started)


def main() -> None:
    setup_logging()
    keras.utils.set_random_seed(0)
    train_text, _ = split_text(load_text(None, 100))
    vocabulary = build_vocabulary(train_text)
    ids = encode(train_text, vocabulary)
    cases = {
        "LSTM (default)": ShakespeareConfig(),
        "GRU (--cell gru)": ShakespeareConfig(cell="gru"),
        "transformer (--cell transformer)": ShakespeareConfig.create(cell="transformer"),
        "TF tutorial (GRU 1024, embedding 256)": ShakespeareConfig(
            cell="gru", units=1024, embedding_dim=256, dropout=0.0
        ),
    }
    policies = ["float32"] + (["mixed_bfloat16"] if cpu_supports_bfloat16() else [])
    rows, models = [], {}
    for name, config in cases.items():
        for policy in policies:
            if name.startswith("TF tutorial") and policy != "float32":
                continue
            keras.mixed_precision.set_global_policy(policy)
            model = model_for(config, vocabulary)
            core = compile_char_model(core_of(model), 1e-3)
            speed = training_throughput(core, ids, config.seq_length, config.batch_size)
            flops = forward_flops_per_character(config, len(vocabulary))
            rows.append((name, policy, core.count_params(), flops, speed))
            log.info("train %s, %s: %.0f characters/s", name, policy, speed)
            if policy == "float32" and not name.startswith("TF tutorial"):
                models[name] = model
    keras.mixed_precision.set_global_policy("float32")
    generation = {name: generation_speeds(model) for name, model in models.items()}
    peak = matmul_gflops()

    print("\nTraining (fit on tiny-shakespeare, batch and window of each model's defaults):")
    print(
        f"{'model':40s} {'precision':>15s} {'params':>10s} {'MFLOP/char':>11s} "
        f"{'chars/s':>9s} {'GFLOP/s':>8s} {'of peak':>8s}"
    )
    for name, policy, parameters, flops, speed in rows:
        achieved = 3 * flops * speed / 1e9
        print(
            f"{name:40s} {policy:>15s} {parameters:>10,d} {flops / 1e6:>11.2f} "
            f"{speed:>9.0f} {achieved:>8.1f} {achieved / peak:>8.0%}"
        )
    print(
        f"{'4096x4096 float32 matmul (peak)':40s} {'':>15s} {'':>10s} {'':>11s} {'':>9s} "
        f"{peak:>8.1f}"
    )
    print(f"\nGeneration of {GENERATED} characters (float32, greedy after 'ROMEO:'):")
    print(f"{'model':40s} {'stateful/cached':>16s} {'re-run text':>12s} {'speed-up':>9s}")
    for name, (stateful, naive) in generation.items():
        print(f"{name:40s} {stateful:>16.0f} {naive:>12.0f} {stateful / naive:>8.1f}x")


if __name__ == "__main__":
    main()
