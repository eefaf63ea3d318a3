"""Helpers of the ``make bench-*`` scripts: the machine's reference arithmetic rate."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path

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


def best_rate(run: Callable[[], object], units: float, repeats: int = 3) -> float:
    """``units`` per second of the fastest of ``repeats`` calls of ``run``.

    The fastest, not the mean: on a shared or warming-up machine the slow calls
    measure the machine, not the code (the same rule as Python's ``timeit``).
    Some short ``fit`` calls here took exactly 2.048 s per step and the next
    identical call 1.17 s: one timing is not enough.
    """
    fastest = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        fastest = min(fastest, time.perf_counter() - started)
    return units / fastest


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), to say where a timing comes from."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
