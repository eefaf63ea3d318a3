"""The one set of callbacks every project trains with.

`standard_callbacks` returns, in the order Keras must call them:

1. `EpochTimer` adds ``epoch_seconds`` and ``examples_per_second`` to the
   epoch's logs, so the callbacks after it (CSV, TensorBoard, History) see them.
2. ``BackupAndRestore`` saves weights, optimizer state and the epoch number
   after every epoch; re-running the same command resumes from there.
   Under multi-worker training `ChiefStateSync` then gives every worker the
   chief's restored state, so that all workers resume from the same epoch.
3. `BestModelCheckpoint` keeps the best model so far in ``best.keras``, saved
   atomically.
4. `ResumableCSVLogger` appends one row per epoch to ``history.csv``.
5. ``TensorBoard`` and `StopOnInvalidLoss` (Keras's ``TerminateOnNaN`` with
   a log line that says what to do).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path

import keras
import tensorflow as tf

from shared.distribute import worker_role
from shared.errors import UserError
from shared.saving import save_model

log = logging.getLogger(__name__)


class EpochTimer(keras.callbacks.Callback):
    """Record wall time and throughput of each epoch in the epoch logs.

    Args:
        examples_per_epoch: Training examples seen in one epoch.
    """

    def __init__(self, examples_per_epoch: int):
        super().__init__()
        self.examples_per_epoch = examples_per_epoch
        self._started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None:
            return
        seconds = time.perf_counter() - self._started
        logs["epoch_seconds"] = seconds
        logs["examples_per_second"] = self.examples_per_epoch / max(seconds, 1e-9)


class ResumableCSVLogger(keras.callbacks.CSVLogger):
    """``CSVLogger(append=True)`` that never records an epoch twice.

    When training resumes at epoch N (``BackupAndRestore`` restored N), rows for
    epochs >= N can exist if the process died after logging an epoch but
    before backing it up; they are dropped before that epoch is trained again.

    Args:
        filename: The CSV file.
    """

    def __init__(self, filename: str | Path):
        super().__init__(str(filename), append=True)
        self._checked = False

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._checked = False
        super().on_train_begin(logs)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self._checked:
            return
        self._checked = True
        path = Path(self.filename)
        if not path.exists():
            return
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))
        if len(rows) <= 1:
            return
        header, body = rows[0], rows[1:]
        kept = [row for row in body if row and int(row[0]) < epoch]
        if len(kept) == len(body):
            return
        log.info("history.csv: dropping %d row(s) from before the resume", len(body) - len(kept))
        self.csv_file.close()
        with path.open("w", newline="") as handle:
            csv.writer(handle).writerows([header, *kept])
        self.csv_file = open(path, "a")  # noqa: SIM115 - closed by on_train_end
        self.append_header = False


class BestModelCheckpoint(keras.callbacks.Callback):
    """Save the model whenever ``monitor`` improves, atomically.

    The best value so far is kept beside the model (``<name>.json``), so a
    resumed run keeps comparing against it rather than starting over.

    Args:
        path: The ``.keras`` file to write.
        monitor: The log key to watch, e.g. ``val_loss``.
        mode: ``min`` or ``max``.
        saved_model: The model to write, when it is not the one being trained
            (e.g. a wrapper that adds preprocessing around it).
    """

    def __init__(
        self,
        path: str | Path,
        monitor: str = "val_loss",
        mode: str = "min",
        saved_model: keras.Model | None = None,
    ):
        super().__init__()
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.path = Path(path)
        self.state_path = self.path.with_suffix(".json")
        self.monitor = monitor
        self.mode = mode
        self.best = math.inf if mode == "min" else -math.inf
        self.saved_model = saved_model

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.state_path.exists() and self.path.exists():
            state = json.loads(self.state_path.read_text())
            if state.get("monitor") == self.monitor:
                self.best = state["value"]

    def _improved(self, value: float) -> bool:
        return value < self.best if self.mode == "min" else value > self.best

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise KeyError(
                f"BestModelCheckpoint monitors {self.monitor!r}, which is not among "
                f"the logged metrics {sorted(logs or {})}"
            )
        value = float(value)
        if math.isnan(value) or not self._improved(value):
            return
        self.best = value
        save_model(self.saved_model or self.model, self.path)
        state = {"monitor": self.monitor, "value": value, "epoch": epoch}
        self.state_path.write_text(json.dumps(state, indent=2) + "\n")


class BackupError(UserError):
    """A run's backup cannot be read."""


class CheckedBackupAndRestore(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` that explains a damaged backup instead of crashing in h5py.

    Keras already falls back to the previous epoch's backup
    (``double_checkpoint``); this handles the rest: a process killed while
    writing its first backup. A non-chief worker then starts afresh
    (`ChiefStateSync` gives it the chief's state); otherwise the run stops with
    a message saying what to delete.
    """

    def on_train_begin(self, logs: dict | None = None) -> None:
        try:
            super().on_train_begin(logs)
        except OSError as error:
            is_chief, _ = worker_role()
            if is_chief:
                raise BackupError(
                    f"the backup in {self.backup_dir} cannot be read ({error}); the process "
                    "was probably killed while writing it. Delete that folder to start this "
                    "run again from the first epoch."
                ) from None
            log.warning("Own backup unreadable (%s); taking the chief's state instead", error)
            self.model._initial_epoch = None


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

        def from_replica_zero():
            # Replica 0 is the chief's first device; every other replica adds zeros.
            context = tf.distribute.get_replica_context()
            is_first = tf.equal(context.replica_id_in_sync_group, 0)
            return context.all_reduce(
                "SUM", [value * tf.cast(is_first, value.dtype) for value in values]
            )

        synced = strategy.experimental_local_results(strategy.run(from_replica_zero))[0]
        self.model._initial_epoch = int(synced[0]) or None
        for variable, value in zip(variables, synced[1:], strict=True):
            variable.assign(value)
        log.info("Workers synchronised to the chief's state (start epoch %d)", int(synced[0]))


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
        CheckedBackupAndRestore(str(run_dir / "backup"), double_checkpoint=True),
        ChiefStateSync(),
        BestModelCheckpoint(run_dir / "best.keras", monitor, mode, saved_model),
        ResumableCSVLogger(run_dir / "history.csv"),
        keras.callbacks.TensorBoard(str(run_dir / "tensorboard")),
        StopOnInvalidLoss(),
    ]
