"""Helpers shared by the tests."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_module(
    module: str, *args: str, timeout: float = 300, **kwargs
) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` from the repository root, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        **kwargs,
    )


def history_epochs(history_csv: Path) -> list[int]:
    """Epoch numbers logged in a run's history.csv ([] before the first epoch ends)."""
    if not history_csv.exists():
        return []
    with open(history_csv) as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def kill_after_first_epoch(module: str, args: list[str], run_dir: Path) -> None:
    """Start ``python -m module args`` and SIGKILL it as soon as an epoch is logged."""
    process = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 180
    while not history_epochs(run_dir / "history.csv") and time.monotonic() < deadline:
        assert process.poll() is None, "training ended before it could be killed"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()


# Runs the rest of its command line with SIGINT's default meaning, then execs it.
_RESTORE_CTRL_C = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def as_terminal_job(command: list[str]) -> list[str]:
    """``command`` as a terminal's foreground job gets it: Ctrl-C not ignored.

    A shell starts background jobs (``cmd &``, often CI's) with SIGINT ignored, exec
    keeps that, and Python then leaves it ignored: a Ctrl-C test run that way would
    test a process that cannot be interrupted.
    """
    return [sys.executable, "-c", _RESTORE_CTRL_C, *command]
