"""Several trainings in a row, each in a fresh process, resumable: comparisons and tours.

    finished_or_train("projects.cifar_cnn.train", ["--model", "vgg"], Path("runs/tour/vgg"))

trains unless the run directory already holds a finished run, so a comparison
that was stopped continues where it stopped. A fresh process per run keeps the
runs independent (no TensorFlow state, precision policy or memory shared) and
is what a user would type.
"""

from __future__ import annotations

import csv
import logging
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from shared.errors import UserError
from shared.launch import stop_after_ctrl_c
from shared.saving import atomic_path

log = logging.getLogger(__name__)


class SweepError(UserError):
    """One training of a sweep failed."""


def finished_or_train(module: str, arguments: Sequence[str], run_dir: Path) -> None:
    """Run ``python -m module arguments --run-dir run_dir`` unless that run finished before.

    The training's output goes to this process's stderr, so stdout can carry a
    table.

    Raises:
        SweepError: The training exited with an error; the message names its log.
    """
    if (run_dir / "metrics.json").exists():
        log.info("%s: finished before, reused", run_dir)
        return
    command = [sys.executable, "-m", module, *arguments, "--run-dir", str(run_dir)]
    log.info("%s: %s", run_dir.name, " ".join(command[1:]))
    training = subprocess.Popen(command, stdout=sys.stderr)
    try:
        returncode = training.wait()
    except KeyboardInterrupt:
        stop_after_ctrl_c([training])
        log.error(
            "Interrupted during %s. Re-run this command to continue: finished runs are "
            "reused, and %s resumes from its last completed epoch (if it completed one).",
            run_dir.name,
            run_dir.name,
        )
        raise
    if returncode == 0:
        return
    train_log = run_dir / "train.log"
    its_log = f"its log is {train_log}. " if train_log.exists() else ""
    if returncode == 2:  # the training's own one-line error, printed just above
        raise SweepError(
            f"training {run_dir.name} stopped on the error above (exit 2); {its_log}"
            "Fix what it names and re-run this command."
        )
    raise SweepError(
        f"training {run_dir.name} failed (exit {returncode}); {its_log}"
        "Re-run this command to continue from there."
    )


def read_history(run_dir: Path) -> list[dict[str, float]]:
    """The rows of a run's ``history.csv`` as numbers (empty cells dropped)."""
    with open(run_dir / "history.csv", newline="") as handle:
        return [
            {key: float(value) for key, value in row.items() if value not in ("", None)}
            for row in csv.DictReader(handle)
        ]


def examples_trained(history: list[dict[str, float]]) -> tuple[float, float]:
    """``(examples, seconds)`` of training over all epochs, from the logged rates."""
    seconds = sum(row["epoch_seconds"] for row in history)
    examples = sum(row["examples_per_second"] * row["epoch_seconds"] for row in history)
    return examples, seconds


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as temporary:
        Path(temporary).write_text(text)
    return path
