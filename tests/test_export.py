"""shared.export: every project's model as a SavedModel, TFLite and ONNX, checked against Keras.

Each exported model is run in the runtime that serves it (a SavedModel in a fresh
process, TFLite in TensorFlow's interpreter, ONNX in onnxruntime) on the same
inputs as the ``.keras`` model, and must give the same outputs within
``TOLERANCE``: different kernels sum in different orders, so float32 results
differ by about 1e-7, never by 1e-4.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from projects.shakespeare.model import initial_states, step_model
from projects.xor_mlp.data import INPUTS
from shared.export import ExportError, export_run, float32_twin, serving_for
from shared.runs import load_run
from tests.helpers import run_module

TOLERANCE = 1e-4
# int8 weights and activations may cost held-out accuracy; more than this is a bug.
INT8_ACCURACY_DROP = 0.05

QUICK_RUNS = {
    "xor": ("projects.xor_mlp.train", ["--epochs", "30"]),
    # float32, so the .keras model and the (always float32) export compute alike.
    "cifar": ("projects.cifar_cnn.train", ["--mixed-precision", "off"]),
    "stock": ("projects.stock_lstm.train", ["--target", "volatility"]),
    "gru": ("projects.shakespeare.train", []),
    "transformer": (
        "projects.shakespeare.train",
        ["--cell", "transformer", "--mixed-precision", "off"],
    ),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One --quick run of each project (and both Shakespeare families)."""
    root = tmp_path_factory.mktemp("export-runs")
    made = {}
    for name, (module, args) in QUICK_RUNS.items():
        run_dir = root / name
        result = run_module(module, "--quick", *args, "--run-dir", str(run_dir), timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
        made[name] = run_dir
    return made


def keras_inputs_and_outputs(name: str, run_dir, length: int = 3):
    """Inputs (by signature name) and the .keras model's own outputs on them.

    Batches of several rows (several characters for Shakespeare) check that the
    exported shapes are not fixed to the samples'.
    """
    model = load_run(run_dir).model
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


def assert_close(actual: dict, expected: dict) -> None:
    assert set(actual) == set(expected)
    for key, want in expected.items():
        got = np.asarray(actual[key])
        assert got.shape == want.shape, key
        np.testing.assert_allclose(got, want, atol=TOLERANCE, err_msg=key)


@pytest.mark.parametrize("name", list(QUICK_RUNS))
def test_saved_model_in_a_fresh_process_gives_the_keras_outputs(runs, name, tmp_path):
    out = tmp_path / "saved"
    result = run_module(
        "shared.export", "--run-dir", str(runs[name]), "--format", "saved_model", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"to {out}" in result.stdout
    readme = (out / "README.txt").read_text()
    assert "inputs:" in readme and "serving_default" in readme and "docker run" in readme
    inputs, expected = keras_inputs_and_outputs(name, runs[name])
    np.savez(tmp_path / "inputs.npz", **inputs)
    # Only TensorFlow in the fresh process: no Keras, no code of this repository.
    script = textwrap.dedent(f"""
        import numpy as np, tensorflow as tf
        serve = tf.saved_model.load({str(out / "saved_model")!r}).signatures["serving_default"]
        inputs = dict(np.load({str(tmp_path / "inputs.npz")!r}))
        outputs = serve(**{{k: tf.constant(v) for k, v in inputs.items()}})
        np.savez({str(tmp_path / "outputs.npz")!r}, **{{k: v.numpy() for k, v in outputs.items()}})
    """)
    fresh = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert_close(dict(np.load(tmp_path / "outputs.npz")), expected)


@pytest.mark.parametrize("name", list(QUICK_RUNS))
def test_tflite_in_the_interpreter_gives_the_keras_outputs(runs, name, tmp_path):
    result = export_run(runs[name], "tflite", out=str(tmp_path / "tflite"))
    runner = tf.lite.Interpreter(model_path=str(result.model_path)).get_signature_runner()
    # TFLite has static shapes: one row (one character) per call.
    inputs, expected = keras_inputs_and_outputs(name, runs[name], length=1)
    if name != "gru" and name != "transformer":
        inputs = {key: value[:1] for key, value in inputs.items()}
        expected = {key: value[:1] for key, value in expected.items()}
    assert_close(runner(**inputs), expected)
    assert (tmp_path / "tflite" / "README.txt").exists()
    if name in ("gru", "transformer"):
        vocabulary = json.loads((tmp_path / "tflite" / "vocabulary.json").read_text())
        assert vocabulary[0] == "[UNK]" and "e" in vocabulary


@pytest.mark.parametrize("name", [name for name in QUICK_RUNS if name != "transformer"])
def test_onnx_in_onnxruntime_gives_the_keras_outputs(runs, name, tmp_path):
    import onnxruntime

    result = export_run(runs[name], "onnx", out=str(tmp_path / "onnx"))
    session = onnxruntime.InferenceSession(str(result.model_path))
    inputs, expected = keras_inputs_and_outputs(name, runs[name])
    names = [output.name for output in session.get_outputs()]
    actual = dict(zip(names, session.run(names, inputs), strict=True))
    assert_close(actual, expected)


def test_the_transformer_in_onnx_is_a_clear_error_that_writes_nothing(runs, tmp_path):
    out = tmp_path / "onnx"
    args = ["--run-dir", str(runs["transformer"]), "--format", "onnx", "--out", str(out)]
    result = run_module("shared.export", *args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "onnx cannot express" in result.stderr
    assert "Formats that work for it: saved_model, tflite" in result.stderr
    assert not out.exists() and not list(tmp_path.iterdir())


def test_a_failed_export_keeps_the_previous_one(runs, tmp_path):
    out = tmp_path / "export"
    export_run(runs["transformer"], "saved_model", out=str(out))
    before = sorted(path.name for path in out.iterdir())
    with pytest.raises(ExportError):
        export_run(runs["transformer"], "onnx", out=str(out))
    assert sorted(path.name for path in out.iterdir()) == before
    assert [path.name for path in tmp_path.iterdir()] == ["export"]  # no leftovers


def test_int8_costs_little_held_out_accuracy(runs, tmp_path):
    float_result = export_run(runs["cifar"], "tflite", out=str(tmp_path / "float"))
    int8 = export_run(runs["cifar"], "tflite", quantize="int8", out=str(tmp_path / "int8"))
    assert int8.size_bytes < float_result.size_bytes / 2.5  # 4-byte weights became 1-byte
    assert int8.keras_score - int8.export_score <= INT8_ACCURACY_DROP
    record = json.loads((tmp_path / "int8" / "export.json").read_text())
    assert record["quantize"] == "int8" and record["score"] == int8.export_score


def test_quantize_is_refused_outside_tflite(runs):
    result = run_module(
        "shared.export", "--run-dir", str(runs["xor"]), "--format", "onnx", "--quantize", "int8"
    )
    assert result.returncode == 2
    assert "--quantize int8 applies to --format tflite only" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_run_is_a_one_line_error(tmp_path):
    result = run_module(
        "shared.export", "--run-dir", str(tmp_path / "nothing"), "--format", "tflite"
    )
    assert result.returncode == 2
    assert "No run directory" in result.stderr and "Traceback" not in result.stderr


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
