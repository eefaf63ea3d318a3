"""Trained models outside training code: shared.export and the demo page (shared.demo).

Export: every project's model as a SavedModel, TFLite and ONNX, checked against Keras.

Each exported model is run in the runtime that serves it (a SavedModel in a fresh
process, TFLite in TensorFlow's interpreter, ONNX in onnxruntime) on the same
inputs as the ``.keras`` model, and must give the same outputs within
``TOLERANCE``: different kernels sum in different orders, so float32 results
differ by about 1e-7, never by 1e-4.

Demo: the page is started on a free port and driven in headless Chromium with
Playwright, one tab after the other, each with good and bad input.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from projects.cifar_cnn.config import CifarConfig
from projects.cifar_cnn.train import main as train_cifar
from projects.shakespeare.config import ShakespeareConfig
from projects.shakespeare.model import initial_states, step_model
from projects.shakespeare.train import main as train_shakespeare
from projects.stock_lstm.config import StockConfig
from projects.stock_lstm.train import main as train_stock
from projects.xor_mlp.config import XorConfig
from projects.xor_mlp.data import INPUTS
from projects.xor_mlp.train import main as train_xor
from shared.export import ExportError, export_run, float32_twin, serving_for
from shared.prices import BUNDLED_DIR
from shared.runs import load_run
from shared.saving import OutputFolderError
from tests.helpers import REPO_ROOT, run_module

TOLERANCE = 1e-4
# int8 weights and activations may cost held-out accuracy; more than this is a bug.
INT8_ACCURACY_DROP = 0.05

QUICK_RUNS = {
    "xor": (XorConfig, train_xor, {"epochs": 30}),
    # float32, so the .keras model and the (always float32) export compute alike.
    "cifar": (CifarConfig, train_cifar, {"mixed_precision": "off"}),
    # The volatility network's output varies with its input; a quick price run's reported
    # forecast is often exactly naive (its combination weight is 0), so it checks less.
    "stock": (StockConfig, train_stock, {"target": "volatility"}),
    "stock_price": (StockConfig, train_stock, {}),
    "lstm": (ShakespeareConfig, train_shakespeare, {}),  # the default character model
    "transformer": (
        ShakespeareConfig,
        train_shakespeare,
        {"cell": "transformer", "layers": 2, "mixed_precision": "off"},  # a cache per block
    ),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One --quick run of each project (and both Shakespeare families).

    Trained in this process: what these tests check is the export of a finished run,
    and a fresh process per run would spend seconds importing TensorFlow. (Each
    project's own tests run its training command line.)
    """
    root = tmp_path_factory.mktemp("export-runs")
    made = {}
    for name, (config_class, train, settings) in QUICK_RUNS.items():
        run_dir = root / name
        train(config_class.create(quick=True, run_dir=str(run_dir), **settings))
        assert (run_dir / "metrics.json").exists(), name
        made[name] = run_dir
    return made


def keras_inputs_and_outputs(name: str, run_dir, length: int = 3):
    """Inputs (by signature name) and the .keras model's own outputs on them.

    Batches of several rows (several characters for Shakespeare) check that the
    exported shapes are not fixed to the samples'.
    Exports compute in float32, so a run trained in bfloat16 is compared through its
    float32 twin (same weights).
    """
    model = float32_twin(load_run(run_dir).model)
    rng = np.random.default_rng(0)
    if name == "xor":
        inputs = {"bits": INPUTS}
        return inputs, {"probability": model.predict(INPUTS, verbose=0)}
    if name == "cifar":
        images = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
        return {"image": images}, {"probabilities": model.predict(images, verbose=0)}
    if name == "stock":
        windows = serving_for(load_run(run_dir)).samples
        batch = np.concatenate([window[0] for window in windows[:4]])
        return {"features": batch}, {"forecast": model.predict(batch, verbose=0)}
    ids = rng.integers(1, 20, (1, length)).astype(np.int32)
    states = [np.asarray(state) for state in initial_states(model)]
    step = step_model(model)
    outputs = step([tf.constant(ids), *map(tf.constant, states)], training=False)
    if name == "transformer":
        names = ["position"] + [f"cache_{i + 1}" for i in range(len(states) - 1)]
    else:
        names = [f"state_{i + 1}" for i in range(len(states))]
    inputs = {"ids": ids, **dict(zip(names, states, strict=True))}
    expected = {"logits": np.asarray(outputs[0])}
    expected.update({f"next_{n}": np.asarray(o) for n, o in zip(names, outputs[1:], strict=True)})
    return inputs, expected


def assert_close(actual: dict, expected: dict, label: str = "") -> None:
    assert set(actual) == set(expected), label
    for key, want in expected.items():
        got = np.asarray(actual[key])
        name = f"{label} {key}".strip()
        assert got.shape == want.shape, name
        np.testing.assert_allclose(got, want, atol=TOLERANCE, err_msg=name)


