"""Where a network's parameters are, layer by layer, with the lecture's formulas.

    conv layer:  (F·F·C_in + 1)·C_out   (F x F kernels over C_in channels, one bias each)
    dense layer: (n_in + 1)·n_out

e.g. 64 kernels of 7x7 over a grey image: (7·7·1 + 1)·64 = 3,200. Weight sharing is
why a conv layer is cheap: the count does not depend on the image size. Layers
without those shapes (batch norm, the input normalisation, airbench's whitening)
are listed with the size of each of their weights, so the total always equals
``model.count_params()``.
"""

from __future__ import annotations

import dataclasses
import math

import keras


@dataclasses.dataclass(frozen=True)
class LayerParameters:
    """One layer's parameter count and how it comes about."""

    layer: str
    formula: str
    count: int


def _size(weight) -> int:
    return math.prod(int(dimension) for dimension in weight.shape)


def leaf_layers(model: keras.Model):
    """Every layer of ``model``, nested models replaced by their own layers, in order."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from leaf_layers(layer)
        else:
            yield layer


def layer_parameters(layer: keras.layers.Layer) -> LayerParameters | None:
    """The count of one layer, as a formula; None for layers without weights."""
    if not layer.weights:
        return None
    if isinstance(layer, keras.layers.Conv2D) and layer.kernel is not None:
        height, width, channels_in, channels_out = (int(d) for d in layer.kernel.shape)
        bias = 1 if layer.use_bias else 0
        formula = f"({height}·{width}·{channels_in}{' + 1' if bias else ''})·{channels_out}"
        count = (height * width * channels_in + bias) * channels_out
    elif isinstance(layer, keras.layers.Dense):
        inputs, outputs = (int(d) for d in layer.kernel.shape)
        bias = 1 if layer.use_bias else 0
        formula = f"({inputs}{' + 1' if bias else ''})·{outputs}"
        count = (inputs + bias) * outputs
    elif isinstance(layer, keras.layers.BatchNormalization):
        channels = int(layer.moving_mean.shape[-1])
        names = (["γ"] if layer.scale else []) + (["β"] if layer.center else [])
        names += ["running mean", "running variance"]
        formula = f"{len(names)}·{channels} ({', '.join(names)})"
        count = len(names) * channels
    else:
        parts = [f"{weight.name} {_size(weight)}" for weight in layer.weights]
        formula = " + ".join(parts)
        count = sum(_size(weight) for weight in layer.weights)
    return LayerParameters(layer.name, formula, count)


def parameter_table(model: keras.Model) -> list[LayerParameters]:
    """Every layer with weights (nested models expanded), in order."""
    rows = [layer_parameters(layer) for layer in leaf_layers(model)]
    return [row for row in rows if row is not None]


def explain_parameters(model: keras.Model) -> str:
    """The table as text, ending with the total (which equals ``model.count_params()``)."""
    rows = parameter_table(model)
    width = max([len(row.layer) for row in rows] + [5])
    lines = [f"{'layer':<{width}}  {'parameters':>10}  formula"]
    lines += [f"{row.layer:<{width}}  {row.count:>10,}  {row.formula}" for row in rows]
    lines.append(f"{'total':<{width}}  {sum(row.count for row in rows):>10,}")
    return "\n".join(lines)


def forward_flops(model: keras.Model) -> int:
    """Floating-point operations of one image's forward pass through its weight layers.

    A layer with a 4-D kernel (convolutions, airbench's whitening) costs
    ``2·F·F·C_in·C_out`` per output position (a multiply and an add per weight);
    a dense layer ``2·n_in·n_out``. Pooling, batch norm and activations are not
    counted: they are a few operations per value, not per weight.
    """
    total = 0
    for layer in leaf_layers(model):
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            continue
        weights = _size(kernel)
        if len(kernel.shape) == 4:
            _, out_h, out_w, _ = layer.output.shape
            total += 2 * out_h * out_w * weights
        elif len(kernel.shape) == 2:
            total += 2 * weights
    return int(total)
