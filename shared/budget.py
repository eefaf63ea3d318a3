"""A time budget as a training option: how many epochs fit in ``--minutes`` on this machine."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import keras
import tensorflow as tf

from shared.saving import read_json_or_none, write_json

log = logging.getLogger(__name__)
BUDGET_FILE = "budget.json"


def epochs_for_budget(minutes: float, seconds_per_epoch: float, most: int = 1000) -> int:
    """Whole epochs that fit in ``minutes`` at ``seconds_per_epoch``, from 1 to ``most``."""
    return max(1, min(most, int(minutes * 60 // seconds_per_epoch)))


def time_one_epoch(
    model: keras.Model, data: tf.data.Dataset, steps_per_epoch: int, timed_steps: int = 5
) -> float:
    """Seconds one epoch of ``steps_per_epoch`` steps takes, from a few timed steps.

    ``data`` is one epoch (or more) of training batches. The model's weights
    (batch-norm statistics included) are put back afterwards; compile it again
    before training, for a fresh optimizer and learning-rate schedule.
    """
    weights = model.get_weights()
    warmup, timed = 2, min(timed_steps, steps_per_epoch)
    model.fit(data.repeat(), steps_per_epoch=warmup, epochs=1, shuffle=False, verbose=0)
    started = time.perf_counter()
    model.fit(data.repeat(), steps_per_epoch=timed, epochs=1, shuffle=False, verbose=0)
    seconds = (time.perf_counter() - started) / timed * steps_per_epoch
    model.set_weights(weights)
    return seconds


def budgeted_epochs(
    run_dir: str | os.PathLike,
    minutes: float,
    seconds_per_epoch: Callable[[], float],
    most: int = 1000,
) -> tuple[int, float]:
    """Epochs that fit in ``minutes``, measured once per run.

    Calls ``seconds_per_epoch()`` (e.g. `time_one_epoch`) and records the
    decision in ``RUN_DIR/budget.json``, so that a resumed run keeps the epoch
    count (and learning-rate schedule) it started with instead of re-measuring.

    Returns:
        (epochs, the measured seconds per epoch).
    """
    path = Path(run_dir) / BUDGET_FILE
    saved = read_json_or_none(path)  # None when missing or damaged: measure again
    if (
        isinstance(saved, dict)
        and saved.get("minutes") == minutes
        and isinstance(saved.get("epochs"), int)
        and isinstance(saved.get("seconds_per_epoch"), (int, float))
    ):
        log.info("--minutes %g: keeping this run's %d epochs (%s)", minutes, saved["epochs"], path)
        return saved["epochs"], float(saved["seconds_per_epoch"])
    seconds = seconds_per_epoch()
    epochs = epochs_for_budget(minutes, seconds, most)
    write_json(path, {"minutes": minutes, "seconds_per_epoch": seconds, "epochs": epochs})
    return epochs, seconds
