"""A time budget as a training option: how many epochs fit in ``--minutes`` on this machine."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import scipy.stats
import tensorflow as tf

from shared.callbacks import StopOnInterrupt, build_optimizer
from shared.saving import read_json_or_none, write_json

log = logging.getLogger(__name__)
BUDGET_FILE = "budget.json"
# Share of the budget the plan leaves unused. The timing before training sees a few
# steps and a validation pass, not what else happens between epochs (checkpoints,
# samples, logs) or after training (scoring the final model), and its estimate drifts
# with the machine: five 20-minute Shakespeare LSTM runs timed 51-63 s per epoch and
# their epochs took 54-57 s on average, between 8% more and 13% less than planned.
PLANNING_MARGIN = 0.10


def epochs_for_budget(
    minutes: float, seconds_per_epoch: float, most: int = 1000, spent_seconds: float = 0.0
) -> int:
    """Whole epochs that fit in ``minutes`` (less `PLANNING_MARGIN` and the
    ``spent_seconds`` already used, e.g. by timing), from 1 to ``most``."""
    usable_seconds = minutes * 60 * (1 - PLANNING_MARGIN) - spent_seconds
    return max(1, min(most, int(usable_seconds // seconds_per_epoch)))


class StepClock(keras.callbacks.Callback):
    """The time at the end of every training step (waiting for the step to finish)."""

    def __init__(self):
        super().__init__()
        self.times: list[float] = []

    def on_train_batch_end(self, batch, logs=None):
        if logs:  # reading a result waits for the step: dispatch alone is not the cost
            float(next(iter(logs.values())))
        self.times.append(time.perf_counter())


# Validation passes timed; the faster one counts (see time_one_epoch).
VALIDATION_PASSES_TIMED = 2
# A second step at least this long makes the first the whole warm-up.
SLOW_STEP_SECONDS = 5.0
# An epoch estimated shorter than this is also timed whole, WHOLE_EPOCHS_TIMED times
# (see `time_one_epoch`).
SHORT_EPOCH_SECONDS = 5.0
WHOLE_EPOCHS_TIMED = 2


class EpochClock(keras.callbacks.Callback):
    """The time at the start of ``fit`` and at the end of every epoch."""

    def __init__(self):
        super().__init__()
        self.times: list[float] = []

    def on_train_begin(self, logs=None):
        self.times = [time.perf_counter()]

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter())


class StopWhenTimed(keras.callbacks.Callback):
    """Ends a timing ``fit`` once ``least`` steps after the warm-up took ``seconds`` in all.

    The warm-up is the first step (it traces the training function) and, unless the
    second took ``slow_step`` seconds or more, the second and third, in which the input
    pipeline fills its buffers. Slow steps give the pipeline time to fill during the
    first: on a 2-core CPU without AVX-512 the default CIFAR net's first step took 33 s
    and the next ten 27.5-29.8 s each, so two more warm-up steps only added a minute
    to the timing. (The first step's own length says little: tracing a one-layer model
    took seconds when the tests shared the cores.)
    """

    def __init__(
        self, clock: StepClock, least: int, seconds: float, slow_step: float = SLOW_STEP_SECONDS
    ):
        super().__init__()
        self.clock, self.least, self.seconds, self.slow_step = clock, least, seconds, slow_step

    @property
    def warmup(self) -> int:
        """Warm-up steps: 1 or 3, known once the second step has ended."""
        times = self.clock.times
        return 1 if len(times) >= 2 and times[1] - times[0] >= self.slow_step else 3

    def timed_steps(self) -> np.ndarray:
        """Durations of the steps after the warm-up, so far."""
        return np.diff(self.clock.times[self.warmup - 1 :])

    def on_train_batch_end(self, batch, logs=None):
        timed = self.timed_steps()
        if len(timed) >= self.least and timed.sum() >= self.seconds:
            self.model.stop_training = True


def time_one_epoch(
    model: keras.Model,
    data: tf.data.Dataset,
    steps_per_epoch: int,
    timed_steps: int = 10,
    timed_seconds: float = 60.0,
    slow_step: float = SLOW_STEP_SECONDS,
    validation_data: tf.data.Dataset | None = None,
) -> float:
    """Seconds one epoch of ``steps_per_epoch`` steps takes, from a few timed steps,
    plus one pass over ``validation_data`` when given.

    One short ``fit`` runs warm-up steps (tracing, the input pipeline filling its
    buffers: 3, or 1 when the second took ``slow_step`` seconds or more; see
    `StopWhenTimed`) and then ``timed_steps`` steps, and only the latter are timed:
    the epoch is ``steps_per_epoch`` times their mean duration without the fastest
    and slowest 10%. Timing the whole call instead counted the start-up in every step
    and over-estimated epochs by 25-45%; the plain mean let a moment of other work on
    the machine count in every step of the plan (a Shakespeare LSTM run planned 63 s
    per epoch and took 54 s); the median, lower than the mean of steps whose times
    are skewed, under-estimated by 5%.

    Slow steps need fewer of them: the timing stops early once at least 3 timed
    steps took ``timed_seconds`` in all. On a 2-core CPU without AVX-512, 10 timed
    steps of the default CIFAR net (28 s each) made the timing before a
    ``--minutes`` run last 6 minutes; with the AVX-512 machine's 5.6 s steps, all 10
    fit in the 60 s.

    Steps are not all of an epoch: each pass over the data starts an iterator and, for
    shuffled data, fills the shuffle buffer, which the timed steps (inside one pass) do
    not see. In epochs of a few seconds that counts: in a 1.5-minute CIFAR tour on a
    2-core CPU without AVX-512, the TF tutorial CNN's steps planned epochs of 1.8 s,
    and they took 2.1-5.3 s (2.8 on average), so the run trained 2.0 minutes. So an
    epoch estimated under `SHORT_EPOCH_SECONDS` is also timed whole, over
    `WHOLE_EPOCHS_TIMED` epochs after one more that absorbs the start of ``fit`` (a
    few seconds in all), and the longer estimate kept.

    An epoch that ends with a validation pass takes that much longer: a CIFAR
    ``--minutes 20`` run planned 6 epochs of 176 s from its training steps alone, and
    its epochs, each scoring 5,000 validation images, took 180-194 s. So
    ``validation_data``, the batches ``fit`` will validate on, is evaluated twice
    (after a one-batch pass that traces the test step) and the faster pass is added:
    a single pass, like a single step, can meet a moment of other work. On the
    AVX-512 EPYC one such pass took 10.2 s where every pass of the run that followed
    took 3.8-4.0 s, adding 6 s to every planned epoch; on the AVX2 EPYC one took 20.5 s
    against 10.1 in other runs. Pass it
    without ``.cache()``: TensorFlow warns when a pass stops part-way through a cache
    (CIFAR's evaluation dataset dropped its cache for this reason).

    ``data`` is one epoch (or more) of training batches. The model's weights
    (batch-norm statistics included) are put back afterwards; compile it again
    before training, for a fresh optimizer and learning-rate schedule.
    """
    weights = model.get_weights()
    build_optimizer(model)  # else the training step is traced twice (see build_optimizer)
    timed = max(1, min(timed_steps, steps_per_epoch))
    clock = StepClock()
    started = time.perf_counter()
    stop = StopWhenTimed(clock, least=3, seconds=timed_seconds, slow_step=slow_step)
    model.fit(
        data.repeat(),
        steps_per_epoch=3 + timed,  # the most warm-up steps, and the timed ones
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[clock, stop, StopOnInterrupt()],
    )
    step_seconds = stop.timed_steps()[:timed]
    log.info(
        "Timing: %d warm-up step%s (the first %.1f s after the start of fit), then %d timed "
        "steps of %.2f-%.2f s",
        stop.warmup,
        "" if stop.warmup == 1 else "s",
        clock.times[0] - started,
        len(step_seconds),
        step_seconds.min(),
        step_seconds.max(),
    )
    seconds = float(scipy.stats.trim_mean(step_seconds, 0.1)) * steps_per_epoch
    # Every worker of a multi-worker run must make the same choice: a worker that trained
    # whole epochs alone would wait forever for the others' gradients.
    seconds = mean_over_workers(seconds, model.distribute_strategy)
    if seconds < SHORT_EPOCH_SECONDS:
        epoch_clock = EpochClock()
        model.fit(
            data.repeat(),
            steps_per_epoch=steps_per_epoch,
            epochs=1 + WHOLE_EPOCHS_TIMED,
            shuffle=False,
            verbose=0,
            callbacks=[epoch_clock, StopOnInterrupt()],
        )
        # Not the first epoch: it also starts fit, which training does once per run.
        whole_epoch = float(np.mean(np.diff(epoch_clock.times)[1:]))
        log.info(
            "Timing: a short epoch, so %d whole epochs were timed too: %.2f s each, "
            "against %.2f s from the steps",
            WHOLE_EPOCHS_TIMED,
            whole_epoch,
            seconds,
        )
        seconds = max(seconds, whole_epoch)
    model.set_weights(weights)
    if validation_data is not None:
        # trace the test step
        model.evaluate(validation_data.take(1), verbose=0, callbacks=[StopOnInterrupt()])
        passes = []
        for _ in range(VALIDATION_PASSES_TIMED):
            started = time.perf_counter()
            model.evaluate(validation_data, verbose=0, callbacks=[StopOnInterrupt()])
            passes.append(time.perf_counter() - started)
        validation_seconds = min(passes)
        log.info(
            "Timing: a validation pass took %s s (the faster counts)",
            " and ".join(f"{each:.1f}" for each in passes),
        )
        seconds += validation_seconds
    return seconds


def mean_over_workers(value: float, strategy: tf.distribute.Strategy) -> float:
    """``value`` averaged over every replica of a multi-worker ``strategy``, so that all
    workers get the same number; ``value`` itself under any other strategy.

    Each worker times its own steps, so two workers could plan different epochs (or,
    for CIFAR's automatic width, different networks) and then wait forever for each
    other's collective operations.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return value
    # In a tf.function: run eagerly, the strategy logs a warning about its overhead.
    per_replica = strategy.run(tf.function(lambda: tf.constant(value, tf.float64)))
    return float(strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None))


def budgeted_epochs(
    run_dir: str | os.PathLike,
    minutes: float,
    seconds_per_epoch: Callable[[], float],
    most: int = 1000,
    variant: str = "",
    strategy: tf.distribute.Strategy | None = None,
    started: float | None = None,
) -> tuple[int, float]:
    """Epochs that fit in ``minutes``, measured once per run.

    Calls ``seconds_per_epoch()`` (e.g. `time_one_epoch`) and records the
    decision in ``RUN_DIR/budget.json``, so that a resumed run keeps the epoch
    count (and learning-rate schedule) it started with instead of re-measuring.
    The timing counts against the budget: the epochs fill what is left of it from
    ``started`` (a `time.perf_counter` value; by default, when this call begins), so
    that a run that times two networks passes the start of the first timing to both.
    On a 2-core CPU without AVX-512 CIFAR's timing took 2.8-3.3 minutes, and outside
    the budget it made ``--minutes 20`` runs last 20.7-22.4 minutes.
    ``variant`` names another network timed for the same run (e.g. ``"width16"``,
    recorded in ``budget-width16.json``), so that a resumed run makes the same choice
    between them without timing either again. Under a multi-worker ``strategy`` (the
    run's), the workers plan from the mean of their timings (`mean_over_workers`), and
    keep a recorded plan only if every worker has it.

    Returns:
        (epochs, the measured seconds per epoch).
    """
    path = Path(run_dir) / (f"budget-{variant}.json" if variant else BUDGET_FILE)
    saved = read_json_or_none(path)  # None when missing or damaged: measure again
    kept = (
        isinstance(saved, dict)
        and saved.get("minutes") == minutes
        and isinstance(saved.get("epochs"), int)
        and isinstance(saved.get("seconds_per_epoch"), (int, float))
    )
    if strategy is not None:
        # Timing trains a few steps, which every worker must take together: if one
        # worker's plan is missing (its scratch folder deleted, say), all time again.
        kept = mean_over_workers(float(kept), strategy) == 1.0
    if kept:
        log.info("--minutes %g: keeping this run's %d epochs (%s)", minutes, saved["epochs"], path)
        return saved["epochs"], float(saved["seconds_per_epoch"])
    started = time.perf_counter() if started is None else started
    seconds = seconds_per_epoch()
    spent = time.perf_counter() - started
    if strategy is not None:  # a plan from the same figures on every worker
        seconds = mean_over_workers(seconds, strategy)
        spent = mean_over_workers(spent, strategy)
    epochs = epochs_for_budget(minutes, seconds, most, spent_seconds=spent)
    log.info(
        "--minutes %g: timing took %.0f s of the budget; %d epoch%s of %.0f s fit in the "
        "rest, less %.0f%% of the budget kept for what the timing does not see",
        minutes,
        spent,
        epochs,
        "" if epochs == 1 else "s",
        seconds,
        PLANNING_MARGIN * 100,
    )
    record = {"minutes": minutes, "seconds_per_epoch": seconds, "epochs": epochs}
    write_json(path, {**record, "timing_seconds": round(spent, 1)})
    return epochs, seconds
