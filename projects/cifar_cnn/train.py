"""Train a CNN to classify CIFAR-10 images (or any image folder).

    python -m projects.cifar_cnn.train                      # or: make cifar-cnn
    python -m projects.cifar_cnn.train --data-dir DIR       # DIR/train/<class>/*.png|jpg
    python -m projects.cifar_cnn.train --model resnet       # or lenet5, alexnet, inception, ...
    python -m projects.cifar_cnn.train --minutes 10         # epochs that fit in 10 minutes
    python -m projects.cifar_cnn.train --quick              # seconds, for smoke tests

Without --data-dir the run uses CIFAR-10 from ``keras.datasets`` (downloaded
once) or, offline, the bundled 4,000-image sample. The training log prints every
layer's output shape and parameter count and the convolution arithmetic of each
conv and pooling layer. At the end the run scores the held-out images (the test
split, or a seeded validation split when there is none): accuracy, per-class
accuracy, a confusion matrix and a grid of labelled examples, in metrics.json
and plots/.

The default model is airbench (``airbench.py``), whose saved model averages
six test-time views. Expected on 2 CPU cores (README.md has the commands and
the machines): offline, on the bundled sample, 82.0% validation accuracy in
under 2 minutes on an AMD EPYC with AVX-512 (79.3-80.5% in 4.5-6.8 minutes without
AVX-512); with ``--data-dir`` on the 50,000 CIFAR-10 training images, 90.2-91.0%
on a 5,000-image validation split (seeds 0-2) after about 16 minutes of training
(8 epochs) on the AVX-512 EPYC. ``--model resnet``: 88.4-88.6% in 35-40 minutes.
"""

from __future__ import annotations

from projects.cifar_cnn.config import DEFAULT_EPOCHS, DEFAULT_WIDTH, CifarConfig
from shared.cli import parse_before_tensorflow

if __name__ == "__main__":
    # Answer --help and flag errors at once, before TensorFlow loads (seconds).
    parse_before_tensorflow(CifarConfig)

import logging
import time
from collections.abc import Callable

import keras
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf

from projects.cifar_cnn import airbench
from projects.cifar_cnn.data import evaluation_dataset, limit_images, training_dataset
from projects.cifar_cnn.model import (
    augmentation,
    build_classifier,
    channel_statistics,
    compile_classifier,
    initialize_from,
    log_architecture,
)
from shared.budget import budgeted_epochs, time_one_epoch
from shared.callbacks import StopOnInterrupt, standard_callbacks
from shared.cli import fit_verbosity, run_training_cli
from shared.distribute import select_strategy
from shared.errors import UserError
from shared.images import load_image_data
from shared.plots import save_figure
from shared.precision import training_precision
from shared.runs import start_run

log = logging.getLogger("cifar_cnn")


# --learning-rate is given for this batch size and scaled in proportion to the real one.
REFERENCE_BATCH_SIZE = 256
# With fewer steps per epoch, warm-up and batch-norm statistics have too few steps to
# settle: on the bundled 3,600 images a batch of 256 (14 steps) diverges in epoch 1.
MIN_STEPS_PER_EPOCH = 50
AIRBENCH_MIN_STEPS = 40
AIRBENCH_MUON_MIN_STEPS = 20


def choose_batch_size(
    requested: int,
    train_images: int,
    largest: int = REFERENCE_BATCH_SIZE,
    min_steps: int = MIN_STEPS_PER_EPOCH,
) -> int:
    """``--batch-size``, or for 0 the largest power of two up to ``largest`` giving
    ``min_steps`` or more steps per epoch."""
    if requested:
        return min(requested, train_images)
    batch_size = largest
    while batch_size > 8 and train_images // batch_size < min_steps:
        batch_size //= 2
    return min(batch_size, train_images)


def batch_size_limits(model: str, optimizer: str) -> tuple[int, int]:
    """``(largest, min_steps)`` for `choose_batch_size`: each recipe's own batch, and the
    fewest steps an epoch may have (the recipes' own epochs have 48 steps: 50,000 images
    / 1024, or 25: / 2000)."""
    if model != "airbench":
        return REFERENCE_BATCH_SIZE, MIN_STEPS_PER_EPOCH
    if optimizer == "muon":
        return airbench.MUON_RECIPE.batch_size, AIRBENCH_MUON_MIN_STEPS
    return airbench.RECIPE.batch_size, AIRBENCH_MIN_STEPS


