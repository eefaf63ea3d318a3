"""The CNN lecture's three architectures, and the convolution arithmetic behind them.

Every model takes raw ``uint8`` images (any batch, ``size x size x 3``) and
returns class probabilities: pixel normalisation is its first layer, so the
saved model needs no preprocessing code. Augmentation layers are built here
too but applied in the input pipeline (see ``data.py``): they do nothing at
inference, and in ``tf.data`` they run in parallel with training.

* ``simple``: the TensorFlow tutorial's conv-pool stack (Conv 32-64-64 with
  3x3 kernels and no padding, 2x2 max pooling, Dense 64).
* ``vgg``: VGG-style blocks of two 3x3 conv + batch-norm + ReLU layers and a
  2x2 max pool; three blocks of ``width``, ``2 width`` and ``4 width`` filters.
* ``resnet``: the ResNet-9 of DAWNBench (Page, 2018), a residual network
  with widths ``width``, ``2 width``, ``4 width``, ``8 width``: conv-BN-ReLU
  stages, 2x2 pooling, and two residual blocks ``x + f(x)`` whose skip
  connections let gradients bypass the convolutions.
"""

from __future__ import annotations

import dataclasses
import logging

import keras
import numpy as np
from keras import layers

from projects.cifar_cnn.parameters import explain_parameters, leaf_layers
from shared.distribute import batch_normalization
from shared.errors import UserError
from shared.runs import load_run

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# Convolution arithmetic
# ---------------------------------------------------------------------------


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Output length of a convolution or pooling along one axis.

    ``O = floor((H + 2P - F) / S) + 1``: the filter of size ``F`` fits at
    positions ``0, S, 2S, ...`` of the padded input of length ``H + 2P``. The
    floor drops a last, partial step: 64 pixels, a 7-wide filter and stride 2
    give (64 - 7) / 2 + 1 = 29.5, so 29 positions, and the last pixel is never
    covered.
    """
    if min(size, kernel, stride) < 1 or padding < 0:
        raise ValueError("size, kernel and stride must be >= 1 and padding >= 0")
    if kernel > size + 2 * padding:
        raise ValueError(f"a {kernel}-wide filter does not fit in {size} + 2 * {padding} pixels")
    return (size + 2 * padding - kernel) // stride + 1


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """Keras's ``padding="same"`` as explicit (before, after) padding.

    "same" pads so that the output has ``ceil(size / stride)`` positions; an odd
    total goes one more pixel after than before (TensorFlow's convention).
    """
    output = -(-size // stride)
    total = max((output - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


@dataclasses.dataclass(frozen=True)
class WindowLayer:
    """A conv or pooling layer as the lecture's formula sees it (height axis)."""

    name: str
    input_hw: tuple[int, int]
    kernel: int
    stride: int
    padding: tuple[int, int]  # pixels added (before, after) along the height
    output_height: int  # the formula's result

    def formula(self) -> str:
        """E.g. ``(32 + 2*1 - 3)//1 + 1 = 32``."""
        before, after = self.padding
        pad = f"2*{before}" if before == after else f"{before}+{after}"
        height = self.input_hw[0]
        return f"({height} + {pad} - {self.kernel})//{self.stride} + 1 = {self.output_height}"


def window_layers(model: keras.Model) -> list[WindowLayer]:
    """Apply the formula to every Conv2D and pooling layer of ``model`` (nested ones too)."""
    found = []
    for layer in leaf_layers(model):
        if isinstance(layer, layers.Conv2D):
            kernel, stride = layer.kernel_size[0], layer.strides[0]
        elif isinstance(layer, layers.MaxPooling2D | layers.AveragePooling2D):
            kernel, stride = layer.pool_size[0], layer.strides[0]
        else:
            continue
        input_hw = tuple(int(value) for value in layer.input.shape[1:3])
        padding = same_padding(input_hw[0], kernel, stride) if layer.padding == "same" else (0, 0)
        if padding[0] == padding[1]:
            output_height = conv_output_size(input_hw[0], kernel, stride, padding[0])
        else:  # "same" with an odd total: the formula with the total padding as 2P
            output_height = (input_hw[0] + sum(padding) - kernel) // stride + 1
        found.append(WindowLayer(layer.name, input_hw, kernel, stride, padding, output_height))
    return found


def log_architecture(model: keras.Model) -> None:
    """Log the layer table (output shapes, parameters), the parameter formulas and the conv
    arithmetic."""
    model.summary(print_fn=log.info, line_length=120, expand_nested=True)
    log.info(
        "Parameters, layer by layer: conv (F·F·C_in + 1)·C_out, dense (n_in + 1)·n_out:\n%s",
        explain_parameters(model),
    )
    log.info("Convolution arithmetic, output height O = floor((H + 2P - F) / S) + 1:")
    for window in window_layers(model):
        log.info(
            "  %-14s input %3dx%-3d F=%d S=%d P=%s: O = %s",
            window.name,
            *window.input_hw,
            window.kernel,
            window.stride,
            "+".join(map(str, sorted(set(window.padding)))),
            window.formula(),
        )


# ---------------------------------------------------------------------------
# Preprocessing
# ---------------------------------------------------------------------------


def channel_statistics(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and variance of ``uint8`` images, computed in chunks."""
    total = np.zeros(3)
    squares = np.zeros(3)
    count = 0
    for start in range(0, len(images), 4096):
        chunk = images[start : start + 4096].astype(np.float64).reshape(-1, 3)
        total += chunk.sum(axis=0)
        squares += (chunk**2).sum(axis=0)
        count += len(chunk)
    mean = total / count
    return mean, squares / count - mean**2


def augmentation(translate: float, flip: bool, seed: int) -> keras.Sequential:
    """Random horizontal flip and shift (reflected border), active only in training.

    Nearest-pixel interpolation keeps every output pixel an input pixel, so
    augmented ``uint8`` images stay exact ``uint8`` values.
    """
    steps = []
    if flip:
        steps.append(layers.RandomFlip("horizontal", seed=seed))
    if translate > 0:
        steps.append(
            layers.RandomTranslation(
                translate, translate, fill_mode="reflect", interpolation="nearest", seed=seed + 1
            )
        )
    return keras.Sequential(steps, name="augmentation")


# ---------------------------------------------------------------------------
# Architectures
# ---------------------------------------------------------------------------


def _conv_bn_relu(x, filters: int, name: str, kernel: int = 3):
    # No bias: the batch norm's beta does its job.
    x = layers.Conv2D(filters, kernel, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = batch_normalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _simple(x, width: int):
    # The TensorFlow tutorial's CNN: "valid" convolutions shrink 32 -> 30 -> 13 -> 4.
    x = layers.Conv2D(width, 3, activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(name="pool1")(x)
    x = layers.Conv2D(2 * width, 3, activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(name="pool2")(x)
    x = layers.Conv2D(2 * width, 3, activation="relu", name="conv3")(x)
    x = layers.Flatten(name="flatten")(x)
    return layers.Dense(2 * width, activation="relu", name="dense")(x)


def _vgg(x, width: int):
    for block, filters in enumerate((width, 2 * width, 4 * width), start=1):
        x = _conv_bn_relu(x, filters, f"block{block}a")
        x = _conv_bn_relu(x, filters, f"block{block}b")
        x = layers.MaxPooling2D(name=f"block{block}_pool")(x)
    return layers.GlobalMaxPooling2D(name="global_pool")(x)


def _residual(x, filters: int, name: str):
    shortcut = x
    x = _conv_bn_relu(x, filters, f"{name}a")
    x = _conv_bn_relu(x, filters, f"{name}b")
    return layers.Add(name=f"{name}_add")([shortcut, x])


def _resnet(x, width: int):
    x = _conv_bn_relu(x, width, "prep")
    x = _conv_bn_relu(x, 2 * width, "stage1")
    x = layers.MaxPooling2D(name="stage1_pool")(x)
    x = _residual(x, 2 * width, "res1")
    x = _conv_bn_relu(x, 4 * width, "stage2")
    x = layers.MaxPooling2D(name="stage2_pool")(x)
    x = _conv_bn_relu(x, 8 * width, "stage3")
    x = layers.MaxPooling2D(name="stage3_pool")(x)
    x = _residual(x, 8 * width, "res3")
    return layers.GlobalMaxPooling2D(name="global_pool")(x)


def _scaled(count: int, width: int) -> int:
    """``count`` (a paper's layer size at width 32) scaled to ``width``, at least 1."""
    return max(1, round(count * width / 32))


def _lenet5(x, width: int):
    # LeCun et al. 1998: C1 6@5x5 -> S2 pool -> C3 16@5x5 -> S4 pool -> C5 120 -> F6 84,
    # tanh and average pooling, "valid" convolutions: 32 -> 28 -> 14 -> 10 -> 5.
    x = layers.Conv2D(_scaled(6, width), 5, activation="tanh", name="c1_conv")(x)
    x = layers.AveragePooling2D(2, name="s2_pool")(x)
    x = layers.Conv2D(_scaled(16, width), 5, activation="tanh", name="c3_conv")(x)
    x = layers.AveragePooling2D(2, name="s4_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(_scaled(120, width), activation="tanh", name="c5_dense")(x)
    return layers.Dense(_scaled(84, width), activation="tanh", name="f6_dense")(x)


def _alexnet(x, width: int):
    # Krizhevsky et al. 2012 scaled to 32x32: five convolutions (the first 5x5 stride 1
    # instead of 11x11 stride 4), ReLU, overlapping 3x3 max pooling with stride 2,
    # then three dense layers (the last is the classifier) with dropout 0.5.
    for name, filters, kernel in (("conv1", 64, 5), ("conv2", 192, 5)):
        x = layers.Conv2D(_scaled(filters, width), kernel, padding="same", name=name)(x)
        x = layers.ReLU(name=f"{name}_relu")(x)
        x = layers.MaxPooling2D(3, strides=2, name=f"{name}_pool")(x)  # overlapping
    for name, filters in (("conv3", 384), ("conv4", 256), ("conv5", 256)):
        x = layers.Conv2D(_scaled(filters, width), 3, padding="same", name=name)(x)
        x = layers.ReLU(name=f"{name}_relu")(x)
    x = layers.MaxPooling2D(3, strides=2, name="conv5_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    for index in (6, 7):
        x = layers.Dropout(0.5, name=f"dropout{index}")(x)
        x = layers.Dense(_scaled(1024, width), activation="relu", name=f"fc{index}")(x)
    return x


def _inception_module(x, name: str, sizes: tuple[int, ...], width: int):
    # Four parallel branches over the same input, concatenated along the channels:
    # 1x1 | 1x1 reduce -> 3x3 | 1x1 reduce -> 5x5 | 3x3 max pool -> 1x1 projection.
    b1, r3, b3, r5, b5, pool = (_scaled(size, width) for size in sizes)
    one = _conv_bn_relu(x, b1, f"{name}_1x1", kernel=1)
    three = _conv_bn_relu(_conv_bn_relu(x, r3, f"{name}_3x3_reduce", 1), b3, f"{name}_3x3")
    five = _conv_bn_relu(_conv_bn_relu(x, r5, f"{name}_5x5_reduce", 1), b5, f"{name}_5x5", 5)
    pooled = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)
    pooled = _conv_bn_relu(pooled, pool, f"{name}_pool_proj", kernel=1)
    return layers.Concatenate(name=f"{name}_concat")([one, three, five, pooled])


# GoogLeNet's branch sizes (Szegedy et al. 2014, table 1) at half width for width 32:
# 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool projection.
INCEPTION_MODULES = (
    ("inception3a", (32, 48, 64, 8, 16, 16)),
    ("inception3b", (64, 64, 96, 16, 48, 32)),
    "pool",
    ("inception4a", (96, 48, 104, 8, 24, 32)),
    ("inception4b", (80, 56, 112, 12, 32, 32)),
    "pool",
    ("inception5a", (128, 80, 160, 16, 64, 64)),
)


def _inception(x, width: int):
    x = _conv_bn_relu(x, _scaled(64, width), "stem")
    pools = 0
    for module in INCEPTION_MODULES:
        if module == "pool":
            pools += 1
            x = layers.MaxPooling2D(3, strides=2, padding="same", name=f"pool{pools}")(x)
        else:
            x = _inception_module(x, *module, width)
    x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    return layers.Dropout(0.4, name="dropout")(x)


def _densenet(x, width: int, layers_per_block: int = 6, compression: float = 0.5):
    # Huang et al. 2017 (DenseNet-BC): inside a dense block every layer sees the
    # concatenation of all earlier feature maps and adds `growth` new ones
    # (BN-ReLU-1x1 conv to 4*growth, the bottleneck, then BN-ReLU-3x3 conv to growth);
    # transitions halve the channels (compression) and the resolution.
    growth = _scaled(12, width)
    x = layers.Conv2D(2 * growth, 3, padding="same", use_bias=False, name="stem_conv")(x)
    for block in (1, 2, 3):
        for index in range(1, layers_per_block + 1):
            name = f"dense{block}_{index}"
            y = batch_normalization(name=f"{name}_bn1")(x)
            y = layers.ReLU(name=f"{name}_relu1")(y)
            y = layers.Conv2D(4 * growth, 1, use_bias=False, name=f"{name}_bottleneck_conv")(y)
            y = batch_normalization(name=f"{name}_bn2")(y)
            y = layers.ReLU(name=f"{name}_relu2")(y)
            y = layers.Conv2D(growth, 3, padding="same", use_bias=False, name=f"{name}_conv")(y)
            x = layers.Concatenate(name=f"{name}_concat")([x, y])
        if block < 3:
            channels = int(int(x.shape[-1]) * compression)
            x = batch_normalization(name=f"transition{block}_bn")(x)
            x = layers.ReLU(name=f"transition{block}_relu")(x)
            x = layers.Conv2D(channels, 1, use_bias=False, name=f"transition{block}_conv")(x)
            x = layers.AveragePooling2D(2, name=f"transition{block}_pool")(x)
    x = batch_normalization(name="final_bn")(x)
    x = layers.ReLU(name="final_relu")(x)
    return layers.GlobalAveragePooling2D(name="global_pool")(x)


ARCHITECTURES = {
    "simple": _simple,
    "vgg": _vgg,
    "resnet": _resnet,
    "lenet5": _lenet5,
    "alexnet": _alexnet,
    "inception": _inception,
    "densenet": _densenet,
}


def build_classifier(
    architecture: str,
    num_classes: int,
    image_size: int,
    width: int,
    pixel_mean: np.ndarray,
    pixel_variance: np.ndarray,
) -> keras.Model:
    """``uint8`` images -> class probabilities.

    Args:
        architecture: A key of `ARCHITECTURES`: ``simple``, ``vgg``, ``resnet``,
            ``lenet5``, ``alexnet``, ``inception`` or ``densenet``.
        num_classes: Output classes.
        image_size: Input side in pixels.
        width: Filters of the first stage (``simple``: 32 is the tutorial's); the
            lecture's architectures scale their papers' layer sizes by width / 32.
        pixel_mean: Per-channel mean of the training pixels (0-255 scale).
        pixel_variance: Their per-channel variance.

    Returns:
        The uncompiled Functional model. The final layer computes in float32
        even under a mixed-precision policy, so probabilities stay accurate.
    """
    images = keras.Input((image_size, image_size, 3), dtype="uint8", name="image")
    x = layers.Normalization(
        mean=pixel_mean.tolist(), variance=pixel_variance.tolist(), name="normalize"
    )(layers.Identity(dtype="float32", name="to_float")(images))
    features = ARCHITECTURES[architecture](x, width)
    probabilities = layers.Dense(
        num_classes, activation="softmax", dtype="float32", name="probabilities"
    )(features)
    return keras.Model(images, probabilities, name=f"cifar_{architecture}")


def compile_classifier(
    model: keras.Model,
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule,
    momentum: float,
    weight_decay: float,
    label_smoothing: float,
) -> keras.Model:
    """SGD with Nesterov momentum and decoupled weight decay; smoothed cross-entropy."""
    optimizer = keras.optimizers.SGD(
        learning_rate, momentum=momentum, nesterov=True, weight_decay=weight_decay or None
    )
    # Decay shrinks weights that multiply inputs; scales and shifts of batch norm are
    # left alone, as in the usual CIFAR recipes.
    optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    return model


# ---------------------------------------------------------------------------
# Starting from a trained run (--init-from)
# ---------------------------------------------------------------------------

# The layer that maps features to classes: replaced when the classes differ.
CLASSIFIER_HEADS = {"cifar_airbench": "dense"}
DEFAULT_HEAD = "probabilities"


def trained_network(saved_model: keras.Model) -> keras.Model:
    """The network a run trained: airbench's saved model wraps it in test-time views."""
    nested = [layer for layer in saved_model.layers if isinstance(layer, keras.Model)]
    return nested[0] if len(nested) == 1 else saved_model


def initialize_from(model: keras.Model, run_dir: str, class_names: tuple[str, ...]) -> str:
    """Copy a finished CIFAR run's weights into ``model``; returns a sentence for the log.

    Every layer takes the run's weights, except the classifier head when the run's
    classes differ from ``class_names``: that one keeps its fresh random weights.

    Raises:
        UserError: The run is not a finished CIFAR run, or trained another
            architecture or width than ``model``.
    """
    source = load_run(run_dir)
    project = source.config.get("project")
    if project != "cifar_cnn":
        raise UserError(f"--init-from {run_dir} is a {project} run; it needs a cifar_cnn run.")
    network = trained_network(source.model)
    # A run of --width 0 (automatic) records the width it trained in metrics.json.
    width = source.metrics.get("width") or source.config.get("width")
    settings = f"--model {source.config.get('model')} --width {width}"
    if network.name != model.name:
        raise UserError(
            f"--init-from {run_dir} trained {source.config.get('model')!r}, not this "
            f"architecture; train with {settings} to start from it."
        )
    source_classes = tuple(source.metrics["class_names"])
    head = CLASSIFIER_HEADS.get(model.name, DEFAULT_HEAD)
    replace_head = source_classes != tuple(class_names)
    # The same builder makes the same layers in the same order (names of unnamed layers
    # may differ between processes, so layers are paired by position).
    kinds = [type(layer).__name__ for layer in model.layers]
    if kinds != [type(layer).__name__ for layer in network.layers]:
        raise UserError(
            f"--init-from {run_dir}: its network has other layers than this one; train "
            f"with {settings} to start from it."
        )
    for layer, trained in zip(model.layers, network.layers, strict=True):
        if not layer.weights or (replace_head and layer.name == head):
            continue
        weights = trained.get_weights()
        if [w.shape for w in weights] != [tuple(v.shape) for v in layer.weights]:
            raise UserError(
                f"--init-from {run_dir}: layer {layer.name} has other sizes there; train "
                f"with {settings} to start from it."
            )
        layer.set_weights(weights)
    if not replace_head:
        return f"Started from the weights of {run_dir} (all layers, the same classes)"
    return (
        f"Started from the weights of {run_dir}, except its classifier head {head!r}: the "
        f"run knew {len(source_classes)} classes ({', '.join(source_classes)}), this data "
        f"has {len(class_names)} ({', '.join(class_names)}), so the head starts from "
        "random weights"
    )
