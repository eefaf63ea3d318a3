"""Helpers of the ``make bench-*`` scripts: the machine's reference arithmetic rate."""

from __future__ import annotations

import platform
import time
from pathlib import Path

import keras
import tensorflow as tf

from shared.budget import StepClock
from shared.callbacks import build_optimizer


def matmul_gflops(size: int = 4096, repeats: int = 10, dtype: str = "float32") -> float:
    """GFLOP/s of a ``size`` x ``size`` matrix product in ``dtype``, after one warm-up.

    A large product is the fastest thing a CPU computes: the practical peak
    against which a model's achieved rate is read.
    """
    matrix = tf.cast(tf.random.normal((size, size), seed=0), dtype)
    product = tf.function(tf.linalg.matmul)
    product(matrix, matrix).numpy()
    started = time.perf_counter()
    for _ in range(repeats):
        result = product(matrix, matrix)
    result.numpy()  # waits for the last product
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def fit_rate(
    model: keras.Model, data: tf.data.Dataset, steps: int, units_per_step: float, repeats: int = 3
) -> float:
    """``units_per_step`` per second of ``model.fit``'s steps, the fastest of ``repeats``.

    Each ``fit`` runs ``steps`` steps of ``data`` (at least 2) and is timed from
    the end of its first step to the end of its last, as a training epoch runs.
    The wall time of a short ``fit`` also holds its set-up and tear-down, and the
    tear-down of an unfinished ``tf.data`` iterator sometimes waits for the next
    wake-up of tf.data's autotuning thread (10 ms after the start, then 20, 40,
    ... ms apart): 20 steps that took 13 s were timed at 20.49 s (10 ms x
    (2^11 - 1)), which printed exactly 250 images/s; 10 Shakespeare steps were
    timed at 2.048 s each, the same 20.48 s. The fastest, not the mean: on a
    shared machine the slow calls measure the machine, not the code.
    """
    if steps < 2:
        raise ValueError(f"fit_rate needs at least 2 steps, got {steps}")
    build_optimizer(model)  # else the first fit traces its training step twice
    fastest = float("inf")
    for _ in range(repeats):
        clock = StepClock()
        model.fit(
            data, steps_per_epoch=steps, epochs=1, shuffle=False, verbose=0, callbacks=[clock]
        )
        fastest = min(fastest, clock.times[-1] - clock.times[0])
    return (steps - 1) * units_per_step / fastest


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), to say where a timing comes from."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
