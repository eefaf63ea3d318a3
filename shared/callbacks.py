"""The one set of callbacks every project trains with.

`standard_callbacks` returns, in the order Keras must call them:

1. `EpochTimer` adds ``epoch_seconds``, ``validation_seconds`` and
   ``examples_per_second`` to the epoch's logs, so the callbacks after it (CSV,
   TensorBoard, History) see them.
2. `RunCheckpoint` records the epoch: its row of ``history.csv``, the best
   model so far (``best.keras``) and the backup a re-run resumes from (weights,
   optimizer state, epoch number), all made consistent by one atomic commit.
   Under multi-worker training `ChiefStateSync` then gives every worker the
   chief's restored state, so that all workers resume from the same epoch.
3. ``TensorBoard`` and `StopOnInvalidLoss` (Keras's ``TerminateOnNaN`` with
   a log line that says what to do).
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
import math
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from shared.cli import interrupt_requested, stop_at_step_ends
from shared.distribute import worker_role
from shared.errors import UserError
from shared.saving import (
    RunFileError,
    atomic_path,
    read_json,
    read_json_or_none,
    save_model,
    write_json,
)

log = logging.getLogger(__name__)


class EpochTimer(keras.callbacks.Callback):
    """Record wall time and throughput of each epoch in the epoch logs; log time left.

    ``epoch_seconds`` is the whole epoch, its validation pass included;
    ``validation_seconds`` is that pass alone (0 without one), so training time
    as papers report it (evaluation excluded) is the difference.
    ``examples_per_second`` divides by the whole epoch, as it always has.
    After each epoch one log line says how long the remaining epochs should
    take (from the median epoch so far, so the first epoch's compilation does
    not dominate) and when training should finish.

    Args:
        examples_per_epoch: Training examples seen in one epoch.
    """

    def __init__(self, examples_per_epoch: int):
        super().__init__()
        self.examples_per_epoch = examples_per_epoch
        self._started = 0.0
        self._validation_started: float | None = None
        self._validation_seconds = 0.0
        self._durations: list[float] = []

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._durations = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.perf_counter()
        self._validation_seconds = 0.0

    # fit runs its validation pass through evaluate with the same callbacks, so
    # these two bracket it (and only it: the timer is not given to other loops).
    def on_test_begin(self, logs: dict | None = None) -> None:
        self._validation_started = time.perf_counter()

    def on_test_end(self, logs: dict | None = None) -> None:
        if self._validation_started is not None:
            self._validation_seconds += time.perf_counter() - self._validation_started
            self._validation_started = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None:
            return
        seconds = time.perf_counter() - self._started
        logs["epoch_seconds"] = seconds
        logs["validation_seconds"] = self._validation_seconds
        logs["examples_per_second"] = self.examples_per_epoch / max(seconds, 1e-9)
        self._durations.append(seconds)
        total = self.params.get("epochs") if self.params else None
        if total and epoch + 1 < total:
            recent = sorted(self._durations[1:] or self._durations)
            left = recent[len(recent) // 2] * (total - epoch - 1)
            finish = dt.datetime.now() + dt.timedelta(seconds=left)
            log.info(
                "Epoch %d/%d took %s%s; about %s left (done around %s)",
                epoch + 1,
                total,
                format_duration(seconds),
                f" ({format_duration(self._validation_seconds)} of it validation)"
                if self._validation_seconds
                else "",
                format_duration(left),
                f"{finish:%H:%M}",
            )


def format_duration(seconds: float) -> str:
    """``seconds`` for a log line: ``4.2 s``, ``42 s``, ``3.5 min`` or ``1.2 h``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class BackupError(UserError):
    """A run's backup cannot be read."""


