"""The airbench recipe in Keras: 94% CIFAR-10 from about 0.7 GFLOP per training image.

Keller Jordan's airbench ("94% on CIFAR-10 in 3.29 seconds on a single GPU",
arXiv:2404.00498), descended from David Page's DAWNBench ResNet, trains a
small VGG-like net (no residuals) with a handful of ideas, each a switch in
`CifarConfig` so their worth can be measured one by one:

* ``--whiten``: the first layer is a frozen 2x2 convolution whose 24 filters
  are the eigenvectors of the training images' 2x2-patch covariance, scaled by
  1/sqrt(eigenvalue) (and their negatives): it decorrelates neighbouring pixels
  and colours before any learning happens. Its bias learns for 3 epochs.
* ``--dirac-init``: every later 3x3 convolution starts as the identity on its
  input channels (its other output channels start random), so the untrained
  net passes the whitened image through.
* batch norm without a learned scale, fast running statistics (momentum 0.6)
  and a 64x learning rate for its shift (``--bn-bias-lr-scale``); with its shift
  and GELU one layer, `BatchNormShiftedGELU`, trained through XLA functions.
* Nesterov SGD, a short triangular learning-rate schedule, label smoothing 0.2.
* ``--lookahead``: every 5 steps the weights move to an exponential moving
  average of themselves (and training continues from there).
* ``--alternating-flip``: every image is flipped on every other epoch (a random
  half to start with) instead of at random, plus a random 2-pixel translation.
* ``--tta``: the saved model averages the net over mirrored and 1-pixel
  shifted views of each image; it is part of ``model.keras``, so ``predict``
  gives exactly the reported predictions.

Everything here is written for Keras from the paper's description and its
reference code's behaviour, not translated line by line.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from shared.distribute import batch_normalization

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class AirbenchRecipe:
    """The reference hyperparameters (airbench94), in the paper's units."""

    batch_size: int = 1024
    epochs: int = 10
    # Per 1024 examples, summed loss, momentum-normalised steps (see `keras_learning_rate`).
    learning_rate: float = 11.5
    momentum: float = 0.85
    weight_decay: float = 0.0153
    label_smoothing: float = 0.2
    whiten_bias_epochs: int = 3
    translate_pixels: int = 2
    widths: tuple[int, int, int] = (64, 256, 256)
    batchnorm_momentum: float = 0.6  # Keras convention: the share of the old running value
    logit_scale: float = 1 / 9
    lookahead_every: int = 5
    lookahead_decay: float = 0.95**5
    # Triangular schedule: from 0.2x up to 1x over the first 23% of steps, then down to 0.07x.
    schedule_start: float = 0.2
    schedule_peak_at: float = 0.23
    schedule_end: float = 0.07


RECIPE = AirbenchRecipe()
BATCH_NORM_EPSILON = 1e-12  # the reference's batch norm has 1e-12


def keras_learning_rate(recipe: AirbenchRecipe, batch_size: int) -> float:
    """The peak learning rate of Keras's SGD (mean loss) equivalent to the recipe's.

    The recipe sums the loss over the batch and divides its rate by the step
    growth of Nesterov momentum, 1 + 1/(1 - momentum); Keras averages the loss,
    so the rate is multiplied by the batch size: 11.5 * 1024/1024 / 7.67 = 1.5.
    """
    return recipe.learning_rate * (batch_size / 1024) / (1 + 1 / (1 - recipe.momentum))


def l2_coefficient(recipe: AirbenchRecipe) -> float:
    """The L2 penalty (on the mean loss) equivalent to the recipe's weight decay.

    Its decay enters the gradient (so momentum amplifies it, as in PyTorch's
    SGD) as wd/lr per summed example: per mean example that is 0.0153 / 11.5.
    """
    return recipe.weight_decay / recipe.learning_rate


# ---------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------


def patch_whitening_filters(
    images: np.ndarray, mean: np.ndarray, variance: np.ndarray, size: int = 2, eps: float = 5e-4
) -> np.ndarray:
    """Whitening filters of ``size`` x ``size`` patches of normalised ``uint8`` images.

    Returns:
        A Conv2D kernel of shape (size, size, 3, 2 * 3 * size**2): the eigenvectors
        of the patch covariance divided by sqrt(eigenvalue + eps), largest
        eigenvalue first, then the same filters negated (so that a following
        GELU keeps both signs of every whitened component).
    """
    dimension = 3 * size * size
    covariance = np.zeros((dimension, dimension))
    count = 0
    std = np.sqrt(variance)
    for start in range(0, len(images), 500):
        chunk = (images[start : start + 500].astype(np.float64) - mean) / std
        windows = np.lib.stride_tricks.sliding_window_view(chunk, (size, size), axis=(1, 2))
        # (n, H', W', C, size, size) -> one row per patch, flattened as (row, column, channel)
        patches = windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, dimension)
        covariance += patches.T @ patches
        count += len(patches)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance / count)
    order = np.argsort(eigenvalues)[::-1]
    filters = eigenvectors[:, order] / np.sqrt(eigenvalues[order] + eps)
    kernel = filters.reshape(size, size, 3, dimension)
    return np.concatenate([kernel, -kernel], axis=-1).astype(np.float32)


