"""Atomic model saving and loading, and a run's files, with errors a person can act on.

Keras writes ``.keras`` files in place, so a crash or a full disk mid-save
leaves a truncated file that later fails to load with a confusing message.
`save_model` writes to a temporary file in the same folder and renames it
over the target, so the target is always either the old or the new model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import importlib
import json
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shared.errors import UserError, no_run_directory

if TYPE_CHECKING:  # imported where a model is loaded: this module also serves code without it
    import keras

TEMPORARY_PREFIX = ".tmp-"


class ModelFileError(UserError):
    """A model file is missing, truncated or not a Keras model."""


class RunFileError(UserError):
    """A file of a run directory (JSON) is missing or damaged."""


class RunError(UserError):
    """A run directory cannot be used as asked."""


class OutputFolderError(UserError):
    """An output folder (``--out``) cannot be made: a file is in its place or its way."""


def check_output_folder(folder: str | os.PathLike, flag: str = "--out") -> None:
    """Refuse an output folder that is a file or lies inside one, before any work.

    Writing would fail only at the end (after minutes of computing), or, for a folder
    replaced as a whole (`atomic_folder`), move the file aside out of view.

    Args:
        folder: The folder a command will write into (it need not exist yet).
        flag: The option that named it, for the message.

    Raises:
        OutputFolderError: ``folder`` is a file, or one of its parents is.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputFolderError(f"{flag} {folder} is a file; give a folder to write into.")
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    if not existing.is_dir():
        raise OutputFolderError(
            f"{flag} {folder}: {existing} is a file, not a folder; choose another {flag}."
        )


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    The temporary file is named ``.tmp-<random>-<name>``: it keeps every suffix
    of ``path`` (Keras picks the format from ``.keras`` or ``.weights.h5``) and
    lives in the same folder, so the final ``os.replace`` is an atomic rename.
    On any error the temporary file is removed and ``path`` is untouched; a
    process killed mid-write leaves only such a file, which
    `remove_temporary_files` deletes.

    Args:
        path: The final destination.

    Yields:
        The temporary path to write to.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(
        prefix=TEMPORARY_PREFIX, suffix=f"-{path.name}", dir=path.parent
    )
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        # mkstemp creates files readable by the owner only; use the usual mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a scratch folder beside ``path`` that replaces ``path`` only if the block succeeds.

    The folder version of `atomic_path`: on any error the scratch folder is
    removed and ``path`` (an earlier folder, if any) is untouched. An existing
    ``path`` is renamed aside, the scratch folder renamed into place, then the
    old one deleted: a folder cannot be renamed over a non-empty one.

    Args:
        path: The final folder.

    Yields:
        The scratch folder to fill.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        # Renamed aside, a file would not be removed with the old folder: it would be lost
        # from view under a temporary name.
        raise FileExistsError(errno.EEXIST, "a file is where the folder has to go", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(
        tempfile.mkdtemp(prefix=TEMPORARY_PREFIX, suffix=f"-{path.name}", dir=path.parent)
    )
    try:
        yield scratch
        old = None
        if path.exists():
            old = path.with_name(f"{TEMPORARY_PREFIX}old-{os.getpid()}-{path.name}")
            os.replace(path, old)
        os.replace(scratch, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def remove_temporary_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the leftovers of interrupted `atomic_path` writes under ``folder``.

    Args:
        folder: A run directory (searched recursively).

    Returns:
        The files removed.
    """
    removed = []
    for leftover in Path(folder).rglob(f"{TEMPORARY_PREFIX}*"):
        if leftover.is_file():
            leftover.unlink(missing_ok=True)
            removed.append(leftover)
    return removed


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


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file of a run, or raise `RunFileError` saying what is wrong with it.

    Args:
        path: The file.

    Returns:
        The parsed content.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise RunFileError(f"{path} is missing.") from None
    except (OSError, UnicodeDecodeError) as error:
        raise RunFileError(f"{path} cannot be read ({error}).") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise RunFileError(
            f"{path} is damaged ({len(text.encode())} bytes, not valid JSON: {error}); the "
            "process was probably killed while writing it. Restore it from a backup, or "
            "delete the run directory and train again."
        ) from None


def read_json_or_none(path: str | os.PathLike) -> Any:
    """`read_json`, or None when the file is missing or damaged."""
    try:
        return read_json(path)
    except RunFileError:
        return None


def save_model(model: keras.Model, path: str | os.PathLike) -> Path:
    """Save ``model`` to ``path`` atomically.

    Args:
        model: The model to save.
        path: Destination; must end in ``.keras``.

    Returns:
        The destination path.
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"model files must end in .keras, got {path}")
    with atomic_path(path) as temporary:
        model.save(temporary)
    return path


def check_model_file(path: str | os.PathLike) -> Path:
    """Raise `ModelFileError` unless ``path`` looks like a complete ``.keras`` file.

    Args:
        path: The file to check.

    Returns:
        The path, when it passes.
    """
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"No model file at {path}. Train a model first, or check the path.")
    if path.is_dir():
        raise ModelFileError(f"{path} is a folder, not a .keras model file.")
    size = path.stat().st_size
    if not zipfile.is_zipfile(path):
        raise ModelFileError(
            f"{path} is not a valid Keras model file ({size} bytes): a .keras file is a "
            "zip archive, and this one is truncated, corrupt or of another format. "
            "Re-train the model or restore the file from a backup."
        )
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        if "config.json" not in names:
            raise ModelFileError(
                f"{path} is a zip archive but not a Keras model (no config.json inside)."
            )
        damaged = archive.testzip()
        if damaged is not None:
            raise ModelFileError(
                f"{path} is corrupt: {damaged} inside it fails its checksum. "
                "Re-train the model or restore the file from a backup."
            )
    return path


