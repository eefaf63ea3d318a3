"""Export a finished run for serving (SavedModel), phones (TFLite) or other runtimes (ONNX).

    python -m shared.export --run-dir runs/cifar_cnn/latest --format saved_model
    python -m shared.export --run-dir runs/xor_mlp/latest --format tflite --quantize int8
    python -m shared.export --run-dir runs/shakespeare/latest --format onnx --out char.onnx.d
    make export RUN=runs/stock_lstm/latest FORMAT=tflite

Writes one folder, ``--out`` (default ``RUN/export/FORMAT[-QUANTIZE]``): the model
(``saved_model/``, ``model.tflite`` or ``model.onnx``), a ``README.txt`` giving its
signature and a three-line example of calling it, ``export.json`` (size, latency,
check results) and, for Shakespeare, ``vocabulary.json``. Expected output::

    Exported runs/xor_mlp/latest as tflite to runs/xor_mlp/latest/export/tflite (2 KB);
    largest difference from the Keras model on 4 inputs: 2.4e-07

Before the folder appears, the exported model is loaded back in the runtime that
will serve it (``tf.saved_model.load``, TensorFlow's TFLite interpreter,
onnxruntime) and run on inputs from the run's own data beside the Keras model in
float32; a format that cannot express the model, or answers differently, is a
one-line error and leaves no file behind. Quantized TFLite models are checked on
the run's held-out data instead: their score is reported beside the float one.

What each project serves (its inference module's ``serving`` function builds it):

- xor_mlp: ``bits`` float32 (batch, 2) -> ``probability`` (batch, 1)
- cifar_cnn: ``image`` uint8 (batch, size, size, 3) -> ``probabilities`` (batch, classes)
- stock_lstm: ``features`` float32 (batch, window, features) -> ``forecast`` (batch, horizon)
- shakespeare: one generation step, ``ids`` int32 (1, n) plus the states -> ``logits``
  (1, n, vocabulary) plus the new states; ``vocabulary.json`` maps ids to characters.

TFLite has static shapes on phones, so every ``None`` becomes 1 there: one image,
window or character per call.
"""

from __future__ import annotations

import argparse

from shared.cli import parse_args_before_tensorflow
from shared.config import program_name
from shared.errors import UserError

FORMATS = ("saved_model", "tflite", "onnx")
QUANTIZATIONS = ("int8", "float16")


class ExportError(UserError):
    """The run cannot be exported in the format asked for."""


def check_options(export_format: str, quantize: str) -> None:
    """Raise `ExportError` unless the format and quantization fit together."""
    if export_format not in FORMATS:
        raise ExportError(f"--format must be one of {', '.join(FORMATS)}; got {export_format!r}.")
    if quantize and export_format != "tflite":
        raise ExportError(
            f"--quantize {quantize} applies to --format tflite only; drop it for {export_format}."
        )
    if quantize and quantize not in QUANTIZATIONS:
        raise ExportError(f"--quantize must be int8 or float16; got {quantize!r}.")


def build_parser() -> argparse.ArgumentParser:
    """The command line: run, format, quantization and output folder."""
    parser = argparse.ArgumentParser(
        prog=program_name(),
        description="Export a trained run as a SavedModel, a TFLite model or an ONNX model.",
    )
    parser.add_argument("--run-dir", required=True, help="The run to export (a run directory).")
    parser.add_argument("--format", required=True, choices=FORMATS, help="What to write.")
    parser.add_argument(
        "--quantize",
        choices=QUANTIZATIONS,
        default="",
        help="TFLite only: int8 weights and activations (calibrated on the run's training "
        "data) or float16 weights.",
    )
    parser.add_argument(
        "--out", default="", help="Folder to write (default: RUN/export/FORMAT[-QUANTIZE])."
    )
    return parser


if __name__ == "__main__":
    # Answer --help, usage errors and options that do not fit together at once, before
    # TensorFlow loads (seconds).
    parse_args_before_tensorflow(
        build_parser(), check=lambda args: check_options(args.format, args.quantize)
    )

