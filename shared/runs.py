"""Self-describing run directories.

Every training run writes one folder (default ``runs/<project>/<UTC time>/``)::

    config.json     the exact settings, loadable with `load_run`
    versions.json   Python, TensorFlow, Keras, NumPy, platform, devices
    train.log       the log of the run
    history.csv     one row per epoch (metrics, epoch_seconds, examples_per_second)
    metrics.json    final metrics, machine-readable
    timing.json     wall-clock figures (kept out of metrics.json so that two
                    runs with the same seed give identical metrics.json)
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
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from shared.config import TrainConfig
from shared.distribute import wait_for_all_workers, worker_role
from shared.errors import UserError
from shared.plots import plot_history
from shared.saving import atomic_path, load_model, save_model

log = logging.getLogger(__name__)

RUNS_ROOT = Path("runs")


class RunError(UserError):
    """A run directory cannot be used as asked."""


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically (temporary file + rename).

    Args:
        path: Destination file.
        data: JSON-serialisable data; NumPy scalars and arrays are converted.
    """
    with atomic_path(path) as temporary, open(temporary, "w") as out:
        json.dump(data, out, indent=2, sort_keys=True, default=_to_builtin)
        out.write("\n")


def _to_builtin(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


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

    def finish(self, model: keras.Model, metrics: dict[str, Any]) -> Path:
        """Save the final model, metrics, timing and training curves.

        Then point ``runs/<project>/latest`` here when the run lives under
        ``runs/<project>/``.

        Args:
            model: The trained model.
            metrics: Final metrics (deterministic values only; no timings).

        Returns:
            The run directory.
        """
        save_model(model, self.model_path)
        write_json(self.path / "metrics.json", metrics)
        history = self.path / "history.csv"
        timing: dict[str, Any] = {"wall_seconds": time.perf_counter() - self._started}
        if history.exists():
            plot_history(history, self.plots_dir / "training_curves.png")
            timing.update(_throughput_summary(history))
        write_json(self.path / "timing.json", timing)
        _point_latest(self)
        wait_for_all_workers()
        log.info("Run directory: %s", self.path)
        if self._log_handler is not None:
            root = logging.getLogger()
            root.removeHandler(self._log_handler)
            root.setLevel(self._previous_log_level)
            self._log_handler.close()
            self._log_handler = None
        return self.path


def _throughput_summary(history_csv: Path) -> dict[str, float]:
    import pandas as pd  # Imported here: only needed at the end of a run.

    frame = pd.read_csv(history_csv)
    if "examples_per_second" not in frame or frame.empty:
        return {}
    # The first epoch includes tracing and compilation; report it separately.
    steady = (
        frame["examples_per_second"].iloc[1:] if len(frame) > 1 else frame["examples_per_second"]
    )
    return {
        "epochs_logged": int(len(frame)),
        "first_epoch_seconds": float(frame["epoch_seconds"].iloc[0]),
        "median_examples_per_second": float(steady.median()),
    }


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
    path = Path(config.run_dir) if config.run_dir else _timestamped_dir(project)
    settings = {"project": project, **config.to_dict(), "run_dir": str(path)}
    is_chief, worker_index = worker_role()
    if not is_chief:
        path = worker_scratch_dir(path, worker_index)
        # The chief decides whether this run is new, resumed or refused; a worker's
        # scratch folder left from a finished or different run is simply replaced.
        saved = path / "config.json"
        if (path / "metrics.json").exists() or (
            saved.exists() and json.loads(saved.read_text()) != settings
        ):
            shutil.rmtree(path)
    resumed = False
    if path.exists() and not path.is_dir():
        raise RunError(f"--run-dir {path} is a file, not a folder.")
    if (path / "metrics.json").exists():
        raise RunError(
            f"{path} already holds a finished run (metrics.json exists). "
            "Choose a new --run-dir, or delete that folder to train again."
        )
    saved_config = path / "config.json"
    if saved_config.exists():
        previous = json.loads(saved_config.read_text())
        changed = sorted(
            key
            for key in set(previous) | set(settings)
            if key != "run_dir" and previous.get(key) != settings.get(key)
        )
        if changed:
            details = ", ".join(
                f"{key}: {previous.get(key)!r} -> {settings.get(key)!r}" for key in changed
            )
            raise RunError(
                f"{path} was started with other settings ({details}). Re-run with the "
                "original flags to resume it, or choose a new --run-dir."
            )
        resumed = (path / "backup").exists()
    path.mkdir(parents=True, exist_ok=True)
    write_json(saved_config, settings)
    write_json(path / "versions.json", software_versions())

    handler = logging.FileHandler(path / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    root.addHandler(handler)
    previous_level = root.level
    # The run's log keeps INFO records even when the console shows fewer.
    root.setLevel(min(previous_level, logging.INFO))
    if resumed:
        log.info("Resuming the interrupted run in %s", path)
    else:
        log.info("New run in %s", path)
    seed_everything(config.seed)
    return Run(
        project=project,
        path=path,
        resumed=resumed,
        _log_handler=handler,
        _previous_log_level=previous_level,
    )


@dataclasses.dataclass
class LoadedRun:
    """What inference needs from a finished run."""

    path: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    model: keras.Model


def load_run(run_dir: str | os.PathLike, which: str = "model") -> LoadedRun:
    """Load a finished run's settings, metrics and model.

    Args:
        run_dir: The run directory (``runs/<project>/latest`` works).
        which: ``model`` for the final model, ``best`` for the best epoch's.

    Returns:
        A `LoadedRun`.

    Raises:
        RunError: The folder is missing or is not a finished run.
        shared.saving.ModelFileError: The model file is missing or damaged.
    """
    if which not in ("model", "best"):
        raise ValueError(f"which must be 'model' or 'best', got {which!r}")
    path = Path(run_dir)
    if not path.is_dir():
        raise RunError(f"No run directory at {path}. Train first, or pass an existing --run-dir.")
    config_file = path / "config.json"
    if not config_file.exists():
        raise RunError(f"{path} is not a run directory (it has no config.json).")
    metrics_file = path / "metrics.json"
    if not metrics_file.exists():
        raise RunError(
            f"{path} holds an unfinished run (no metrics.json). Re-run its training "
            "command to resume it, or choose another run."
        )
    return LoadedRun(
        path=path,
        config=json.loads(config_file.read_text()),
        metrics=json.loads(metrics_file.read_text()),
        model=load_model(path / f"{which}.keras", compile=False),
    )
