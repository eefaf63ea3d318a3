"""Size, speed and accuracy of every export format, for each project's run: make bench-export.

    python -m shared.bench_export                         # runs/<project>/latest of each
    python -m shared.bench_export --run runs/cifar_cnn/latest --run runs/shakespeare/latest

Exports each run (``shared.export``) into a temporary folder as a SavedModel, ONNX,
TFLite, TFLite float16 and TFLite int8 (skipping formats that cannot express it),
and prints one Markdown table: size, milliseconds per call with batch 1 (median of
30 calls after a warm-up, the Keras model beside it), the largest difference from
the Keras model, and the held-out score of each export beside the Keras model's.
Expect a few minutes per run; the CPU's model name is printed first.
"""

from __future__ import annotations

import argparse

from shared.cli import parse_args_before_tensorflow
from shared.config import program_name

VARIANTS = (
    ("saved_model", ""),
    ("onnx", ""),
    ("tflite", ""),
    ("tflite", "float16"),
    ("tflite", "int8"),
)


def build_parser() -> argparse.ArgumentParser:
    """The command line: which runs."""
    parser = argparse.ArgumentParser(
        prog=program_name(), description="Size and speed of every export format of each run."
    )
    parser.add_argument(
        "--run",
        action="append",
        default=[],
        metavar="DIR",
        help="A run to export (repeatable; default: runs/<project>/latest of each project).",
    )
    return parser


if __name__ == "__main__":
    # Answer --help and usage errors at once, before TensorFlow loads (seconds).
    parse_args_before_tensorflow(build_parser())

import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from shared.benchmarks import cpu_name
from shared.cli import exit_on_user_error, setup_logging
from shared.errors import UserError
from shared.export import ExportError, export_run
from shared.saving import INFERENCE_MODULES

log = logging.getLogger(__name__)


def runs_to_measure(chosen: Sequence[str]) -> list[str]:
    """The chosen runs, or the latest run of every project that has one."""
    if chosen:
        return list(chosen)
    found = [f"runs/{project}/latest" for project in INFERENCE_MODULES]
    found = [run for run in found if Path(run, "metrics.json").exists()]
    if not found:
        raise UserError("no finished runs under runs/: train one (e.g. make xor-mlp) first.")
    return found


def measure(run_dirs: Sequence[str]) -> list[str]:
    """One table row per run and export variant."""
    rows = [
        "| run | format | size (KB) | ms per call | Keras ms | largest difference | score "
        "(held-out) | Keras score |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run_dir in run_dirs:
        for export_format, quantize in VARIANTS:
            name = f"{export_format} {quantize}".strip()
            with tempfile.TemporaryDirectory() as scratch:
                try:
                    result = export_run(run_dir, export_format, quantize, f"{scratch}/out")
                except ExportError as error:
                    rows.append(f"| {run_dir} | {name} | cannot express it: {error} |||||")
                    continue
            difference = (
                "" if result.largest_difference is None else f"{result.largest_difference:.1g}"
            )
            rows.append(
                f"| {run_dir} | {name} | {result.size_bytes / 1024:,.0f} | "
                f"{result.latency_ms:.3g} | {result.keras_latency_ms:.3g} | {difference} | "
                f"{result.export_score:.4f} | {result.keras_score:.4f} |"
            )
            log.info("%s", rows[-1])
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    run_dirs = exit_on_user_error(lambda: runs_to_measure(args.run))
    print(f"CPU: {cpu_name()}")
    rows = exit_on_user_error(lambda: measure(run_dirs))
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
