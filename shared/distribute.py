"""Pick a `tf.distribute` strategy from the ``--strategy`` flag.

Models must be built and compiled inside ``strategy.scope()``; the batch size
given to ``fit`` is the global batch, split evenly across the replicas.
"""

from __future__ import annotations

import logging

import tensorflow as tf

log = logging.getLogger(__name__)

# One strategy object per kind and process: a second MirroredStrategy in the same
# process can reuse the collective-op instance keys of the first, and its
# all-reduces then fail with "Shape mismatch in the collective instance".
_STRATEGIES: dict[tuple[str, tuple[str, ...]], tf.distribute.Strategy] = {}


def select_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """Return the distribution strategy for ``name``.

    Args:
        name: ``auto``: `MirroredStrategy` over all GPUs when there are two or
            more, the single GPU when there is one, else the default (CPU)
            strategy. ``default``: TensorFlow's default strategy on one device.
            ``mirrored``: `MirroredStrategy` over all GPUs or, without GPUs,
            over all logical CPU devices (how multi-replica training is tested
            on a machine without GPUs).

    Returns:
        The strategy. Its ``num_replicas_in_sync`` is logged.

    Raises:
        ValueError: For an unknown name.
    """
    gpus = [gpu.name for gpu in tf.config.list_logical_devices("GPU")]
    if name == "auto":
        if len(gpus) >= 2:
            strategy = _mirrored(gpus)
        elif len(gpus) == 1:
            strategy = tf.distribute.OneDeviceStrategy(gpus[0])
        else:
            strategy = tf.distribute.get_strategy()
    elif name == "default":
        strategy = tf.distribute.get_strategy()
    elif name == "mirrored":
        strategy = _mirrored(gpus or [cpu.name for cpu in tf.config.list_logical_devices("CPU")])
    else:
        raise ValueError(f"unknown strategy {name!r}; choose auto, default or mirrored")
    log.info(
        "Strategy: %s with %d replica(s) (%d GPU(s) visible)",
        type(strategy).__name__,
        strategy.num_replicas_in_sync,
        len(gpus),
    )
    return strategy


def _mirrored(devices: list[str]) -> tf.distribute.MirroredStrategy:
    key = ("mirrored", tuple(devices))
    if key not in _STRATEGIES:
        _STRATEGIES[key] = tf.distribute.MirroredStrategy(devices)
    return _STRATEGIES[key]
