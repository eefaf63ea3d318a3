"""Why the lecture moves from the simple RNN to the LSTM: the vanishing gradient, measured.

    python -m projects.stock_lstm.gradients                 # or: make stock-gradients
    python -m projects.stock_lstm.gradients --ticker NVDA --distance 200

Trains a SimpleRNN and an LSTM forecaster with the project's defaults (bundled
AAPL unless ``--ticker``/``--csv``), then computes, with the NumPy
backpropagation through time of ``numpy_cells.py`` (checked against
TensorFlow's autodiff by the tests), how large ``dL/dh_t`` is at ``k`` steps
before the day whose forecast error L is measured, for k = 0 ... ``--distance``,
on the most recent windows of ``distance + 1`` days: once with the trained
weights and once with the weights before training. Each curve is the median
over windows of ``||dL/dh_{T-k}|| / ||dL/dh_T||``; for the LSTM also of its
cell state's ``||dL/dc_{T-k}|| / ||dL/dc_T||``, the path that the forget gates
keep open.

Writes ``gradient_flow.png`` and ``gradient_flow.csv`` into ``--out`` (default
``runs/stock_gradients``) and prints the ratios at a few distances. Takes
about a minute on 2 CPU cores.
"""

from __future__ import annotations

import argparse

from shared.cli import parse_args_before_tensorflow
from shared.config import program_name


def build_parser() -> argparse.ArgumentParser:
    """The command line: data, distance, output folder."""
    parser = argparse.ArgumentParser(
        prog=program_name(),
        description="Gradient size against distance for a SimpleRNN and an LSTM (NumPy BPTT).",
    )
    parser.add_argument("--ticker", default="AAPL", help="Ticker (default: %(default)s).")
    parser.add_argument("--csv", default="", help="Use this price CSV instead of --ticker.")
    parser.add_argument(
        "--distance", type=int, default=100, help="Steps back from the loss (default 100)."
    )
    parser.add_argument(
        "--windows", type=int, default=256, help="Most recent windows to average over."
    )
    parser.add_argument("--out", default="runs/stock_gradients", help="Output folder.")
    parser.add_argument("--seed", type=int, default=0)
    return parser


if __name__ == "__main__":
    # Answer --help and usage errors at once, before TensorFlow loads (seconds).
    parse_args_before_tensorflow(build_parser())

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import keras
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from projects.stock_lstm import numpy_cells
from projects.stock_lstm.config import StockConfig
from projects.stock_lstm.data import (
    compute_features,
    load_config_prices,
    make_windows,
    normalisation_stats,
    split_windows,
)
from projects.stock_lstm.train import fit_forecaster
from shared.cli import exit_on_user_error, setup_logging
from shared.distribute import select_strategy
from shared.errors import UserError
from shared.plots import save_figure
from shared.runs import seed_everything
from shared.saving import check_output_folder
from shared.sweep import write_text

log = logging.getLogger("stock_lstm")

BACKWARD = {"simplernn": numpy_cells.simple_rnn_backward, "lstm": numpy_cells.lstm_backward}
REPORTED_DISTANCES = (1, 5, 10, 25, 50, 100)


class InitialWeights(keras.callbacks.Callback):
    """Keeps the model's weights as they were when training began."""

    def on_train_begin(self, logs=None):
        self.weights = [np.array(weight) for weight in self.model.get_weights()]


def gradient_norms(model: keras.Model, cell: str, windows, targets) -> dict[str, np.ndarray]:
    """``||dL/dh_t||`` (and for the LSTM ``||dL/dc_t||``), L the squared error of the last
    forecast.

    Returns:
        ``{"h": norms}`` (plus ``"c"`` for the LSTM): (windows, steps) arrays whose
        column -1 is the last step, where L is measured.
    """
    normalise = model.get_layer("normalise")
    mean = keras.ops.convert_to_numpy(normalise.mean).astype(np.float64).reshape(-1)
    variance = keras.ops.convert_to_numpy(normalise.variance).astype(np.float64).reshape(-1)
    inputs = (windows.astype(np.float64) - mean) / np.sqrt(variance)
    recurrent = [np.asarray(w, np.float64) for w in model.get_layer(f"{cell}_1").get_weights()]
    head_kernel, head_bias = (
        np.asarray(w, np.float64) for w in model.get_layer("scaled_returns").get_weights()
    )
    scale = float(model.get_layer("log_returns").scale)
    states = (
        numpy_cells.simple_rnn_sequence(inputs, *recurrent)
        if cell == "simplernn"
        else numpy_cells.lstm_sequence(inputs, *recurrent)["h"]
    )
    forecast = scale * (states[:, -1] @ head_kernel[:, 0] + head_bias[0])
    # L = (forecast - target)^2, so dL/dh_T = 2 (forecast - target) * scale * w.
    output_gradients = np.zeros_like(states)
    output_gradients[:, -1] = (2 * (forecast - targets) * scale)[:, None] * head_kernel[:, 0]
    backward = BACKWARD[cell](inputs, *recurrent, output_gradients)
    norms = {"h": np.linalg.norm(backward["hidden_gradients"], axis=-1)}
    if "cell_gradients" in backward:
        norms["c"] = np.linalg.norm(backward["cell_gradients"], axis=-1)
    return norms


