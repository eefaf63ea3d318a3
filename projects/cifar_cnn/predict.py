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
import tensorflow as tf

from shared.cli import exit_on_user_error, setup_logging
from shared.export import HeldOut, Serving, float32_twin, keras_call
from shared.images import ImageDataError, load_image_data, read_image_file
from shared.runs import LoadedRun, load_run

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


# Held-out images scored when an export is checked (each is one call of the exported model).
EXPORT_HELD_OUT_IMAGES = 200


def serving(run: LoadedRun) -> Serving:
    """What ``python -m shared.export`` exports: uint8 ``image`` -> ``probabilities``.

    Test-time augmentation, when the run uses it, is part of the model and so of
    the export.
    """
    model = float32_twin(run.model)
    config = run.config
    data = load_image_data(
        config["data_dir"] or None,
        config["image_size"],
        config["validation_fraction"],
        config["seed"],
    )
    size, classes = config["image_size"], run.metrics["class_names"]
    # Every tenth held-out image: all classes, in a few hundred calls.
    step = max(1, len(data.held_out_labels) // EXPORT_HELD_OUT_IMAGES)
    held_out = data.held_out_images[::step][:EXPORT_HELD_OUT_IMAGES]
    labels = data.held_out_labels[::step][:EXPORT_HELD_OUT_IMAGES]
    representative = np.random.default_rng(0).permutation(len(data.train_labels))[:100]

    def accuracy(runner) -> float:
        predicted = [int(np.argmax(runner([image[None]])[0])) for image in held_out]
        return float(np.mean(np.array(predicted) == labels))

    return Serving(
        call=keras_call(model),
        trackable=model,
        inputs=[tf.TensorSpec((None, size, size, 3), tf.uint8, name="image")],
        outputs=["probabilities"],
        samples=[[image[None]] for image in held_out[:8]],
        representative=[[data.train_images[i][None]] for i in representative],
        held_out=HeldOut(f"accuracy on {len(labels)} held-out images", accuracy),
        description=f"image: RGB pixels 0-255, {size}x{size}. probabilities: one per class, "
        f"in this order: {', '.join(classes)}.",
    )


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