EXPORTED = [name for name in QUICK_RUNS if name != "stock_price"]


def test_saved_models_in_a_fresh_process_give_the_keras_outputs(runs, tmp_path):
    # Every project's SavedModel is loaded in one fresh process: each process would
    # spend seconds importing TensorFlow. The command line exports the first; the rest
    # go through export_run, the function it calls.
    exported = {}
    for name in EXPORTED:
        out = tmp_path / name
        if name == EXPORTED[0]:
            args = ["--run-dir", str(runs[name]), "--format", "saved_model", "--out", str(out)]
            result = run_module("shared.export", *args)
            assert result.returncode == 0, result.stderr[-2000:]
            assert f"to {out}" in result.stdout
        else:
            export_run(runs[name], "saved_model", out=str(out))
        readme = (out / "README.txt").read_text()
        assert "inputs:" in readme and "serving_default" in readme and "docker run" in readme
        inputs, expected = keras_inputs_and_outputs(name, runs[name])
        np.savez(out / "inputs.npz", **inputs)
        exported[name] = (out, expected)
    # Only TensorFlow in the fresh process: no Keras, no code of this repository.
    script = textwrap.dedent(f"""
        import numpy as np, tensorflow as tf
        for folder in {[str(out) for out, _ in exported.values()]!r}:
            serve = tf.saved_model.load(folder + "/saved_model").signatures["serving_default"]
            inputs = dict(np.load(folder + "/inputs.npz"))
            outputs = serve(**{{k: tf.constant(v) for k, v in inputs.items()}})
            np.savez(folder + "/outputs.npz", **{{k: v.numpy() for k, v in outputs.items()}})
    """)
    fresh = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    for name, (out, expected) in exported.items():
        assert_close(dict(np.load(out / "outputs.npz")), expected, label=name)


@pytest.fixture(scope="module")
def cifar_tflite(runs, tmp_path_factory):
    """The quick CIFAR run exported to float32 TFLite (two tests read it)."""
    return export_run(runs["cifar"], "tflite", out=str(tmp_path_factory.mktemp("cifar") / "tflite"))


@pytest.mark.parametrize("name", EXPORTED)
def test_tflite_in_the_interpreter_gives_the_keras_outputs(runs, name, tmp_path, request):
    if name == "cifar":
        result = request.getfixturevalue("cifar_tflite")
    else:
        result = export_run(runs[name], "tflite", out=str(tmp_path / "tflite"))
    runner = tf.lite.Interpreter(model_path=str(result.model_path)).get_signature_runner()
    # TFLite has static shapes: one row (one character) per call.
    inputs, expected = keras_inputs_and_outputs(name, runs[name], length=1)
    if name != "lstm" and name != "transformer":
        inputs = {key: value[:1] for key, value in inputs.items()}
        expected = {key: value[:1] for key, value in expected.items()}
    assert_close(runner(**inputs), expected)
    assert (result.folder / "README.txt").exists()
    if name in ("lstm", "transformer"):
        vocabulary = json.loads((result.folder / "vocabulary.json").read_text())
        assert vocabulary[0] == "[UNK]" and "e" in vocabulary


@pytest.mark.parametrize("name", [name for name in EXPORTED if name != "transformer"])
def test_onnx_in_onnxruntime_gives_the_keras_outputs(runs, name, tmp_path):
    import onnxruntime

    result = export_run(runs[name], "onnx", out=str(tmp_path / "onnx"))
    session = onnxruntime.InferenceSession(str(result.model_path))
    inputs, expected = keras_inputs_and_outputs(name, runs[name])
    names = [output.name for output in session.get_outputs()]
    actual = dict(zip(names, session.run(names, inputs), strict=True))
    assert_close(actual, expected)


def test_the_transformer_in_onnx_is_a_clear_error_that_writes_nothing(runs, tmp_path, capsys):
    # The command's main in this process (its fresh-process run is in the first test).
    from shared.export import main as export_main

    out = tmp_path / "onnx"
    args = ["--run-dir", str(runs["transformer"]), "--format", "onnx", "--out", str(out)]
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        export_main(args)
    said = capsys.readouterr().err
    assert stopped.value.code == 2
    assert "Traceback" not in said
    assert "onnx cannot express" in said
    assert "Formats that work for it: saved_model, tflite" in said
    assert not out.exists() and not list(tmp_path.iterdir())


def test_a_failed_export_keeps_the_previous_one(runs, tmp_path):
    out = tmp_path / "export"
    export_run(runs["xor"], "saved_model", out=str(out))  # any earlier export to that folder
    before = sorted(path.name for path in out.iterdir())
    with pytest.raises(ExportError):
        export_run(runs["transformer"], "onnx", out=str(out))
    assert sorted(path.name for path in out.iterdir()) == before
    assert [path.name for path in tmp_path.iterdir()] == ["export"]  # no leftovers


