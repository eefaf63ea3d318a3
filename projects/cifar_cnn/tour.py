"""The CNN lecture's history, measured: every architecture under the same time budget.

    python -m projects.cifar_cnn.tour                          # or: make cifar-tour
    python -m projects.cifar_cnn.tour --data-dir DIR --minutes 10
    python -m projects.cifar_cnn.tour --models lenet5 alexnet --minutes 3

Trains every ``--models`` architecture (default: all eight, from LeNet-5 to
airbench) with ``train.py --minutes M``, one after the other, each in a fresh
process, on the same data (``--data-dir``, else CIFAR-10 or its bundled
4,000-image sample) and the same held-out images, into ``--out/<model>``. Then
writes ``--out/tour.md`` (parameters, MFLOP per image, training images/s,
epochs, training minutes, held-out accuracy) and ``--out/tour.png`` (held-out
accuracy after each epoch against training minutes, all models in one plot).
Runs that finished before are reused, so a stopped tour continues where it
stopped. On the bundled sample the default (1.5 minutes each) takes about 15
minutes on 2 CPU cores; on the full training set with ``--minutes 10``, about
1.5 hours.
"""

from __future__ import annotations

import argparse

from projects.cifar_cnn.config import MODELS
from shared.cli import parse_args_before_tensorflow
from shared.config import program_name

# The lecture's order: LeNet-5 (1998) to DenseNet (2017), then this project's recipes.
TOUR_ORDER = ("lenet5", "alexnet", "vgg", "inception", "resnet", "densenet", "simple", "airbench")
assert sorted(TOUR_ORDER) == sorted(MODELS)


def build_parser() -> argparse.ArgumentParser:
    """The command line: models, budget, data and output folder."""
    parser = argparse.ArgumentParser(
        prog=program_name(),
        description="Train every CNN architecture under the same time budget; one table.",
    )
    parser.add_argument(
        "--models", nargs="+", choices=TOUR_ORDER, default=list(TOUR_ORDER), metavar="MODEL"
    )
    parser.add_argument(
        "--minutes", type=float, default=1.5, help="Training budget of each model (default 1.5)."
    )
    parser.add_argument(
        "--data-dir", default="", help="Image folder, as train.py's --data-dir (default: CIFAR-10)."
    )
    parser.add_argument("--out", default="runs/cifar-tour", help="Folder of the runs and tables.")
    parser.add_argument(
        "--quick", action="store_true", help="Tiny models, one epoch each: for smoke tests."
    )
    return parser


if __name__ == "__main__":
    # Answer --help and usage errors at once, before TensorFlow loads (seconds).
    parse_args_before_tensorflow(build_parser())

import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from projects.cifar_cnn.model import trained_network
from projects.cifar_cnn.parameters import forward_flops
from shared.cli import exit_on_user_error, setup_logging
from shared.errors import UserError
from shared.plots import save_figure
from shared.runs import load_run
from shared.saving import read_json_or_none
from shared.sweep import (
    SweepError,
    examples_trained,
    finished_or_train,
    read_history,
    write_text,
)

log = logging.getLogger("cifar_cnn")


# Settings the tour changes from a model's defaults, each for a measured reason.
# AlexNet has no batch norm: at the default peak learning rate (0.2) its loss became NaN
# in epoch 3 of a full-data run (the end of the warm-up).
TOUR_SETTINGS = {"alexnet": ["--learning-rate", "0.05"]}


def train(model: str, minutes: float, data_dir: str, run_dir: Path, quick: bool) -> None:
    """Train one architecture in a fresh process, unless it finished before."""
    arguments = ["--model", model, *TOUR_SETTINGS.get(model, [])]
    arguments += ["--quick"] if quick else ["--minutes", f"{minutes:g}"]
    arguments += ["--data-dir", data_dir] if data_dir else []
    finished_or_train("projects.cifar_cnn.train", arguments, run_dir)


