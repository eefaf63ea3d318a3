"""Ask a trained gate model for one output.

    python -m projects.xor_mlp.predict --run-dir runs/xor_mlp/latest 1 0

Expected (after ``make xor-mlp``): ``xor(1, 0) = 1   (P(1) = 0.99...)``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np

from shared.cli import parse_args_before_tensorflow
from shared.config import program_name
from shared.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    """The command line: ``--run-dir`` and two bits."""
    parser = argparse.ArgumentParser(
        prog=program_name(), description="Run a trained AND/OR/XOR model on two bits."
    )
    parser.add_argument(
        "--run-dir", default="runs/xor_mlp/latest", help="Run directory (default: %(default)s)."
    )
    parser.add_argument("bits", nargs="*", metavar="BIT", help="Two inputs, each 0 or 1.")
    return parser


class InputError(UserError):
    """The bits to classify are not two values of 0 or 1."""


def parse_bits(values: Sequence[str]) -> np.ndarray:
    """``["1", "0"]`` -> ``[[1.0, 0.0]]``; anything else raises `InputError`."""
    if len(values) != 2:
        raise InputError(
            f"expected exactly 2 inputs (each 0 or 1), got {len(values)}: {list(values)}"
        )
    bad = [value for value in values if value not in ("0", "1")]
    if bad:
        raise InputError(f"inputs must be 0 or 1; not valid: {', '.join(map(repr, bad))}")
    return np.array([[float(value) for value in values]], dtype=np.float32)


if __name__ == "__main__":
    # Answer --help, usage errors and bad bits at once, before TensorFlow loads (seconds).
    parse_args_before_tensorflow(build_parser(), check=lambda args: parse_bits(args.bits))

import logging
import sys

import tensorflow as tf

from projects.xor_mlp.data import truth_table
from shared.cli import exit_on_user_error, setup_logging
from shared.export import HeldOut, Serving, float32_twin, keras_call
from shared.runs import LoadedRun, load_run

log = logging.getLogger("xor_mlp")


def answer(run: LoadedRun, bits: Sequence[str]) -> tuple[int, float, str]:
    """(output bit, probability of 1, gate name) of a loaded run for two bits."""
    probability = float(run.model.predict(parse_bits(bits), verbose=0)[0, 0])
    return int(probability > 0.5), probability, run.config.get("gate", "gate")


def predict(run_dir: str, bits: Sequence[str]) -> tuple[int, float, str]:
    """Return (output bit, probability of 1, gate name) from the run's saved model."""
    parse_bits(bits)  # bad bits are refused before the model loads
    return answer(load_run(run_dir, inference="projects.xor_mlp.predict"), bits)


def serving(run: LoadedRun) -> Serving:
    """What ``python -m shared.export`` exports: ``bits`` (n, 2) -> ``probability`` (n, 1)."""
    model = float32_twin(run.model)
    inputs, targets = truth_table(run.config.get("gate", "xor"))
    rows = [[row[None]] for row in inputs]

    def accuracy(runner) -> float:
        outputs = np.concatenate([runner(row)[0] for row in rows])
        return float(np.mean((outputs > 0.5) == (targets > 0.5)))

    return Serving(
        call=keras_call(model),
        trackable=model,
        inputs=[tf.TensorSpec((None, 2), tf.float32, name="bits")],
        outputs=["probability"],
        samples=rows,
        representative=rows,
        held_out=HeldOut("accuracy on the 4 input pairs", accuracy),
        description="bits: two inputs, each 0.0 or 1.0. probability: P(output = 1); the "
        "gate's output is 1 when it is above 0.5.",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(logging.WARNING)
    output, probability, gate = exit_on_user_error(lambda: predict(args.run_dir, args.bits))
    print(f"{gate}({args.bits[0]}, {args.bits[1]}) = {output}   (P(1) = {probability:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
