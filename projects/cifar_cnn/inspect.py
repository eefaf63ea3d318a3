"""Look inside a trained CIFAR CNN: its first-layer kernels, feature maps and Grad-CAM.

    python -m projects.cifar_cnn.inspect --run-dir runs/cifar_cnn/latest cat.jpg
    python -m projects.cifar_cnn.inspect --layer block2a_conv --class dog cat.jpg
    make cifar-inspect IMAGE=cat.jpg ARGS="--class dog"

writes PNGs into ``--out`` (default ``RUN_DIR/inspect/<image name>/``) and prints
where each went:

* ``kernels.png``: the first convolution's kernels, each drawn as a small RGB
  image (the lecture's "kernels that learn to extract features": edges and
  colour blobs after training);
* ``features_<layer>.png``: the feature maps of each ``--layer`` (default: the
  first and the last convolution), one grey square per channel, with the
  layer's output shape in the title;
* ``gradcam_<class>.png``: where the network looked for the top predicted class
  (and for ``--class NAME``): Grad-CAM (Selvaraju et al. 2017) weighs each
  channel of the last spatial feature map by the mean gradient of the class's
  logit with respect to it, sums the weighted channels, keeps the positive
  part and scales it up to the image.

For airbench runs, whose saved model averages six test-time views, the
pictures are of the network on the image itself; the printed probabilities
are the saved model's.
"""

from __future__ import annotations

import argparse

from shared.cli import parse_args_before_tensorflow
from shared.config import program_name


def build_parser() -> argparse.ArgumentParser:
    """The command line: the run, the image, which layers and classes."""
    parser = argparse.ArgumentParser(
        prog=program_name(),
        description="Kernels, feature maps and Grad-CAM of a trained CIFAR run on one image.",
    )
    parser.add_argument(
        "--run-dir", default="runs/cifar_cnn/latest", help="Run directory (default: %(default)s)."
    )
    parser.add_argument(
        "--layer",
        action="append",
        default=[],
        metavar="NAME",
        help="Layer whose feature maps to draw (repeatable; default: the first and the last "
        "convolution). A wrong name lists the valid ones.",
    )
    parser.add_argument(
        "--class",
        dest="class_name",
        default="",
        metavar="NAME",
        help="Also draw Grad-CAM for this class (default: the top predicted class only).",
    )
    parser.add_argument(
        "--out", default="", help="Output folder (default: RUN_DIR/inspect/<image name>)."
    )
    parser.add_argument("image", metavar="IMAGE", help="A PNG, JPEG, ... file.")
    return parser


if __name__ == "__main__":
    # Answer --help and usage errors at once, before TensorFlow loads (seconds).
    parse_args_before_tensorflow(build_parser())

import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import keras
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf

from projects.cifar_cnn.model import trained_network
from shared.cli import exit_on_user_error, setup_logging
from shared.errors import UserError
from shared.images import read_image_file
from shared.plots import save_figure
from shared.runs import load_run

log = logging.getLogger("cifar_cnn")

MOST_CHANNELS_DRAWN = 64


class InspectError(UserError):
    """A layer or class name that the network does not have."""


def logits_network(model: keras.Model) -> keras.Model:
    """The Functional network inside a saved CIFAR model, ending in class logits.

    airbench's saved model wraps its network (whose output already is the
    logits) in test-time views; it is returned as it is. The other models end
    in a softmax Dense layer named ``probabilities``; the same graph is returned
    with a linear copy of that layer, because Grad-CAM differentiates the
    class's score before the softmax couples it to every other class.
    """
    network = trained_network(model)
    if network is not model:
        return network
    head = model.get_layer("probabilities")
    logits = keras.layers.Dense(head.units, dtype="float32", name="logits")
    outputs = logits(head.input)
    logits.set_weights(head.get_weights())
    return keras.Model(model.inputs, outputs, name=f"{model.name}_logits")


def spatial_layers(network: keras.Model) -> list[keras.layers.Layer]:
    """Layers whose output is a feature map (batch, height > 1, width > 1, channels)."""
    found = []
    for layer in network.layers:
        shape = getattr(layer, "output", None)
        shape = None if shape is None or isinstance(shape, list) else shape.shape
        if shape is not None and len(shape) == 4 and min(shape[1], shape[2]) > 1:
            found.append(layer)
    return [layer for layer in found if not isinstance(layer, keras.layers.InputLayer)]


def convolutions(network: keras.Model) -> list[keras.layers.Layer]:
    """The spatial layers that hold a 4-D kernel (Conv2D, airbench's patch whitening)."""
    return [
        layer
        for layer in spatial_layers(network)
        if getattr(layer, "kernel", None) is not None and len(layer.kernel.shape) == 4
    ]


def layer_by_name(network: keras.Model, name: str) -> keras.layers.Layer:
    """The spatial layer called ``name``; an unknown name lists the valid ones."""
    valid = spatial_layers(network)
    for layer in valid:
        if layer.name == name:
            return layer
    raise InspectError(
        f"--layer {name!r} is not a feature-map layer of {network.name}; valid names: "
        + ", ".join(layer.name for layer in valid)
    )


def feature_maps(network: keras.Model, layer: keras.layers.Layer, image: np.ndarray) -> np.ndarray:
    """``layer``'s output for one ``uint8`` image: (height, width, channels), float32."""
    probe = keras.Model(network.inputs, layer.output)
    return np.asarray(probe([image[None]], training=False), dtype=np.float32)[0]


