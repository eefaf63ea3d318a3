"""Run directories: contents, latest link, resume rules, reproducibility, load_run errors."""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from projects.xor_mlp.config import XorConfig
from projects.xor_mlp.train import main as train_xor
from shared.callbacks import standard_callbacks
from shared.runs import RunError, load_run
from shared.saving import ModelFileError
from shared.sweep import SweepError, finished_or_train
from tests.helpers import REPO_ROOT, as_terminal_job, history_epochs

QUICK = dict(epochs=3, repeats=16, numpy_epochs=50)


def test_a_run_directory_describes_itself(tmp_path):
    run_dir = tmp_path / "run"
    metrics = train_xor(XorConfig(run_dir=str(run_dir), **QUICK))

    expected = {
        "config.json",
        "versions.json",
        "history.csv",
        "metrics.json",
        "timing.json",
        "model.keras",
        "last.keras",
        "best.json",
        "train.log",
        "tensorboard",
        "plots",
    }
    assert expected <= {path.name for path in run_dir.iterdir()}
    assert not (run_dir / "backup").exists()  # removed once training completed

    config = json.loads((run_dir / "config.json").read_text())
    assert config["project"] == "xor_mlp" and config["epochs"] == 3 and config["seed"] == 0
    versions = json.loads((run_dir / "versions.json").read_text())
    assert versions["tensorflow"].startswith("2.") and versions["keras"].startswith("3.")
    assert versions["python"].startswith("3.")
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics

    with open(run_dir / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["epoch"]) for row in rows] == [0, 1, 2]
    assert all(float(row["examples_per_second"]) > 0 for row in rows)
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "epoch_seconds"} <= set(rows[0])
    timing = json.loads((run_dir / "timing.json").read_text())
    # Training time without the validation passes, as papers report it.
    assert 0 < timing["validation_seconds_sum"] < timing["epoch_seconds_sum"]
    assert timing["training_seconds"] == pytest.approx(
        timing["epoch_seconds_sum"] - timing["validation_seconds_sum"]
    )

    events = list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event files"
    for png in ["training_curves.png", "decision_boundary.png"]:
        assert (run_dir / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log_text = (run_dir / "train.log").read_text()
    assert "Run directory" in log_text and " training, " in log_text

    best = json.loads((run_dir / "best.json").read_text())
    val_losses = [float(row["val_loss"]) for row in rows]
    assert best["epoch"] == int(np.argmin(val_losses))
    assert not list(run_dir.rglob(".tmp-*"))


def test_default_run_directory_is_timestamped_and_latest_points_to_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train_xor(XorConfig(**QUICK))
    train_xor(XorConfig(**QUICK))
    runs = sorted(p for p in (tmp_path / "runs" / "xor_mlp").iterdir() if p.name != "latest")
    assert len(runs) == 2
    latest = tmp_path / "runs" / "xor_mlp" / "latest"
    assert latest.is_symlink()
    assert latest.resolve() == runs[-1].resolve()
    assert load_run(latest).config["run_dir"] == str(runs[-1].relative_to(tmp_path))


def test_same_seed_gives_identical_metrics_json(tmp_path):
    train_xor(XorConfig(run_dir=str(tmp_path / "a"), seed=11, **QUICK))
    train_xor(XorConfig(run_dir=str(tmp_path / "b"), seed=11, **QUICK))
    train_xor(XorConfig(run_dir=str(tmp_path / "c"), seed=12, **QUICK))
    first = (tmp_path / "a" / "metrics.json").read_bytes()
    assert first == (tmp_path / "b" / "metrics.json").read_bytes()
    assert first != (tmp_path / "c" / "metrics.json").read_bytes()


def test_a_finished_run_directory_is_not_overwritten(tmp_path):
    config = XorConfig(run_dir=str(tmp_path / "run"), **QUICK)
    train_xor(config)
    model_bytes = (tmp_path / "run" / "model.keras").read_bytes()
    with pytest.raises(RunError, match="already holds a finished run"):
        train_xor(config)
    assert (tmp_path / "run" / "model.keras").read_bytes() == model_bytes


def test_resuming_with_other_settings_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(
        json.dumps({"project": "xor_mlp", **XorConfig(**QUICK).to_dict()})
    )
    (run_dir / "history.csv").write_text("epoch,loss\n0,0.69\n")  # an epoch completed
    with pytest.raises(RunError, match=r"other settings \(hidden_units: 8 -> 4\)"):
        train_xor(XorConfig(run_dir=str(run_dir), hidden_units=4, **QUICK))


def test_a_run_that_failed_on_bad_input_restarts_with_corrected_flags(tmp_path, caplog):
    from projects.stock_lstm.config import StockConfig
    from projects.stock_lstm.train import main as train_stock
    from shared.prices import PriceDataError

    bad = tmp_path / "bad.csv"
    bad.write_text("Date,Close\n2020-01-02,abc\n")
    run_dir = tmp_path / "run"
    with pytest.raises(PriceDataError):
        train_stock(StockConfig(quick=True, run_dir=str(run_dir), csv=str(bad), **STOCK_QUICK))
    assert (run_dir / "config.json").exists() and not (run_dir / "history.csv").exists()

    caplog.set_level(logging.INFO)
    metrics = train_stock(StockConfig(quick=True, run_dir=str(run_dir), **STOCK_QUICK))
    assert metrics["status"] == "completed"
    assert "No epoch of the earlier attempt" in caplog.text and "csv changed" in caplog.text
    assert json.loads((run_dir / "config.json").read_text())["csv"] == ""


STOCK_QUICK = dict(epochs=1, window=20, units=8, start="2021-01-01", patience=2)


def test_load_run_errors_name_the_problem(tmp_path):
    with pytest.raises(RunError, match="No run directory at"):
        load_run(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="not a run directory"):
        load_run(tmp_path / "empty")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.json").write_text("{}")
    with pytest.raises(RunError, match="unfinished run"):
        load_run(unfinished)
    (unfinished / "metrics.json").write_text("{}")
    with pytest.raises(ModelFileError, match="No model file"):
        load_run(unfinished)


def test_load_run_returns_what_inference_needs(tmp_path):
    train_xor(XorConfig(run_dir=str(tmp_path / "run"), **QUICK))
    run = load_run(tmp_path / "run")
    assert run.config["gate"] == "xor"
    assert run.metrics["gate"] == "xor"
    assert run.model.input_shape == (None, 2)
    assert load_run(tmp_path / "run", which="best").model.output_shape == (None, 1)
    assert load_run(tmp_path / "run", which="last").model.output_shape == (None, 1)


def tiny_regression():
    inputs = keras.Input(shape=(1,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer="sgd", loss="mse")
    x = np.linspace(-1, 1, 32, dtype="float32").reshape(-1, 1)
    return model, x, 2 * x


def test_an_invalid_loss_stops_training_and_says_why(tmp_path, caplog):
    model, x, y = tiny_regression()
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=1e6), loss="mse")
    history = model.fit(
        x,
        1e20 * y,
        epochs=20,
        verbose=0,
        validation_data=(x, y),
        callbacks=standard_callbacks(tmp_path, examples_per_epoch=len(x)),
    )
    losses = history.history["loss"]
    assert len(losses) < 20
    assert not np.isfinite(losses[-1])
    assert f"Training stopped: the loss became {losses[-1]} at epoch {len(losses)}" in caplog.text
    assert "lower --learning-rate" in caplog.text


