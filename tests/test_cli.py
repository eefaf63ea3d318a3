"""What a person at the command line sees: README commands, start-up, errors, Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from projects.xor_mlp.config import XorConfig
from projects.xor_mlp.train import main as train_xor
from shared.cli import filter_startup_lines
from shared.runs import RunError, TrainingDiverged, load_run
from shared.saving import INFERENCE_MODULES
from tests.helpers import REPO_ROOT, as_terminal_job, history_epochs, run_module

# ``-X importtime`` lists every import on stderr; the quiet start-up filter would hide the
# lines printed while TensorFlow loads, so these runs keep stderr verbatim.
SHOW_IMPORTS = {**os.environ, "KERAS_PROJECTS_VERBOSE": "1"}


def run_listing_imports(module: str, *args: str) -> subprocess.CompletedProcess:
    """``python -X importtime -m module args`` from the repository root, stderr unfiltered."""
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", module, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=SHOW_IMPORTS,
    )


def imported_modules(importtime_stderr: str) -> set[str]:
    """The modules a ``python -X importtime`` run imported, at any depth."""
    return {
        line.split("|")[-1].strip()
        for line in importtime_stderr.splitlines()
        if line.startswith("import time:")
    }


READMES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "projects").glob("*/README.md"))]


def readme_commands() -> tuple[set[str], set[str]]:
    """``make`` targets and ``python -m`` modules named in the READMEs' code."""
    targets, modules = set(), set()
    for readme in READMES:
        text = readme.read_text()
        code = re.findall(r"```(?:bash|sh)?\n(.*?)```", text, flags=re.S)
        code += re.findall(r"`([^`\n]+)`", text)
        for snippet in code:
            targets.update(re.findall(r"(?:^|[\s;&(])make ([a-z][a-z0-9-]*)", snippet))
            modules.update(re.findall(r"python -m ((?:projects|shared)\.[a-z_.]+)", snippet))
    return targets, modules


def makefile_targets() -> set[str]:
    text = (REPO_ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z][a-z0-9-]*):", text, flags=re.M))


def test_every_make_target_named_in_a_readme_exists():
    targets, _ = readme_commands()
    assert {"xor-mlp", "stock-lstm", "shakespeare", "cifar-cnn", "test"} <= targets
    missing = targets - makefile_targets()
    assert not missing, f"README names make targets the Makefile lacks: {sorted(missing)}"


