"""Score a trained airbench run again on its held-out images, with each level of test-time views.

    python -m projects.cifar_cnn.evaluate --run-dir runs/cifar_cnn/latest --data-dir DIR

re-creates the run's held-out split (the test split of DIR, or the same seeded
validation split) and prints the accuracy of the run's network with 1 view (the
image), 2 (and its mirror image) and 6 (and both shifted by a pixel): what
test-time augmentation adds, without training again.
"""

from __future__ import annotations

import argparse

from shared.cli import parse_args_before_tensorflow
from shared.config import program_name


def build_parser() -> argparse.ArgumentParser:
    """The command line: the run and where its images are."""
    parser = argparse.ArgumentParser(
        prog=program_name(), description="Accuracy of an airbench run with 1, 2 and 6 views."
    )
    parser.add_argument(
        "--run-dir", default="runs/cifar_cnn/latest", help="Run directory (default: %(default)s)."
    )
    parser.add_argument(
        "--data-dir", default="", help="The run's --data-dir (default: the run's own setting)."
    )
    return parser


if __name__ == "__main__":
    # Answer --help and usage errors at once, before TensorFlow loads (seconds).
    parse_args_before_tensorflow(build_parser())

import logging
import sys
from collections.abc import Sequence

import numpy as np

from projects.cifar_cnn.airbench import with_test_time_augmentation
from shared.cli import exit_on_user_error, setup_logging
from shared.errors import UserError
from shared.images import load_image_data
from shared.runs import load_run

log = logging.getLogger("cifar_cnn")

VIEWS = {0: 1, 1: 2, 2: 6}


def accuracy_by_views(run_dir: str, data_dir: str = "") -> dict[int, float]:
    """``{views: accuracy}`` of the run's network on its held-out images."""
    run = load_run(run_dir, inference="projects.cifar_cnn.predict")
    if run.config.get("model") != "airbench":
        raise UserError(f"{run_dir} trained {run.config.get('model')!r}; only airbench has views.")
    config = run.config
    data = load_image_data(
        data_dir or config["data_dir"] or None,
        config["image_size"],
        config["validation_fraction"],
        config["seed"],
    )
    core = next(layer for layer in run.model.layers if layer.name == "cifar_airbench")
    results = {}
    for level, views in VIEWS.items():
        model = with_test_time_augmentation(core, level)
        probabilities = model.predict(data.held_out_images, batch_size=500, verbose=0)
        results[views] = float(np.mean(probabilities.argmax(axis=1) == data.held_out_labels))
    log.info("Held-out images: %s", data.held_out_note)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    results = exit_on_user_error(lambda: accuracy_by_views(args.run_dir, args.data_dir))
    print(f"{'test-time views':>16}  accuracy")
    for views, accuracy in results.items():
        print(f"{views:>16}  {accuracy:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