def load_model(path: str | os.PathLike, compile: bool = True) -> keras.Model:  # noqa: A002
    """Load a ``.keras`` model, or raise `ModelFileError` saying what is wrong.

    Args:
        path: The ``.keras`` file.
        compile: Whether to restore the optimizer and loss (not needed for
            inference).

    Returns:
        The loaded model.
    """
    import keras  # TensorFlow's start-up (seconds), only when a model is loaded

    path = check_model_file(path)
    _import_layer_modules(path)
    try:
        return keras.saving.load_model(path, compile=compile)
    except Exception as error:  # Keras raises many types; all mean "cannot load".
        raise ModelFileError(f"Could not load the model in {path}: {error}") from error


# Custom layers of this repository are found by Keras only once their module is imported
# (the import runs their @register_keras_serializable). The model file names each module.
_OWN_MODULE = re.compile(r'"module": "((?:projects|shared)(?:\.\w+)+)"')


def _import_layer_modules(path: Path) -> None:
    """Import this repository's modules that define layers used in the ``.keras`` file."""
    with zipfile.ZipFile(path) as archive:
        config = archive.read("config.json").decode("utf-8", errors="replace")
    for module in sorted(set(_OWN_MODULE.findall(config))):
        importlib.import_module(module)


# The inference command of each project, for messages and the end of a training run.
INFERENCE_MODULES = {
    "xor_mlp": "projects.xor_mlp.predict",
    "stock_lstm": "projects.stock_lstm.forecast",
    "shakespeare": "projects.shakespeare.generate",
    "cifar_cnn": "projects.cifar_cnn.predict",
}


@dataclasses.dataclass(frozen=True)
class FinishedRunFiles:
    """A finished run's settings and metrics, and where the model asked for is.

    The model file itself is checked where it is read (`load_model`, or
    `check_model_file` before TensorFlow loads).
    """

    path: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    model_file: Path


def finished_run_files(
    run_dir: str | os.PathLike, which: str = "model", inference: str = ""
) -> FinishedRunFiles:
    """Check that ``run_dir`` holds a finished, usable run, reading only its JSON files.

    What `shared.runs.load_run` checks before it loads the model, without
    TensorFlow, so an inference command can refuse a bad run in a second.

    Args:
        run_dir: The run directory (``runs/<project>/latest`` works).
        which: ``model`` for ``model.keras`` (the epoch ``--keep`` chose), ``best``
            for the best validation epoch, ``last`` for the last epoch.
        inference: The calling inference module (e.g. ``projects.xor_mlp.predict``);
            a run of another project than the module's is then refused, naming
            the module to use.

    Returns:
        The run's `FinishedRunFiles`.

    Raises:
        RunError: The folder is missing, is not a finished run, is another
            project's run, or holds a diverged run.
        RunFileError: Its config.json or metrics.json is damaged.
    """
    if which not in ("model", "best", "last"):
        raise ValueError(f"which must be 'model', 'best' or 'last', got {which!r}")
    path = Path(run_dir)
    if not path.is_dir():
        raise RunError(no_run_directory(str(path)))
    config_file = path / "config.json"
    if not config_file.exists():
        raise RunError(f"{path} is not a run directory (it has no config.json).")
    config = read_json(config_file)
    project = config.get("project") if isinstance(config, dict) else None
    if (
        inference
        and project in INFERENCE_MODULES
        and not inference.startswith(f"projects.{project}.")
    ):
        raise RunError(
            f"{path} is a {project} run; use python -m {INFERENCE_MODULES[project]} "
            f"--run-dir {path}"
        )
    metrics_file = path / "metrics.json"
    if not metrics_file.exists():
        raise RunError(
            f"{path} holds an unfinished run (no metrics.json). Re-run its training "
            "command to resume it, or choose another run."
        )
    metrics = read_json(metrics_file)
    if metrics.get("status") == "diverged":
        raise RunError(
            f"{path} holds a run whose training diverged (its loss became NaN or infinite); "
            "it has no usable model. Train again with a lower --learning-rate."
        )
    # model.keras holds the epoch --keep chose; the other one has its own file.
    kept = config.get("keep", "best") if isinstance(config, dict) else "best"
    model_file = path / ("model.keras" if which in ("model", kept) else f"{which}.keras")
    return FinishedRunFiles(path, config, metrics, model_file)