def test_an_out_folder_that_cannot_be_written_is_refused_and_a_file_there_kept(runs, tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("the user's own file")
    with pytest.raises(OutputFolderError, match="notes.txt is a file; give a folder to write into"):
        export_run(runs["xor"], "saved_model", out=str(a_file))
    with pytest.raises(OutputFolderError, match="notes.txt is a file, not a folder"):
        export_run(runs["xor"], "saved_model", out=str(a_file / "export"))
    assert a_file.read_text() == "the user's own file"
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]  # no leftovers
    # No folder can be made under /proc: the OSError becomes the one-line ExportError.
    with pytest.raises(ExportError, match="cannot write the export to /proc/.*--out folder"):
        export_run(runs["xor"], "saved_model", out="/proc/keras-projects-export")


def test_int8_costs_little_held_out_accuracy(runs, cifar_tflite, tmp_path):
    float_result = cifar_tflite
    int8 = export_run(runs["cifar"], "tflite", quantize="int8", out=str(tmp_path / "int8"))
    # 4-byte weights became 1-byte: the file shrinks by at least 2.5 bytes per parameter
    # (not 3: biases become int32, and per-channel scales are added). A ratio of file
    # sizes would also count the graph, whose size depends on its names.
    parameters = load_run(runs["cifar"]).model.count_params()
    assert float_result.size_bytes - int8.size_bytes > 2.5 * parameters
    assert int8.keras_score - int8.export_score <= INT8_ACCURACY_DROP
    record = json.loads((tmp_path / "int8" / "export.json").read_text())
    assert record["quantize"] == "int8" and record["score"] == int8.export_score


# --quantize outside tflite, and a missing or unfinished --run-dir, are refused before
# TensorFlow loads: test_cli.py checks every command that reads a run for them.


def test_a_mixed_precision_model_is_exported_in_float32_with_its_weights():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, activation="relu", dtype="mixed_bfloat16")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, dtype="float32")(hidden))
    twin = float32_twin(model)
    assert twin.layers[1].compute_dtype == "float32"
    assert model.layers[1].compute_dtype == "bfloat16"
    for ours, theirs in zip(twin.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    x = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    # bfloat16 keeps 8 bits of mantissa: the two agree to about 1%.
    np.testing.assert_allclose(twin.predict(x, verbose=0), model.predict(x, verbose=0), atol=0.05)


# --- The demo page in a real browser ---------------------------------------------------

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Set to a folder to keep the page's screenshots (the README's come from here).
SCREENSHOTS = os.environ.get("DEMO_SCREENSHOTS", "")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def demo_url(runs, tmp_path_factory):
    """The demo serving the quick runs (and no others) on a free localhost port."""
    root = tmp_path_factory.mktemp("demo")
    port = free_port()
    chosen = [runs[name] for name in ("xor", "cifar", "lstm", "stock_price")]
    args = ["--port", str(port), "--runs-root", str(root / "none")]
    args += [item for run_dir in chosen for item in ("--run", str(run_dir))]
    log = open(root / "demo.log", "w")  # noqa: SIM115 - open while the server runs
    temp = root / "tmp"  # the server's own temporary files, to see that it removes them
    temp.mkdir()
    server = subprocess.Popen(
        [sys.executable, "-m", "shared.demo", *args],
        cwd=REPO_ROOT,
        stdout=log,
        stderr=log,
        env={**os.environ, "TMPDIR": str(temp)},
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while True:
        assert server.poll() is None, (root / "demo.log").read_text()[-2000:]
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        assert time.monotonic() < deadline, "the demo did not answer within 3 minutes"
        time.sleep(0.5)
    yield url
    assert list(temp.glob("keras-projects-demo-*")), "no scratch folder where it was looked for"
    server.terminate()  # SIGTERM, as from `kill` or a service manager
    assert server.wait(timeout=30) == 0
    log.close()
    # Bad requests are messages in the page; none may leave a traceback in the server log.
    assert "Traceback" not in (root / "demo.log").read_text()
    # Grad-CAM pictures and forecast plots go with the server.
    assert not list(temp.glob("keras-projects-demo-*"))


@pytest.fixture(scope="module")
def page(demo_url):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (.ci/run does)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.set_default_timeout(90_000)
        # expect() has its own 5-second default: too short for a first model load and
        # 300 characters of generation on a busy 2-core machine.
        sync_api.expect.set_options(timeout=90_000)
        page.goto(demo_url)
        yield page
        browser.close()


def shoot(page, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"demo-{name}.png"), full_page=True)


