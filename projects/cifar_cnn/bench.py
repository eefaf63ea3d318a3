"""Benchmark: CNN training throughput and arithmetic rate, measured in one run on this machine.

    python -m projects.cifar_cnn.bench        # or: make bench-cifar

Prints, at the batch size of a full-data run (airbench 2000, or 1024 with SGD; the
others 256), on the real input pipeline (bundled images, augmentation included), after
a warm-up that
excludes tracing, as the fastest of three timings, each from the end of the
first timed step to the end of the last (not ``fit``'s set-up and tear-down):

* images per second of training the default model (airbench, with its default
  Muon recipe at batch 2000 and with ``--optimizer sgd`` at batch 1024), ResNet-9 (width 32)
  and the TensorFlow tutorial's CNN (Conv 32-64-64, Dense 64: ``--model simple``),
  in float32 and, on CPUs with native bfloat16, in mixed bfloat16; the default model
  also compiled by XLA in float32 (``--jit-compile``), and built with Keras's batch
  norm (then `airbench.ShiftedGELU`) or with Keras's batch norm, bias and GELU layers,
  which TensorFlow runs op by op, instead of `airbench.BatchNormShiftedGELU`'s XLA
  functions;
* the arithmetic each achieves in GFLOP/s, counting a training step as 3x the
  forward pass's multiply-adds x 2 (forward, plus two backward products per
  layer), against a large float32 matrix product measured in the same run:
  the machine's practical peak.

Figures only; nothing is asserted. Weights are untrained: speed does not
depend on them.
"""

from __future__ import annotations

import argparse

from shared.cli import parse_args_before_tensorflow, positive_int
from shared.config import program_name


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's one option."""
    parser = argparse.ArgumentParser(prog=program_name(), description=__doc__.split("\n")[0])
    parser.add_argument(
        "--images",
        type=positive_int,
        default=5120,
        help="Training images per timing (at least 6 steps); the fastest of 3 timings counts.",
    )
    return parser


if __name__ == "__main__":
    # Answer --help and bad flags at once, before TensorFlow loads.
    parse_args_before_tensorflow(build_parser())

import logging

import keras
import tensorflow as tf

from projects.cifar_cnn import airbench
from projects.cifar_cnn.config import CifarConfig
from projects.cifar_cnn.data import training_dataset
from projects.cifar_cnn.model import (
    augmentation,
    build_classifier,
    channel_statistics,
    compile_classifier,
)
from projects.cifar_cnn.parameters import forward_flops
from projects.cifar_cnn.train import batch_size_limits, choose_batch_size
from shared.benchmarks import fit_rate, matmul_gflops
from shared.cli import setup_logging
from shared.images import load_bundled_sample
from shared.precision import cpu_supports_bfloat16

log = logging.getLogger("cifar_cnn")

WARMUP_STEPS = 3
# The same network with less fused: `airbench.build_airbench`'s ``fusion`` for each label.
FUSION_ROWS = {
    "airbench (Muon), Keras batch norm": "shift",
    "airbench (Muon), Keras layers": "none",
}
# Time the batch size a run on CIFAR-10's 45,000 training images uses, not the sample's.
FULL_TRAINING_IMAGES = 45_000


def training_throughput(model: keras.Model, data: tf.data.Dataset, steps: int, batch: int):
    """Images per second of ``model.fit``: the fastest of 3 runs of ``steps`` steps."""
    model.fit(data, steps_per_epoch=WARMUP_STEPS, epochs=1, shuffle=False, verbose=0)
    return fit_rate(model, data, steps, batch)


def airbench_model(
    images, labels, mean, variance, batch_size, optimizer, fusion: str = "batch_norm"
):
    """The airbench model with ``optimizer``'s recipe, compiled, and its training data.

    ``fusion`` other than the default builds the same network with Keras's batch norm
    (and, with "none", Keras's bias and GELU layers), to show what the XLA functions of
    `airbench.BatchNormShiftedGELU` and `airbench.ShiftedGELU` save.
    """
    whitening = airbench.patch_whitening_filters(images[:5000], mean, variance)
    model = airbench.build_airbench(
        10, 32, mean, variance, whitening, optimizer=optimizer, fusion=fusion
    )
    if optimizer == "muon":
        airbench.compile_airbench_muon(model, 1000, 100, batch_size)
    else:
        airbench.compile_airbench(model, 1000, batch_size)
    data = airbench.training_dataset(images, labels, 10, batch_size, 1000, 2, True, True, seed=0)
    return model, data


def classic_model(architecture, width, images, labels, mean, variance, batch_size):
    """One of simple/vgg/resnet with its recipe's settings, and its training data."""
    config = CifarConfig(model=architecture)
    model = build_classifier(architecture, 10, 32, width, mean, variance)
    compile_classifier(model, 0.01, 0.9, config.weight_decay, config.label_smoothing)
    data = training_dataset(
        images,
        labels,
        10,
        batch_size,
        augmentation(config.translate, config.flip, config.seed),
        config.seed,
    ).repeat()
    return model, data


