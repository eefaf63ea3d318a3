"""Self-describing run directories.

Every training run writes one folder (default ``runs/<project>/<UTC time>/``)::

    config.json     the exact settings, loadable with `load_run`
    versions.json   Python, TensorFlow, Keras, NumPy, platform, devices
    train.log       the log of the run
    history.csv     one row per epoch (metrics, epoch_seconds, validation_seconds,
                    examples_per_second)
    metrics.json    final metrics, machine-readable
    timing.json     wall-clock figures (kept out of metrics.json so that two
                    runs with the same seed can give identical metrics.json: XOR's
                    do; CPU conv kernels that add in no fixed order make CIFAR's
                    differ slightly)
    model.keras     the final model; best.keras: the best epoch's model
    tensorboard/    TensorBoard logs
    plots/          PNG plots, at least training_curves.png
    backup/         only while training: what a re-run resumes from

``runs/<project>/latest`` is a symlink to the newest finished run.

Under multi-worker training only the chief writes there. Every other worker
runs the same code against its own scratch folder (`worker_scratch_dir`,
outside the run directory): its backup lets a re-launch resume it, and its
final model lets the tests check that all workers agree.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from shared.callbacks import format_duration
from shared.config import TrainConfig
from shared.distribute import wait_for_all_workers, worker_role
from shared.errors import UserError
from shared.plots import plot_history
from shared.saving import (
    ModelFileError,
    RunError,
    finished_run_files,
    load_model,
    read_json,
    read_json_or_none,
    remove_temporary_files,
    save_model,
    write_json,
)

log = logging.getLogger(__name__)

RUNS_ROOT = Path("runs")


class TrainingDiverged(UserError):
    """The loss diverged: the trained weights are NaN or infinite."""


NEXT_STEPS = {
    "xor_mlp": "python -m projects.xor_mlp.predict --run-dir {run_dir} 1 0",
    "stock_lstm": "python -m projects.stock_lstm.forecast --run-dir {run_dir} --days 5",
    # {sample_prompt}: the run's own (metrics.json), which its text's characters allow.
    "shakespeare": (
        "python -m projects.shakespeare.generate --run-dir {run_dir} --prompt {sample_prompt}"
    ),
    "cifar_cnn": "python -m projects.cifar_cnn.predict --run-dir {run_dir} IMAGE.jpg",
}

# The run being trained in this process, so that an interrupted run can say how to resume.
_ACTIVE_RUN: Run | None = None


def active_run() -> Run | None:
    """The run `start_run` opened last in this process and not yet finished, if any."""
    return _ACTIVE_RUN


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and Keras (and so TensorFlow) from one number.

    Args:
        seed: The seed.
    """
    keras.utils.set_random_seed(seed)


def software_versions() -> dict[str, Any]:
    """Versions and devices that decide whether a run can be reproduced."""
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "gpus": [device.name for device in tf.config.list_physical_devices("GPU")],
        "command": list(sys.orig_argv),
    }


def _timestamped_dir(project: str) -> Path:
    parent = RUNS_ROOT / project
    # Workers started together by shared.launch share one stamp, hence one folder.
    shared_stamp = os.environ.get("RUN_STAMP")
    if shared_stamp:
        return parent / shared_stamp
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    candidate = parent / stamp
    counter = 2
    while candidate.exists():
        candidate = parent / f"{stamp}-{counter}"
        counter += 1
    return candidate