class RunCheckpoint(keras.callbacks.Callback):
    """The epoch's record, best model and backup, made consistent by one atomic commit.

    At the end of every epoch, in this order:

    1. the training state (weights and optimizer) goes to
       ``backup/state-<epochs done>.weights.h5``, and, when ``monitor``
       improved, the whole model to ``backup/best-<epoch>.keras``;
    2. ``backup/state.json`` is replaced atomically: the number of epochs done,
       the name of that weights file, every epoch's log row so far and the best
       epoch. This rename is the commit: a process killed before it resumes
       from the previous epoch, one killed after it from this one;
    3. what the commit describes is published: the best model is moved to
       ``best.keras`` (with ``best.json``), ``history.csv`` is rewritten from the
       rows, and files no longer referenced are deleted.

    Every write goes through a temporary file and a rename, so a SIGKILL at
    any instant leaves either the old or the new version of each file. On
    resume (``on_train_begin``) the committed state is loaded and published
    again, so ``history.csv`` and ``best.keras`` match the epoch training
    restarts from: each epoch is in ``history.csv`` exactly once, and the best
    model is one of the recorded epochs. Once training ends, ``backup/`` is
    deleted.

    Args:
        run_dir: The run directory.
        monitor: The log key that decides the best model, e.g. ``val_loss``.
        mode: ``min`` or ``max``.
        saved_model: The model ``best.keras`` holds, when it is not the one being
            trained (e.g. a wrapper that adds preprocessing around it).
    """

    def __init__(
        self,
        run_dir: str | Path,
        monitor: str = "val_loss",
        mode: str = "min",
        saved_model: keras.Model | None = None,
    ):
        super().__init__()
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.run_dir = Path(run_dir)
        self.backup_dir = self.run_dir / "backup"
        self.monitor = monitor
        self.mode = mode
        self.saved_model = saved_model
        self.state = _empty_state()

    # -- resuming ---------------------------------------------------------------------------

    def on_train_begin(self, logs: dict | None = None) -> None:
        build_optimizer(self.model)
        state_file = self.backup_dir / "state.json"
        if not state_file.exists():
            self.state = _empty_state()
            return
        try:
            state = read_json(state_file)
            self.model.load_weights(self.backup_dir / state["weights"])
        except (RunFileError, OSError, KeyError, ValueError) as error:
            is_chief, _ = worker_role()
            if is_chief:
                raise BackupError(
                    f"the backup in {self.backup_dir} cannot be read ({error}). Delete that "
                    "folder to start this run again from the first epoch."
                ) from None
            log.warning("Own backup unreadable (%s); taking the chief's state instead", error)
            self.state = _empty_state()
            return
        self.state = state
        self.model._initial_epoch = state["epochs_done"]
        self._publish()
        log.info("Resumed after epoch %d (of the backup in %s)", state["epochs_done"], state_file)

    # -- every epoch ------------------------------------------------------------------------

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = dict(logs or {})
        if self.monitor not in logs:
            raise KeyError(
                f"RunCheckpoint monitors {self.monitor!r}, which is not among the logged "
                f"metrics {sorted(logs)}"
            )
        row = {"epoch": epoch, **{key: _plain(value) for key, value in logs.items()}}
        state = {
            "epochs_done": epoch + 1,
            "weights": self._save_weights(epoch + 1),
            "rows": [*(r for r in self.state["rows"] if r["epoch"] < epoch), row],
            "best": self.state["best"],
            "monitor": self.monitor,
        }
        value = float(logs[self.monitor])
        if self._improved(value):
            state["best"] = {
                "monitor": self.monitor,
                "value": value,
                "epoch": epoch,
                "file": self._save_best_candidate(epoch),
            }
        self._commit(state)
        self._publish()

    def _improved(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        best = self.state["best"]
        if best is None:
            return True
        return value < best["value"] if self.mode == "min" else value > best["value"]

    def _save_weights(self, epochs_done: int) -> str:
        name = f"state-{epochs_done}.weights.h5"
        with atomic_path(self.backup_dir / name) as temporary:
            self.model.save_weights(temporary)
        return name

    def _save_best_candidate(self, epoch: int) -> str:
        name = f"best-{epoch}.keras"
        save_model(self.saved_model or self.model, self.backup_dir / name)
        return name

    def _commit(self, state: dict) -> None:
        write_json(self.backup_dir / "state.json", state)
        self.state = state

    def _publish(self) -> None:
        self._publish_best()
        self._publish_history()
        self._remove_unreferenced()

    def _publish_best(self) -> None:
        best = self.state["best"]
        if best is None:
            return
        candidate = self.backup_dir / best["file"]
        if candidate.exists():  # else: published before the process was stopped
            os.replace(candidate, self.run_dir / "best.keras")
        record = {key: best[key] for key in ("monitor", "value", "epoch")}
        best_json = self.run_dir / "best.json"
        if not best_json.exists() or read_json_or_none(best_json) != record:
            write_json(best_json, record)

    def _publish_history(self) -> None:
        rows = self.state["rows"]
        if not rows:
            return
        keys = sorted({key for row in rows for key in row} - {"epoch"})
        with (
            atomic_path(self.run_dir / "history.csv") as temporary,
            open(temporary, "w", newline="") as handle,
        ):
            writer = csv.writer(handle)
            writer.writerow(["epoch", *keys])
            for row in rows:
                writer.writerow([row["epoch"], *(row.get(key, "") for key in keys)])

    def _remove_unreferenced(self) -> None:
        keep = {"state.json", self.state["weights"]}
        for path in self.backup_dir.iterdir() if self.backup_dir.is_dir() else []:
            if path.name not in keep:
                path.unlink(missing_ok=True)

    def on_train_end(self, logs: dict | None = None) -> None:
        shutil.rmtree(self.backup_dir, ignore_errors=True)


def build_optimizer(model: keras.Model) -> None:
    """Create the optimizer's variables (step count, moments) before the first step.

    Keras creates them at the first training step when the model was compiled outside
    a distribution strategy (as on one device). Weights loaded before that keep only
    the model's own: Keras skips the optimizer's saved state with a warning, and the
    resumed run would restart its learning-rate schedule and Adam moments. And a
    ``tf.function`` that creates variables is traced a second time: building them
    first traces the training step once (a DenseNet ``--quick`` run here: 34-38 s -> 27-33 s).
    """
    optimizer = model.optimizer
    if optimizer is not None and not optimizer.built:
        with model.distribute_strategy.scope():
            optimizer.build(model.trainable_variables)


def _empty_state() -> dict:
    """The state before the first epoch: nothing done, no weights, rows or best."""
    return {"epochs_done": 0, "weights": None, "rows": [], "best": None}


def _plain(value) -> float | str:
    """A log value as a JSON- and CSV-friendly number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


class ChiefStateSync(keras.callbacks.Callback):
    """Copy the chief's weights, optimizer state and start epoch to every worker.

    Each worker restores its own backup, and a worker killed between finishing
    an epoch and writing its backup restores an older epoch than the others;
    the workers would then run different steps and their collective ops would
    fail. After this callback every worker holds the chief's (worker 0's)
    state. Does nothing unless the model trains under
    ``MultiWorkerMirroredStrategy``.
    """

    def on_train_begin(self, logs: dict | None = None) -> None:
        strategy = self.model.distribute_strategy
        if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return
        variables = [
            variable
            for variable in [*self.model.variables, *self.model.optimizer.variables]
            if variable.dtype != "string"
        ]
        epoch = tf.constant(self.model._initial_epoch or 0, tf.int64)
        values = [epoch, *(tf.convert_to_tensor(variable.value) for variable in variables)]

        # In a tf.function: run eagerly, the strategy logs a warning about its overhead.
        # There a list is all-reduced as one concatenated tensor, so one per dtype.
        dtypes = sorted({value.dtype for value in values}, key=lambda dtype: dtype.name)

        @tf.function
        def from_replica_zero():
            # Replica 0 is the chief's first device; every other replica adds zeros.
            context = tf.distribute.get_replica_context()
            is_first = tf.equal(context.replica_id_in_sync_group, 0)
            summed = {}
            for dtype in dtypes:
                positions = [i for i, value in enumerate(values) if value.dtype == dtype]
                shares = [values[i] * tf.cast(is_first, dtype) for i in positions]
                summed.update(zip(positions, context.all_reduce("SUM", shares), strict=True))
            return [summed[i] for i in range(len(values))]

        synced = strategy.experimental_local_results(strategy.run(from_replica_zero))[0]
        self.model._initial_epoch = int(synced[0]) or None
        for variable, value in zip(variables, synced[1:], strict=True):
            variable.assign(value)
        log.info("Workers synchronised to the chief's state (start epoch %d)", int(synced[0]))


class StopOnInterrupt(keras.callbacks.Callback):
    """Stop training with KeyboardInterrupt at the end of the step Ctrl-C lands in.

    While a loop with this callback runs, `shared.cli` only records the first
    Ctrl-C (raised at once, it can abort TensorFlow; see
    `shared.cli.stop_at_step_ends`), and this callback raises it after the step.
    It also catches a Ctrl-C whose KeyboardInterrupt Python dropped inside a
    finalizer ("Exception ignored in ..."). It runs last, so a finished epoch is
    committed first.
    """

    def _enter(self, *args: Any, **kwargs: Any) -> None:
        stop_at_step_ends(True)

    def _leave(self, *args: Any, **kwargs: Any) -> None:
        stop_at_step_ends(False)
        self._check()  # Ctrl-C after the last step's check: stop before the code after fit

    def _check(self, *args: Any, **kwargs: Any) -> None:
        if interrupt_requested():
            stop_at_step_ends(None)  # the loops end here, without their *_end calls
            raise KeyboardInterrupt

    on_train_begin = on_test_begin = on_predict_begin = _enter
    on_train_end = on_test_end = on_predict_end = _leave
    on_train_batch_end = on_test_batch_end = on_predict_batch_end = on_epoch_end = _check


class StopOnInvalidLoss(keras.callbacks.TerminateOnNaN):
    """Stop training at the first batch whose loss is NaN or infinite, and say why.

    Keras's ``TerminateOnNaN`` prints one terse line; this logs the epoch, the
    batch and the usual fixes. Training then ends normally (``on_train_end``
    runs), so the run still writes its history and metrics. Under multi-worker
    training the loss in the batch logs is already reduced across workers, so
    every worker sees the same value and stops at the same batch: none is left
    waiting in a collective for the others.
    """

    def __init__(self) -> None:
        super().__init__()
        self._epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch

    def on_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(float(loss)):
            return
        log.warning(
            "Training stopped: the loss became %s at epoch %d, batch %d. The weights are "
            "no longer usable; lower --learning-rate, or look for NaN or infinite values "
            "in the data.",
            float(loss),
            self._epoch + 1,
            batch + 1,
        )
        self.model.stop_training = True


def standard_callbacks(
    run_dir: str | Path,
    examples_per_epoch: int,
    monitor: str = "val_loss",
    mode: str = "min",
    log_extras: Sequence[keras.callbacks.Callback] = (),
    saved_model: keras.Model | None = None,
) -> list[keras.callbacks.Callback]:
    """The standard callbacks for a run directory, in the order they must run.

    Args:
        run_dir: The run directory (see `shared.runs.Run`).
        examples_per_epoch: Training examples per epoch, for the throughput log.
        monitor: Metric that decides the best model.
        mode: ``min`` or ``max`` for ``monitor``.
        log_extras: Project callbacks that add values to the epoch logs; they run
            before the checkpoint and the loggers, so those see the values.
        saved_model: What ``best.keras`` holds, if not the model being trained.

    Returns:
        Callbacks to pass to ``model.fit``. The model must be built first
        (``BackupAndRestore`` loads weights into it).
    """
    run_dir = Path(run_dir)
    return [
        EpochTimer(examples_per_epoch),
        *log_extras,
        RunCheckpoint(run_dir, monitor, mode, saved_model),
        ChiefStateSync(),
        keras.callbacks.TensorBoard(str(run_dir / "tensorboard")),
        StopOnInvalidLoss(),
        StopOnInterrupt(),
    ]
