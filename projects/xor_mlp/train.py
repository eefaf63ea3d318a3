"""Train an MLP on XOR, and show why it needs its hidden layer.

    python -m projects.xor_mlp.train                 # or: make xor-mlp
    python -m projects.xor_mlp.train --gate and      # AND and OR work without a hidden layer
    python -m projects.xor_mlp.train --quick         # a few seconds, for smoke tests

Three models learn the same gate:

* a Keras MLP (2 -> 8 tanh -> 1 sigmoid), the model this run saves;
* a Keras single-layer perceptron (2 -> 1 sigmoid): one straight decision line,
  which can separate AND and OR but never XOR (at most 3 of its 4 rows; trained
  with cross-entropy it settles near 0.5 everywhere);
* the same MLP written from scratch in NumPy (``numpy_mlp.py``).

Expected on 2 CPU cores (about 10 s, half of it TensorFlow start-up), seed 0:
MLP accuracy 1.00, perceptron 0.50 ("cannot solve xor"), NumPy MLP 1.00.
The run directory (model, metrics.json, history.csv, plots) is printed at the end.
"""

from __future__ import annotations

from projects.xor_mlp.config import XorConfig
from shared.cli import parse_before_tensorflow

if __name__ == "__main__":
    # Answer --help and flag errors at once, before TensorFlow loads (seconds).
    parse_before_tensorflow(XorConfig)

import logging

import keras
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D

from projects.xor_mlp import numpy_mlp
from projects.xor_mlp.data import training_dataset, truth_table
from projects.xor_mlp.model import build_mlp, build_perceptron, compile_classifier
from shared.callbacks import standard_callbacks
from shared.cli import fit_verbosity, run_training_cli
from shared.distribute import select_strategy
from shared.plots import save_figure
from shared.runs import start_run

log = logging.getLogger("xor_mlp")


def evaluate(predict, inputs: np.ndarray, targets: np.ndarray) -> dict:
    """Accuracy, loss and per-row probabilities of a probability-valued ``predict``."""
    probabilities = np.asarray(predict(inputs), dtype=np.float64).reshape(-1)
    labels = targets.reshape(-1)
    clipped = np.clip(probabilities, 1e-7, 1 - 1e-7)
    loss = -np.mean(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped))
    return {
        "accuracy": float(np.mean((probabilities > 0.5) == (labels > 0.5))),
        "loss": float(loss),
        "probabilities": probabilities.tolist(),
    }


def main(config: XorConfig) -> dict:
    """Train the three models on ``config.gate``; save the MLP run; return its metrics."""
    run = start_run("xor_mlp", config)
    strategy = select_strategy(config.strategy)
    inputs, targets = truth_table(config.gate)
    train_data = training_dataset(config.gate, config.repeats, config.batch_size, config.seed)

    # 1. The MLP: the model this run is about, trained with the standard callbacks.
    with strategy.scope():
        mlp = compile_classifier(build_mlp(config.hidden_units), config.learning_rate)
    mlp.summary(print_fn=log.info)
    mlp.fit(
        train_data,
        validation_data=(inputs, targets),
        epochs=config.epochs,
        shuffle=False,  # training_dataset shuffles; Keras warns if asked to as well.
        callbacks=standard_callbacks(run.path, examples_per_epoch=4 * config.repeats),
        verbose=fit_verbosity(),
    )
    run.keep_chosen_epoch(mlp)  # --keep: the best validation epoch (default) or the last

    # 2. The perceptron: same data, optimizer and epochs; only the hidden layer is missing.
    with strategy.scope():
        perceptron = compile_classifier(build_perceptron(), config.learning_rate)
    perceptron.fit(train_data, epochs=config.epochs, shuffle=False, verbose=0)

    # 3. The from-scratch NumPy MLP, minibatch SGD.
    numpy_params = train_numpy_mlp(config, inputs, targets, config.seed)

    results = {
        "mlp": evaluate(keras_predict_fn(mlp), inputs, targets),
        "perceptron": evaluate(keras_predict_fn(perceptron), inputs, targets),
        "numpy_mlp": evaluate(lambda x: numpy_mlp.predict(numpy_params, x), inputs, targets),
    }
    for result in results.values():
        result["solved"] = result["accuracy"] == 1.0
    perceptron_note = (
        f"The single-layer perceptron solves {config.gate}: it is linearly separable."
        if results["perceptron"]["solved"]
        else f"The single-layer perceptron cannot solve {config.gate}: one straight line "
        "cannot separate its classes (at most 3 of 4 rows), which is why hidden layers exist."
    )
    metrics = {
        "gate": config.gate,
        "accuracy": results["mlp"]["accuracy"],
        "loss": results["mlp"]["loss"],
        **results,
        "perceptron_note": perceptron_note,
    }

    plot_decision_boundaries(
        {"Keras MLP": mlp, "Perceptron": perceptron},
        lambda x: numpy_mlp.predict(numpy_params, x),
        inputs,
        targets,
        title=config.gate.upper(),
        path=run.plots_dir / "decision_boundary.png",
    )
    log.info("%-12s %8s %8s", "model", "accuracy", "loss")
    for name, result in results.items():
        log.info("%-12s %8.2f %8.4f", name, result["accuracy"], result["loss"])
    log.info(perceptron_note)
    run.finish(mlp, metrics)
    return metrics


