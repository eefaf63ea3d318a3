"""Helpers of the ``make bench-*`` scripts: the machine's reference arithmetic rate."""

from __future__ import annotations

import platform
import time
from pathlib import Path

import keras
import tensorflow as tf


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


class _StepTimer(keras.callbacks.Callback):
    """Seconds from the start of a ``fit``'s first step to the end of its last."""

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0:
            self.started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.seconds = time.perf_counter() - self.started


def fit_rate(
    model: keras.Model, data: tf.data.Dataset, steps: int, units_per_step: float, repeats: int = 3
) -> float:
    """``units_per_step`` x steps per second of ``model.fit``'s steps, fastest of ``repeats``.

    Each ``fit`` runs ``steps`` steps of ``data`` and is timed from the start of
    its first step to the end of its last, as a training epoch is. The wall time
    of a short ``fit`` also holds its set-up and tear-down, and the tear-down of
    an unfinished ``tf.data`` iterator sometimes waits for the next wake-up of
    tf.data's autotuning thread (10 ms after the start, then 20, 40, ... ms
    apart): 20 steps that took 13 s were timed at 20.49 s (= 10 ms x (2^11 - 1)),
    which printed exactly 250 images/s. The fastest, not the mean: on a shared
    machine the slow calls measure the machine, not the code.
    """
    timer = _StepTimer()
    fastest = float("inf")
    for _ in range(repeats):
        model.fit(
            data, steps_per_epoch=steps, epochs=1, shuffle=False, verbose=0, callbacks=[timer]
        )
        fastest = min(fastest, timer.seconds)
    return steps * units_per_step / fastest


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), to say where a timing comes from."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
