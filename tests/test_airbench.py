"""The airbench recipe: whitening, dirac init, alternating flip, TTA, mixed precision."""

from __future__ import annotations

import functools
import subprocess
import sys

import keras
import numpy as np
import pytest

from projects.cifar_cnn import airbench
from projects.cifar_cnn.model import channel_statistics
from shared.images import load_bundled_sample
from shared.precision import choose_precision, cpu_supports_bfloat16
from tests.helpers import REPO_ROOT


@pytest.fixture(scope="module")
def sample():
    images, labels = load_bundled_sample(32)
    mean, variance = channel_statistics(images)
    return images, labels, mean, variance


def test_the_whitening_filters_whiten_training_patches(sample):
    images, _, mean, variance = sample
    kernel = airbench.patch_whitening_filters(images[:2000], mean, variance)
    assert kernel.shape == (2, 2, 3, 24)
    np.testing.assert_array_equal(kernel[..., 12:], -kernel[..., :12])

    def patches_of(chunk):
        normalised = (chunk.astype(np.float64) - mean) / np.sqrt(variance)
        windows = np.lib.stride_tricks.sliding_window_view(normalised, (2, 2), axis=(1, 2))
        return windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, 12)

    def covariance(patches):
        outputs = patches @ kernel[..., :12].reshape(12, 12)
        return outputs.T @ outputs / len(outputs)

    # On the patches the filters come from: decorrelated, with unit variance, except that
    # eps (5e-4) damps the few components whose own variance is that small (JPEG's
    # finest detail): there the variance is eigenvalue / (eigenvalue + eps) < 1.
    training = patches_of(images[:2000])
    whitened = covariance(training)
    assert np.abs(whitened - np.diag(np.diag(whitened))).max() < 1e-4
    variances = np.diag(whitened)
    assert (variances <= 1).all() and (variances > 0.1).all()
    np.testing.assert_allclose(variances[:6], 1.0, atol=0.01)  # the 6 largest components
    # Raw patches are strongly correlated (neighbouring pixels, colour channels).
    raw = training.T @ training / len(training)
    assert np.abs(raw - np.diag(np.diag(raw))).max() > 0.5
    # Other images: still decorrelated, though the smallest components' scale varies.
    other = covariance(patches_of(images[2000:3000]))
    assert np.abs(other - np.diag(np.diag(other))).max() < 0.1


def test_the_whitening_layer_computes_the_filters_as_a_convolution(sample):
    images, _, mean, variance = sample
    kernel = airbench.patch_whitening_filters(images[:500], mean, variance)
    layer = airbench.PatchWhitening(24)
    batch = ((images[:4].astype(np.float32) - mean) / np.sqrt(variance)).astype(np.float32)
    layer.build(batch.shape)
    layer.kernel.assign(kernel)
    output = keras.ops.convert_to_numpy(layer(batch))
    assert output.shape == (4, 31, 31, 24)
    expected = batch[0, 3:5, 7:9, :].reshape(-1) @ kernel.reshape(12, 24)
    np.testing.assert_allclose(output[0, 3, 7], expected, rtol=1e-4, atol=1e-4)


def test_dirac_initialised_convolutions_start_as_identities():
    kernel = keras.ops.convert_to_numpy(airbench.DiracInitializer()((3, 3, 4, 6), "float32"))
    image = np.random.default_rng(0).normal(size=(1, 5, 5, 4)).astype(np.float32)
    output = keras.ops.convert_to_numpy(keras.ops.conv(image, kernel, padding="same"))
    np.testing.assert_allclose(output[..., :4], image, atol=1e-6)  # the first 4 channels
    assert np.abs(kernel[..., 4:]).max() > 0  # the other 2 start random


def against_reference(forward, reference_forward, inputs, reference_inputs, upstream, watch=()):
    """Both functions' outputs and input gradients for the loss sum(outputs · upstream).

    Returns ``(outputs, gradient, reference, reference_gradient, tape, weighted,
    reference_weighted)``: the persistent tape and the two losses give further gradients.
    """
    import tensorflow as tf

    with tf.GradientTape(persistent=True) as tape:
        tape.watch([inputs, reference_inputs, *watch])
        outputs = forward(inputs)
        reference = reference_forward(reference_inputs)
        weighted = tf.reduce_sum(tf.cast(outputs, tf.float32) * upstream)
        reference_weighted = tf.reduce_sum(reference * upstream)
    gradient = tape.gradient(weighted, inputs)
    reference_gradient = tape.gradient(reference_weighted, reference_inputs)
    return outputs, gradient, reference, reference_gradient, tape, weighted, reference_weighted