import contextlib
import dataclasses
import importlib
import io
import logging
import os
import shutil
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from shared.cli import exit_on_user_error, setup_logging
from shared.runs import LoadedRun, load_run
from shared.saving import INFERENCE_MODULES, atomic_folder, check_output_folder, write_json

log = logging.getLogger(__name__)

MODEL_FILES = {"saved_model": "saved_model", "tflite": "model.tflite", "onnx": "model.onnx"}
# Largest difference from the Keras model (float32) that an unquantized export may show.
# Different kernels sum in different orders: ~1e-6 relative is normal, 1e-3 means a bug.
TOLERANCE = 1e-3
ONNX_OPSET = 17

Inputs = list[np.ndarray]
Runner = Callable[[Inputs], list[np.ndarray]]


@dataclasses.dataclass
class HeldOut:
    """A score of the run's held-out data, computed with any runner of the model."""

    name: str
    score: Callable[[Runner], float]


@dataclasses.dataclass
class Serving:
    """What a project exports: a float32 function of named tensors, and data to check it on.

    Attributes:
        call: Tensors in ``inputs`` order -> tensors in ``outputs`` order.
        trackable: The Keras model whose variables ``call`` uses.
        inputs: Name, dtype and shape of each input (``None``: any size).
        outputs: The output names.
        samples: Inputs (batch 1) to compare the export with Keras on.
        representative: Training inputs (batch 1) to calibrate int8 quantization.
        held_out: The score that shows what quantization costs.
        description: What the inputs and outputs mean (for README.txt).
        files: Extra files to write beside the model (name -> text).
        unsupported: Formats known not to express the model -> the reason.
        calibrate_int8: False: ``--quantize int8`` quantizes the weights only (dynamic
            range), as TFLite's calibrator crashes on recurrent loops and caches.
    """

    call: Callable[[list[tf.Tensor]], list[tf.Tensor]]
    trackable: keras.Model
    inputs: list[tf.TensorSpec]
    outputs: list[str]
    samples: list[Inputs]
    representative: list[Inputs]
    held_out: HeldOut
    description: str
    files: dict[str, str] = dataclasses.field(default_factory=dict)
    unsupported: dict[str, str] = dataclasses.field(default_factory=dict)
    calibrate_int8: bool = True

    def working_formats(self) -> list[str]:
        """The formats that express this model."""
        return [name for name in FORMATS if name not in self.unsupported]


def keras_call(model: keras.Model) -> Callable[[list[tf.Tensor]], list[tf.Tensor]]:
    """``model``'s inference call as a function of a list of tensors returning a list."""

    def call(tensors: list[tf.Tensor]) -> list[tf.Tensor]:
        outputs = model(tensors if len(tensors) > 1 else tensors[0], training=False)
        return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]

    return call


def float32_twin(model: keras.Model) -> keras.Model:
    """``model`` rebuilt to compute in float32 with the same weights.

    Runs trained in mixed precision compute in bfloat16 or float16, which TFLite
    and ONNX runtimes do not all support; the exported model computes in float32.
    """
    config = model.get_config()
    if "mixed_" not in repr(config):
        return model
    twin = model.__class__.from_config(_float32_config(config))
    twin.set_weights(model.get_weights())
    return twin