@keras.saving.register_keras_serializable(package="cifar_cnn")
class PatchWhitening(layers.Layer):
    """A frozen convolution (the whitening filters) with a bias that can be frozen later.

    The bias learns while ``bias_gate`` is 1; `BiasFreeze` sets it to 0 after
    a few epochs, after which the bias receives no gradient.
    """

    def __init__(self, filters: int, size: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.size = filters, size

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel",
            shape=(self.size, self.size, int(input_shape[-1]), self.filters),
            initializer="zeros",
            trainable=False,
        )
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")
        self.bias_gate = self.add_weight(
            name="bias_gate", shape=(), initializer="ones", trainable=False
        )

    def call(self, inputs):
        outputs = ops.conv(inputs, ops.cast(self.kernel, inputs.dtype), padding="valid")
        gate = ops.cast(self.bias_gate, self.bias.dtype)
        # Value: the bias. Gradient: the bias's, times the gate.
        bias = gate * self.bias + (1 - gate) * ops.stop_gradient(self.bias)
        return outputs + ops.cast(bias, outputs.dtype)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "size": self.size}


@keras.saving.register_keras_serializable(package="cifar_cnn")
class ScaledBias(layers.Layer):
    """``x + scale * b``: a bias whose effective learning rate is ``scale**2`` times larger.

    With plain SGD, a weight used as ``scale * b`` moves ``scale**2`` times
    faster than ``b`` would: this gives batch norm's shift the recipe's 64x
    learning rate (scale 8) without a second optimizer. (The network now uses
    `BatchNormShiftedGELU`; runs saved before hold this layer or `ShiftedGELU`.)
    """

    def __init__(self, scale: float = 1.0, l2: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.scale, self.l2 = scale, l2

    def build(self, input_shape):
        self.bias = self.add_weight(
            name="bias",
            shape=(int(input_shape[-1]),),
            initializer="zeros",
            regularizer=keras.regularizers.L2(self.l2 / 2) if self.l2 else None,
            autocast=False,  # a float32 bias, also under mixed precision
        )

    def call(self, inputs):
        return inputs + ops.cast(self.scale * self.bias, inputs.dtype)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "l2": self.l2}


