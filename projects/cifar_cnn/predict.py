"""Classify image files with a trained CIFAR CNN run: the top 3 classes of each.

    python -m projects.cifar_cnn.predict --run-dir runs/cifar_cnn/latest cat.jpg ship.png
    make cifar-cnn-predict IMAGES="cat.jpg ship.png"

prints, for each image, ``path: class 0.87, class 0.06, class 0.02``. Images of
any size and mode (grey, palette, RGBA) are converted to RGB and resized to
the model's input (32x32 for CIFAR-10). A file that is not an image gets an
error line on stderr, the others are still classified, and the exit status is 1.
"""

from __future__ import annotations

import argparse

from shared.cli import parse_args_before_tensorflow
from shared.config import program_name


def build_parser() -> argparse.ArgumentParser:
    """The command line: run directory, which model, image files."""
    parser = argparse.ArgumentParser(
        prog=program_name(), description="Top-3 classes of images, from a trained run."
    )
    parser.add_argument(
        "--run-dir", default="runs/cifar_cnn/latest", help="Run directory (default: %(default)s)."
    )
    parser.add_argument(
        "--which",
        choices=("model", "best", "last"),
        default="model",
        help="model.keras (the epoch the run's --keep chose), or the best or last epoch.",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="PNG, JPEG, ... files.")
    return parser


if __name__ == "__main__":
    # Answer --help and usage errors at once, before TensorFlow loads (seconds).
    parse_args_before_tensorflow(build_parser())

import logging
import sys
from collections.abc import Sequence

import numpy as np

from shared.cli import exit_on_user_error, setup_logging
from shared.images import ImageDataError, read_image_file
from shared.runs import load_run

log = logging.getLogger("cifar_cnn")


def classify(model, class_names: Sequence[str], paths: Sequence[str], top: int = 3):
    """Top-``top`` (class, probability) pairs of each readable image, and the errors.

    Returns:
        ``(results, errors)``: ``results`` maps path -> list of pairs, best
        first; ``errors`` maps path -> message for files that are not images.
    """
    image_size = int(model.input_shape[1])
    images, readable, errors = [], [], {}
    for path in paths:
        try:
            images.append(read_image_file(path, image_size))
            readable.append(path)
        except ImageDataError as error:
            errors[path] = str(error)
    results = {}
    if images:
        probabilities = model.predict(np.stack(images), verbose=0, batch_size=256)
        for path, row in zip(readable, probabilities, strict=True):
            best = np.argsort(row)[::-1][:top]
            results[path] = [(class_names[index], float(row[index])) for index in best]
    return results, errors


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(logging.WARNING)
    run = exit_on_user_error(
        lambda: load_run(args.run_dir, args.which, inference="projects.cifar_cnn.predict")
    )
    results, errors = classify(run.model, run.metrics["class_names"], args.images)
    for path in args.images:
        if path in errors:
            print(f"error: {errors[path]}", file=sys.stderr)
        else:
            ranked = ", ".join(f"{name} {probability:.3f}" for name, probability in results[path])
            print(f"{path}: {ranked}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