@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_gelu_layers_and_their_gradients_are_those_of_exact_gelu(dtype, training):
    """ShiftedGELU = GELU(x + scale * bias) and GELU = GELU(x), whether through the
    XLA functions with the written gradient (training) or plain tf.nn.gelu."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    values = rng.uniform(-6, 6, size=(2, 10, 10, 5)).astype(np.float32)
    upstream = rng.normal(size=values.shape).astype(np.float32)
    inputs = tf.constant(tf.cast(values, dtype))
    reference_inputs = tf.cast(inputs, tf.float32)  # the same (rounded) numbers
    policy = "mixed_bfloat16" if dtype == "bfloat16" else "float32"
    shifted = airbench.ShiftedGELU(scale=8.0, dtype=policy)
    shifted.build(inputs.shape)
    shifted.bias.assign(rng.normal(size=5).astype(np.float32) * 0.1)
    shift = 8.0 * shifted.bias
    # float32: equal to rounding; bfloat16: the reference rounded to 8 significant bits.
    tolerance = {"float32": 1e-5, "bfloat16": 8e-3}[dtype]
    for layer, reference_shift in ((shifted, shift), (airbench.GELU(dtype=policy), 0.0)):
        outputs, gradient, reference, reference_gradient, tape, weighted, _ = against_reference(
            functools.partial(layer, training=training),
            lambda values, shift=reference_shift: tf.nn.gelu(values + shift, approximate=False),
            inputs,
            reference_inputs,
            upstream,
        )
        assert outputs.dtype == dtype and gradient.dtype == dtype
        for ours, theirs in ((outputs, reference), (gradient, reference_gradient)):
            ours = tf.cast(ours, tf.float32).numpy()
            np.testing.assert_allclose(ours, theirs.numpy(), rtol=tolerance, atol=tolerance)
        if layer is shifted:
            # The bias's gradient: scale x the sum of the pre-activation's, in float32.
            bias_gradient = tape.gradient(weighted, shifted.bias).numpy()
            expected = 8.0 * tf.reduce_sum(tf.cast(gradient, tf.float32), axis=(0, 1, 2))
            np.testing.assert_allclose(bias_gradient, expected.numpy(), rtol=1e-2, atol=0.05)
            assert shifted.bias.dtype == "float32"
    # Not the tanh approximation: the two differ by up to about 3e-4 near |x| = 2.
    if dtype == "float32":
        approximate = tf.nn.gelu(reference_inputs, approximate=True).numpy()
        assert np.abs(tf.cast(outputs, tf.float32).numpy() - approximate).max() > 1e-4


def keras_batch_norm_then_shifted_gelu(inputs, shift, momentum, epsilon):
    """The reference in float32: Keras's batch norm (no scale, no centre), + shift, exact GELU.

    Returns the batch-norm layer (for its running statistics) and a function of the
    inputs and ``training``.
    """
    import tensorflow as tf

    batch_norm = keras.layers.BatchNormalization(
        momentum=momentum, epsilon=epsilon, center=False, scale=False, dtype="float32"
    )
    batch_norm.build(inputs.shape)

    def forward(values, training):
        return tf.nn.gelu(batch_norm(values, training=training) + shift, approximate=False)

    return batch_norm, forward


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_batch_norm_shifted_gelu_is_keras_batch_norm_then_shifted_gelu(dtype):
    """Outputs, gradients (through the batch statistics, and the shift's), running
    statistics and inference all equal Keras's batch norm followed by GELU(x + shift)."""
    import tensorflow as tf

    rng = np.random.default_rng(1)
    # Channels with means far from 0 against their spread: E[x²] - E[x]² would lose
    # digits if the sums were not centred.
    channel_means = np.array([40.0, -3.0, 0.0, 7.0, 100.0], np.float32)
    values = (rng.normal(size=(4, 6, 6, 5)) * [2.0, 0.5, 1.0, 3.0, 0.7] + channel_means).astype(
        np.float32
    )
    upstream = rng.normal(size=values.shape).astype(np.float32)
    inputs = tf.constant(tf.cast(values, dtype))
    reference_inputs = tf.cast(inputs, tf.float32)  # the same (rounded) numbers
    policy = "mixed_bfloat16" if dtype == "bfloat16" else "float32"
    fused = airbench.BatchNormShiftedGELU(scale=8.0, momentum=0.6, epsilon=1e-5, dtype=policy)
    fused.build(inputs.shape)
    fused.bias.assign(rng.normal(size=5).astype(np.float32) * 0.1)
    shift = 8.0 * tf.convert_to_tensor(fused.bias)
    batch_norm, reference_forward = keras_batch_norm_then_shifted_gelu(
        reference_inputs, shift, momentum=0.6, epsilon=1e-5
    )
    tolerance = {"float32": 1e-4, "bfloat16": 1e-2}[dtype]

    for _step in range(2):
        outputs, gradient, reference, reference_gradient, tape, weighted, reference_weighted = (
            against_reference(
                lambda values: fused(values, training=True),
                lambda values: reference_forward(values, training=True),
                inputs,
                reference_inputs,
                upstream,
                watch=[shift],
            )
        )
        assert outputs.dtype == dtype and gradient.dtype == dtype
        for ours, theirs in ((outputs, reference), (gradient, reference_gradient)):
            ours = tf.cast(ours, tf.float32).numpy()
            scale = np.abs(theirs.numpy()).max()
            np.testing.assert_allclose(ours, theirs.numpy(), atol=tolerance * scale)
        # The shift's gradient: scale x the sum of GELU's input gradient over the batch.
        bias_gradient = tape.gradient(weighted, fused.bias).numpy()
        expected = 8.0 * tape.gradient(reference_weighted, shift).numpy()
        np.testing.assert_allclose(bias_gradient, expected, rtol=tolerance, atol=tolerance)
        for ours, theirs in (
            (fused.moving_mean, batch_norm.moving_mean),
            (fused.moving_variance, batch_norm.moving_variance),
        ):
            np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-5, atol=1e-6)
    assert np.abs(np.asarray(fused.moving_mean) - 0.64 * channel_means).max() < 1.0

    inferred = tf.cast(fused(inputs, training=False), tf.float32).numpy()
    reference = reference_forward(reference_inputs, training=False).numpy()
    np.testing.assert_allclose(inferred, reference, atol=tolerance * np.abs(reference).max())