def main() -> None:
    args = build_parser().parse_args()
    setup_logging()
    images, labels = load_bundled_sample(32)
    mean, variance = channel_statistics(images)
    cpu_bfloat16 = cpu_supports_bfloat16()
    chosen = "mixed_bfloat16" if cpu_bfloat16 else "float32"  # --mixed-precision auto's
    # (label, --model, --optimizer (airbench only), precision, XLA)
    cases = [
        ("airbench, SGD (--optimizer sgd)", "airbench", "sgd", "float32", False),
        ("airbench, SGD (--optimizer sgd)", "airbench", "sgd", "mixed_bfloat16", False),
        ("airbench (default, Muon)", "airbench", "muon", "float32", False),
        ("airbench (default, Muon)", "airbench", "muon", "float32", True),
        ("airbench (default, Muon)", "airbench", "muon", "mixed_bfloat16", False),
        *((label, "airbench", "muon", chosen, False) for label in FUSION_ROWS),
        ("ResNet-9 (resnet, width 32)", "resnet", "", "float32", False),
        ("ResNet-9 (resnet, width 32)", "resnet", "", "mixed_bfloat16", False),
        ("TF tutorial CNN (simple, width 32)", "simple", "", "float32", False),
    ]
    rows = []
    for label, architecture, optimizer, policy, xla in cases:
        if policy == "mixed_bfloat16" and not cpu_bfloat16:
            continue
        keras.mixed_precision.set_global_policy(policy)
        batch_size = choose_batch_size(
            0, FULL_TRAINING_IMAGES, *batch_size_limits(architecture, optimizer)
        )
        # At least 6 steps, best of 3: airbench's batch of 1024 gave unstable figures from 5.
        steps = max(args.images // batch_size, 6)
        if architecture == "airbench":
            model, data = airbench_model(
                images,
                labels,
                mean,
                variance,
                batch_size,
                optimizer,
                FUSION_ROWS.get(label, "batch_norm"),
            )
        else:
            model, data = classic_model(
                architecture, 32, images, labels, mean, variance, batch_size
            )
        model.jit_compile = xla
        if xla:
            policy += "+XLA"
        per_second = training_throughput(model, data, steps, batch_size)
        rows.append(
            (label, policy, batch_size, model.count_params(), forward_flops(model), per_second)
        )
        log.info("%s, %s, batch %d: %.0f images/s", label, policy, batch_size, per_second)
    keras.mixed_precision.set_global_policy("float32")
    peak = matmul_gflops()

    print("\nTraining throughput (fit on the bundled sample, augmentation included):")
    print(
        f"{'model':36s} {'precision':>15s} {'batch':>6s} {'params':>10s} {'MFLOP/img':>10s} "
        f"{'images/s':>9s} {'GFLOP/s':>8s}"
    )
    for label, policy, batch_size, parameters, flops, per_second in rows:
        achieved = 3 * flops * per_second / 1e9
        print(
            f"{label:36s} {policy:>15s} {batch_size:>6d} {parameters:>10,d} "
            f"{flops / 1e6:>10.1f} {per_second:>9.0f} {achieved:>8.1f}"
        )
    print(
        f"{'4096x4096 float32 matmul (peak)':36s} {'':>15s} {'':>6s} {'':>10s} {'':>10s} "
        f"{'':>9s} {peak:>8.1f}"
    )
    default = [row for row in rows if row[0].startswith("airbench") and row[0] not in FUSION_ROWS]
    for label, policy, _, _, flops, per_second in default:
        name = "airbench (Muon)" if "Muon" in label else "airbench (SGD)"
        print(
            f"{name} in {policy}: {3 * flops * per_second / 1e9 / peak:.0%} of the matrix-"
            f"product rate; one epoch of {FULL_TRAINING_IMAGES:,d} images takes about "
            f"{FULL_TRAINING_IMAGES / per_second:.0f} s."
        )
    fused, keras_batch_norm, keras_layers = (
        next(row[5] for row in rows if row[0] == name and row[1] == chosen)
        for name in ("airbench (default, Muon)", *FUSION_ROWS)
    )
    print(
        f"airbench (Muon) in {chosen} trains {fused / keras_layers:.2f}x as fast with "
        "airbench.BatchNormShiftedGELU (batch norm, shift and GELU in XLA functions) as "
        f"with Keras's layers, and {fused / keras_batch_norm:.2f}x as fast as with Keras's "
        "batch norm followed by airbench.ShiftedGELU (shift and GELU in XLA functions)."
    )


if __name__ == "__main__":
    main()