def train_numpy_mlp(
    config: XorConfig, inputs: np.ndarray, targets: np.ndarray, seed: int
) -> numpy_mlp.Params:
    """The from-scratch NumPy MLP of ``config``, trained by minibatch SGD (2 rows a step)."""
    params, _ = numpy_mlp.train(
        inputs,
        targets,
        hidden=config.hidden_units,
        epochs=config.numpy_epochs,
        learning_rate=config.numpy_learning_rate,
        batch_size=2,
        seed=seed,
    )
    return params


def plot_decision_boundaries(keras_models, numpy_predict, inputs, targets, title, path):
    """Colour the input square by each model's output probability; mark the 4 rows."""
    grid_axis = np.linspace(-0.5, 1.5, 121, dtype=np.float32)
    grid_x, grid_y = np.meshgrid(grid_axis, grid_axis)
    grid = np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)
    predictors = {name: keras_predict_fn(model) for name, model in keras_models.items()}
    predictors["NumPy MLP"] = numpy_predict
    figure, axes = plt.subplots(
        1, len(predictors), figsize=(4 * len(predictors), 4.6), layout="constrained"
    )
    for axis, (name, predict) in zip(axes, predictors.items(), strict=True):
        surface = np.asarray(predict(grid)).reshape(grid_x.shape)
        filled = axis.contourf(grid_x, grid_y, surface, levels=20, cmap="RdBu_r", vmin=0, vmax=1)
        axis.contour(grid_x, grid_y, surface, levels=[0.5], colors="black", linewidths=1.5)
        axis.scatter(
            inputs[:, 0],
            inputs[:, 1],
            c=targets.ravel(),
            cmap="RdBu_r",
            vmin=0,
            vmax=1,
            s=160,
            edgecolors="black",
            linewidths=1.5,
        )
        axis.legend(
            handles=[
                Line2D([], [], color="black", linewidth=1.5, label="P = 0.5 (decision line)"),
                *(
                    Line2D(
                        [],
                        [],
                        linestyle="",
                        marker="o",
                        markersize=9,
                        markerfacecolor=plt.get_cmap("RdBu_r")(float(target)),
                        markeredgecolor="black",
                        label=f"truth table: output {target}",
                    )
                    for target in (0, 1)
                ),
            ],
            loc="upper center",
            bbox_to_anchor=(0.5, -0.16),
            fontsize=8,
            frameon=False,
        )
        axis.set_title(f"{title}: {name}")
        axis.set_xlabel("x1")
        axis.set_ylabel("x2")
        axis.set_aspect("equal")
    figure.colorbar(filled, ax=axes, shrink=0.8, label="P(output = 1)")
    save_figure(figure, path)


def keras_predict_fn(model: keras.Model):
    """``model.predict`` without its progress bar."""
    return lambda x: model.predict(x, verbose=0, batch_size=4096)


if __name__ == "__main__":
    run_training_cli(main, XorConfig)