class SlowValidation(keras.callbacks.Callback):
    """Makes each validation batch take ``seconds`` longer: a pass whose length is known."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def on_test_batch_end(self, batch, logs=None):
        time.sleep(self.seconds)


def test_the_validation_pass_is_timed_apart_from_the_epoch_it_ends(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    model, x, y = tiny_regression()
    model.compile(optimizer="sgd", loss="mse")
    batches, pause = 3, 0.2
    history = model.fit(
        x,
        y,
        epochs=3,
        verbose=0,
        validation_data=(x, y),
        validation_batch_size=len(x) // batches,
        validation_freq=2,  # a validation pass in the second epoch only
        callbacks=[*standard_callbacks(tmp_path, len(x), monitor="loss"), SlowValidation(pause)],
    )
    validation = history.history["validation_seconds"]
    epochs = history.history["epoch_seconds"]
    assert validation[0] == 0 and validation[2] == 0
    assert batches * pause <= validation[1] <= epochs[1]
    assert "Epoch 2/3 took" in caplog.text and "of it validation" in caplog.text

    with open(tmp_path / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert float(rows[1]["validation_seconds"]) == pytest.approx(validation[1])


def test_the_end_of_a_run_says_where_the_plots_are_and_what_to_try(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    run_dir = tmp_path / "run"
    train_xor(XorConfig(run_dir=str(run_dir), **QUICK))
    assert f"Plots: {run_dir / 'plots'}" in caplog.text
    assert f"Try: python -m projects.xor_mlp.predict --run-dir {run_dir} 1 0" in caplog.text
    assert f"tensorboard --logdir {run_dir / 'tensorboard'}" in caplog.text


def test_a_one_epoch_training_curve_shows_its_points(tmp_path):
    from PIL import Image

    from shared.plots import plot_history

    history = tmp_path / "history.csv"
    history.write_text("epoch,loss,val_loss\n0,0.7,0.8\n")
    plot_history(history, tmp_path / "curves.png")
    pixels = np.asarray(Image.open(tmp_path / "curves.png").convert("RGB")).astype(int)
    # Matplotlib's first two colours: tab:blue (train) and tab:orange (validation).
    for colour in ((31, 119, 180), (255, 127, 14)):
        close = np.abs(pixels - np.array(colour)).sum(axis=-1) < 30
        assert close.sum() > 40, f"no visible point in colour {colour}"


def test_training_on_a_terminal_shows_the_progress_bar_and_time_left(tmp_path):
    import pty

    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "projects.xor_mlp.train",
            "--quick",
            "--run-dir",
            str(tmp_path / "r"),
        ],
        cwd=REPO_ROOT,
        stdout=terminal,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(terminal)
    _, stderr = process.communicate(timeout=300)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    assert process.returncode == 0, stderr[-2000:]
    assert "━━━━" in output.decode(errors="replace")  # Keras's progress bar
    assert "Epoch 1/3 took" in stderr and "left (done around" in stderr


def test_a_sweep_training_refused_by_its_flags_says_so_and_names_no_log(tmp_path):
    # The training's own flag check answers (exit 2) before it makes a run directory.
    run_dir = tmp_path / "tour" / "xor"
    with pytest.raises(SweepError) as refused:
        finished_or_train("projects.xor_mlp.train", ["--epochs", "0"], run_dir)
    message = str(refused.value)
    assert "training xor stopped on the error above (exit 2)" in message
    assert "Fix what it names and re-run this command." in message
    assert "train.log" not in message and "continue from there" not in message
    assert not run_dir.exists()


SWEEP_OF_ONE = """
import sys
from pathlib import Path
from shared.cli import exit_on_user_error, setup_logging
from shared.sweep import finished_or_train
setup_logging()
arguments = ["--quick", "--epochs", "3", "--repeats", "2048"]
run_dir = Path(sys.argv[1])
exit_on_user_error(lambda: finished_or_train("projects.xor_mlp.train", arguments, run_dir))
"""


def test_ctrl_c_in_a_sweep_lets_its_training_stop_and_say_how_to_resume(tmp_path):
    # subprocess.run would SIGKILL the training mid-step, silently; the terminal's Ctrl-C
    # reaches both, and the training stops at its step's end and prints its resume line.
    run_dir = tmp_path / "xor"
    sweep = subprocess.Popen(
        as_terminal_job([sys.executable, "-c", SWEEP_OF_ONE, str(run_dir)]),
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    deadline = time.monotonic() + 120
    while not history_epochs(run_dir / "history.csv") and time.monotonic() < deadline:
        assert sweep.poll() is None, "the sweep ended before Ctrl-C could be pressed"
        time.sleep(0.05)
    os.killpg(sweep.pid, signal.SIGINT)
    _, stderr = sweep.communicate(timeout=120)
    assert sweep.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert f"Training interrupted. Completed epochs are kept in {run_dir}" in stderr
    assert "Interrupted during xor. Re-run this command to continue" in stderr
    with pytest.raises(ProcessLookupError):  # the training ended with the sweep
        os.killpg(sweep.pid, 0)