@keras.saving.register_keras_serializable(package="cifar_cnn")
class DiracInitializer(keras.initializers.Initializer):
    """Random kernels, except that output channel i < inputs starts as the identity of input i."""

    def __call__(self, shape, dtype=None):
        kernel = keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform")(shape, dtype)
        height, width, inputs, outputs = shape
        identity = np.zeros(shape, dtype="float32")
        channels = min(inputs, outputs)
        identity[height // 2, width // 2, np.arange(channels), np.arange(channels)] = 1.0
        mask = np.ones(shape, dtype="float32")
        mask[..., :channels] = 0.0
        return kernel * ops.convert_to_tensor(mask, dtype) + ops.convert_to_tensor(identity, dtype)


def _gelu_slope(z: tf.Tensor) -> tf.Tensor:
    """d/dz of z·Φ(z): Φ(z) + z·φ(z)."""
    cdf = 0.5 + 0.5 * tf.math.erf(z * (1 / math.sqrt(2)))
    density = tf.exp(-0.5 * tf.square(z)) * (1 / math.sqrt(2 * math.pi))
    return cdf + z * density


def _pre_activation(x: tf.Tensor, shift: tf.Tensor | None) -> tf.Tensor:
    """``x + shift`` in float32 (``x`` alone when there is no shift)."""
    return tf.cast(x, tf.float32) if shift is None else tf.cast(x, tf.float32) + shift


def _shifted_gelu(x: tf.Tensor, shift: tf.Tensor | None) -> tf.Tensor:
    return tf.cast(tf.nn.gelu(_pre_activation(x, shift), approximate=False), x.dtype)


# Compiled by XLA, each into one pass over the activations. Without XLA TensorFlow runs
# every element-wise op (cast, add, erf, exp, ...) as its own pass over the activations:
# on a 2-core CPU the seven GELU layers then cost about a fifth of airbench's step.
_shifted_gelu_xla = tf.function(_shifted_gelu, jit_compile=True)


@tf.function(jit_compile=True)
def _shifted_gelu_gradient_xla(x: tf.Tensor, shift: tf.Tensor | None, upstream: tf.Tensor):
    z = _pre_activation(x, shift)
    dz = tf.cast(upstream, tf.float32) * _gelu_slope(z)
    if shift is None:
        return tf.cast(dz, x.dtype)
    return tf.cast(dz, x.dtype), tf.reduce_sum(dz, axis=list(range(len(x.shape) - 1)))


def shifted_gelu(x: tf.Tensor, shift: tf.Tensor | None = None, training: bool = False):
    """GELU(x + shift), the exact GELU z·Φ(z) (not the tanh approximation), in float32.

    ``shift`` is a float32 vector over the last axis, or None. Returns ``x``'s dtype.
    Training runs forward and backward as two XLA-compiled functions, with the gradient
    written out, Φ(z) + z·φ(z), rather than derived by TensorFlow op by op:
    ``make bench-cifar`` compares it with Keras's bias and GELU layers. Inference is
    plain ``tf.nn.gelu``, which TFLite's converter turns into its GELU op and tf2onnx
    into ONNX's Erf (an XLA function would not convert).
    """
    if not training:
        return _shifted_gelu(x, shift)
    if shift is None:

        @tf.custom_gradient
        def gelu(x):
            return _shifted_gelu_xla(x, None), lambda up: _shifted_gelu_gradient_xla(x, None, up)

        return gelu(x)

    @tf.custom_gradient
    def gelu_of_sum(x, shift):
        outputs = _shifted_gelu_xla(x, shift)
        return outputs, lambda up: _shifted_gelu_gradient_xla(x, shift, up)

    return gelu_of_sum(x, shift)


@keras.saving.register_keras_serializable(package="cifar_cnn")
class GELU(layers.Layer):
    """``layers.Activation("gelu")``, trained through `shifted_gelu`'s XLA functions."""

    def call(self, inputs, training=None):
        return shifted_gelu(inputs, training=bool(training))


@keras.saving.register_keras_serializable(package="cifar_cnn")
class ShiftedGELU(ScaledBias):
    """``GELU(x + scale * b)``: batch norm's shift and the activation in one layer.

    One layer rather than `ScaledBias` and a GELU layer so that training computes both
    in one XLA function (`shifted_gelu`).
    """

    def call(self, inputs, training=None):
        return shifted_gelu(inputs, self.scale * self.bias, training=bool(training))


# Batch norm (without a learned scale) fused with the shift and GELU. Keras's batch norm
# layer runs each of its ops as a pass over the activations in training (casts, the mean,
# the variance, normalising, and the ops of the gradient TensorFlow derives for them);
# here each direction is one XLA reduction pass (per-channel sums) and one XLA
# element-wise pass. Between the two, the sums are all-reduced when there are several
# replicas, so batch norm stays synchronized (see `shared.distribute.batch_normalization`).


def _channel_axes(x: tf.Tensor) -> list[int]:
    return list(range(len(x.shape) - 1))


@tf.function(jit_compile=True)
def _centred_sums_xla(x: tf.Tensor, reference: tf.Tensor):
    """Per-channel sums of ``x - reference`` and of its square, in float32.

    ``reference`` (a sample's mean) is near the batch mean, so the variance computed
    from these sums, E[d²] - E[d]², does not lose digits to cancellation when a
    channel's mean is large against its spread.
    """
    centred = tf.cast(x, tf.float32) - reference
    axes = _channel_axes(x)
    return tf.reduce_sum(centred, axes), tf.reduce_sum(tf.square(centred), axes)


def _normalized(x: tf.Tensor, mean: tf.Tensor, inverse_std: tf.Tensor) -> tf.Tensor:
    return (tf.cast(x, tf.float32) - mean) * inverse_std


def _normalized_shifted_gelu(x, mean, inverse_std, shift):
    return tf.cast(
        tf.nn.gelu(_normalized(x, mean, inverse_std) + shift, approximate=False), x.dtype
    )


_normalized_shifted_gelu_xla = tf.function(_normalized_shifted_gelu, jit_compile=True)


def _normalized_and_dz(x, mean, inverse_std, shift, upstream):
    """x̂ and dL/dz (z = x̂ + shift), recomputed in each backward function rather than stored."""
    normalized = _normalized(x, mean, inverse_std)
    return normalized, tf.cast(upstream, tf.float32) * _gelu_slope(normalized + shift)


@tf.function(jit_compile=True)
def _gradient_sums_xla(x, mean, inverse_std, shift, upstream):
    """Per-channel sums of dL/dz and of dL/dz · x̂ (z = x̂ + shift, x̂ normalised)."""
    normalized, dz = _normalized_and_dz(x, mean, inverse_std, shift, upstream)
    axes = _channel_axes(x)
    return tf.reduce_sum(dz, axes), tf.reduce_sum(dz * normalized, axes)


@tf.function(jit_compile=True)
def _input_gradient_xla(x, mean, inverse_std, shift, upstream, dz_mean, dz_normalized_mean):
    """dL/dx of batch norm: (dz - mean(dz) - x̂ · mean(dz · x̂)) / std."""
    normalized, dz = _normalized_and_dz(x, mean, inverse_std, shift, upstream)
    return tf.cast(inverse_std * (dz - dz_mean - normalized * dz_normalized_mean), x.dtype)


def _replica_sum(*values: tf.Tensor, operation=tf.distribute.ReduceOp.SUM) -> list[tf.Tensor]:
    """``values`` summed (or averaged) over the replicas in sync (unchanged with one)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return list(values)
    return [context.all_reduce(operation, value) for value in values]


def batch_norm_shifted_gelu(
    x: tf.Tensor, shift: tf.Tensor, epsilon: float
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Training: GELU((x - mean) / sqrt(variance + epsilon) + shift) with the batch's
    per-channel mean and (biased) variance over all replicas.

    Returns the outputs (``x``'s dtype) and the batch's mean and variance (float32),
    for the running statistics. The gradient (to ``x``, through the batch statistics
    as well, and to ``shift``) is written out and runs as XLA functions.
    """
    local_count = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float32)
    x_statistics = tf.stop_gradient(x)  # the gradient below accounts for the statistics
    # The first example's mean (the same on every replica): near the batch's.
    (reference,) = _replica_sum(
        tf.reduce_mean(tf.cast(x_statistics[:1], tf.float32), axis=_channel_axes(x)),
        operation=tf.distribute.ReduceOp.MEAN,
    )
    centred_sum, centred_square_sum = _centred_sums_xla(x_statistics, reference)
    centred_sum, centred_square_sum, count = _replica_sum(
        centred_sum, centred_square_sum, local_count
    )
    centred_mean = centred_sum / count
    variance = tf.maximum(centred_square_sum / count - tf.square(centred_mean), 0.0)
    mean = reference + centred_mean
    inverse_std = tf.math.rsqrt(variance + epsilon)

    @tf.custom_gradient
    def normalized_gelu(x, shift):
        outputs = _normalized_shifted_gelu_xla(x, mean, inverse_std, shift)

        def gradient(upstream):
            dz_sum, dz_normalized_sum = _gradient_sums_xla(x, mean, inverse_std, shift, upstream)
            # The shift's gradient is this replica's: the optimizer sums replicas'.
            global_dz_sum, global_dz_normalized_sum = _replica_sum(dz_sum, dz_normalized_sum)
            dx = _input_gradient_xla(
                x,
                mean,
                inverse_std,
                shift,
                upstream,
                global_dz_sum / count,
                global_dz_normalized_sum / count,
            )
            return dx, dz_sum

        return outputs, gradient

    return normalized_gelu(x, shift), mean, variance