def test_batch_norm_shifted_gelu_under_two_replicas_equals_one_device():
    """Each replica holds half of the batch, with other statistics than the whole: the
    outputs, input gradients and running statistics are the whole batch's, and the
    shift's gradients sum to the whole batch's."""
    import tensorflow as tf

    from shared.distribute import select_strategy

    rng = np.random.default_rng(2)
    halves = [
        rng.normal(size=(3, 4, 4, 2)).astype(np.float32),
        (rng.normal(size=(3, 4, 4, 2)) * 3 + 10).astype(np.float32),
    ]
    upstream = [rng.normal(size=half.shape).astype(np.float32) for half in halves]
    bias = np.array([0.3, -0.2], np.float32)

    def layer_and_step():
        layer = airbench.BatchNormShiftedGELU(scale=2.0, momentum=0.5, epsilon=1e-5)
        layer.build(halves[0].shape)
        layer.bias.assign(bias)

        def step(values, weights):
            with tf.GradientTape() as tape:
                tape.watch(values)
                outputs = layer(values, training=True)
                weighted = tf.reduce_sum(outputs * weights)
            return (outputs, *tape.gradient(weighted, [values, layer.bias]))

        return layer, step

    single, single_step = layer_and_step()
    whole = single_step(tf.constant(np.concatenate(halves)), tf.constant(np.concatenate(upstream)))

    strategy = select_strategy("mirrored")
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        mirrored, mirrored_step = layer_and_step()

    def half(data):
        return strategy.experimental_distribute_values_from_function(
            lambda context: tf.constant(data[context.replica_id_in_sync_group])
        )

    per_replica = tf.function(lambda v, w: strategy.run(mirrored_step, args=(v, w)))(
        half(halves), half(upstream)
    )
    outputs, input_gradient, bias_gradient = (
        strategy.experimental_local_results(result) for result in per_replica
    )
    np.testing.assert_allclose(np.concatenate(outputs), whole[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.concatenate(input_gradient), whole[1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.add(*bias_gradient), whole[2], rtol=1e-4, atol=1e-5)
    for name in ("moving_mean", "moving_variance"):
        expected = np.asarray(getattr(single, name))
        for value in strategy.experimental_local_results(getattr(mirrored, name).value):
            np.testing.assert_allclose(value.numpy(), expected, rtol=1e-5)


def flips_by_epoch(images: np.ndarray, epochs: int, alternating: bool) -> np.ndarray:
    """(epochs, images) booleans: was image i mirrored in epoch e? (Told apart by content.)"""
    labels = np.zeros(len(images), dtype=np.int64)
    data = airbench.training_dataset(images, labels, 10, 8, epochs, 0, True, alternating, seed=3)
    originals = {image.tobytes(): index for index, image in enumerate(images)}
    mirrors = {image[:, ::-1].tobytes(): index for index, image in enumerate(images)}
    seen = np.full((epochs, len(images)), -1)
    steps = len(images) // 8
    for step, (batch, _) in enumerate(data.as_numpy_iterator()):
        epoch = step // steps
        for image in batch:
            key = image.tobytes()
            if key in originals:
                seen[epoch, originals[key]] = 0
            else:
                seen[epoch, mirrors[key]] = 1
    assert (seen >= 0).all(), "every image is seen once per epoch"
    return seen.astype(bool)


def test_alternating_flip_mirrors_each_image_exactly_every_other_epoch():
    images = np.random.default_rng(0).integers(0, 256, (64, 6, 6, 3), dtype=np.uint8)
    flips = flips_by_epoch(images, epochs=4, alternating=True)
    assert (flips[1:] != flips[:-1]).all()  # every image changes orientation every epoch
    assert 16 <= flips[0].sum() <= 48  # a random half starts mirrored
    random_flips = flips_by_epoch(images, epochs=4, alternating=False)
    assert (random_flips[1:] == random_flips[:-1]).any()  # random flips repeat sometimes


def test_translation_moves_images_by_at_most_the_given_pixels():
    image = np.zeros((1, 8, 8, 1), np.uint8)
    image[0, 4, 4, 0] = 255
    batch = np.repeat(image, 200, axis=0)
    moved = keras.ops.convert_to_numpy(
        airbench.random_translate(keras.ops.convert_to_tensor(batch), 2, np.array([1, 2]))
    )
    rows, columns = np.nonzero(moved[:, :, :, 0] == 255)[1:]
    assert set(rows.tolist()) == {2, 3, 4, 5, 6} and set(columns.tolist()) == {2, 3, 4, 5, 6}


def test_test_time_augmentation_lives_in_the_saved_model(sample, tmp_path):
    images, _, mean, variance = sample
    core = airbench.build_airbench(
        10, 32, mean, variance, airbench.patch_whitening_filters(images[:500], mean, variance)
    )
    # Random, non-symmetric weights, so that every view gives different logits.
    rng = np.random.default_rng(1)
    core.get_layer("dense").kernel.assign(rng.normal(size=(256, 10)).astype("float32"))
    saved = airbench.with_test_time_augmentation(core, level=2)
    batch = images[:16]
    probabilities = saved.predict(batch, verbose=0)

    def logits(view):
        return core.predict(view, verbose=0)

    padded = np.pad(batch, [(0, 0), (1, 1), (1, 1), (0, 0)], mode="reflect")
    up_left, down_right = padded[:, 2:34, 2:34], padded[:, 0:32, 0:32]

    def mirrored(view):
        return (logits(view) + logits(view[:, :, ::-1])) / 2

    expected = 0.5 * mirrored(batch) + 0.25 * (mirrored(up_left) + mirrored(down_right))
    expected = np.exp(expected - expected.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-4, atol=1e-6)
    assert not np.allclose(
        probabilities, keras.ops.convert_to_numpy(keras.ops.softmax(logits(batch)))
    )

    path = tmp_path / "model.keras"
    saved.save(path)
    np.save(tmp_path / "batch.npy", batch)
    reloaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, numpy as np, keras\n"
            "import projects.cifar_cnn.airbench  # registers the custom layers\n"
            "model = keras.saving.load_model(sys.argv[1])\n"
            "np.save(sys.argv[3], model.predict(np.load(sys.argv[2]), verbose=0))\n",
            str(path),
            str(tmp_path / "batch.npy"),
            str(tmp_path / "out.npy"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert reloaded.returncode == 0, reloaded.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), probabilities, rtol=1e-5, atol=1e-7)


def test_test_time_views_are_averaged_in_float32_under_mixed_bfloat16(sample):
    """The saved model's views average float32 logits in float32, as the output layer
    computes: averaging in bfloat16 (3 significant digits) changed predictions."""
    images, _, mean, variance = sample
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        core = airbench.build_airbench(
            10, 32, mean, variance, airbench.patch_whitening_filters(images[:500], mean, variance)
        )
        core.get_layer("dense").kernel.assign(
            np.random.default_rng(2).normal(size=(256, 10)).astype("float32")
        )
        saved = airbench.with_test_time_augmentation(core, level=1)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    batch = images[:32]
    logits = (core.predict(batch, verbose=0) + core.predict(batch[:, :, ::-1], verbose=0)) / 2
    expected = keras.ops.convert_to_numpy(keras.ops.softmax(logits))
    np.testing.assert_allclose(saved.predict(batch, verbose=0), expected, rtol=1e-4, atol=1e-6)


def test_the_triangular_schedule_rises_then_falls():
    schedule = airbench.TriangularSchedule(1.5, 100)
    values = [float(schedule(step)) for step in (0, 23, 100, 200)]
    assert values == pytest.approx([0.3, 1.5, 0.105, 0.105])
    assert airbench.keras_learning_rate(airbench.RECIPE, 1024) == pytest.approx(1.5)


@pytest.mark.parametrize("shape", [(216, 64), (64, 576)])
def test_orthogonalize_equalises_singular_values_and_keeps_singular_vectors(shape):
    gradient = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    gradient[:, 0] *= 20  # one dominant direction: condition number in the tens
    before = np.linalg.svd(gradient, compute_uv=False)
    assert before.max() / before.min() > 5
    result = keras.ops.convert_to_numpy(
        airbench.orthogonalize(keras.ops.convert_to_tensor(gradient))
    )
    assert result.shape == shape
    after = np.linalg.svd(result, compute_uv=False)
    assert after.min() > 0.5 and after.max() < 1.3  # the dominant direction no longer dominates
    # Same singular vectors: U^T result V is diagonal.
    left, _, right = np.linalg.svd(gradient, full_matrices=False)
    rotated = left.T @ result @ right.T
    assert np.abs(rotated - np.diag(np.diag(rotated))).max() < 1e-3


def test_a_muon_sgd_step_follows_the_recipe():
    """Conv kernels: rescaled to norm sqrt(outputs), then a step of rate x the orthogonalised
    Nesterov momentum. Other weights: Nesterov SGD at their own rate x batch, with decay."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False, name="block1a_conv")(inputs)
    x = airbench.ShiftedGELU(name="block1a_shift")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(4, use_bias=False, name="dense")(x))
    kernel, shift, head = (
        model.get_layer(name).weights[0] for name in ("block1a_conv", "block1a_shift", "dense")
    )
    kernel.assign(kernel * 7.0)  # far from the norm Muon keeps
    batch_size = 32
    airbench.compile_airbench_muon(model, total_steps=10, whiten_steps=3, batch_size=batch_size)
    optimizer, recipe = model.optimizer, airbench.MUON_RECIPE
    rng = np.random.default_rng(1)
    gradients = [rng.normal(size=v.shape).astype(np.float32) for v in (kernel, shift, head)]
    before = [keras.ops.convert_to_numpy(v) for v in (kernel, shift, head)]
    optimizer.apply_gradients(zip(gradients, [kernel, shift, head], strict=True))
    after = [keras.ops.convert_to_numpy(v) for v in (kernel, shift, head)]

    # First step: momentum buffer = gradient, Nesterov direction = (1 + beta) * gradient.
    direction = (1 + recipe.muon_momentum) * gradients[0].reshape(-1, 16)
    orthogonal = keras.ops.convert_to_numpy(airbench.orthogonalize(direction))
    rescaled = before[0] * (16**0.5 / np.linalg.norm(before[0]))
    expected = rescaled - recipe.muon_rate * orthogonal.reshape(before[0].shape)
    np.testing.assert_allclose(after[0], expected, atol=1e-5)
    for index, rate in ((1, recipe.shift_rate), (2, recipe.head_rate)):
        rate *= batch_size  # per summed example -> Keras's mean loss
        decayed = gradients[index] + recipe.weight_decay * batch_size / rate * before[index]
        expected = before[index] - rate * (1 + recipe.sgd_momentum) * decayed
        np.testing.assert_allclose(after[index], expected, rtol=1e-4, atol=1e-5)


CPUINFO_WITH_BF16 = "processor : 0\nflags : fpu sse avx2 avx512f avx512_bf16 amx_tile\n"
CPUINFO_WITHOUT = "processor : 0\nflags : fpu sse avx2 fma\n"


def test_mixed_precision_auto_picks_what_the_hardware_computes_fast():
    assert cpu_supports_bfloat16(CPUINFO_WITH_BF16)
    assert not cpu_supports_bfloat16(CPUINFO_WITHOUT)
    assert choose_precision("auto", [], cpu_bfloat16=False)[0] == "float32"
    assert choose_precision("auto", [], cpu_bfloat16=True)[0] == "mixed_bfloat16"
    assert choose_precision("auto", [(8, 0)], cpu_bfloat16=True)[0] == "mixed_float16"
    assert choose_precision("auto", [(6, 1)], cpu_bfloat16=True)[0] == "float32"
    assert choose_precision("on", [], cpu_bfloat16=False)[0] == "mixed_bfloat16"
    assert choose_precision("off", [(8, 0)], cpu_bfloat16=True)[0] == "float32"
    policy, reason = choose_precision("auto", [], cpu_bfloat16=False)
    assert "no native bfloat16" in reason
    # A model not measured faster in bfloat16 (the SimpleRNN) stays float32 on a bfloat16 CPU ...
    policy, reason = choose_precision("auto", [], cpu_bfloat16=True, bfloat16_faster_on_cpu=False)
    assert policy == "float32" and "not measured faster in bfloat16" in reason
    # ... unless asked for, and GPUs are unaffected.
    assert choose_precision("on", [], True, bfloat16_faster_on_cpu=False)[0] == "mixed_bfloat16"
    assert choose_precision("auto", [(8, 0)], True, False)[0] == "mixed_float16"


def test_an_xla_training_step_matches_the_plain_one(sample):
    """XLA fuses the airbench step (Muon's orthogonalisation, batch norm, the scaled
    shifts) into other code; the weights it computes must be the plain step's."""
    images, labels, mean, variance = sample
    whitening = airbench.patch_whitening_filters(images[:500], mean, variance)
    models = []
    for jit_compile in (False, True):
        keras.utils.set_random_seed(0)
        model = airbench.build_airbench(
            10, 32, mean, variance, whitening, width=8, optimizer="muon"
        )
        airbench.compile_airbench_muon(model, total_steps=10, whiten_steps=3, batch_size=64)
        model.jit_compile = jit_compile
        models.append(model)
    batch = images[:64], np.eye(10, dtype=np.float32)[labels[:64]]
    initial = [keras.ops.convert_to_numpy(w) for w in models[0].weights]
    for model in models:
        for _ in range(2):
            model.train_on_batch(*batch)
    plain, compiled = ([keras.ops.convert_to_numpy(w) for w in m.weights] for m in models)
    # Compared with how far the two steps moved each weight: float32 rounding, summed in
    # another order and amplified by Muon's Newton-Schulz iterations, differs a little
    # (a wrong rate or a missed rescaling would differ by the whole step).
    moved = 0
    for start, before, after in zip(initial, plain, compiled, strict=True):
        step = np.linalg.norm(before - start)
        moved += step > 0
        assert np.linalg.norm(after - before) <= 0.05 * step + 1e-6  # measured: up to 1%
    assert moved > 10
