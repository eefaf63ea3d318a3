"""The run contract under SIGKILL at every step of an epoch's commit, and damaged run files.

Each kill test starts a real training process that SIGKILLs itself right after
one step of `RunCheckpoint` (or half-way through writing a model file), then
resumes the same run, as a user would after a crash, and checks that the
finished run has every epoch exactly once, a best model that matches its
history, no leftover temporary files, and the weights an uninterrupted run ends
with. The resumed run trains in this process (the same ``main`` the command line
calls): a fresh process would only add TensorFlow's start-up time. The
command-line resume is tested in test_cli.py (after a Ctrl-C), and the
command line's refusal of a damaged backup here.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from projects.xor_mlp.config import XorConfig
from projects.xor_mlp.train import main as train_xor
from shared.callbacks import BackupError
from shared.runs import RunError, load_run
from shared.saving import RunFileError
from tests.helpers import REPO_ROOT, run_module

EPOCHS = 4
XOR_FLAGS = ["--quick", "--epochs", str(EPOCHS), "--numpy-epochs", "20"]
SAME_AS_FLAGS = dict(quick=True, epochs=EPOCHS, repeats=16, numpy_epochs=20)

# Runs training, and SIGKILLs the process right after the N-th call of one function.
KILLING_DRIVER = textwrap.dedent(
    """
    import os, signal, sys

    import keras

    from projects.xor_mlp.config import XorConfig
    from shared import callbacks
    from shared.cli import run_training_cli

    owner_name, function_name, kill_at_call = sys.argv[1], sys.argv[2], int(sys.argv[3])
    owner = {"RunCheckpoint": callbacks.RunCheckpoint, "Model": keras.Model}[owner_name]
    original = getattr(owner, function_name)
    calls = 0

    def and_then_die(*args, **kwargs):
        global calls
        result = original(*args, **kwargs)
        calls += 1
        if calls == kill_at_call:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(owner, function_name, and_then_die)
    from projects.xor_mlp.train import main

    run_training_cli(main, XorConfig, sys.argv[4:])
    """
)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The weights at the end of the same run, trained without a kill."""
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    train_xor(XorConfig(run_dir=str(run_dir), **SAME_AS_FLAGS))
    return load_run(run_dir, which="last").model.get_weights()