def grad_cam(
    network: keras.Model, layer: keras.layers.Layer, image: np.ndarray, class_index: int
) -> np.ndarray:
    """Grad-CAM of ``class_index`` at ``layer``, scaled up to the image: (height, width), >= 0.

    Each channel k of the layer's output A gets the weight
    ``alpha_k = mean over positions of d logit_c / d A_k``; the map is
    ``ReLU(sum_k alpha_k A_k)``, resized bilinearly to the image and divided by
    its maximum (all zeros when nothing speaks for the class).
    """
    probe = keras.Model(network.inputs, [layer.output, network.output])
    with tf.GradientTape() as tape:
        activations, logits = probe([tf.constant(image[None])], training=False)
        tape.watch(activations)
        score = tf.cast(logits, tf.float32)[0, class_index]
    gradients = tf.cast(tape.gradient(score, activations), tf.float32)[0]
    activations = tf.cast(activations, tf.float32)[0]
    channel_weights = tf.reduce_mean(gradients, axis=(0, 1))
    heat = tf.nn.relu(tf.reduce_sum(activations * channel_weights, axis=-1))
    heat = tf.image.resize(heat[..., None], image.shape[:2], method="bilinear")[..., 0]
    heat = heat.numpy()
    peak = heat.max()
    return heat / peak if peak > 0 else heat


def plot_kernels(layer: keras.layers.Layer, path: Path) -> Path:
    """Every kernel of a convolution over RGB images as a small RGB picture."""
    kernel = np.asarray(keras.ops.convert_to_numpy(layer.kernel), dtype=np.float32)
    size, _, channels, count = kernel.shape
    columns = min(count, 8)
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 1.1, rows * 1.1 + 0.6))
    for index, axis in enumerate(np.ravel(axes)):
        axis.axis("off")
        if index >= count:
            continue
        picture = kernel[..., index]
        # Each kernel on its own scale: its weakest weight black, its strongest white.
        picture = (picture - picture.min()) / max(float(np.ptp(picture)), 1e-12)
        axis.imshow(picture if channels == 3 else picture.mean(axis=-1), interpolation="nearest")
    figure.suptitle(f"{layer.name}: {count} kernels of {size}x{size}x{channels}", fontsize=9)
    return save_figure(figure, path)


def plot_feature_maps(layer_name: str, maps: np.ndarray, path: Path) -> Path:
    """One grey square per channel (the first 64), titled with the output shape."""
    height, width, channels = maps.shape
    shown = min(channels, MOST_CHANNELS_DRAWN)
    columns = min(shown, 8)
    rows = math.ceil(shown / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 1.2, rows * 1.2 + 0.6))
    for index, axis in enumerate(np.ravel(axes)):
        axis.axis("off")
        if index < shown:
            axis.imshow(maps[..., index], cmap="gray", interpolation="nearest")
    more = f", first {shown} of {channels} channels" if shown < channels else ""
    figure.suptitle(f"{layer_name}: output shape ({height}, {width}, {channels}){more}")
    return save_figure(figure, path)


def plot_grad_cam(image: np.ndarray, heat: np.ndarray, title: str, path: Path) -> Path:
    """The image, the heat map over it, and the map alone."""
    figure, axes = plt.subplots(1, 3, figsize=(9, 3.4))
    axes[0].imshow(image)
    axes[0].set_title("image")
    axes[1].imshow(image)
    axes[1].imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=1, interpolation="bilinear")
    axes[1].set_title("Grad-CAM over the image")
    shown = axes[2].imshow(heat, cmap="jet", vmin=0, vmax=1)
    axes[2].set_title("Grad-CAM")
    figure.colorbar(shown, ax=axes[2], fraction=0.046)
    for axis in axes:
        axis.axis("off")
    figure.suptitle(title, fontsize=10)
    return save_figure(figure, path)


def inspect(
    run_dir: str,
    image_path: str,
    layer_names: Sequence[str] = (),
    class_name: str = "",
    out: str = "",
) -> dict[str, Path]:
    """Write the kernels, feature maps and Grad-CAM PNGs; returns ``{what: path}``."""
    run = load_run(run_dir, inference="projects.cifar_cnn.inspect")
    class_names = list(run.metrics["class_names"])
    if class_name and class_name not in class_names:
        raise InspectError(
            f"--class {class_name!r} is not a class of this run; its classes: "
            + ", ".join(class_names)
        )
    image = read_image_file(image_path, int(run.model.input_shape[1]))
    network = logits_network(run.model)
    chosen = [layer_by_name(network, name) for name in layer_names]
    convs = convolutions(network)
    if not chosen:
        chosen = list(dict.fromkeys([convs[0], convs[-1]]))
    out_dir = Path(out) if out else Path(run_dir) / "inspect" / Path(image_path).stem
    written = {"kernels": plot_kernels(convs[0], out_dir / "kernels.png")}
    for layer in chosen:
        maps = feature_maps(network, layer, image)
        written[f"features {layer.name}"] = plot_feature_maps(
            layer.name, maps, out_dir / f"features_{layer.name}.png"
        )

    probabilities = np.asarray(run.model.predict(image[None], verbose=0))[0]
    top = int(probabilities.argmax())
    cam_layer = spatial_layers(network)[-1]
    targets = [top] + ([class_names.index(class_name)] if class_name else [])
    for index in dict.fromkeys(targets):
        heat = grad_cam(network, cam_layer, image, index)
        name = class_names[index]
        written[f"grad-cam {name}"] = plot_grad_cam(
            image,
            heat,
            f"{name} (probability {probabilities[index]:.2f}"
            f"{', top class' if index == top else ''}) at layer {cam_layer.name}",
            out_dir / f"gradcam_{name}.png",
        )
    return written


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(logging.WARNING)
    written = exit_on_user_error(
        lambda: inspect(args.run_dir, args.image, args.layer, args.class_name, args.out)
    )
    for what, path in written.items():
        print(f"{what}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