def _float32_config(value: Any) -> Any:
    if isinstance(value, dict):
        if value.get("class_name") == "DTypePolicy" and str(
            value.get("config", {}).get("name", "")
        ).startswith("mixed_"):
            return {**value, "config": {**value["config"], "name": "float32"}}
        return {key: _float32_config(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_float32_config(item) for item in value]
    return value


def serving_for(run: LoadedRun) -> Serving:
    """The project's `Serving` of ``run`` (from its inference module's ``serving``)."""
    project = run.config.get("project")
    if project not in INFERENCE_MODULES:
        raise ExportError(f"{run.path} is not a run of this repository's projects.")
    module = importlib.import_module(INFERENCE_MODULES[project])
    return module.serving(run)


# --- Writing each format ------------------------------------------------------------


def static_specs(specs: list[tf.TensorSpec]) -> list[tf.TensorSpec]:
    """``specs`` with every unknown size set to 1 (TFLite plans memory for fixed shapes)."""
    return [
        tf.TensorSpec([1 if size is None else size for size in spec.shape], spec.dtype, spec.name)
        for spec in specs
    ]


def write_saved_model(serving: Serving, path: Path, specs: list[tf.TensorSpec]) -> None:
    """A SavedModel whose ``serving_default`` signature takes the named ``specs``."""
    archive = keras.export.ExportArchive()
    archive.track(serving.trackable)
    archive.add_endpoint(
        "serve",
        lambda *tensors: dict(zip(serving.outputs, serving.call(list(tensors)), strict=True)),
        input_signature=specs,
    )
    with contextlib.redirect_stdout(io.StringIO()):  # Keras prints the endpoint summary
        archive.write_out(str(path))


def write_tflite(serving: Serving, path: Path, quantize: str, scratch: Path) -> None:
    """A TFLite flatbuffer with static shapes, optionally quantized."""
    saved_model = scratch / "for-tflite"
    write_saved_model(serving, saved_model, static_specs(serving.inputs))
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if serving.calibrate_int8:  # else weights only: activations stay float
            converter.representative_dataset = lambda: iter(serving.representative)
    path.write_bytes(converter.convert())


_ONNX_HANDLERS_REGISTERED = False


def _register_onnx_handlers() -> None:
    """Teach tf2onnx the TensorFlow ops it lacks that these models use.

    Keras's exact GELU (airbench) computes erfc, which ONNX has no operator for;
    erfc(x) = 1 - erf(x), and Erf is an ONNX operator since opset 9.
    """
    global _ONNX_HANDLERS_REGISTERED
    if _ONNX_HANDLERS_REGISTERED:
        return
    from tf2onnx import utils
    from tf2onnx.handler import tf_op

    @tf_op("Erfc")
    class Erfc:
        @classmethod
        def version_9(cls, ctx, node, **kwargs):
            dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
            erf = ctx.make_node("Erf", [node.input[0]], op_name_scope=node.name)
            one = ctx.make_const(utils.make_name(f"{node.name}_one"), np.array(1, dtype=dtype))
            node.type = "Sub"
            ctx.replace_inputs(node, [one.output[0], erf.output[0]])

    _ONNX_HANDLERS_REGISTERED = True


def write_onnx(serving: Serving, path: Path, scratch: Path) -> None:
    """An ONNX model (opset ``ONNX_OPSET``) converted by tf2onnx from a SavedModel.

    Converting the SavedModel (as tf2onnx's command line does) freezes every
    constant the Keras layers hold; converting the tf.function directly would
    turn constants that are not variables (a Normalization's mean) into inputs.
    """
    from tf2onnx import convert, tf_loader

    logging.getLogger("tf2onnx").setLevel(logging.CRITICAL)  # its errors end up in ours
    _register_onnx_handlers()
    saved_model = scratch / "for-onnx"
    write_saved_model(serving, saved_model, serving.inputs)
    graph_def, inputs, outputs, tables, renames = tf_loader.from_saved_model(
        str(saved_model),
        None,
        None,
        signatures=["serving_default"],
        return_initialized_tables=True,
        return_tensors_to_rename=True,
    )
    with tf.device("/cpu:0"):
        # tf2onnx's public from_* functions do not take a SavedModel; its CLI calls this.
        convert._convert_common(
            graph_def,
            name=path.stem,
            opset=ONNX_OPSET,
            input_names=inputs,
            output_names=outputs,
            tensors_to_rename=renames,
            initialized_tables=tables,
            output_path=str(path),
        )


# --- Running each format -------------------------------------------------------------


def runner_of(call: Callable[[list[tf.Tensor]], list[tf.Tensor]]) -> Runner:
    """A `Serving.call` (Keras, float32) as a `Runner` of NumPy arrays, in one graph."""
    graph = tf.function(call, reduce_retracing=True)
    return lambda inputs: [np.asarray(out) for out in graph([tf.constant(x) for x in inputs])]


def load_runner(export_format: str, path: Path, serving: Serving) -> Runner:
    """The exported model at ``path``, loaded in its own runtime, as a `Runner`."""
    names = [spec.name for spec in serving.inputs]
    if export_format == "saved_model":
        signature = tf.saved_model.load(str(path)).signatures["serving_default"]

        def run_saved_model(inputs: Inputs) -> list[np.ndarray]:
            outputs = signature(**{n: tf.constant(x) for n, x in zip(names, inputs, strict=True)})
            return [outputs[name].numpy() for name in serving.outputs]

        return run_saved_model
    if export_format == "tflite":
        with warnings.catch_warnings():
            # TF 2.21 recommends the separate ai_edge_litert package; this one still works.
            warnings.simplefilter("ignore", UserWarning)
            interpreter = tf.lite.Interpreter(model_path=str(path))
        runner = interpreter.get_signature_runner()

        def run_tflite(inputs: Inputs) -> list[np.ndarray]:
            outputs = runner(**dict(zip(names, inputs, strict=True)))
            return [outputs[name] for name in serving.outputs]

        return run_tflite
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    input_names = [item.name for item in session.get_inputs()]

    def run_onnx(inputs: Inputs) -> list[np.ndarray]:
        return session.run(serving.outputs, dict(zip(input_names, inputs, strict=True)))

    return run_onnx


def largest_difference(expected: Runner, actual: Runner, samples: list[Inputs]) -> float:
    """Largest absolute difference between the two runners' outputs over ``samples``."""
    largest = 0.0
    for inputs in samples:
        for want, got in zip(expected(inputs), actual(inputs), strict=True):
            if want.shape != got.shape:
                return float("inf")
            largest = max(largest, float(np.max(np.abs(want.astype(np.float64) - got))))
    return largest


def latency_ms(runner: Runner, inputs: Inputs, calls: int = 30) -> float:
    """Median milliseconds of one call on ``inputs`` (after two warm-up calls)."""
    for _ in range(2):
        runner(inputs)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        runner(inputs)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def folder_size(path: Path) -> int:
    """Bytes in ``path`` (a file, or a folder and everything under it)."""
    if path.is_file():
        return path.stat().st_size
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


# --- The README beside the files -------------------------------------------------------


def signature_lines(specs: Sequence[tf.TensorSpec], outputs: dict[str, np.ndarray]) -> list[str]:
    """One line per input and output: name, dtype and shape."""

    def shape(dims) -> str:
        return "(" + ", ".join("n" if d is None else str(d) for d in dims) + ")"

    lines = ["inputs:"]
    lines += [f"  {s.name}: {s.dtype.name} {shape(s.shape)}" for s in specs]
    lines.append("outputs:")
    lines += [f"  {name}: {value.dtype} {shape(value.shape)}" for name, value in outputs.items()]
    return lines


def usage_example(export_format: str, serving: Serving, specs: list[tf.TensorSpec]) -> str:
    """Three lines of Python that call the exported model."""
    arguments = ", ".join(f"{s.name}={s.name}" for s in specs)
    first = serving.outputs[0]
    if export_format == "saved_model":
        return (
            "import tensorflow as tf\n"
            "serve = tf.saved_model.load('saved_model').signatures['serving_default']\n"
            f"{first} = serve({arguments})['{first}']  # tf.Tensor inputs, as above"
        )
    if export_format == "tflite":
        return (
            "import tensorflow as tf  # on a phone: the TFLite runtime's Interpreter\n"
            "run = tf.lite.Interpreter('model.tflite').get_signature_runner()\n"
            f"{first} = run({arguments})['{first}']  # NumPy inputs, as above"
        )
    feed = ", ".join(f"'{s.name}': {s.name}" for s in specs)
    return (
        "import onnxruntime\n"
        "session = onnxruntime.InferenceSession('model.onnx')\n"
        f"{first} = session.run(['{first}'], {{{feed}}})[0]  # NumPy inputs, as above"
    )


# --- The whole export ------------------------------------------------------------------


@dataclasses.dataclass
class ExportResult:
    """Where the export went and what it measured."""

    folder: Path
    model_path: Path
    size_bytes: int
    latency_ms: float
    keras_latency_ms: float
    largest_difference: float | None
    score_name: str
    keras_score: float
    export_score: float


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    interesting = [line for line in lines if "error:" in line] or lines or [type(error).__name__]
    return interesting[0][:300]


def export_run(
    run_dir: str | os.PathLike, export_format: str, quantize: str = "", out: str = ""
) -> ExportResult:
    """Export ``run_dir`` as ``export_format``, check it, and write its folder.

    Args:
        run_dir: A finished run of any project.
        export_format: ``saved_model``, ``tflite`` or ``onnx``.
        quantize: ``""``, or for TFLite ``int8`` or ``float16``.
        out: The folder to write (default ``RUN/export/FORMAT[-QUANTIZE]``).

    Returns:
        An `ExportResult`.

    Raises:
        ExportError: The format cannot express the model, answers differently
            from Keras, or the options do not fit together.
    """
    check_options(export_format, quantize)
    if out:
        check_output_folder(out)
    run = load_run(run_dir)
    serving = serving_for(run)
    project = run.config["project"]
    if export_format in serving.unsupported:
        raise ExportError(
            f"{export_format} cannot express this {project} model: "
            f"{serving.unsupported[export_format]}. Formats that work for it: "
            f"{', '.join(serving.working_formats())}."
        )
    suffix = f"-{quantize}" if quantize else ""
    folder = Path(out) if out else run.path / "export" / f"{export_format}{suffix}"
    specs = static_specs(serving.inputs) if export_format == "tflite" else serving.inputs
    try:
        result = _write_export(run, serving, export_format, quantize, specs, folder)
    except OSError as error:  # the folder cannot be made or written (permissions, full disk)
        raise ExportError(
            f"cannot write the export to {folder}: {error.strerror or error}; nothing was "
            "written. Choose an --out folder you can write to."
        ) from error
    return result


def _write_export(
    run: LoadedRun,
    serving: Serving,
    export_format: str,
    quantize: str,
    specs: list[tf.TensorSpec],
    folder: Path,
) -> ExportResult:
    """Convert, check and score the export, and write ``folder`` atomically."""
    project = run.config["project"]
    with atomic_folder(folder) as scratch:
        model_path = scratch / MODEL_FILES[export_format]
        try:
            if export_format == "saved_model":
                write_saved_model(serving, model_path, specs)
            elif export_format == "tflite":
                write_tflite(serving, model_path, quantize, scratch)
            else:
                write_onnx(serving, model_path, scratch)
            exported = load_runner(export_format, model_path, serving)
            reference = runner_of(serving.call)
            difference = largest_difference(reference, exported, serving.samples)
        except Exception as error:  # converters raise many types; each means "cannot express"
            others = [name for name in serving.working_formats() if name != export_format]
            raise ExportError(
                f"{export_format} cannot express this {project} model ({_first_line(error)}); "
                f"nothing was written. Try --format {' or '.join(others)}."
            ) from error
        if not quantize and not difference <= TOLERANCE:
            raise ExportError(
                f"the {export_format} export answers differently from the Keras model "
                f"(largest difference {difference:.3g} > {TOLERANCE:g}); nothing was written. "
                "Use --format saved_model, which runs the Keras model's own graph."
            )
        keras_score = serving.held_out.score(reference)
        export_score = serving.held_out.score(exported)
        sample = serving.samples[0]
        result = ExportResult(
            folder=folder,
            model_path=folder / MODEL_FILES[export_format],
            size_bytes=folder_size(model_path),
            latency_ms=latency_ms(exported, sample),
            keras_latency_ms=latency_ms(reference, sample),
            largest_difference=None if quantize else difference,
            score_name=serving.held_out.name,
            keras_score=keras_score,
            export_score=export_score,
        )
        for name, text in serving.files.items():
            (scratch / name).write_text(text)
        outputs = dict(zip(serving.outputs, exported(sample), strict=True))
        (scratch / "README.txt").write_text(
            readme_text(run, export_format, quantize, serving, specs, outputs, result)
        )
        if export_format == "saved_model":
            (scratch / "serve.txt").write_text(tf_serving_command(run.config["project"]))
        for leftover in ("for-tflite", "for-onnx"):
            shutil.rmtree(scratch / leftover, ignore_errors=True)
        write_json(
            scratch / "export.json", export_record(run, export_format, quantize, serving, result)
        )
    return result


def tf_serving_command(project: str) -> str:
    """How to serve the SavedModel with TF Serving's Docker image (not run here)."""
    return (
        "# TF Serving loads numbered versions: copy saved_model/ to models/<name>/1/, then\n"
        f"docker run -p 8501:8501 -v $PWD/models/{project}:/models/{project} "
        f"-e MODEL_NAME={project} tensorflow/serving\n"
        f'# POST {{"inputs": ...}} to http://localhost:8501/v1/models/{project}:predict\n'
    )


def quantization_note(quantize: str, serving: Serving) -> str:
    """What ``--quantize`` did to this model, in words."""
    if quantize == "float16":
        return "float16 weights, float32 computation"
    if serving.calibrate_int8:
        return "int8 weights and activations, calibrated on 100 training inputs; float input/output"
    return "int8 weights, float activations (dynamic-range quantization)"


def readme_text(
    run: LoadedRun,
    export_format: str,
    quantize: str,
    serving: Serving,
    specs: list[tf.TensorSpec],
    outputs: dict[str, np.ndarray],
    result: ExportResult,
) -> str:
    """The README.txt written beside the exported files."""
    kind = export_format
    if quantize:
        kind += f" ({quantization_note(quantize, serving)})"
    lines = [
        f"{run.config['project']} run {run.path}, exported as {kind}.",
        "",
        *signature_lines(specs, outputs),
        "(n: any size)",
        "",
        serving.description,
        "",
        "Example:",
        usage_example(export_format, serving, specs),
        "",
        f"Size: {result.size_bytes:,} bytes. One call: {result.latency_ms:.3g} ms "
        f"(Keras: {result.keras_latency_ms:.3g} ms).",
    ]
    if result.largest_difference is not None:
        lines.append(
            f"Checked: largest difference from the Keras model (float32) on "
            f"{len(serving.samples)} inputs of the run's data: {result.largest_difference:.2g}."
        )
    lines.append(
        f"{result.score_name}: {result.export_score:.4f} (Keras model: {result.keras_score:.4f})."
    )
    if export_format == "saved_model":
        lines += ["", "TF Serving (see serve.txt):", tf_serving_command(run.config["project"])]
    return "\n".join(lines) + "\n"


def export_record(
    run: LoadedRun, export_format: str, quantize: str, serving: Serving, result: ExportResult
) -> dict[str, Any]:
    """export.json: what was exported and what the check measured."""
    return {
        "run_dir": str(run.path),
        "project": run.config["project"],
        "format": export_format,
        "quantize": quantize or None,
        "quantization": quantization_note(quantize, serving) if quantize else None,
        "model_file": result.model_path.name,
        "size_bytes": result.size_bytes,
        "latency_ms": result.latency_ms,
        "keras_latency_ms": result.keras_latency_ms,
        "largest_difference": result.largest_difference,
        "tolerance": None if quantize else TOLERANCE,
        "score_name": result.score_name,
        "score": result.export_score,
        "keras_score": result.keras_score,
    }


def summary(result: ExportResult, run_dir: str, export_format: str) -> str:
    """The lines printed after an export."""
    kilobytes = result.size_bytes / 1024
    lines = [f"Exported {run_dir} as {export_format} to {result.folder} ({kilobytes:,.0f} KB)"]
    if result.largest_difference is not None:
        lines.append(
            f"largest difference from the Keras model: {result.largest_difference:.2g} "
            f"(tolerance {TOLERANCE:g})"
        )
    lines.append(
        f"{result.score_name}: {result.export_score:.4f} (Keras model: {result.keras_score:.4f})"
    )
    lines.append(f"See {result.folder / 'README.txt'} for the signature and an example.")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    result = exit_on_user_error(
        lambda: export_run(args.run_dir, args.format, args.quantize, args.out)
    )
    print(summary(result, args.run_dir, args.format))
    return 0


if __name__ == "__main__":
    sys.exit(main())