def peak_learning_rate(config: CifarConfig, batch_size: int) -> float:
    """``--learning-rate`` scaled from a batch of 256 to ``batch_size`` (linear scaling rule)."""
    return config.learning_rate * batch_size / REFERENCE_BATCH_SIZE


def training_epochs(config: CifarConfig) -> int:
    """``--epochs``, or for 0 the model's recipe."""
    if not config.epochs and config.model == "airbench" and config.optimizer == "muon":
        return airbench.MUON_RECIPE.epochs
    return config.epochs or DEFAULT_EPOCHS[config.model]


# Validation accuracy of airbench runs by epochs, keyed by (--optimizer, --width)
# (measured on the 5,000-image validation split of CIFAR-10's training images; see
# README.md), for the --minutes log. Muon 8 and SGD 10 epochs: means of seeds 0, 1 and 2
# (bfloat16). Muon 1 epoch: mean of seeds 0 and 1 on a 2-core CPU without AVX-512
# (float32), where `--minutes 20 --width 32` planned 1 (seed 2, timed faster: 2); 2 epochs:
# mean of `--epochs 2` (seeds 0 and 1) and that seed-2 run, on the same CPU; Muon --width 16,
# 4 epochs: mean of seeds 0, 1 and 2 on that CPU, where `--minutes 20` chooses width 16
# and plans 4 to 6 by the day (seeds 1 and 2 planned 4 again on a faster day and
# reproduced their figures exactly); 5 and 6 epochs: today's network (BatchNormShiftedGELU),
# `--minutes 20` on that CPU: 5 the mean of seeds 1 and 2, 6 seed 0. Muon --width 8 on that CPU,
# `--minutes 20 --width 8`: 10 epochs, mean of seeds 0 and 2; 11, seed 1.
AIRBENCH_MEASURED_ACCURACY: dict[tuple[str, int], dict[int, float]] = {
    ("muon", 32): {1: 0.7396, 2: 0.8337, 8: 0.9083},
    ("muon", 16): {4: 0.8561, 5: 0.8682, 6: 0.8700},
    ("muon", 8): {10: 0.8491, 11: 0.8562},
    ("sgd", 32): {10: 0.9083},
}
MOST_BUDGET_EPOCHS = 100
# When fewer than FEW_EPOCHS fit the budget, --width 0 trains a narrower airbench (an
# explicit --width gets a suggestion): measured on a 2-core CPU without AVX-512,
# `--minutes 20` planned 1 epoch of 577-606 s at --width 32 and 4 epochs of 230-245 s
# at --width 16 (README.md). No narrower width: --width 8 fitted 10-11 epochs of 96-101 s
# there but reached less than width 16's 4 epochs on each of seeds 0-2 (85.1% mean).
FEW_EPOCHS = 3
NARROW_WIDTH = 16


def expected_accuracy_note(model: str, optimizer: str, width: int, epochs: int) -> str:
    """What the measured runs say ``epochs`` epochs reach (``"; on full CIFAR-10, ..."``),
    or ``""`` when nothing was measured for this model, optimizer and width."""
    measured = AIRBENCH_MEASURED_ACCURACY.get((optimizer, width), {}) if model == "airbench" else {}
    if not measured:
        return ""

    def epochs_of(count: int) -> str:
        return f"{count} epoch{'s' if count != 1 else ''}"

    fewer = [count for count in measured if count <= epochs]
    more = [count for count in measured if count >= epochs]
    if fewer and more:  # measured at `epochs`, or on both sides of it
        low, high = max(fewer), min(more)
        found = f"{epochs_of(low)} measured {measured[low]:.1%}"
        if high != low:
            found += f" and {epochs_of(high)} {measured[high]:.1%}"
    else:  # beyond the measured counts: the nearest, named as such
        nearest = max(fewer) if fewer else min(more)
        found = f"the nearest measured count, {epochs_of(nearest)}, reached {measured[nearest]:.1%}"
    return f"; on full CIFAR-10, {found} validation accuracy (README.md)"