@dataclasses.dataclass
class Run:
    """An open run directory. Create one with `start_run`."""

    project: str
    path: Path
    resumed: bool
    keep: str = "best"
    _log_handler: logging.Handler | None = None
    _previous_log_level: int = logging.WARNING
    _started: float = dataclasses.field(default_factory=time.perf_counter)

    @property
    def model_path(self) -> Path:
        """Where the final model goes."""
        return self.path / "model.keras"

    @property
    def plots_dir(self) -> Path:
        """Folder for PNG plots."""
        folder = self.path / "plots"
        folder.mkdir(exist_ok=True)
        return folder

    def keep_chosen_epoch(self, model: keras.Model) -> dict[str, Any] | None:
        """Make ``model`` the epoch ``--keep`` chose; call after ``fit``, before scoring.

        With ``--keep best`` the model as trained (the last epoch) is saved as
        ``last.keras`` and the best epoch's weights (``best.keras``) are loaded
        into ``model``; with ``--keep last`` nothing changes. `finish` then
        saves ``model`` as ``model.keras``, so the two files are always the
        model in use and the other epoch.

        Args:
            model: The trained model; for ``best`` it must be the model that
                ``best.keras`` holds (same layers).

        Returns:
            The best epoch's record (``best.json``: monitor, value, zero-based
            epoch), or None when no epoch had a finite validation score.
        """
        best_json = self.path / "best.json"
        if not best_json.exists():
            return None
        best = read_json(best_json)
        if self.keep == "best":
            save_model(model, self.path / "last.keras")
            model.set_weights(load_model(self.path / "best.keras", compile=False).get_weights())
            log.info(
                "model.keras: epoch %d, the best %s (%.4g); the last epoch is in last.keras",
                best["epoch"] + 1,
                best["monitor"],
                best["value"],
            )
        else:
            log.info(
                "model.keras: the last epoch; the best %s (epoch %d) is in best.keras",
                best["monitor"],
                best["epoch"] + 1,
            )
        return best

    def finish(self, model: keras.Model, metrics: dict[str, Any]) -> Path:
        """Save the final model, metrics, timing and training curves.

        Then point ``runs/<project>/latest`` here when the run lives under
        ``runs/<project>/``. A model whose weights are no longer finite (the
        loss diverged) is not saved: ``metrics.json`` gets ``"status":
        "diverged"``, ``latest`` is left alone and `TrainingDiverged` is raised.

        Args:
            model: The trained model.
            metrics: Final metrics (deterministic values only; no timings).
                ``status`` (``completed`` or ``diverged``) is added.

        Returns:
            The run directory.

        Raises:
            TrainingDiverged: The model's weights hold NaN or infinite values.
        """
        diverged = not weights_are_finite(model)
        metrics["status"] = "diverged" if diverged else "completed"
        if not diverged:
            save_model(model, self.model_path)
            if self.keep == "best" and (self.path / "last.keras").exists():
                # best.keras is what model.keras now holds; keep one copy.
                (self.path / "best.keras").unlink(missing_ok=True)
        write_json(self.path / "metrics.json", metrics)
        history = self.path / "history.csv"
        timing: dict[str, Any] = {"wall_seconds": time.perf_counter() - self._started}
        if history.exists():
            plot_history(history, self.plots_dir / "training_curves.png")
            timing.update(_throughput_summary(history))
        write_json(self.path / "timing.json", timing)
        if "training_seconds" in timing:
            log.info(
                "Time: %s training, %s validation passes, %s the whole run (timing.json)",
                format_duration(timing["training_seconds"]),
                format_duration(timing["validation_seconds_sum"]),
                format_duration(timing["wall_seconds"]),
            )
        if not diverged:
            _point_latest(self)
        wait_for_all_workers()
        if diverged:
            log.error(
                "Run directory: %s (marked diverged in metrics.json; no model.keras)", self.path
            )
        else:
            log.info("Run directory: %s", self.path)
            log.info("Plots: %s", self.plots_dir)
            next_step = NEXT_STEPS.get(self.project)
            if next_step:
                # {name} in the command: that text field of metrics.json, shell-quoted.
                fields = {k: shlex.quote(v) for k, v in metrics.items() if isinstance(v, str)}
                log.info("Try: %s", next_step.format_map({**fields, "run_dir": self.path}))
            log.info("Curves: tensorboard --logdir %s", self.path / "tensorboard")
        self.close_log()
        if diverged:
            raise TrainingDiverged(
                "training diverged: the model's weights became NaN or infinite, so no "
                f"model.keras was saved ({self.path}/metrics.json says status 'diverged'). "
                "Train again with a lower --learning-rate, or check the data for NaN or "
                "infinite values."
            )
        return self.path

    def close_log(self) -> None:
        """Stop copying the log into ``train.log`` (idempotent)."""
        if self._log_handler is not None:
            root = logging.getLogger()
            root.removeHandler(self._log_handler)
            root.setLevel(self._previous_log_level)
            self._log_handler.close()
            self._log_handler = None


def weights_are_finite(model: keras.Model) -> bool:
    """Whether every floating-point weight of ``model`` is finite (no NaN, no infinity)."""
    for weight in model.weights:
        value = np.asarray(keras.ops.convert_to_numpy(weight.value))
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            return False
    return True


def _throughput_summary(history_csv: Path) -> dict[str, float]:
    import pandas as pd  # Imported here: only needed at the end of a run.

    frame = pd.read_csv(history_csv)
    if "examples_per_second" not in frame or frame.empty:
        return {}
    # The first epoch includes tracing and compilation; report it separately.
    steady = (
        frame["examples_per_second"].iloc[1:] if len(frame) > 1 else frame["examples_per_second"]
    )
    summary = {
        "epochs_logged": int(len(frame)),
        "first_epoch_seconds": float(frame["epoch_seconds"].iloc[0]),
        "median_examples_per_second": float(steady.median()),
        "epoch_seconds_sum": float(frame["epoch_seconds"].sum()),
    }
    if "validation_seconds" in frame:  # runs resumed from before it was logged lack it
        validation = frame["validation_seconds"].fillna(0.0)
        summary["validation_seconds_sum"] = float(validation.sum())
        # Training time as papers count it: the epochs without their validation passes.
        summary["training_seconds"] = float((frame["epoch_seconds"] - validation).sum())
    return summary


def _point_latest(run: Run) -> None:
    parent = RUNS_ROOT / run.project
    if run.path.resolve().parent != parent.resolve():
        return
    link = parent / "latest"
    temporary = parent / f".latest-{os.getpid()}"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(run.path.name)
    os.replace(temporary, link)


