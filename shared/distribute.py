"""Pick a `tf.distribute` strategy from the ``--strategy`` flag.

Models must be built and compiled inside ``strategy.scope()``; the batch size
given to ``fit`` is the global batch, split evenly across the replicas.

Multi-worker training (``--strategy multiworker``, or ``auto`` when
``TF_CONFIG`` names two or more workers) runs the same script once per worker;
``TF_CONFIG`` tells each process the cluster's addresses and its own index.
Worker 0 (or the task of type ``chief``) is the chief: only it writes the run
directory (see `shared.runs.start_run`).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import keras
import tensorflow as tf

from shared.errors import UserError

log = logging.getLogger(__name__)

# One strategy object per kind and process: a second MirroredStrategy in the same
# process can reuse the collective-op instance keys of the first, and its
# all-reduces then fail with "Shape mismatch in the collective instance".
_STRATEGIES: dict[tuple[str, tuple[str, ...]], tf.distribute.Strategy] = {}


class ClusterError(UserError):
    """``TF_CONFIG`` is missing or malformed for multi-worker training."""


def cluster_spec() -> dict[str, Any] | None:
    """The parsed ``TF_CONFIG`` environment variable, or None when it is not set.

    Raises:
        ClusterError: ``TF_CONFIG`` is not JSON with ``cluster`` and ``task``.
    """
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return None
    try:
        spec = json.loads(raw)
        task_type, task_index = spec["task"]["type"], int(spec["task"]["index"])
        members = spec["cluster"][task_type]
    except (ValueError, KeyError, TypeError) as error:
        raise ClusterError(
            f"TF_CONFIG is not valid ({error!r}); expected JSON like "
            '{"cluster": {"worker": ["host1:port", "host2:port"]}, '
            '"task": {"type": "worker", "index": 0}}.'
        ) from None
    if not 0 <= task_index < len(members):
        raise ClusterError(
            f"TF_CONFIG task index {task_index} is outside its {len(members)}-member cluster."
        )
    return spec


def worker_count() -> int:
    """Workers (chief included) named by ``TF_CONFIG``; 1 without it."""
    spec = cluster_spec()
    if spec is None:
        return 1
    cluster = spec["cluster"]
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def worker_role() -> tuple[bool, int]:
    """``(is_chief, task index)`` of this process; ``(True, 0)`` without ``TF_CONFIG``.

    The chief is the ``chief`` task if the cluster has one, else worker 0.
    """
    spec = cluster_spec()
    if spec is None:
        return True, 0
    task_type, task_index = spec["task"]["type"], int(spec["task"]["index"])
    if "chief" in spec["cluster"]:
        return task_type == "chief", task_index
    return task_type == "worker" and task_index == 0, task_index


def select_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """Return the distribution strategy for ``name``.

    Args:
        name: ``auto``: `MirroredStrategy` over all GPUs when there are two or
            more, the single GPU when there is one, else the default (CPU)
            strategy. ``default``: TensorFlow's default strategy on one device.
            ``mirrored``: `MirroredStrategy` over all GPUs or, without GPUs,
            over all logical CPU devices (how multi-replica training is tested
            on a machine without GPUs). ``multiworker``:
            `MultiWorkerMirroredStrategy` over the processes ``TF_CONFIG``
            names (each with all its GPUs, or its CPU); ``auto`` picks it when
            ``TF_CONFIG`` names two or more workers.

    Returns:
        The strategy. Its ``num_replicas_in_sync`` is logged.

    Raises:
        ValueError: For an unknown name.
        ClusterError: ``multiworker`` without a valid ``TF_CONFIG``.
    """
    if name == "multiworker" or (name == "auto" and worker_count() > 1):
        return _multiworker()
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
        raise ValueError(
            f"unknown strategy {name!r}; choose auto, default, mirrored or multiworker"
        )
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


def _multiworker() -> tf.distribute.MultiWorkerMirroredStrategy:
    if cluster_spec() is None:
        raise ClusterError(
            "--strategy multiworker needs TF_CONFIG, which names every worker and this "
            "process's index. On one machine: python -m shared.launch --workers 2 -- "
            "python -m projects.<name>.train ...; on several, see README.md."
        )
    key = ("multiworker", ())
    if key not in _STRATEGIES:
        from shared import keras_patches

        keras_patches.install()
        _STRATEGIES[key] = tf.distribute.MultiWorkerMirroredStrategy()
    strategy = _STRATEGIES[key]
    is_chief, index = worker_role()
    log.info(
        "Strategy: MultiWorkerMirroredStrategy, %d replica(s) on %d worker(s); this is worker %d%s",
        strategy.num_replicas_in_sync,
        worker_count(),
        index,
        " (chief)" if is_chief else "",
    )
    return strategy


def wait_for_all_workers() -> None:
    """Return once every worker has called this (no-op without a multi-worker strategy).

    Workers finish training together but then work alone (the chief saves the
    model and plots). Without this barrier a worker that exits first makes the
    others log "The tasks have crashed".
    """
    strategy = _STRATEGIES.get(("multiworker", ()))
    if strategy is None:
        return

    @tf.function  # run eagerly, the strategy logs a warning about its overhead
    def one():
        return tf.distribute.get_replica_context().all_reduce("SUM", tf.constant(1.0))

    strategy.run(one)


def batch_normalization(**kwargs: Any) -> keras.layers.BatchNormalization:
    """``keras.layers.BatchNormalization(**kwargs)`` that stays one model across replicas.

    Build it inside ``strategy.scope()``. With one replica this is plain batch norm.
    With several, each replica would otherwise normalise by its own share of the batch
    and update its own copy of the moving statistics (Keras 3 creates them with no
    cross-replica aggregation): the saved model then held replica 0's statistics while
    the run's own evaluation used each replica's, so the reported accuracy was not the
    saved model's. ``synchronized=True`` all-reduces the batch's mean and variance, so
    every replica normalises by the global batch, as one device would, and their moving
    statistics stay equal.
    """
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return keras.layers.BatchNormalization(synchronized=replicas > 1, **kwargs)