def narrow_net_evidence(optimizer: str) -> str:
    """The measured runs that show a narrower airbench making better use of a short
    budget, as a sentence, or ``""`` when they were not measured with ``optimizer``."""
    narrow = AIRBENCH_MEASURED_ACCURACY.get((optimizer, NARROW_WIDTH), {})
    default = AIRBENCH_MEASURED_ACCURACY.get((optimizer, DEFAULT_WIDTH), {})
    if not (narrow and 1 in default):
        return ""
    narrow_epochs = max(narrow)
    return (
        f"on a 2-core CPU without AVX-512, --minutes 20 trained {narrow_epochs} epochs of "
        f"--width {NARROW_WIDTH} to {narrow[narrow_epochs]:.1%} validation accuracy, against "
        f"{default[1]:.1%} for 1 epoch of --width {DEFAULT_WIDTH} (README.md)"
    )


def narrower_width_hint(model: str, optimizer: str, width: int, epochs: int) -> str:
    """A suggestion to train ``--width 16`` when only a few epochs fit the budget, with
    the measured runs behind it, or ``""``."""
    evidence = narrow_net_evidence(optimizer)
    few_fit = model == "airbench" and width > NARROW_WIDTH and epochs < FEW_EPOCHS
    if not (few_fit and evidence):  # or nothing measured to compare
        return ""
    return (
        f"Only {epochs} epoch{'s' if epochs != 1 else ''} fit at --width {width}; a narrower "
        f"net fits more epochs: {evidence}. Try --width {NARROW_WIDTH}."
    )


def budget_plan(
    config: CifarConfig, plan: Callable[[int], tuple[int, float]]
) -> tuple[int, int, float]:
    """``(width, epochs, seconds per epoch)`` for a ``--minutes`` run.

    ``plan(width)`` times the network of that width and returns the epochs that fit
    and the seconds per epoch (`shared.budget.budgeted_epochs`). With ``--width 0``
    (automatic), an airbench of which fewer than `FEW_EPOCHS` epochs fit at the default
    width is timed at `NARROW_WIDTH` as well, and trained there if more epochs fit: on a
    slow CPU 4 epochs of the narrow net beat 1 of the wide one by 13 points (README.md).
    Not with ``--init-from``, whose weights fix the width.
    """
    width = config.width or DEFAULT_WIDTH
    epochs, seconds = plan(width)
    automatic = config.width == 0 and config.model == "airbench" and not config.init_from
    if not (automatic and epochs < FEW_EPOCHS and narrow_net_evidence(config.optimizer)):
        return width, epochs, seconds
    narrow_epochs, narrow_seconds = plan(NARROW_WIDTH)
    if narrow_epochs <= epochs:
        log.info(
            "--width 0 (automatic): --width %d fits no more epochs than --width %d (%d), "
            "so the run trains --width %d",
            NARROW_WIDTH,
            width,
            epochs,
            width,
        )
        return width, epochs, seconds
    log.info(
        "--width 0 (automatic): %d epoch%s of --width %d fit (%.0f s each), %d of --width %d "
        "(%.0f s each), so the run trains --width %d: %s",
        epochs,
        "" if epochs == 1 else "s",
        width,
        seconds,
        narrow_epochs,
        NARROW_WIDTH,
        narrow_seconds,
        NARROW_WIDTH,
        narrow_net_evidence(config.optimizer),
    )
    return NARROW_WIDTH, narrow_epochs, narrow_seconds


def learning_rate_schedule(config: CifarConfig, batch_size: int, steps_per_epoch: int, epochs: int):
    """Linear warm-up to the (batch-scaled) peak, then cosine decay to zero, or constant."""
    peak = peak_learning_rate(config, batch_size)
    if config.lr_schedule == "constant":
        return peak
    total_steps = steps_per_epoch * epochs
    warmup_steps = min(round(config.warmup_epochs * steps_per_epoch), total_steps - 1)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else peak,
        decay_steps=total_steps - warmup_steps,
        warmup_target=peak if warmup_steps else None,
        warmup_steps=warmup_steps,
    )


def main(config: CifarConfig) -> dict:
    """Train, score and save the classifier; returns metrics.json's content."""
    run = start_run("cifar_cnn", config)
    # The chosen precision applies to this run's models only: Keras's global policy is
    # float32 again afterwards, also when the run stops with an error (a bad --data-dir).
    with training_precision(config.mixed_precision) as policy:
        return train_and_score(config, run, policy)