def relative_curve(norms: np.ndarray) -> np.ndarray:
    """Median over windows of ``||dL/dh_{T-k}|| / ||dL/dh_T||`` for k = 0, 1, ..."""
    ratios = norms[:, ::-1] / np.maximum(norms[:, -1:], 1e-300)
    return np.median(ratios, axis=0)


def gradient_flow(
    ticker: str = "AAPL", csv: str = "", distance: int = 100, count: int = 256, seed: int = 0
) -> pd.DataFrame:
    """Train both cells and measure the gradient curves; one column per cell and weights."""
    if distance < 1 or count < 1:
        raise UserError("--distance and --windows must be at least 1.")
    curves = {}
    for cell in BACKWARD:
        seed_everything(seed)
        config = StockConfig(ticker=ticker, csv=csv, cell=cell, layers=1, seed=seed)
        prices, _ = load_config_prices(config)
        features = compute_features(prices)
        windows = make_windows(prices, features, config.window, config.horizon)
        split = split_windows(len(windows), 1, config.val_fraction, config.test_fraction)
        initial = InitialWeights()
        model = fit_forecaster(
            config,
            windows,
            split,
            normalisation_stats(windows, split.train),
            select_strategy("default"),
            [initial],
            verbose=0,
            restore_best_weights=True,
        )
        long = make_windows(prices, features, distance + 1, 1)
        if len(long) < 1:
            raise UserError(f"the series is too short for --distance {distance}.")
        chosen = slice(max(len(long) - count, 0), len(long))
        inputs, targets = long.inputs[chosen], long.targets[chosen, 0].astype(np.float64)
        for weights in ("trained", "initial"):
            if weights == "initial":
                model.set_weights(initial.weights)
            for state, norms in gradient_norms(model, cell, inputs, targets).items():
                name = cell if state == "h" else f"{cell}-cell"
                curves[f"{name} {weights}"] = relative_curve(norms)
        log.info("%s: trained and measured on %d windows", cell, len(targets))
    return pd.DataFrame(curves, index=pd.RangeIndex(distance + 1, name="distance"))


def plot_gradient_flow(curves: pd.DataFrame, title: str, path: Path) -> Path:
    """The four curves on a log scale."""
    figure, axis = plt.subplots(figsize=(8, 5))
    styles = {"trained": "-", "initial": "--"}
    labels = {
        "simplernn": ("tab:red", "SimpleRNN, dL/dh"),
        "lstm": ("tab:blue", "LSTM, dL/dh"),
        "lstm-cell": ("tab:green", "LSTM, dL/dc (cell state)"),
    }
    for column in curves:
        name, weights = column.split()
        colour, label = labels[name]
        axis.semilogy(
            curves.index,
            curves[column],
            styles[weights],
            color=colour,
            label=f"{label}, {weights} weights",
        )
    axis.set_xlabel("k: steps before the day whose forecast error is the loss")
    axis.set_ylabel("median gradient norm at T - k / at T")
    axis.set_title(title)
    axis.grid(alpha=0.3, which="both")
    axis.legend()
    return save_figure(figure, path)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()

    def run() -> pd.DataFrame:
        check_output_folder(args.out)  # before a minute of computing, not after
        curves = gradient_flow(args.ticker, args.csv, args.distance, args.windows, args.seed)
        out = Path(args.out)
        name = Path(args.csv).name if args.csv else args.ticker
        write_text(out / "gradient_flow.csv", curves.to_csv())
        plot_gradient_flow(
            curves, f"{name}: how far back the error's gradient reaches", out / "gradient_flow.png"
        )
        log.info("Wrote %s and %s", out / "gradient_flow.png", out / "gradient_flow.csv")
        return curves

    curves = exit_on_user_error(run)
    shown = [k for k in REPORTED_DISTANCES if k in curves.index]
    print(curves.loc[shown].to_string(float_format=lambda value: f"{value:.2e}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
