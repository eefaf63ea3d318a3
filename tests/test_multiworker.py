"""Multi-worker training: TF_CONFIG parsing, the launcher, 2 localhost workers, resume."""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from projects.stock_lstm.config import StockConfig
from projects.stock_lstm.train import main as train_stock
from projects.xor_mlp.config import XorConfig
from projects.xor_mlp.train import main as train_xor
from shared.distribute import ClusterError, select_strategy, worker_count, worker_role
from shared.launch import free_ports, tf_config
from shared.runs import worker_scratch_dir
from tests.helpers import REPO_ROOT, as_terminal_job, history_epochs

XOR_SETTINGS = dict(seed=3, epochs=4, batch_size=16, repeats=16, numpy_epochs=10)
STOCK_SETTINGS = dict(StockConfig.QUICK, seed=1)


def flags(settings: dict) -> list[str]:
    return [f"--{key.replace('_', '-')}={value}" for key, value in settings.items()]


def launch(tmp_path: Path, module: str, *args: str, workers: int = 2, **popen):
    """``python -m shared.launch --workers N -- python -m module args`` (scratch in tmp_path)."""
    command = [sys.executable, "-m", "shared.launch", "--workers", str(workers), "--"]
    command += [sys.executable, "-m", module, "--strategy", "multiworker", *args]
    if popen.pop("terminal_job", False):
        command = as_terminal_job(command)
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp"), "PYTHONUNBUFFERED": "1"}
    (tmp_path / "tmp").mkdir(exist_ok=True)
    if popen.pop("background", False):
        return subprocess.Popen(command, cwd=REPO_ROOT, env=env, text=True, **popen)
    return subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def scratch(tmp_path: Path, run_dir: Path, index: int) -> Path:
    """Worker ``index``'s scratch folder in a launch made by `launch` (TMPDIR=tmp_path/tmp)."""
    return worker_scratch_dir(run_dir, index, temp_root=tmp_path / "tmp")


def assert_same_weights(left: Path, right: Path, rtol=0.0, atol=0.0) -> None:
    weights_left = keras.models.load_model(left, compile=False).get_weights()
    weights_right = keras.models.load_model(right, compile=False).get_weights()
    for a, b in zip(weights_left, weights_right, strict=True):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


def test_tf_config_parsing(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert worker_count() == 1 and worker_role() == (True, 0)
    ports = free_ports(3)
    assert len(set(ports)) == 3
    monkeypatch.setenv("TF_CONFIG", tf_config(ports, 2))
    assert json.loads(os.environ["TF_CONFIG"])["cluster"]["worker"][2] == f"localhost:{ports[2]}"
    assert worker_count() == 3 and worker_role() == (False, 2)
    monkeypatch.setenv("TF_CONFIG", tf_config(ports, 0))
    assert worker_role() == (True, 0)
    chief_cluster = {"chief": ["a:1"], "worker": ["b:1", "c:1"]}
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": chief_cluster, "task": {"type": "worker", "index": 0}})
    )
    assert worker_count() == 3 and worker_role() == (False, 0)
    for broken in ("not json", '{"task": {"type": "worker", "index": 5}}'):
        monkeypatch.setenv("TF_CONFIG", broken)
        with pytest.raises(ClusterError, match="TF_CONFIG"):
            worker_role()


def test_multiworker_without_tf_config_explains_how_to_launch(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ClusterError, match="python -m shared.launch"):
        select_strategy("multiworker")