def train_and_score(config: CifarConfig, run, policy: str) -> dict:
    """`main`'s work, with ``policy`` as Keras's global dtype policy."""
    data = load_image_data(
        config.data_dir or None, config.image_size, config.validation_fraction, config.seed
    )
    train_images, train_labels = limit_images(
        data.train_images, data.train_labels, config.max_train_images, config.seed
    )
    if len(train_labels) < len(data.train_labels):
        log.info(
            "Training on %d of the %d training images (--max-train-images %d, the same share "
            "of every class)",
            len(train_labels),
            len(data.train_labels),
            config.max_train_images,
        )
    num_classes = len(data.class_names)
    is_airbench = config.model == "airbench"
    muon = is_airbench and config.optimizer == "muon"
    epochs = training_epochs(config)
    batch_size = choose_batch_size(
        config.batch_size,
        len(train_labels),
        *batch_size_limits(config.model, config.optimizer),
    )
    steps_per_epoch = max(len(train_labels) // batch_size, 1)
    if muon:
        log.info(
            "Batch size %d (%d step%s per epoch over %d images), %d epochs, Muon rate %g on "
            "the 3x3 kernels, SGD rates %g (shifts) and %g (classifier) x batch, decaying "
            "linearly to 0 (the airbench94_muon recipe's)",
            batch_size,
            steps_per_epoch,
            "" if steps_per_epoch == 1 else "s",
            steps_per_epoch * batch_size,
            epochs,
            airbench.MUON_RECIPE.muon_rate,
            airbench.MUON_RECIPE.shift_rate,
            airbench.MUON_RECIPE.head_rate,
        )
    elif is_airbench:
        log.info(
            "Batch size %d (%d step%s per epoch over %d images), %d epochs, peak learning "
            "rate %.4g (the airbench recipe's, scaled to the batch)",
            batch_size,
            steps_per_epoch,
            "" if steps_per_epoch == 1 else "s",
            steps_per_epoch * batch_size,
            epochs,
            airbench.keras_learning_rate(airbench.RECIPE, batch_size),
        )
    else:
        log.info(
            "Batch size %d (%d step%s per epoch over %d images), %d epochs, peak learning "
            "rate %.4g (--learning-rate %g x %d/%d)",
            batch_size,
            steps_per_epoch,
            "" if steps_per_epoch == 1 else "s",
            steps_per_epoch * batch_size,
            epochs,
            peak_learning_rate(config, batch_size),
            config.learning_rate,
            batch_size,
            REFERENCE_BATCH_SIZE,
        )
    mean, variance = channel_statistics(train_images)

    strategy = select_strategy(config.strategy)
    # XLA: Keras's own choice (on GPUs, not on CPUs) unless asked; see README.md's Benchmark.
    # (None leaves compile()'s "auto" in place: the string "auto" set afterwards is truthy.)
    jit_compile = {"auto": None, "on": True, "off": False}[config.jit_compile]
    if config.jit_compile == "on":
        if strategy.num_replicas_in_sync > 1 and not tf.config.list_physical_devices("GPU"):
            raise UserError(
                f"--jit-compile on does not work with {strategy.num_replicas_in_sync} CPU "
                "replicas (XLA cannot reach another device's variables); use --jit-compile "
                "auto, or --strategy default."
            )
        log.info("XLA: each training step is compiled into fused code (--jit-compile on)")

    def compile_for(model: keras.Model, epochs: int) -> None:
        if muon:
            airbench.compile_airbench_muon(
                model,
                epochs * steps_per_epoch,
                airbench.RECIPE.whiten_bias_epochs * steps_per_epoch,
                batch_size,
            )
        elif is_airbench:
            airbench.compile_airbench(model, epochs * steps_per_epoch, batch_size)
        else:
            compile_classifier(
                model,
                learning_rate_schedule(config, batch_size, steps_per_epoch, epochs),
                config.momentum,
                config.weight_decay,
                config.label_smoothing,
            )
        if jit_compile is not None:
            model.jit_compile = jit_compile

    def training_data(epochs: int) -> tf.data.Dataset:
        if is_airbench:
            return airbench.training_dataset(
                train_images,
                train_labels,
                num_classes,
                batch_size,
                epochs,
                airbench.RECIPE.translate_pixels,
                config.flip,
                config.alternating_flip,
                config.seed,
            )
        return training_dataset(
            train_images,
            train_labels,
            num_classes,
            batch_size,
            augmentation(config.translate, config.flip, config.seed),
            config.seed,
        )

    # The whitening filters come from the training images only (5,000 suffice).
    whitening = (
        airbench.patch_whitening_filters(train_images[:5000], mean, variance, eps=config.whiten_eps)
        if is_airbench and config.whiten
        else None
    )
    networks: dict[int, tuple[keras.Model, keras.Model]] = {}

    def network(width: int) -> tuple[keras.Model, keras.Model]:
        """The network of ``width`` and the model that is saved and scored (built once)."""
        if width in networks:
            return networks[width]
        with strategy.scope():
            if is_airbench:
                model = airbench.build_airbench(
                    num_classes,
                    config.image_size,
                    mean,
                    variance,
                    whitening,
                    dirac_init=config.dirac_init,
                    bn_bias_lr_scale=config.bn_bias_lr_scale,
                    width=width,
                    optimizer=config.optimizer,
                )
                # What is saved and scored: the net averaged over test-time views.
                saved_model = airbench.with_test_time_augmentation(model, config.tta)
            else:
                model = build_classifier(
                    config.model, num_classes, config.image_size, width, mean, variance
                )
                saved_model = model
            if config.init_from and not run.resumed:
                log.info("%s", initialize_from(model, config.init_from, data.class_names))
        networks[width] = model, saved_model
        return model, saved_model

    held_out = evaluation_dataset(
        data.held_out_images, data.held_out_labels, num_classes, batch_size
    )
    width = config.width or DEFAULT_WIDTH
    if config.minutes:
        first_timed = width  # its plan is budget.json; another width's has its own file
        timing_started = time.perf_counter()  # the timing of every width counts

        def plan(candidate: int) -> tuple[int, float]:
            model = network(candidate)[0]
            with strategy.scope():
                compile_for(model, epochs)  # timing trains a few steps
            return budgeted_epochs(
                run.path,
                config.minutes,
                lambda: time_one_epoch(
                    model, training_data(1), steps_per_epoch, validation_data=held_out
                ),
                most=MOST_BUDGET_EPOCHS,
                variant="" if candidate == first_timed else f"width{candidate}",
                strategy=strategy,
                started=timing_started,
            )

        width, epochs, seconds = budget_plan(config, plan)
        log.info(
            "--minutes %g: one epoch (its steps and a validation pass) takes about %.0f s on "
            "this machine (timed over a few steps), so training runs %d epoch%s%s",
            config.minutes,
            seconds,
            epochs,
            "" if epochs == 1 else "s",
            expected_accuracy_note(config.model, config.optimizer, width, epochs),
        )
        hint = narrower_width_hint(config.model, config.optimizer, width, epochs)
        if hint and config.width:  # --width 0 has made this choice itself
            log.info("%s", hint)
    model, saved_model = network(width)
    networks.clear()  # the other width's network, if one was timed, is not trained
    with strategy.scope():
        compile_for(model, epochs)
    log_architecture(model)

    train_data = training_data(epochs)
    extra_callbacks: list[keras.callbacks.Callback] = []
    if is_airbench and config.whiten:
        extra_callbacks.append(
            airbench.BiasFreeze(model.get_layer("whiten"), airbench.RECIPE.whiten_bias_epochs)
        )
    if is_airbench and config.lookahead and not muon:
        extra_callbacks.append(airbench.Lookahead(epochs * steps_per_epoch))
    model.fit(
        train_data,
        steps_per_epoch=steps_per_epoch if is_airbench else None,
        validation_data=held_out,
        epochs=epochs,
        shuffle=False,  # the dataset reshuffles every epoch
        callbacks=[
            *standard_callbacks(
                run.path,
                steps_per_epoch * batch_size,
                monitor="val_accuracy",
                mode="max",
                saved_model=saved_model,
            ),
            *extra_callbacks,
        ],
        verbose=fit_verbosity(),
    )

    # --keep last by default here: choosing the epoch by its held-out accuracy would make
    # that accuracy optimistic, and the held-out images may be the test split.
    run.keep_chosen_epoch(saved_model)
    probabilities = saved_model.predict(held_out, verbose=0, callbacks=[StopOnInterrupt()])
    metrics = classification_metrics(probabilities, data.held_out_labels, data.class_names)
    metrics.update(
        {
            "class_names": list(data.class_names),
            "model": config.model,
            "parameters": model.count_params(),
            "width": width,
            "epochs": epochs,
            "test_time_views": {0: 1, 1: 2, 2: 6}[config.tta] if is_airbench else 1,
            "data_source": data.source,
            "held_out_split": data.held_out_split,
            "held_out_note": data.held_out_note,
            "train_images": len(train_labels),
            "held_out_images": len(data.held_out_labels),
            "precision_policy": policy,
            "jit_compile": bool(model.jit_compile),  # XLA, as resolved
        }
    )
    plot_confusion_matrix(
        np.asarray(metrics["confusion_matrix"]),
        data.class_names,
        f"{config.model}: {data.held_out_split} accuracy {metrics['accuracy']:.1%}",
        run.plots_dir / "confusion_matrix.png",
    )
    plot_examples(
        data.held_out_images,
        data.held_out_labels,
        probabilities,
        data.class_names,
        run.plots_dir / "examples.png",
        seed=config.seed,
    )
    log.info("%-12s %8s", "class", "accuracy")
    for name, accuracy in metrics["per_class_accuracy"].items():
        log.info("%-12s %8.3f", name, accuracy)
    log.info(
        "Accuracy on %s: %.4f (%s, %d parameters)",
        data.held_out_note,
        metrics["accuracy"],
        config.model,
        metrics["parameters"],
    )
    keras.mixed_precision.set_global_policy("float32")
    run.finish(saved_model, metrics)
    return metrics


def classification_metrics(
    probabilities: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...]
) -> dict:
    """Accuracy, per-class accuracy, confusion matrix (rows: true class) and loss."""
    predicted = probabilities.argmax(axis=1)
    num_classes = len(class_names)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    chosen = probabilities[np.arange(len(labels)), labels]
    return {
        "accuracy": float(np.mean(predicted == labels)),
        "cross_entropy": float(-np.mean(np.log(np.clip(chosen, 1e-7, 1.0)))),
        "per_class_accuracy": {
            name: float(value) for name, value in zip(class_names, per_class, strict=True)
        },
        "confusion_matrix": confusion.tolist(),
    }