@keras.saving.register_keras_serializable(package="cifar_cnn")
class BatchNormShiftedGELU(ShiftedGELU):
    """Batch norm without a learned scale, then ``GELU(x̂ + scale * b)``, as one layer.

    The same as ``layers.BatchNormalization(center=False, scale=False)`` followed by
    `ShiftedGELU`, synchronized across replicas like
    `shared.distribute.batch_normalization`; in training it runs as XLA functions
    (`batch_norm_shifted_gelu`). Inference is plain TensorFlow ops on the running
    statistics, so the saved and exported models convert to TFLite and ONNX.
    """

    def __init__(self, scale=1.0, l2=0.0, momentum=0.99, epsilon=1e-3, **kwargs):
        super().__init__(scale, l2, **kwargs)
        self.momentum, self.epsilon = momentum, epsilon

    def build(self, input_shape):
        super().build(input_shape)
        channels = (int(input_shape[-1]),)
        for name, initializer in (("moving_mean", "zeros"), ("moving_variance", "ones")):
            weight = self.add_weight(
                name=name, shape=channels, initializer=initializer, trainable=False, autocast=False
            )
            setattr(self, name, weight)

    def call(self, inputs, training=None):
        shift = self.scale * self.bias
        if not (training and self.trainable):  # as Keras's batch norm: frozen, it infers
            inverse_std = tf.math.rsqrt(self.moving_variance + self.epsilon)
            return _normalized_shifted_gelu(inputs, self.moving_mean, inverse_std, shift)
        outputs, mean, variance = batch_norm_shifted_gelu(inputs, shift, self.epsilon)
        for statistic, value in ((self.moving_mean, mean), (self.moving_variance, variance)):
            statistic.assign(statistic * self.momentum + value * (1.0 - self.momentum))
        return outputs

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="cifar_cnn")
class HorizontalFlip(layers.Layer):
    """Mirror images left to right (a test-time view)."""

    def call(self, inputs):
        return ops.flip(inputs, axis=2)