def test_make_multiworker_names_the_projects_when_given_another():
    # Without the check, every worker failed to import projects.<name>.train.
    result = subprocess.run(
        ["make", "--no-print-directory", "multiworker", "PROJECT=cifar"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "PROJECT=cifar is not a project; choose one of: cifar_cnn shakespeare" in result.stderr
    assert "launch" not in result.stdout + result.stderr  # refused before any worker started


def makefile_modules() -> set[str]:
    """``python -m`` modules that the Makefile's targets run."""
    text = (REPO_ROOT / "Makefile").read_text()
    return set(re.findall(r"python -m ((?:projects|shared)\.[a-z_.]+)", text))


def test_every_python_module_named_in_a_readme_or_run_by_make_answers_help_without_tensorflow():
    _, modules = readme_commands()
    assert "projects.xor_mlp.predict" in modules and "projects.stock_lstm.train" in modules
    assert {"projects.shakespeare.bench", "shared.bench_scaling"} <= makefile_modules()
    for module in sorted(modules | makefile_modules()):
        result = run_listing_imports(module, "--help")
        assert result.returncode == 0, f"{module} --help failed:\n{result.stderr[-2000:]}"
        assert result.stdout.startswith(f"usage: python -m {module}"), result.stdout[:200]
        assert "tensorflow" not in imported_modules(result.stderr), f"{module} --help loads it"
        # An unknown flag is refused too, not ignored (a benchmark would run for minutes).
        result = run_listing_imports(module, "--no-such-flag")
        assert result.returncode == 2, f"{module} --no-such-flag:\n{result.stderr[-2000:]}"
        assert "--no-such-flag" in result.stderr or "required" in result.stderr, module
        assert "Traceback" not in result.stderr, module
        assert "tensorflow" not in imported_modules(result.stderr), f"{module} loads it to refuse"


def test_the_demo_refuses_a_port_that_is_not_one_before_loading_anything():
    for port, message in (("99999", "99999 is not a port: use 1 to 65535"), ("0", "0 is not")):
        result = run_listing_imports("shared.demo", "--port", port)
        assert result.returncode == 2
        assert f"argument --port: {message}" in result.stderr
        assert "Traceback" not in result.stderr
        assert not {"tensorflow", "gradio"} & imported_modules(result.stderr)


def test_the_readme_says_how_to_make_python_find_the_installed_packages():
    text = (REPO_ROOT / "README.md").read_text()
    quick_start = text[: text.index("## Projects")]
    assert "source .venv/bin/activate" in quick_start


@pytest.mark.parametrize(
    ("module", "arguments", "message"),
    [
        ("projects.stock_lstm.train", ["--epoch", "3"], "did you mean --epochs?"),
        ("projects.stock_lstm.train", ["--ticker", "../../etc"], "invalid ticker '../../etc'"),
        ("projects.stock_lstm.train", ["--tickers", "AAPL,a/b"], "invalid ticker 'A/B'"),
        ("projects.shakespeare.compare", ["--minutes", "0"], "--minutes must be positive"),
    ],
)
def test_flag_errors_are_answered_before_tensorflow_loads(module, arguments, message):
    result = run_listing_imports(module, *arguments)
    assert result.returncode == 2
    said = [line for line in result.stderr.splitlines() if not line.startswith("import time")]
    assert any("error:" in line and message in line for line in said), said
    assert "tensorflow" not in imported_modules(result.stderr)


# Every script that reads a finished run, with the other arguments it requires.
READS_A_RUN = {
    "projects.xor_mlp.predict": ["1", "0"],
    "projects.stock_lstm.forecast": [],
    "projects.shakespeare.generate": [],
    "projects.shakespeare.attention": [],
    "projects.cifar_cnn.predict": ["cat.png"],
    "projects.cifar_cnn.inspect": ["cat.png"],
    "projects.cifar_cnn.evaluate": [],
    "shared.export": ["--format", "onnx"],
}


def test_a_missing_or_unfinished_run_is_answered_before_tensorflow_loads(tmp_path):
    missing = tmp_path / "no-such-run"
    unfinished = tmp_path / "unfinished"  # as a killed training leaves it
    unfinished.mkdir()
    (unfinished / "config.json").write_text('{"project": "xor_mlp"}\n')
    answers = {
        missing: f"error: No run directory at {missing}. Train first, or pass an existing "
        "--run-dir.",
        unfinished: f"error: {unfinished} holds an unfinished run (no metrics.json). Re-run "
        "its training command to resume it, or choose another run.",
    }
    cases = [(module, run_dir) for module in READS_A_RUN for run_dir in answers]
    cases.append(("projects.cifar_cnn.predict", tmp_path))  # a folder, but not a run
    answers[tmp_path] = f"error: {tmp_path} is not a run directory (it has no config.json)."
    for module, run_dir in cases:
        result = run_listing_imports(module, "--run-dir", str(run_dir), *READS_A_RUN[module])
        assert result.returncode == 2, f"{module}: {result.stderr[-2000:]}"
        assert "tensorflow" not in imported_modules(result.stderr), f"{module} loads it first"
        said = [line for line in result.stderr.splitlines() if not line.startswith("import time")]
        assert len(said) == 1, f"{module}: {said}"
        assert said[0].endswith(answers[run_dir]), (module, said[0])


@pytest.mark.parametrize(
    ("module", "arguments", "message"),
    [
        ("projects.xor_mlp.predict", ["1", "7"], "error: inputs must be 0 or 1; not valid: '7'"),
        ("projects.shakespeare.generate", ["--length", "-1"], "--length must be 0 or more"),
        ("projects.shakespeare.generate", ["--top-p", "1.5"], "--top-p must be greater than 0"),
        ("shared.export", ["--format", "onnx", "--quantize", "int8"], "tflite only"),
        ("projects.stock_lstm.forecast", ["--days", "0"], "--days must be at least 1, got 0."),
    ],
)
def test_impossible_settings_are_answered_before_tensorflow_loads(
    tmp_path, module, arguments, message
):
    result = run_listing_imports(module, "--run-dir", str(tmp_path), *arguments)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "tensorflow" not in imported_modules(result.stderr), f"{module} loads it first"
    said = [line for line in result.stderr.splitlines() if not line.startswith("import time")]
    assert message in said[-1] and "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def xor_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("xor") / "run"
    train_xor(XorConfig(run_dir=str(run_dir), epochs=2, repeats=16, numpy_epochs=20))
    return run_dir


def test_inference_prints_its_answer_and_nothing_else(xor_run):
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    env.pop("KERAS_PROJECTS_VERBOSE", None)

    def predict(env):
        return subprocess.run(
            [sys.executable, "-m", "projects.xor_mlp.predict", "--run-dir", str(xor_run), "1", "0"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )

    result = predict(env)
    assert result.returncode == 0
    assert re.fullmatch(r"xor\(1, 0\) = [01] {3}\(P\(1\) = 0\.\d{4}\)\n", result.stdout)
    assert result.stderr == "", result.stderr

    env["KERAS_PROJECTS_VERBOSE"] = "1"
    verbose = predict(env)
    # Verbose shows the start-up lines the quiet run hid. Which ones TensorFlow prints
    # depends on the machine: the oneDNN banner only where oneDNN is on by default
    # (not on AVX2-only CPUs), the cuInit line only without NVIDIA drivers.
    assert filter_startup_lines(verbose.stderr) != verbose.stderr, verbose.stderr


def test_start_up_filter_hides_known_lines_only():
    banner = (
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        "I0000 port.cc:153] oneDNN custom operations are on. You may see ...\n"
        "I0000 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be "
        "used.\n"
        "E0000 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error\n"
        "W0000 some_op.cc:12] a warning nobody has seen before\n"
    )
    assert filter_startup_lines(banner) == "W0000 some_op.cc:12] a warning nobody has seen before\n"
    # With NVIDIA drivers installed, a failing cuInit means the GPU is unusable: keep it.
    with_driver = "E0000 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error\n"
    assert filter_startup_lines(with_driver) == with_driver


@pytest.mark.parametrize(
    ("module", "extra"),
    [
        ("projects.stock_lstm.forecast", []),
        ("projects.cifar_cnn.predict", ["image.png"]),
        ("projects.shakespeare.generate", []),
    ],
)
def test_inference_on_another_projects_run_names_the_right_script(xor_run, module, extra, capsys):
    import importlib

    script = importlib.import_module(module)
    with pytest.raises(SystemExit) as raised:
        script.main(["--run-dir", str(xor_run), *extra])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert (
        f"{xor_run} is a xor_mlp run; use python -m projects.xor_mlp.predict --run-dir {xor_run}"
        in err
    )
    assert len(err.strip().splitlines()) == 1, err


def test_every_inference_script_refuses_runs_of_the_other_projects(tmp_path):
    for project in INFERENCE_MODULES:
        run_dir = tmp_path / project
        run_dir.mkdir()
        (run_dir / "config.json").write_text(f'{{"project": "{project}"}}')
        for module in set(INFERENCE_MODULES.values()) - {INFERENCE_MODULES[project]}:
            with pytest.raises(RunError, match=f"is a {project} run; use python -m"):
                load_run(run_dir, inference=module)


@pytest.mark.parametrize("run_dir", ["/dev/null/run", "/proc/version/run"])
def test_a_run_directory_that_cannot_be_created_says_why(run_dir):
    with pytest.raises(RunError, match=f"cannot write the run directory {run_dir}: Not a dir"):
        train_xor(XorConfig(run_dir=run_dir, epochs=1))


def test_non_finite_learning_rates_are_refused_for_every_project():
    from shared.config import parse_config
    from tests.test_config import ALL_CONFIGS

    for config_class in ALL_CONFIGS:
        for value in ("inf", "-inf", "nan"):
            with pytest.raises(SystemExit):
                parse_config(config_class, [f"--learning-rate={value}"])


def test_a_diverged_run_is_marked_failed_and_refused_by_inference(tmp_path, monkeypatch):
    from projects.stock_lstm.config import StockConfig
    from projects.stock_lstm.train import main as train_stock

    # A learning rate of 1e30: the squared error overflows and the weights become NaN.
    monkeypatch.chdir(tmp_path)
    config = StockConfig(
        run_dir="runs/stock_lstm/diverged",
        learning_rate=1e30,
        epochs=2,
        window=20,
        units=8,
        start="2021-01-01",
        patience=50,
    )
    with pytest.raises(TrainingDiverged, match="lower --learning-rate"):
        train_stock(config)
    run_dir = tmp_path / "runs" / "stock_lstm" / "diverged"
    assert '"status": "diverged"' in (run_dir / "metrics.json").read_text()
    assert not list(run_dir.glob("*.keras"))
    assert not (run_dir.parent / "latest").exists()
    with pytest.raises(RunError, match="diverged"):
        load_run(run_dir)


def test_inference_refuses_a_model_with_non_finite_weights(xor_run, tmp_path):
    import shutil

    import keras
    import numpy as np

    from shared.saving import ModelFileError, save_model

    copy = tmp_path / "copy"
    shutil.copytree(xor_run, copy)
    model = keras.saving.load_model(copy / "model.keras")
    model.set_weights([np.full_like(weight, np.nan) for weight in model.get_weights()])
    save_model(model, copy / "model.keras")
    with pytest.raises(ModelFileError, match="holds NaN or infinite weights"):
        load_run(copy)


def test_ctrl_c_during_training_says_how_to_resume(tmp_path):
    run_dir = tmp_path / "run"
    # Few long epochs (512 steps, seconds each): the interrupt lands mid-run even when the
    # machine is busy and this loop polls late, and the resumed run has little left to do.
    # (A SIGKILLed run resumes the same way: test_checkpoint.py kills at every step.)
    flags = ["--epochs", "3", "--quick", "--repeats", "2048"]
    command = [sys.executable, "-m", "projects.xor_mlp.train", *flags]
    process = subprocess.Popen(
        as_terminal_job([*command, "--run-dir", str(run_dir)]),
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not history_epochs(run_dir / "history.csv") and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    # Each assertion shows the run's log: a failure under load must say what happened.
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]
    assert "Training interrupted." in stderr, stderr[-3000:]
    assert "Stopping after this step (Ctrl-C again stops at once)." in stderr, stderr[-3000:]
    resume_command = f"-m projects.xor_mlp.train {' '.join(flags)} --run-dir {run_dir}"
    assert resume_command in stderr, stderr[-3000:]

    resumed = run_module("projects.xor_mlp.train", *flags, "--run-dir", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Resuming the interrupted run" in resumed.stderr
    assert f"Run directory: {run_dir}" in resumed.stderr
    assert json.loads((run_dir / "config.json").read_text())["quick"] is True
    assert (run_dir / "model.keras").exists()
    assert "Epoch 1/3" not in resumed.stdout  # it did not start over
    assert history_epochs(run_dir / "history.csv") == list(range(3))
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "completed"
    assert not (run_dir / "backup").exists()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the drop itself
def test_ctrl_c_swallowed_by_a_finalizer_still_stops_training_at_the_next_batch():
    """Python drops a KeyboardInterrupt raised inside __del__; training must stop anyway."""
    import gc

    import keras
    import numpy as np

    from shared import cli
    from shared.callbacks import StopOnInterrupt

    class ObjectWhoseFinalizerGetsTheSignal:
        def __del__(self):
            cli._on_interrupt(signal.SIGINT, None)  # raises; Python prints and drops it

    class InterruptInsideAFinalizer(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 2:
                ObjectWhoseFinalizerGetsTheSignal()  # collected at once: __del__ runs here
                gc.collect()

    batches = []
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    inputs = np.zeros((64, 2), np.float32)
    record = keras.callbacks.LambdaCallback(
        on_train_batch_begin=lambda batch, logs: batches.append(batch)
    )
    try:
        with pytest.raises(KeyboardInterrupt):
            model.fit(
                inputs,
                inputs[:, :1],
                batch_size=4,
                epochs=3,
                verbose=0,
                callbacks=[record, InterruptInsideAFinalizer(), StopOnInterrupt()],
            )
    finally:
        cli._INTERRUPT_REQUESTED.clear()
    assert batches == [0, 1, 2]  # stopped after the batch where the signal was lost


@pytest.mark.parametrize(
    ("presses", "pressed_in", "steps_ended", "raised_in"),
    [
        (1, "on_train_batch_begin", [0, 1, 2], "_check"),  # the step runs to its end
        (2, "on_train_batch_begin", [0, 1], "_on_interrupt"),  # the second stops at once
        (1, "on_train_end", [0, 1, 2, 3], "_check"),  # after the last step's check
    ],
)
def test_a_first_ctrl_c_in_training_stops_at_the_end_of_its_step(
    presses, pressed_in, steps_ended, raised_in
):
    """Raised where it lands, a KeyboardInterrupt can abort TensorFlow's C++ code.

    (Once in this suite: "Check failed: !PyErr_Occurred()" in ConvertToEagerTensor,
    status -6 and a C++ stack trace instead of the resume command.)
    """
    import keras
    import numpy as np

    from shared import cli
    from shared.callbacks import StopOnInterrupt

    class PressCtrlC(keras.callbacks.Callback):
        def press(self):
            for _ in range(presses):
                os.kill(os.getpid(), signal.SIGINT)  # as the terminal sends it

        def on_train_batch_begin(self, batch, logs=None):
            if pressed_in == "on_train_batch_begin" and batch == 2:
                self.press()

        def on_train_end(self, logs=None):
            if pressed_in == "on_train_end":
                self.press()

    ended = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: ended.append(batch)
    )
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    inputs = np.zeros((16, 2), np.float32)
    previous = signal.signal(signal.SIGINT, cli._on_interrupt)
    try:
        with pytest.raises(KeyboardInterrupt) as raised:
            model.fit(
                inputs,
                inputs[:, :1],
                batch_size=4,
                verbose=0,
                callbacks=[record, PressCtrlC(), StopOnInterrupt()],
            )
    finally:
        signal.signal(signal.SIGINT, previous)
        cli._INTERRUPT_REQUESTED.clear()
    assert ended == steps_ended
    assert raised.traceback[-1].name == raised_in
    # Outside training a Ctrl-C stops at once again.
    assert cli._LOOPS_STOPPING_AT_STEP_ENDS == 0