def diverged(run_dir: Path) -> bool:
    """Whether the run in ``run_dir`` stopped because its loss became NaN or infinite."""
    metrics = read_json_or_none(run_dir / "metrics.json")
    return isinstance(metrics, dict) and metrics.get("status") == "diverged"


def summarise(run_dir: Path) -> dict:
    """One row of the table, and the accuracy curve, from a finished run."""
    run = load_run(run_dir, inference="projects.cifar_cnn.tour")
    history = read_history(run_dir)
    images, seconds = examples_trained(history)
    elapsed = np.cumsum([row["epoch_seconds"] for row in history]) / 60
    return {
        "model": run.config["model"],
        "parameters": int(run.metrics["parameters"]),
        "mflop_per_image": forward_flops(trained_network(run.model)) / 1e6,
        "images_per_second": images / seconds,
        "epochs": len(history),
        "training_minutes": seconds / 60,
        "accuracy": float(run.metrics["accuracy"]),
        "held_out": run.metrics["held_out_note"],
        "curve": (elapsed.tolist(), [row["val_accuracy"] for row in history]),
    }


def markdown_table(rows: list[dict]) -> str:
    """The tour as a Markdown table, in the lecture's order."""
    lines = [
        "| model | parameters | MFLOP per image | training images/s | epochs "
        "| training minutes | held-out accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row.get("diverged"):
            lines.append(
                f"| {row['model']} | | | | | | diverged: its loss became NaN "
                "(see its train.log; lower --learning-rate) |"
            )
            continue
        lines.append(
            f"| {row['model']} | {row['parameters']:,} | {row['mflop_per_image']:,.1f} "
            f"| {row['images_per_second']:,.0f} | {row['epochs']} "
            f"| {row['training_minutes']:.1f} | {row['accuracy']:.1%} |"
        )
    trained = [row for row in rows if not row.get("diverged")]
    if trained:
        lines.append(f"\nHeld-out images: {trained[0]['held_out']}.")
    return "\n".join(lines) + "\n"


def plot_tour(rows: list[dict], path: Path) -> Path:
    """Held-out accuracy after each epoch against training minutes, one line per model."""
    figure, axis = plt.subplots(figsize=(8, 5))
    for row in rows:
        if row.get("diverged"):
            continue
        minutes, accuracy = row["curve"]
        axis.plot(minutes, np.asarray(accuracy) * 100, marker="o", markersize=3, label=row["model"])
    axis.set_xlabel("training minutes (this machine)")
    axis.set_ylabel("held-out accuracy after the epoch (%)")
    axis.set_title("CNN architectures under one time budget")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.text(
        0.01,
        0.01,
        "airbench's curve is its network alone; its saved model (the table) averages 6 views.",
        fontsize=7,
    )
    return save_figure(figure, path)


def tour(
    models: Sequence[str], minutes: float, data_dir: str, out: Path, quick: bool = False
) -> list[dict]:
    """Train (or reuse) every model; write ``tour.md`` and ``tour.png``; return the rows."""
    if not (minutes > 0 and math.isfinite(minutes)):
        raise UserError(f"--minutes must be a positive number, got {minutes}.")
    rows = []
    for model in dict.fromkeys(models):
        run_dir = out / model
        try:
            train(model, minutes, data_dir, run_dir, quick)
        except SweepError:
            if not diverged(run_dir):
                raise
        if diverged(run_dir):  # one unstable architecture does not stop the tour
            log.warning("%s diverged; the table says so, and the tour goes on", model)
            rows.append({"model": model, "diverged": True})
            continue
        rows.append(summarise(run_dir))
    write_text(out / "tour.md", markdown_table(rows))
    plot_tour(rows, out / "tour.png")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()

    def run() -> None:
        rows = tour(args.models, args.minutes, args.data_dir, Path(args.out), args.quick)
        sys.stdout.write(markdown_table(rows))
        log.info("Table and plot: %s, %s", Path(args.out) / "tour.md", Path(args.out) / "tour.png")

    exit_on_user_error(run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