@keras.saving.register_keras_serializable(package="cifar_cnn")
class ReflectShift(layers.Layer):
    """Shift images by (dy, dx) pixels, filling the border by reflection (a test-time view)."""

    def __init__(self, dy: int, dx: int, **kwargs):
        super().__init__(**kwargs)
        self.dy, self.dx = dy, dx

    def call(self, inputs):
        pad = max(abs(self.dy), abs(self.dx))
        padded = ops.pad(inputs, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="reflect")
        height, width = inputs.shape[1], inputs.shape[2]
        top, left = pad - self.dy, pad - self.dx
        return padded[:, top : top + height, left : left + width, :]

    def get_config(self):
        return {**super().get_config(), "dy": self.dy, "dx": self.dx}


# ---------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------


FUSIONS = ("batch_norm", "shift", "none")  # `build_airbench`'s ``fusion``


def _conv_group(x, filters: int, name: str, settings: dict):
    for part in ("a", "b"):
        x = layers.Conv2D(
            filters,
            3,
            padding="same",
            use_bias=False,
            kernel_initializer=settings["initializer"],
            kernel_regularizer=settings["regularizer"],
            name=f"{name}{part}_conv",
        )(x)
        if part == "a":
            x = layers.MaxPooling2D(name=f"{name}_pool")(x)
        shift = {"scale": settings["bias_scale"], "l2": settings["l2"]}
        if settings["fusion"] == "batch_norm":
            x = BatchNormShiftedGELU(
                **shift,
                momentum=RECIPE.batchnorm_momentum,
                epsilon=BATCH_NORM_EPSILON,
                name=f"{name}{part}_bn_shift_gelu",
            )(x)
            continue
        x = batch_normalization(
            momentum=RECIPE.batchnorm_momentum,
            epsilon=BATCH_NORM_EPSILON,
            center=False,
            scale=False,  # the recipe freezes the scale at 1
            name=f"{name}{part}_bn",
        )(x)
        if settings["fusion"] == "shift":
            x = ShiftedGELU(**shift, name=f"{name}{part}_shift")(x)
        else:
            x = ScaledBias(**shift, name=f"{name}{part}_shift", dtype="float32")(x)
            x = layers.Activation("gelu", name=f"{name}{part}_gelu")(x)
    return x