def worker_scratch_dir(
    run_dir: str | os.PathLike, worker_index: int, temp_root: str | os.PathLike | None = None
) -> Path:
    """Where non-chief worker ``worker_index`` keeps its files for ``run_dir``.

    A fixed place per run directory and worker, under ``temp_root`` (default:
    the system's temporary folder, ``$TMPDIR``), so that re-launching the same
    command finds the worker's backup.
    """
    name = str(Path(run_dir).resolve()).strip(os.sep).replace(os.sep, "__")
    root = Path(temp_root) if temp_root is not None else Path(tempfile.gettempdir())
    return root / "keras-projects-workers" / name / f"worker-{worker_index}"


def start_run(project: str, config: TrainConfig) -> Run:
    """Create (or reopen, to resume) the run directory for ``config``.

    Writes ``config.json`` and ``versions.json``, seeds every random number
    generator from ``config.seed`` and copies the log into ``train.log``.

    Args:
        project: The project's folder name, e.g. ``xor_mlp``.
        config: The validated config.

    Returns:
        The open `Run`.

    Raises:
        RunError: The directory holds a finished run, or one started with
            different settings.
    """
    global _ACTIVE_RUN
    path = Path(config.run_dir) if config.run_dir else _timestamped_dir(project)
    settings = {"project": project, **config.to_dict(), "run_dir": str(path)}
    is_chief, worker_index = worker_role()
    if not is_chief:
        path = worker_scratch_dir(path, worker_index)
        # The chief decides whether this run is new, resumed or refused; a worker's
        # scratch folder left from a finished or different run is simply replaced.
        saved = path / "config.json"
        if (path / "metrics.json").exists() or (
            saved.exists() and read_json_or_none(saved) != settings
        ):
            shutil.rmtree(path)
    if path.exists() and not path.is_dir():
        raise RunError(f"--run-dir {path} is a file, not a folder.")
    if (path / "metrics.json").exists():
        raise RunError(
            f"{path} already holds a finished run (metrics.json exists). "
            "Choose a new --run-dir, or delete that folder to train again."
        )
    resumed = (path / "backup" / "state.json").exists()
    saved_config = path / "config.json"
    if saved_config.exists():
        previous = read_json(saved_config)
        changed = sorted(
            key
            for key in set(previous) | set(settings)
            if key != "run_dir" and previous.get(key) != settings.get(key)
        )
        # Settings may change only while no epoch has completed (e.g. after a bad flag).
        if changed and (resumed or (path / "history.csv").exists()):
            details = ", ".join(
                f"{key}: {previous.get(key)!r} -> {settings.get(key)!r}" for key in changed
            )
            raise RunError(
                f"{path} was started with other settings ({details}). Re-run with the "
                "original flags to resume it, or choose a new --run-dir."
            )
        restarted_with = changed
    else:
        restarted_with = []
    try:
        path.mkdir(parents=True, exist_ok=True)
        removed = remove_temporary_files(path)
        write_json(saved_config, settings)
        write_json(path / "versions.json", software_versions())
        handler = logging.FileHandler(path / "train.log")
    except OSError as error:
        raise RunError(
            f"cannot write the run directory {path}: {error.strerror or error} "
            f"({error.filename or path}). Choose a --run-dir in a folder you can write to."
        ) from None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    root.addHandler(handler)
    previous_level = root.level
    # The run's log keeps INFO records even when the console shows fewer.
    root.setLevel(min(previous_level, logging.INFO))
    if resumed:
        log.info("Resuming the interrupted run in %s", path)
    elif restarted_with:
        log.info(
            "No epoch of the earlier attempt in %s completed; starting it again with the "
            "new settings (%s changed)",
            path,
            ", ".join(restarted_with),
        )
    else:
        log.info("New run in %s", path)
    if removed:
        log.info("Removed %d file(s) left half-written by the interrupted run", len(removed))
    seed_everything(config.seed)
    _ACTIVE_RUN = Run(
        project=project,
        path=path,
        resumed=resumed,
        keep=config.keep,
        _log_handler=handler,
        _previous_log_level=previous_level,
    )
    return _ACTIVE_RUN


@dataclasses.dataclass
class LoadedRun:
    """What inference needs from a finished run."""

    path: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    model: keras.Model


def load_run(run_dir: str | os.PathLike, which: str = "model", inference: str = "") -> LoadedRun:  # noqa: E501
    """Load a finished run's settings, metrics and model.

    Args:
        run_dir, which, inference: As for `shared.saving.finished_run_files`, which
            checks the run's files first.

    Returns:
        A `LoadedRun`.

    Raises:
        RunError: The folder is missing, is not a finished run, is another
            project's run, or holds a diverged run.
        shared.saving.RunFileError: Its config.json or metrics.json is damaged.
        shared.saving.ModelFileError: The model file is missing, damaged, or
            holds NaN or infinite weights.
    """
    files = finished_run_files(run_dir, which, inference)
    model_file = files.model_file
    model = load_model(model_file, compile=False)
    if not weights_are_finite(model):
        raise ModelFileError(
            f"{model_file} holds NaN or infinite weights: its training diverged. "
            "Train again with a lower --learning-rate."
        )
    return LoadedRun(path=files.path, config=files.config, metrics=files.metrics, model=model)
