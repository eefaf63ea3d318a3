"""Recurrence against attention at equal wall-clock budgets: one table from real runs.

    python -m projects.shakespeare.compare                      # or: make shakespeare-compare
    python -m projects.shakespeare.compare --minutes 10 20 --cells gru transformer
    python -m projects.shakespeare.compare --quick              # seconds, for smoke tests

Trains every ``--cells`` model with ``--minutes`` M for every budget M (each with its
own defaults, `train.py`'s ``--minutes``), one after the other, each in a fresh
process, into ``--out/<cell>-<M>min``, then writes ``--out/compare.md``: parameters,
precision, epochs, training minutes, characters trained and per second, best
validation nats/char and bits/char, and generation characters/s (300 characters,
cached/stateful). Runs that already finished are reused, so a stopped comparison
continues where it stopped. The defaults (4 models x 10 and 20 minutes) take about
two hours on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

from projects.shakespeare.config import CELLS
from shared.cli import parse_args_before_tensorflow
from shared.config import program_name
from shared.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    """The command line: budgets, models and output folder."""
    parser = argparse.ArgumentParser(
        prog=program_name(), description="Train each model at each time budget; one table."
    )
    parser.add_argument(
        "--minutes",
        type=float,
        nargs="+",
        default=[10.0, 20.0],
        help="Training budgets in minutes (default: 10 20).",
    )
    parser.add_argument(
        "--cells",
        nargs="+",
        choices=CELLS,
        default=["simplernn", "lstm", "gru", "transformer"],
        help="Models to compare (default: all four).",
    )
    parser.add_argument(
        "--out", default="runs/shakespeare-compare", help="Folder of the runs and compare.md."
    )
    parser.add_argument(
        "--quick", action="store_true", help="Tiny models and budgets, for smoke tests."
    )
    return parser


class ComparisonError(UserError):
    """The comparison's settings are unusable."""


def check_budgets(budgets: Sequence[float]) -> None:
    """Raise `ComparisonError` unless every budget is a positive number of minutes."""
    if any(not minutes > 0 or not math.isfinite(minutes) for minutes in budgets):
        raise ComparisonError(f"--minutes must be positive numbers, got {list(budgets)}.")


if __name__ == "__main__":
    # Answer --help, usage errors and bad budgets at once, before TensorFlow loads (seconds).
    parse_args_before_tensorflow(build_parser(), check=lambda args: check_budgets(args.minutes))

import logging
import sys
import time
from pathlib import Path

from projects.shakespeare.generate import Generator
from projects.shakespeare.model import core_of
from shared.cli import exit_on_user_error, setup_logging
from shared.runs import load_run
from shared.sweep import examples_trained, finished_or_train, read_history, write_text

log = logging.getLogger("shakespeare")
GENERATED = 300


def run_name(cell: str, minutes: float) -> str:
    """``gru-20min`` (``gru-0.5min``): the run folder of one model and budget."""
    return f"{cell}-{minutes:g}min"


def train(cell: str, minutes: float, run_dir: Path, quick: bool) -> None:
    """Train one model for ``minutes`` in a fresh process, unless it already finished."""
    arguments = ["--cell", cell, "--minutes", f"{minutes:g}"] + (["--quick"] if quick else [])
    finished_or_train("projects.shakespeare.train", arguments, run_dir)


def summarise(run_dir: Path) -> dict:
    """One row of the table from a finished run, with a fresh generation timing."""
    loaded = load_run(run_dir, inference="projects.shakespeare.compare")
    history = read_history(run_dir)
    characters, seconds = examples_trained(history)
    generator = Generator(loaded.model)
    generator.generate("ROMEO:", 5, seed=0)  # trace once
    started = time.perf_counter()
    generator.generate("ROMEO:", GENERATED, seed=0)
    nats = loaded.metrics["validation"]["nats_per_char"]
    return {
        "run": run_dir.name,
        "cell": loaded.config["cell"],
        "parameters": core_of(loaded.model).count_params(),
        "precision": loaded.metrics.get("precision_policy", "float32"),
        "epochs": len(history),
        "training_minutes": seconds / 60,
        "characters": characters,
        "characters_per_second": characters / seconds,
        "nats_per_char": nats,
        "bits_per_char": nats / math.log(2),
        "window": loaded.metrics["validation"].get("window"),
        "generation_per_second": GENERATED / (time.perf_counter() - started),
    }


def markdown_table(rows: list[dict]) -> str:
    """The comparison as a Markdown table, one row per run in the order they ran."""
    lines = [
        "| run | parameters | precision | epochs | training minutes | characters trained "
        "| training chars/s | validation nats/char | bits/char | validation window "
        "| generation chars/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['run']} | {row['parameters']:,} | {row['precision']} | {row['epochs']} "
            f"| {row['training_minutes']:.1f} | {row['characters'] / 1e6:.1f} M "
            f"| {row['characters_per_second']:,.0f} | {row['nats_per_char']:.4f} "
            f"| {row['bits_per_char']:.4f} | {row['window']} "
            f"| {row['generation_per_second']:,.0f} |"
        )
    return "\n".join(lines) + "\n"


def compare(
    cells: Sequence[str], budgets: Sequence[float], out: Path, quick: bool = False
) -> list[dict]:
    """Train (or reuse) every model at every budget; write ``out/compare.md``; return rows."""
    check_budgets(budgets)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for minutes in budgets:
        for cell in cells:
            run_dir = out / run_name(cell, minutes)
            train(cell, minutes, run_dir, quick)
            rows.append(summarise(run_dir))
    write_text(out / "compare.md", markdown_table(rows))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()

    def run() -> None:
        rows = compare(args.cells, args.minutes, Path(args.out), args.quick)
        sys.stdout.write(markdown_table(rows))
        log.info("Table written to %s", Path(args.out) / "compare.md")

    exit_on_user_error(run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