def rows_of(history_csv) -> list[dict]:
    with open(history_csv, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize(
    ("owner", "step", "call"),
    [
        ("RunCheckpoint", "_save_weights", 2),  # state of epoch 2 written, not committed
        ("RunCheckpoint", "_save_best_candidate", 2),  # best candidate written, not committed
        ("RunCheckpoint", "_commit", 2),  # committed, history.csv and best.keras not updated
        ("RunCheckpoint", "_commit", EPOCHS),  # the same in the last epoch: nothing to re-train
        ("RunCheckpoint", "_publish_best", 2),  # best.keras moved, history.csv not updated
        ("RunCheckpoint", "_publish_history", 3),  # history.csv written, old files not deleted
        ("Model", "save", 2),  # a model's temporary file written, not yet renamed
    ],
)
def test_a_kill_at_any_step_of_an_epoch_leaves_a_consistent_run(
    tmp_path, caplog, uninterrupted, owner, step, call
):
    driver = tmp_path / "driver.py"
    driver.write_text(KILLING_DRIVER)
    run_dir = tmp_path / "run"
    flags = [*XOR_FLAGS, "--run-dir", str(run_dir)]
    killed = subprocess.run(
        [sys.executable, str(driver), owner, step, str(call), *flags],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (run_dir / "metrics.json").exists()

    with caplog.at_level(logging.INFO):
        train_xor(XorConfig(run_dir=str(run_dir), **SAME_AS_FLAGS))
    assert "Resuming the interrupted run" in caplog.text

    rows = rows_of(run_dir / "history.csv")
    assert [int(row["epoch"]) for row in rows] == list(range(EPOCHS))
    best = json.loads((run_dir / "best.json").read_text())
    val_losses = [float(row["val_loss"]) for row in rows]
    assert best["value"] == min(val_losses)
    assert best["epoch"] == val_losses.index(min(val_losses))
    assert not list(run_dir.rglob(".tmp-*")), "temporary files left behind"
    assert not (run_dir / "backup").exists()
    assert {"model.keras", "last.keras"} <= {path.name for path in run_dir.iterdir()}
    load_run(run_dir)  # the kept model loads, with finite weights
    # The resumed run continued where the killed one stopped, optimizer state and
    # learning-rate step included (the data order is fixed), so it ends where an
    # uninterrupted run ends.
    resumed_weights = load_run(run_dir, which="last").model.get_weights()
    for resumed_weight, expected in zip(resumed_weights, uninterrupted, strict=True):
        np.testing.assert_allclose(resumed_weight, expected, rtol=1e-6, atol=1e-7)


@pytest.fixture(scope="module")
def killed_after_two_epochs(tmp_path_factory):
    """A run directory as left by a process SIGKILLed after its second epoch."""
    folder = tmp_path_factory.mktemp("killed")
    driver = folder / "driver.py"
    driver.write_text(KILLING_DRIVER)
    run_dir = folder / "run"
    subprocess.run(
        [sys.executable, str(driver), "RunCheckpoint", "_publish_history", "2"]
        + [*XOR_FLAGS, "--run-dir", str(run_dir)],
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert (run_dir / "backup" / "state.json").exists()
    return run_dir


@pytest.fixture
def interrupted_xor_run(killed_after_two_epochs, tmp_path):
    """A copy of that killed run for one test to damage or resume, and its flags."""
    run_dir = tmp_path / "run"
    shutil.copytree(killed_after_two_epochs, run_dir)
    return run_dir, [*XOR_FLAGS, "--run-dir", str(run_dir)]


def test_damaged_run_files_are_repaired_or_reported_in_one_line(interrupted_xor_run, caplog):
    run_dir, flags = interrupted_xor_run
    # best.json and history.csv are derived from the committed state: an empty one is
    # rewritten on resume.
    (run_dir / "best.json").write_text("")
    (run_dir / "history.csv").write_text("")
    state = (run_dir / "backup" / "state.json").read_text()
    # A damaged commit record cannot be repaired: a clear message, no traceback.
    (run_dir / "backup" / "state.json").write_text(state[:40])
    refused = run_module("projects.xor_mlp.train", *flags)
    assert refused.returncode == 2
    assert "Traceback" not in refused.stderr
    assert "the backup in" in refused.stderr and "cannot be read" in refused.stderr
    assert "Delete that folder" in refused.stderr

    (run_dir / "backup" / "state.json").write_text(state)
    with caplog.at_level(logging.INFO):
        train_xor(XorConfig(run_dir=str(run_dir), **SAME_AS_FLAGS))
    assert "Resuming the interrupted run" in caplog.text
    assert [int(row["epoch"]) for row in rows_of(run_dir / "history.csv")] == [0, 1, 2, 3]
    assert json.loads((run_dir / "best.json").read_text())["monitor"] == "val_loss"


def test_a_damaged_config_or_metrics_json_gets_a_clear_error(tmp_path):
    run_dir = tmp_path / "run"
    train_xor(XorConfig(run_dir=str(run_dir), epochs=2, repeats=16, numpy_epochs=20))
    (run_dir / "metrics.json").write_text('{"accuracy": 1.0,')
    with pytest.raises(RunFileError, match=r"metrics.json is damaged \(17 bytes, not valid JSON"):
        load_run(run_dir)
    predicted = run_module("projects.xor_mlp.predict", "--run-dir", str(run_dir), "1", "0")
    assert predicted.returncode == 2 and "Traceback" not in predicted.stderr
    assert "metrics.json is damaged" in predicted.stderr

    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.json").write_text("")
    with pytest.raises(RunFileError, match="config.json is damaged"):
        train_xor(XorConfig(run_dir=str(unfinished), epochs=1))


def test_a_damaged_state_file_in_a_python_call_raises_backup_error(interrupted_xor_run):
    run_dir, _ = interrupted_xor_run
    (run_dir / "backup" / "state.json").write_text("{")
    with pytest.raises(BackupError, match="cannot be read"):
        train_xor(XorConfig(run_dir=str(run_dir), **SAME_AS_FLAGS))


def test_a_finished_run_is_still_refused_after_a_resume(interrupted_xor_run):
    run_dir, _ = interrupted_xor_run
    train_xor(XorConfig(run_dir=str(run_dir), **SAME_AS_FLAGS))  # the resume finishes it
    with pytest.raises(RunError, match="already holds a finished run"):
        train_xor(XorConfig(run_dir=str(run_dir), **SAME_AS_FLAGS))