def expect_message(page, text: str) -> None:
    """A one-line error appears in the page (a Gradio toast), with no stack trace."""
    from playwright.sync_api import expect

    message = page.get_by_text(text).first
    expect(message).to_be_visible()
    assert "Traceback" not in page.content()
    for close in page.locator(".toast-close").all():  # dismiss it for the next step
        close.click()


def test_demo_xor_tab(page, runs):
    from playwright.sync_api import expect

    page.get_by_label("input 2").check()  # input 1 starts checked: xor(1, 1)
    expect(page.locator("#xor-answer")).to_contain_text("xor(1, 1) = ")
    assert "P(1) = " in page.inner_text("#xor-answer")
    shoot(page, "xor")
    page.locator("#xor-run textarea").fill("/no/such/run")
    page.get_by_role("button", name="Ask the network").click()
    expect_message(page, "No run directory at /no/such/run")
    page.locator("#xor-run textarea").fill(str(runs["xor"]))


def test_demo_cifar_tab(page, runs, tmp_path):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="CIFAR-10 CNN").click()
    # Picking a bundled image classifies it: no Classify click, which, sent before the
    # pick's own request had answered, carried no image (that failed this test once).
    page.get_by_text("cat.png", exact=True).click()
    expect(page.locator("#cifar-gradcam img")).to_be_visible()
    classes = page.inner_text("#cifar-top3")
    assert "%" in classes and any(name in classes for name in ("cat", "dog", "frog", "truck"))
    shoot(page, "cifar")
    page.locator("#cifar-file button[aria-label=Clear]").click()
    expect(page.locator("#cifar-gradcam img")).to_have_count(0)  # the answers go with it
    page.get_by_role("button", name="Classify").click()
    expect_message(page, "Upload an image or pick a bundled one first.")
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("these are notes, not pixels")
    page.locator("#cifar-file input[type=file]").set_input_files(str(not_an_image))
    expect_message(page, "it is not an image file Pillow can decode")
    page.get_by_text("dog.png", exact=True).click()
    expect(page.locator("#cifar-gradcam img")).to_be_visible()
    # The Classify button: it sends the image with the run box's current value.
    page.locator("#cifar-run textarea").fill("/no/such/run")
    page.get_by_role("button", name="Classify").click()
    expect_message(page, "No run directory at /no/such/run")
    expect(page.locator("#cifar-top3")).to_contain_text("Error")
    page.locator("#cifar-run textarea").fill(str(runs["cifar"]))
    page.get_by_role("button", name="Classify").click()
    expect(page.locator("#cifar-top3")).not_to_contain_text("Error")
    expect(page.locator("#cifar-gradcam img")).to_be_visible()


def test_demo_shakespeare_tab(page):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Shakespeare").click()
    page.locator("#shakespeare-prompt textarea").fill("ROMEO:")
    page.get_by_role("button", name="Generate").click()
    text = page.locator("#shakespeare-text textarea")
    expect(text).to_have_value(re.compile(r"^ROMEO:[\s\S]{300}$"))  # prompt + 300 characters
    shoot(page, "shakespeare")
    page.locator("#shakespeare-prompt textarea").fill("ROMEO€")
    page.get_by_role("button", name="Generate").click()
    expect_message(page, "the prompt has characters the model never saw in training")


def test_demo_stock_tab(page, tmp_path):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Stock forecast").click()
    page.get_by_role("button", name="Forecast").click()
    expect(page.locator("#stock-summary")).to_contain_text("AAPL")
    expect(page.locator("#stock-plot img")).to_be_visible()
    assert page.locator("#stock-table").inner_text().count("2024-01-0") == 5  # 5 weekdays
    shoot(page, "stock")
    page.locator("#stock-ticker textarea").fill("../etc/passwd")
    page.get_by_role("button", name="Forecast").click()
    expect_message(page, "invalid ticker '../etc/passwd'")
    # A CSV instead of the ticker. (Gradio sends a click only once an upload is done.)
    mine = tmp_path / "my_prices.csv"
    shutil.copy(BUNDLED_DIR / "MSFT.csv", mine)
    page.locator("#stock-file input[type=file]").set_input_files(str(mine))
    page.get_by_role("button", name="Forecast").click()
    expect(page.locator("#stock-summary")).to_contain_text("my_prices.csv: 5 trading days")
    assert page.inner_text("#stock-summary").startswith("my_prices.csv")  # no server path


def test_a_project_without_a_run_says_which_make_target_creates_one(tmp_path):
    from shared.demo import default_runs, run_note

    runs = default_runs(str(tmp_path / "runs"), [])
    assert runs["xor_mlp"] == str(tmp_path / "runs" / "xor_mlp" / "latest")
    note = run_note(runs["cifar_cnn"], "cifar_cnn")
    assert "No cifar_cnn run yet" in note and "`make cifar-cnn` creates one" in note
