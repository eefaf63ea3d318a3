"""Score a trained CIFAR run again: on its own held-out images, or on any labelled folder.

    python -m projects.cifar_cnn.evaluate --run-dir runs/cifar_cnn/latest
    python -m projects.cifar_cnn.evaluate --run-dir runs/cifar_cnn/latest --data-dir FOLDER

Without ``--data-dir`` the run's held-out images are re-created (the test
split of its ``--data-dir``, or the same seeded validation split). With
``--data-dir FOLDER`` every image of ``FOLDER/<class>/*`` is scored; the folder
may hold any of the model's classes, and a class the model does not know is
an error listing both sets. Prints the accuracy and per-class accuracy and
writes, as training does, a confusion matrix and a grid of labelled examples,
plus ``evaluation.json``, into ``--out`` (default
``RUN_DIR/evaluation/<folder name>/``). For airbench runs it also prints the
accuracy with 1 view (the image), 2 (and its mirror image) and 6 (and both
shifted by a pixel): what test-time augmentation adds, without training again.
"""

from __future__ import annotations

import argparse

from shared.cli import parse_args_before_tensorflow
from shared.config import program_name


def build_parser() -> argparse.ArgumentParser:
    """The command line: the run, the images, where the pictures go."""
    parser = argparse.ArgumentParser(
        prog=program_name(), description="Accuracy of a trained CIFAR run on labelled images."
    )
    parser.add_argument(
        "--run-dir", default="runs/cifar_cnn/latest", help="Run directory (default: %(default)s)."
    )
    parser.add_argument(
        "--data-dir",
        default="",
        metavar="FOLDER",
        help="Labelled images FOLDER/<class>/* (default: the run's own held-out images).",
    )
    parser.add_argument(
        "--out", default="", help="Output folder (default: RUN_DIR/evaluation/<folder name>)."
    )
    return parser


if __name__ == "__main__":
    # Answer --help and usage errors at once, before TensorFlow loads (seconds).
    parse_args_before_tensorflow(build_parser())

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from projects.cifar_cnn.airbench import with_test_time_augmentation
from projects.cifar_cnn.train import classification_metrics, plot_confusion_matrix, plot_examples
from shared.cli import exit_on_user_error, setup_logging
from shared.images import load_image_data, load_labelled_folder
from shared.runs import load_run
from shared.saving import write_json

log = logging.getLogger("cifar_cnn")

VIEWS = {0: 1, 1: 2, 2: 6}
HELD_OUT = "held-out"


def held_out_images(config: dict) -> tuple[np.ndarray, np.ndarray, str]:
    """The run's own held-out images and labels, and a sentence naming them."""
    data = load_image_data(
        config["data_dir"] or None,
        config["image_size"],
        config["validation_fraction"],
        config["seed"],
    )
    return data.held_out_images, data.held_out_labels, data.held_out_note


def accuracy_by_views(model, images: np.ndarray, labels: np.ndarray) -> dict[int, float] | None:
    """``{views: accuracy}`` of an airbench model's network, or None for other models."""
    cores = [layer for layer in model.layers if layer.name == "cifar_airbench"]
    if not cores:
        return None
    results = {}
    for level, views in VIEWS.items():
        probabilities = with_test_time_augmentation(cores[0], level).predict(
            images, batch_size=500, verbose=0
        )
        results[views] = float(np.mean(probabilities.argmax(axis=1) == labels))
    return results


def evaluate(run_dir: str, data_dir: str = "", out: str = "") -> dict:
    """Score the run's saved model; write the plots and ``evaluation.json``; return its content."""
    run = load_run(run_dir, inference="projects.cifar_cnn.evaluate")
    class_names = tuple(run.metrics["class_names"])
    if data_dir:
        images, labels = load_labelled_folder(data_dir, run.config["image_size"], class_names)
        note = f"{len(labels)} images of {data_dir}"
    else:
        images, labels, note = held_out_images(run.config)
    probabilities = run.model.predict(images, batch_size=500, verbose=0)
    metrics = classification_metrics(probabilities, labels, class_names)
    metrics["images"] = len(labels)
    metrics["images_note"] = note
    views = accuracy_by_views(run.model, images, labels)
    if views is not None:
        metrics["accuracy_by_test_time_views"] = views
    name = Path(data_dir).resolve().name if data_dir else HELD_OUT
    out_dir = Path(out) if out else Path(run_dir) / "evaluation" / name
    title = f"{run.config['model']}: accuracy {metrics['accuracy']:.1%} on {note}"
    plot_confusion_matrix(
        np.asarray(metrics["confusion_matrix"]),
        class_names,
        title,
        out_dir / "confusion_matrix.png",
    )
    plot_examples(
        images, labels, probabilities, class_names, out_dir / "examples.png", run.config["seed"]
    )
    write_json(out_dir / "evaluation.json", metrics)
    metrics["out_dir"] = str(out_dir)
    return metrics


def report(metrics: dict) -> str:
    """The printed summary: accuracy, per-class table, views, where the files are."""
    present = np.asarray(metrics["confusion_matrix"]).sum(axis=1)
    lines = [f"accuracy {metrics['accuracy']:.4f} on {metrics['images_note']}", ""]
    lines.append(f"{'class':<12} {'images':>6} {'accuracy':>8}")
    for (name, accuracy), count in zip(metrics["per_class_accuracy"].items(), present, strict=True):
        if count:
            lines.append(f"{name:<12} {count:>6} {accuracy:>8.3f}")
    if "accuracy_by_test_time_views" in metrics:
        lines += ["", f"{'test-time views':>16}  accuracy"]
        for views, accuracy in metrics["accuracy_by_test_time_views"].items():
            lines.append(f"{views:>16}  {accuracy:.4f}")
    lines += ["", f"confusion matrix, examples and evaluation.json in {metrics['out_dir']}"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(logging.WARNING)
    metrics = exit_on_user_error(lambda: evaluate(args.run_dir, args.data_dir, args.out))
    print(report(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