def plot_confusion_matrix(confusion: np.ndarray, class_names, title: str, path) -> None:
    """Counts of (true, predicted) pairs, shaded by the share of each true class."""
    shares = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    size = max(5.0, 0.55 * len(class_names) + 2)
    figure, axis = plt.subplots(figsize=(size + 1, size))
    image = axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(len(class_names))
    axis.set_xticks(ticks, class_names, rotation=45, ha="right")
    axis.set_yticks(ticks, class_names)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    axis.set_title(title)
    if len(class_names) <= 20:
        for row, column in np.ndindex(confusion.shape):
            axis.text(
                column,
                row,
                str(confusion[row, column]),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if shares[row, column] > 0.5 else "black",
            )
    figure.colorbar(image, ax=axis, label="share of the true class")
    save_figure(figure, path)


def plot_examples(images, labels, probabilities, class_names, path, seed: int, count: int = 32):
    """A grid of held-out images titled "true / predicted"; mistakes in red.

    The images are pasted into one picture with a caption above each: one axes
    draws in a fraction of the time 32 subplots take (0.3-0.6 s against 1.3-1.6 s).
    """
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(labels), size=min(count, len(labels)), replace=False))
    columns = 8
    rows = -(-len(chosen) // columns)
    height, width = images.shape[1:3]
    # Each cell: the image with a small margin beside it and room for two lines above.
    margin = max(width // 5, 1)
    cell_width = width + margin
    cell_height = round(cell_width * 2.1 / 1.6)
    canvas = np.full((rows * cell_height + margin, columns * cell_width, 3), 255, np.uint8)
    figure = plt.figure(figsize=(columns * 1.6, rows * 2.1 + 0.5))
    axis = figure.add_axes((0, 0, 1, rows * 2.1 / (rows * 2.1 + 0.5)))
    for position, index in enumerate(chosen):
        row, column = divmod(position, columns)
        top = (row + 1) * cell_height - height
        left = column * cell_width + (cell_width - width) // 2
        canvas[top : top + height, left : left + width] = images[index]
        predicted = int(probabilities[index].argmax())
        correct = predicted == labels[index]
        axis.text(
            left + width / 2,
            top - 1,
            f"{class_names[labels[index]]}\n{'' if correct else 'x '}{class_names[predicted]}",
            ha="center",
            va="bottom",
            fontsize=8,
            color="black" if correct else "red",
        )
    axis.imshow(canvas, interpolation="nearest")
    axis.set_axis_off()
    figure.suptitle("true class / predicted class (mistakes in red, marked x)")
    save_figure(figure, path, tight=False)  # the axes' place is set above


if __name__ == "__main__":
    run_training_cli(main, CifarConfig)