def test_launcher_needs_a_command():
    result = subprocess.run(
        [sys.executable, "-m", "shared.launch", "--workers", "2"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "give the training command after --" in result.stderr


def _launcher(*args: str, **run) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shared.launch", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        **run,
    )


def test_launcher_refuses_a_command_it_cannot_run():
    result = _launcher("--workers", "2", "--", "pythn", "-m", "projects.xor_mlp.train")
    assert result.returncode == 2
    assert "pythn: not found or not executable" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_worker_that_cannot_start_stops_the_launch(tmp_path):
    # On PATH and executable, but not a program: exec fails with "Exec format error".
    not_a_program = tmp_path / "train"
    not_a_program.write_bytes(b"\x00\x01 not an executable format")
    not_a_program.chmod(0o755)
    result = _launcher("--workers", "2", "--", str(not_a_program))
    assert result.returncode == 1
    assert "cannot start worker 0 (Exec format error" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_more_workers_than_open_files_allow_is_a_clear_error():
    def few_open_files():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    result = _launcher("--workers", "100", "--", "true", preexec_fn=few_open_files)
    assert result.returncode == 1
    assert "cannot reserve 100 free localhost ports (Too many open files)" in result.stderr
    assert "use fewer --workers" in result.stderr
    assert "Traceback" not in result.stderr


def test_two_workers_train_the_stock_forecaster_like_one_process(tmp_path):
    run_dir = tmp_path / "run"
    cache = ["--cache-dir", str(tmp_path / "cache")]
    result = launch(
        tmp_path,
        "projects.stock_lstm.train",
        *flags(STOCK_SETTINGS),
        *cache,
        "--run-dir",
        str(run_dir),
    )
    assert result.returncode == 0, result.stdout[-3000:]
    for name in ("config.json", "metrics.json", "history.csv", "model.keras", "last.keras"):
        assert (run_dir / name).exists(), name
    assert_same_weights(run_dir / "model.keras", scratch(tmp_path, run_dir, 1) / "model.keras")

    single = train_stock(
        StockConfig(
            strategy="default",
            run_dir=str(tmp_path / "one"),
            cache_dir=str(tmp_path / "cache"),
            **STOCK_SETTINGS,
        )
    )
    multi = json.loads((run_dir / "metrics.json").read_text())
    np.testing.assert_allclose(
        multi["test"]["model"]["rmse"], single["test"]["model"]["rmse"], rtol=1e-4
    )
    assert_same_weights(run_dir / "model.keras", tmp_path / "one" / "model.keras", 1e-4, 1e-5)


def test_an_invalid_loss_stops_training_on_every_worker(tmp_path):
    # A learning rate of 1e30 sends the forecaster's weights to ~1e30 after one
    # Adam step, so its squared error overflows float32 within the first epoch.
    run_dir = tmp_path / "run"
    settings = dict(STOCK_SETTINGS, epochs=4, patience=50, learning_rate=1e30)
    result = launch(
        tmp_path,
        "projects.stock_lstm.train",
        *flags(settings),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--run-dir",
        str(run_dir),
    )
    # Both workers stopped at the same batch and got to the end of the run (a worker
    # that kept training would wait forever for the other in an all-reduce), where
    # the diverged run is reported as a failure, not saved as a usable model.
    assert result.returncode == 2, result.stdout[-3000:]
    assert "exited with 2" in result.stdout + (result.stderr or "")
    assert "error: training diverged" in result.stdout
    stops = {}
    for line in result.stdout.splitlines():
        if "Training stopped: the loss became" in line:
            worker = line.split("]")[0] + "]"
            stops[worker] = line.split("loss became ")[1].split(".")[0]
    assert set(stops) == {"[worker 0]", "[worker 1]"}, result.stdout[-3000:]
    assert stops["[worker 0]"] == stops["[worker 1]"]

    done = history_epochs(run_dir / "history.csv")
    assert done == [0], "training should stop in the epoch where the loss overflowed"
    history = np.genfromtxt(run_dir / "history.csv", delimiter=",", names=True)
    assert not np.all(np.isfinite(np.atleast_1d(history["loss"])))
    # The run still ends properly on the chief, marked diverged, with no model: no
    # epoch was good enough for a best model, and the last one is NaN.
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "diverged"
    assert not list(run_dir.glob("*.keras"))
    assert not (run_dir / "backup").exists()


def _worker_pid(launcher_pid: int, index: int) -> int | None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environment = (entry / "environ").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if parent == launcher_pid and f'"index": {index}}}'.encode() in environment:
            return int(entry.name)
    return None


def test_a_killed_worker_stops_the_launch_and_the_relaunch_ends_like_one_process(tmp_path):
    # One launch checks both: a worker killed after the first epoch stops the launch,
    # and the relaunch resumes and ends exactly where a one-process run ends.
    run_dir = tmp_path / "run"
    settings = dict(XOR_SETTINGS, epochs=6)
    args = [*flags(settings), "--run-dir", str(run_dir)]
    launcher = launch(
        tmp_path,
        "projects.xor_mlp.train",
        *args,
        background=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 300
    while not history_epochs(run_dir / "history.csv") and time.monotonic() < deadline:
        assert launcher.poll() is None, "training ended before a worker could be killed"
        time.sleep(0.05)
    victim = _worker_pid(launcher.pid, 1)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    _, stderr = launcher.communicate(timeout=120)
    assert launcher.returncode != 0
    assert "worker 1 was killed by signal 9; stopping the other workers" in stderr
    done = history_epochs(run_dir / "history.csv")
    assert 1 <= len(done) < settings["epochs"]
    assert not (run_dir / "metrics.json").exists()

    resumed = launch(tmp_path, "projects.xor_mlp.train", *args)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert "Resuming the interrupted run" in resumed.stdout
    assert "[worker 0]" in resumed.stdout and "[worker 1]" in resumed.stdout
    assert "launch: all 2 workers finished." in resumed.stdout
    # The workers' collective calls outside fit (state sync, end barrier) run as
    # tf.functions: eagerly, TensorFlow logs a warning about each one's overhead.
    assert "eagerly" not in resumed.stdout
    # Only the chief wrote the run directory, and it is complete.
    for name in ("config.json", "metrics.json", "history.csv", "model.keras", "last.keras"):
        assert (run_dir / name).exists(), name
    assert (run_dir / "plots" / "training_curves.png").exists()
    assert not (run_dir / "backup").exists()
    worker_dir = scratch(tmp_path, run_dir, 1)
    assert worker_dir.is_dir() and run_dir not in worker_dir.parents
    assert history_epochs(run_dir / "history.csv") == list(range(settings["epochs"]))
    # Both workers end with the same weights, and those of one process trained throughout.
    assert_same_weights(run_dir / "model.keras", worker_dir / "model.keras")
    single = train_xor(XorConfig(strategy="default", run_dir=str(tmp_path / "one"), **settings))
    multi = json.loads((run_dir / "metrics.json").read_text())
    np.testing.assert_allclose(
        multi["mlp"]["probabilities"], single["mlp"]["probabilities"], rtol=1e-5, atol=1e-6
    )
    history_multi = np.genfromtxt(run_dir / "history.csv", delimiter=",", names=True)
    history_single = np.genfromtxt(tmp_path / "one" / "history.csv", delimiter=",", names=True)
    np.testing.assert_allclose(history_multi["loss"], history_single["loss"], rtol=1e-5)
    assert_same_weights(run_dir / "model.keras", tmp_path / "one" / "model.keras", 1e-5, 1e-6)


def test_ctrl_c_stops_every_worker_and_only_the_chief_says_how_to_resume(tmp_path):
    run_dir = tmp_path / "run"
    # Epochs of a few seconds, so the terminal's Ctrl-C lands mid-run.
    settings = dict(XOR_SETTINGS, epochs=3, repeats=1024)
    launcher = launch(
        tmp_path,
        "projects.xor_mlp.train",
        *flags(settings),
        "--run-dir",
        str(run_dir),
        background=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, as a terminal's foreground job
        terminal_job=True,
    )
    deadline = time.monotonic() + 300
    while not history_epochs(run_dir / "history.csv") and time.monotonic() < deadline:
        assert launcher.poll() is None, "training ended before Ctrl-C could be pressed"
        time.sleep(0.05)
    os.killpg(launcher.pid, signal.SIGINT)  # the terminal signals the launcher and its workers
    stdout, stderr = launcher.communicate(timeout=120)
    assert launcher.returncode == 130, stdout[-3000:] + stderr[-1000:]
    assert "launch: interrupted; the workers are stopped." in stderr
    assert "Traceback" not in stdout + stderr, stdout[-3000:]
    # Worker 1's run directory is a scratch copy: only the chief names the one to resume.
    assert "[worker 1] Training interrupted (worker 1); the chief says how to resume." in (
        re.sub(r"\[worker 1\] [0-9:]+ ", "[worker 1] ", stdout)
    ), stdout[-3000:]
    assert f"Completed epochs are kept in {run_dir}; to resume from the last one, start every" in (
        stdout
    ), stdout[-3000:]
    assert stdout.count("Completed epochs are kept in") == 1


TIMED_ON_EACH_WORKER = """
import json, pathlib, tempfile
from shared.budget import budgeted_epochs
from shared.distribute import select_strategy, worker_role
strategy = select_strategy("multiworker")
_, index = worker_role()
run_dir = pathlib.Path(tempfile.mkdtemp())
if index == 1:  # a plan from an earlier start that worker 0 has lost
    (run_dir / "budget.json").write_text(
        json.dumps({"minutes": 10, "seconds_per_epoch": 77.0, "epochs": 7})
    )
# Worker 0 times 100 s per epoch, worker 1 200 s: alone, 10 minutes would fit 5 and 2.
epochs, seconds = budgeted_epochs(run_dir, 10, lambda: 100.0 * (index + 1), strategy=strategy)
print("PLANNED", epochs, "EPOCHS OF", seconds, "S")
"""


def test_workers_that_time_different_epochs_plan_the_same_ones(tmp_path):
    # Each worker of a --minutes run times its own steps; planning from different figures
    # could give them different epochs (or CIFAR widths), and the worker with more would
    # wait forever in its next step for the one that stopped. Likewise, a worker that
    # kept its recorded plan while another timed again would leave that one waiting.
    command = [sys.executable, "-m", "shared.launch", "--workers", "2", "--"]
    command += [sys.executable, "-c", TIMED_ON_EACH_WORKER]
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    result = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "[worker 0] PLANNED 3 EPOCHS OF 150.0 S" in result.stdout  # 540 s // 150 s
    assert "[worker 1] PLANNED 3 EPOCHS OF 150.0 S" in result.stdout


UNPATCHED_FIT = """
import numpy as np, tensorflow as tf, keras
strategy = tf.distribute.MultiWorkerMirroredStrategy()
with strategy.scope():
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile("sgd", "mse")
data = tf.data.Dataset.from_tensor_slices((np.ones((8, 2), "float32"), np.ones((8, 1), "float32")))
model.fit(data.batch(4), epochs=1, verbose=0)
print("UNPATCHED FIT WORKED")
"""


def test_keras_multiworker_fit_still_needs_our_patch(tmp_path):
    """When this fails, keras-team/keras#20585 is fixed: delete shared/keras_patches.py."""
    command = [sys.executable, "-m", "shared.launch", "--workers", "2", "--"]
    command += [sys.executable, "-c", UNPATCHED_FIT]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    # The launcher echoes the command, so look for the line a worker would print.
    assert "] UNPATCHED FIT WORKED" not in result.stdout, (
        "Keras's fit now works under MultiWorkerMirroredStrategy without shared/keras_patches.py"
    )
    assert result.returncode != 0
    assert "Attempt to convert a value (PerReplica" in result.stdout