def build_airbench(
    num_classes: int,
    image_size: int,
    pixel_mean: np.ndarray,
    pixel_variance: np.ndarray,
    whitening_kernel: np.ndarray | None,
    dirac_init: bool = True,
    bn_bias_lr_scale: float = 64.0,
    width: int = 32,
    recipe: AirbenchRecipe = RECIPE,
    optimizer: str = "sgd",
    fusion: str = "batch_norm",
) -> keras.Model:
    """``uint8`` images -> logits, the airbench94 network.

    Args:
        num_classes: Output classes.
        image_size: Input side in pixels.
        pixel_mean: Per-channel mean of the training pixels (0-255 scale).
        pixel_variance: Their per-channel variance.
        whitening_kernel: `patch_whitening_filters` of training images; None
            replaces the frozen whitening by an ordinary learned 2x2 convolution.
        dirac_init: Start the 3x3 convolutions as identities.
        bn_bias_lr_scale: Learning-rate multiplier of batch norm's shift.
        width: Scales the three groups' filters: 32 gives the recipe's 64, 256, 256.
        recipe: The hyperparameters.
        optimizer: "sgd" (airbench94) or "muon" (airbench94_muon: `MuonSGD`
            applies weight decay itself, so no L2 terms; the classifier starts
            with unit-variance weights and its logits are divided by 256).
        fusion: How each batch norm, shift and GELU are computed; the network is the
            same, and ``make bench-cifar`` times all three. "batch_norm":
            `BatchNormShiftedGELU`, one layer trained through XLA functions. "shift":
            Keras's batch norm, then `ShiftedGELU`. "none": Keras's layers (batch norm,
            `ScaledBias`, ``Activation("gelu")``), which TensorFlow differentiates op
            by op; the GELU after the whitening is then Keras's too.

    Returns:
        The uncompiled Functional model. Its last layers compute in float32.
    """
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, not {fusion!r}")
    muon = optimizer == "muon"
    l2 = 0.0 if muon else l2_coefficient(recipe)
    settings = {
        "initializer": DiracInitializer()
        if dirac_init
        else keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform"),
        "regularizer": keras.regularizers.L2(l2 / 2) if l2 else None,
        "bias_scale": 1.0 if muon else math.sqrt(bn_bias_lr_scale),
        "l2": l2,
        "fusion": fusion,
    }
    images = keras.Input((image_size, image_size, 3), dtype="uint8", name="image")
    x = layers.Normalization(
        mean=pixel_mean.tolist(), variance=pixel_variance.tolist(), name="normalize"
    )(layers.Identity(dtype="float32", name="to_float")(images))
    whiten_width = 2 * 3 * 2 * 2
    if whitening_kernel is not None:
        x = PatchWhitening(whiten_width, name="whiten")(x)
    else:
        x = layers.Conv2D(
            whiten_width, 2, kernel_regularizer=settings["regularizer"], name="whiten"
        )(x)
    if fusion == "none":
        x = layers.Activation("gelu", name="whiten_gelu")(x)
    else:
        x = GELU(name="whiten_gelu")(x)
    for index, filters in enumerate(recipe.widths, start=1):
        x = _conv_group(x, filters * width // 32, f"block{index}", settings)
    x = layers.MaxPooling2D(pool_size=int(x.shape[1]), name="final_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(
        num_classes,
        use_bias=False,
        kernel_initializer=keras.initializers.RandomUniform(-(3**0.5), 3**0.5)
        if muon
        else keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform"),
        kernel_regularizer=settings["regularizer"],
        dtype="float32",
        name="dense",
    )(x)
    logit_scale = MUON_RECIPE.logit_scale if muon else recipe.logit_scale
    logits = layers.Rescaling(logit_scale, dtype="float32", name="logits")(x)
    model = keras.Model(images, logits, name="cifar_airbench")
    if whitening_kernel is not None:
        model.get_layer("whiten").kernel.assign(whitening_kernel)
    return model


def with_test_time_augmentation(core: keras.Model, level: int) -> keras.Model:
    """The saved inference model: ``uint8`` images -> probabilities averaged over views.

    Level 0: the image alone. Level 1: the mean of the image's and its mirror
    image's logits. Level 2: half of that, plus half the same mean over the
    image shifted one pixel up-left and one pixel down-right.
    """
    images = keras.Input(core.input.shape[1:], dtype="uint8", name="image")

    def mirrored(view, name):
        if level == 0:
            return core(view)
        flipped = core(HorizontalFlip(name=f"{name}_flip")(view))
        # float32 like the logits: averaging in bfloat16 (3 significant digits) flips
        # some predictions.
        return layers.Average(dtype="float32", name=f"{name}_and_mirror")([core(view), flipped])

    logits = mirrored(images, "image")
    if level >= 2:
        shifted = [
            mirrored(ReflectShift(dy, dx, name=f"shift_{name}")(images), f"shift_{name}")
            for (dy, dx), name in (((-1, -1), "up_left"), ((1, 1), "down_right"))
        ]
        shifts = layers.Average(dtype="float32", name="shifts")(shifted)
        logits = layers.Average(dtype="float32", name="views")([logits, shifts])
    probabilities = layers.Softmax(dtype="float32", name="probabilities")(logits)
    return keras.Model(images, probabilities, name=f"{core.name}_tta{level}")


def compile_airbench(
    model: keras.Model, total_steps: int, batch_size: int, recipe: AirbenchRecipe = RECIPE
) -> keras.Model:
    """Nesterov SGD on the triangular schedule; smoothed cross-entropy on logits."""
    schedule = TriangularSchedule(
        keras_learning_rate(recipe, batch_size),
        total_steps,
        recipe.schedule_start,
        recipe.schedule_peak_at,
        recipe.schedule_end,
    )
    model.compile(
        optimizer=keras.optimizers.SGD(schedule, momentum=recipe.momentum, nesterov=True),
        loss=keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=recipe.label_smoothing
        ),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    return model


@keras.saving.register_keras_serializable(package="cifar_cnn")
class TriangularSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """From ``start*peak`` up to ``peak`` over ``peak_at`` of the steps, then to ``end*peak``."""

    def __init__(self, peak, total_steps, start=0.2, peak_at=0.23, end=0.07):
        self.peak, self.total_steps = peak, total_steps
        self.start, self.peak_at, self.end = start, peak_at, end

    def __call__(self, step):
        step = ops.cast(step, "float32")
        rise = max(int(self.total_steps * self.peak_at), 1)
        fall = max(self.total_steps - rise, 1)
        up = self.start + (1 - self.start) * step / rise
        down = 1 + (self.end - 1) * ops.minimum((step - rise) / fall, 1.0)
        return self.peak * ops.where(step < rise, up, down)

    def get_config(self):
        return {
            "peak": self.peak,
            "total_steps": self.total_steps,
            "start": self.start,
            "peak_at": self.peak_at,
            "end": self.end,
        }


# ---------------------------------------------------------------------------
# The Muon variant (airbench94_muon)
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MuonRecipe:
    """airbench94_muon's hyperparameters: 8 epochs instead of 10 for the same accuracy.

    Rates are the reference's, per summed example; `MuonSGD` multiplies the SGD
    ones by the batch size because Keras averages the loss.
    """

    batch_size: int = 2000
    epochs: int = 8
    muon_rate: float = 0.24  # scale-free: the update is orthogonalised
    muon_momentum: float = 0.6
    sgd_momentum: float = 0.85
    shift_rate: float = 0.053  # batch norm's shift and the whitening bias
    head_rate: float = 0.67
    weight_decay: float = 2e-6  # per example: each step shrinks SGD weights by batch * this
    logit_scale: float = 1 / 256


MUON_RECIPE = MuonRecipe()


def orthogonalize(matrix: tf.Tensor, steps: int = 3) -> tf.Tensor:
    """The semi-orthogonal matrix nearest ``matrix``, roughly: its singular values are
    pushed towards 1 (into about [0.7, 1.2]) by a quintic Newton-Schulz iteration."""
    a, b, c = 3.4445, -4.7750, 2.0315
    tall = matrix.shape[0] > matrix.shape[1]
    x = ops.transpose(matrix) if tall else matrix
    x = x / (ops.sqrt(ops.sum(ops.square(x))) + 1e-7)  # every singular value <= 1
    for _ in range(steps):
        gram = ops.matmul(x, ops.transpose(x))
        x = a * x + ops.matmul(b * gram + c * ops.matmul(gram, gram), x)
    return ops.transpose(x) if tall else x


@keras.saving.register_keras_serializable(package="cifar_cnn")
class MuonSGD(keras.optimizers.Optimizer):
    """Muon on the 3x3 convolution kernels, Nesterov SGD on every other weight.

    Muon (Keller Jordan, 2024): a kernel's Nesterov momentum, as a matrix with one
    column per output channel, is replaced by its orthogonalisation (every
    direction of the step gets the same size), and the kernel is rescaled to norm
    sqrt(outputs) before each step (batch norm follows it, so only its direction
    matters). Keras's own ``keras.optimizers.Muon`` only orthogonalises 2-D
    weights and sends convolution kernels to AdamW, hence this class.

    The SGD weights (batch norm shifts, the whitening bias, the classifier) take
    ``rates[fragment] * batch_size`` for the first name fragment their path
    contains, with an L2 term that shrinks them by ``weight_decay * batch_size``
    per step at the peak rate. ``learning_rate`` is the schedule's factor (1 ->
    0); the whitening bias's factor falls to 0 over ``whiten_steps`` instead.
    """

    def __init__(
        self,
        learning_rate,
        batch_size: int,
        rates: dict,
        whiten_steps: int,
        recipe: MuonRecipe = MUON_RECIPE,
        name: str = "muon_sgd",
        **kwargs,
    ):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.batch_size, self.rates, self.whiten_steps = batch_size, dict(rates), whiten_steps
        self.recipe = recipe

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momenta = [self.add_variable_from_reference(v, "momentum") for v in variables]
        # update_step may receive the backend's variable, which has no Keras path.
        self.paths = [v.path for v in variables]

    def _sgd_rate(self, path: str) -> float:
        for fragment, rate in self.rates.items():
            if fragment in path:
                return rate * self.batch_size
        raise ValueError(f"MuonSGD has no learning rate for {path}")

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        momentum_buffer, path = self.momenta[index], self.paths[index]
        gradient = ops.cast(gradient, variable.dtype)
        factor = ops.cast(learning_rate, variable.dtype)
        if len(variable.shape) == 4:
            beta = self.recipe.muon_momentum
            self.assign(momentum_buffer, beta * momentum_buffer + gradient)
            direction = gradient + beta * momentum_buffer
            outputs = variable.shape[-1]
            update = orthogonalize(ops.reshape(direction, (-1, outputs)))
            norm = ops.sqrt(ops.sum(ops.square(variable)))
            self.assign(variable, variable * (outputs**0.5 / norm))
            self.assign_sub(
                variable, self.recipe.muon_rate * factor * ops.reshape(update, variable.shape)
            )
            return
        rate = self._sgd_rate(path)
        if "whiten" in path:
            step = ops.cast(self.iterations, variable.dtype)
            factor = ops.maximum(1.0 - step / self.whiten_steps, 0.0)
        beta = self.recipe.sgd_momentum
        gradient = gradient + (self.recipe.weight_decay * self.batch_size / rate) * variable
        self.assign(momentum_buffer, beta * momentum_buffer + gradient)
        self.assign_sub(variable, rate * factor * (gradient + beta * momentum_buffer))

    def get_config(self):
        config = super().get_config()
        config.update(batch_size=self.batch_size, rates=self.rates, whiten_steps=self.whiten_steps)
        return config


def compile_airbench_muon(
    model: keras.Model,
    total_steps: int,
    whiten_steps: int,
    batch_size: int,
    recipe: MuonRecipe = MUON_RECIPE,
) -> keras.Model:
    """MuonSGD with a linear decay to 0; smoothed cross-entropy on logits."""
    rates = {"whiten": recipe.shift_rate, "_shift": recipe.shift_rate, "dense": recipe.head_rate}
    model.compile(
        optimizer=MuonSGD(
            keras.optimizers.schedules.PolynomialDecay(1.0, total_steps, 0.0),
            batch_size,
            rates,
            whiten_steps,
            recipe,
        ),
        loss=keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=RECIPE.label_smoothing
        ),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    return model


# ---------------------------------------------------------------------------
# Callbacks
# ---------------------------------------------------------------------------


class BiasFreeze(keras.callbacks.Callback):
    """Stop training the whitening layer's bias after ``epochs`` epochs."""

    def __init__(self, layer: PatchWhitening, epochs: int):
        super().__init__()
        self.layer, self.epochs = layer, epochs

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.layer.bias_gate.assign(1.0 if epoch < self.epochs else 0.0)


class Lookahead(keras.callbacks.Callback):
    """Every ``every`` steps, move the weights to a moving average of themselves.

    The average ``slow = d * slow + (1 - d) * weights`` uses ``d = decay *
    (step / total_steps)**3``: early on the weights are hardly averaged, by the
    end strongly. Training ends on the averaged weights. Trainable weights and
    batch norm's running statistics are averaged.
    """

    def __init__(self, total_steps: int, every: int = 5, decay: float = 0.95**5):
        super().__init__()
        self.total_steps, self.every, self.decay = total_steps, every, decay
        self._pairs: list = []

    def on_train_begin(self, logs: dict | None = None) -> None:
        fast = [
            weight for weight in self.model.weights if weight.trainable or "moving" in weight.path
        ]
        self._pairs = [(tf.Variable(weight.value, trainable=False), weight) for weight in fast]

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        step = int(self.model.optimizer.iterations.numpy())
        if step % self.every:
            return
        decay = self.decay * min(step / self.total_steps, 1.0) ** 3
        for slow, weight in self._pairs:
            slow.assign(decay * slow + (1 - decay) * weight.value)
            weight.assign(slow)

    def on_train_end(self, logs: dict | None = None) -> None:
        for slow, weight in self._pairs:
            weight.assign(slow)


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def training_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    batch_size: int,
    epochs: int,
    translate_pixels: int,
    flip: bool,
    alternating_flip: bool,
    seed: int,
) -> tf.data.Dataset:
    """``epochs`` epochs of shuffled, augmented ``uint8`` batches, one after the other.

    Each epoch is a new shuffle with the last partial batch dropped, so pass
    ``steps_per_epoch = len(images) // batch_size`` to ``fit``. With ``flip``
    and ``alternating_flip`` a random half of the images is mirrored in even epochs
    and the other half in odd ones (each image flips every other epoch);
    otherwise each image is mirrored at random in each epoch. Translations:
    up to ``translate_pixels`` in each direction, reflected border.
    """
    count = len(labels)
    image_table = tf.constant(images)
    label_table = tf.constant(np.eye(num_classes, dtype=np.float32)[labels])
    first_flip = tf.constant(np.random.default_rng(seed).random(count) < 0.5)

    def augment(epoch, batch_index, indices):
        noise_seed = tf.stack([tf.constant(seed, tf.int64), epoch * 100_000 + batch_index + 1])
        batch = tf.gather(image_table, indices)
        if flip:
            if alternating_flip:
                mirrored = tf.not_equal(tf.gather(first_flip, indices), tf.equal(epoch % 2, 1))
            else:
                mirrored = tf.random.stateless_uniform([tf.size(indices)], noise_seed) < 0.5
            batch = tf.where(mirrored[:, None, None, None], tf.reverse(batch, axis=[2]), batch)
        if translate_pixels:
            batch = random_translate(batch, translate_pixels, noise_seed + 1)
        return batch, tf.gather(label_table, indices)

    def one_epoch(epoch):
        order = tf.argsort(tf.random.stateless_uniform([count], tf.stack([seed, epoch])))
        return (
            tf.data.Dataset.from_tensor_slices(order)  # a new order every epoch
            .batch(batch_size, drop_remainder=True)
            .enumerate()
            .map(lambda batch_index, indices: augment(epoch, batch_index, indices))
        )

    return tf.data.Dataset.range(epochs).flat_map(one_epoch).prefetch(tf.data.AUTOTUNE)


def random_translate(batch: tf.Tensor, pixels: int, seed: tf.Tensor) -> tf.Tensor:
    """Shift each image of ``batch`` by up to ``pixels`` in y and x, reflecting the border."""
    size = tf.shape(batch)[1]
    padded = tf.pad(batch, [[0, 0], [pixels, pixels], [pixels, pixels], [0, 0]], mode="REFLECT")
    offsets = tf.random.stateless_uniform(
        [tf.shape(batch)[0], 2], seed, minval=0, maxval=2 * pixels + 1, dtype=tf.int32
    )
    rows = offsets[:, :1] + tf.range(size)[None, :]
    columns = offsets[:, 1:] + tf.range(size)[None, :]
    cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(cropped, columns, axis=2, batch_dims=1)
