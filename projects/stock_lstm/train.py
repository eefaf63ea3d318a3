"""Forecast daily closing prices with an RNN, and compare it honestly with simple baselines.

    python -m projects.stock_lstm.train                      # or: make stock-lstm (AAPL)
    python -m projects.stock_lstm.train --ticker NVDA --cell gru
    python -m projects.stock_lstm.train --csv my_prices.csv  # any CSV with Date and Close
    python -m projects.stock_lstm.train --horizon 5          # the next 5 days at once
    python -m projects.stock_lstm.train --walk-forward 4     # 4 consecutive test periods

The network sees the last ``--window`` days of log returns, daily ranges and
volume changes and predicts the log returns to the next ``--horizon`` closes.
It is trained on the oldest 70% of the windows, stopped early on the next 15%
(validation) and scored once on the newest 15% (test), next to the naive
forecast (tomorrow = today), a drift forecast, a moving average and ridge
regression on exactly the same test windows.

Expected (AAPL, bundled 2013-2023, 2 CPU cores, about 20 s): the table at the
end shows the LSTM close to, but not better than, the naive forecast (test RMSE
2.670 vs 2.660, MASE 1.007): daily prices are close to a random walk. See README.md.
"""

from __future__ import annotations

from projects.stock_lstm.config import StockConfig
from shared.cli import parse_before_tensorflow

if __name__ == "__main__":
    # Answer --help and flag errors at once, before TensorFlow loads (seconds).
    parse_before_tensorflow(StockConfig)

import logging
from pathlib import Path

import keras
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf

from projects.stock_lstm.data import (
    Split,
    Windows,
    check_length,
    compute_features,
    daily_log_returns,
    load_config_prices,
    make_windows,
    normalisation_stats,
    split_windows,
)
from projects.stock_lstm.evaluate import (
    combination_weight,
    compare_methods,
    diebold_mariano,
    format_table,
    ratio_text,
)
from projects.stock_lstm.global_model import train_global
from projects.stock_lstm.intervals import REPORTED_INTERVAL, compare_intervals
from projects.stock_lstm.model import build_forecaster, compile_forecaster
from projects.stock_lstm.volatility import (
    garch_volatility,
    har_volatility,
    naive_volatility,
    volatility_metrics,
)
from shared.callbacks import standard_callbacks
from shared.cli import fit_verbosity, run_training_cli
from shared.distribute import select_strategy
from shared.plots import save_figure
from shared.runs import start_run

log = logging.getLogger("stock_lstm")

COMPARED_METRICS = ("rmse", "mae", "mape", "relative_mae", "mase", "directional_accuracy")


def training_dataset(windows: Windows, rows: slice, batch_size: int, seed: int) -> tf.data.Dataset:
    """Shuffled batches of (input window, target returns)."""
    count = rows.stop - rows.start
    return (
        tf.data.Dataset.from_tensor_slices((windows.inputs[rows], windows.targets[rows]))
        .shuffle(count, seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )


def fit_forecaster(
    config: StockConfig,
    windows: Windows,
    split: Split,
    stats: tuple[np.ndarray, np.ndarray],
    strategy: tf.distribute.Strategy,
    callbacks: list[keras.callbacks.Callback],
    verbose: int,
    restore_best_weights: bool,
) -> keras.Model:
    """Build the network in the strategy's scope and train it, stopping early on validation loss.

    ``restore_best_weights``: end with the best validation epoch's weights (as
    Keras's ``EarlyStopping`` does); the main run leaves that to `Run.keep_chosen_epoch`.

    ``stats`` are the training days' feature mean and variance (`normalisation_stats`).
    """
    mean, variance = stats
    with strategy.scope():
        model = build_forecaster(
            window=config.window,
            feature_mean=mean,
            feature_variance=variance,
            target_scale=float(windows.targets[split.train].std()),
            horizon=config.horizon,
            cell=config.cell,
            units=config.units,
            layers=config.layers,
            dropout=config.dropout,
        )
        compile_forecaster(model, config.learning_rate)
    early_stopping = keras.callbacks.EarlyStopping(
        patience=config.patience, restore_best_weights=restore_best_weights
    )
    model.fit(
        training_dataset(windows, split.train, config.batch_size, config.seed),
        validation_data=(windows.inputs[split.val], windows.targets[split.val]),
        epochs=config.epochs,
        shuffle=False,  # the dataset shuffles itself
        callbacks=[*callbacks, early_stopping],
        verbose=verbose,
    )
    return model


def evaluate_split(
    model: keras.Model,
    config: StockConfig,
    windows: Windows,
    split: Split,
    stats: tuple[np.ndarray, np.ndarray],
    close: np.ndarray,
) -> dict:
    """Test metrics of the model, the reported forecast and every baseline; intervals.

    The reported forecast is ``naive + w·(model - naive)`` (the naive log return
    is 0, so ``w·model``) with w in [0, 1] chosen on the validation windows: the
    network's forecast shrunk towards "no change" as far as validation says it
    should be. Its intervals come from the three methods of ``intervals.py``.
    """
    raw = model.predict(windows.inputs, batch_size=1024, verbose=0).astype(np.float64)
    return evaluate_price_predictions(raw, config, windows, split, stats, close)


def evaluate_price_predictions(
    raw: np.ndarray,
    config: StockConfig,
    windows: Windows,
    split: Split,
    stats: tuple[np.ndarray, np.ndarray],
    close: np.ndarray,
) -> dict:
    """`evaluate_split` for the network's log-return forecasts ``raw`` of every window."""
    combination = choose_combination(raw[split.val], windows.targets[split.val])
    weight = combination["weight"]
    reported = weight * raw
    mean, variance = stats
    results = compare_methods(
        raw, windows, split, close, mean, variance, config.ma_window, combination=weight
    )
    intervals = compare_intervals(
        reported,
        windows.targets.astype(np.float64),
        split.val,
        split.test,
        config.interval,
        config.interval_gamma,
    )
    lower, upper = intervals["next_offsets"]
    chosen = intervals["methods"][REPORTED_INTERVAL]
    return {
        "methods": results,
        "combination_weight": weight,
        "combination": combination,
        "interval": {
            "coverage_target": config.interval,
            "method": REPORTED_INTERVAL,
            "methods": intervals["methods"],
            "lower_log_return": lower.tolist(),
            "upper_log_return": upper.tolist(),
            "test_coverage": float(np.mean(chosen["coverage"])),
        },
        "bounds": intervals["bounds"][REPORTED_INTERVAL],
        "predictions": reported,
        "raw_predictions": raw,
    }


# The reported forecast leaves the naive one only when the validation days show the gain
# is real: the best w's Diebold-Mariano test against naive must have p below this.
COMBINATION_SIGNIFICANCE = 0.05


VOLATILITY_METHODS = {"model": "network", "naive": "naive", "har": "HAR-RV", "garch": "GARCH(1,1)"}


def evaluate_volatility(
    model: keras.Model, config: StockConfig, windows: Windows, split: Split, returns: np.ndarray
) -> dict:
    """MSE and QLIKE of the network and the naive, HAR-RV and GARCH(1,1) forecasts on test."""
    predicted = model.predict(windows.inputs, batch_size=1024, verbose=0)[:, 0]
    return evaluate_volatility_predictions(predicted, config, windows, split, returns)


def evaluate_volatility_predictions(
    predicted: np.ndarray, config: StockConfig, windows: Windows, split: Split, returns
) -> dict:
    """`evaluate_volatility` for the network's forecasts ``predicted`` of every window."""
    horizon = config.horizon
    origins = windows.origin_rows
    # A volatility is positive; the network's linear output is floored just above 0.
    network = np.maximum(np.asarray(predicted, dtype=np.float64), 1e-4)
    garch, parameters = garch_volatility(
        returns, origins, horizon, train_end=int(origins[split.train][-1]) + 1
    )
    forecasts = {
        "model": network,
        "naive": naive_volatility(returns, origins, horizon),
        "har": har_volatility(returns, origins, horizon, split.train),
        "garch": garch,
    }
    realised = windows.targets[:, 0].astype(np.float64)
    scores = volatility_metrics(
        {name: values[split.test] for name, values in forecasts.items()},
        realised[split.test],
        horizon,
    )
    return {"methods": scores, "garch_parameters": parameters, "forecasts": forecasts}


def format_volatility_table(scores: dict[str, dict]) -> str:
    """MSE (of the variance, x 1e8) and QLIKE of each method, with the network's DM tests."""
    header = f"{'method':<12}{'MSE x1e8':>10}{'QLIKE':>9}   network vs this: DM p (MSE, QLIKE)"
    lines = [header, "-" * len(header)]
    for name, score in scores.items():
        test = score.get("model_vs_this")
        versus = (
            f"   {test['mse']['statistic']:+.2f} p={test['mse']['p_value']:.3f}, "
            f"{test['qlike']['statistic']:+.2f} p={test['qlike']['p_value']:.3f}"
            if test
            else ""
        )
        lines.append(
            f"{VOLATILITY_METHODS[name]:<12}{score['mse'] * 1e8:>10.3f}"
            f"{score['qlike']:>9.3f}{versus}"
        )
    lines.append("DM statistic < 0: the network's loss is lower than this method's.")
    return "\n".join(lines)


def finish_volatility_run(run, model, config, windows, split, prices, source, periods) -> dict:
    """Score a --target volatility run, plot it, save it; returns metrics.json's content."""
    returns = daily_log_returns(prices)
    evaluation = evaluate_volatility(model, config, windows, split, returns)
    scores = evaluation["methods"]
    metrics = {
        "source": source,
        "target": "volatility",
        "cell": config.cell,
        "features": list(compute_features(prices.iloc[:3]).columns),
        "periods": periods,
        "test": scores,
        "garch_parameters": evaluation["garch_parameters"],
    }
    title = Path(source).name if config.csv else source
    plot_volatility(
        windows, split, evaluation["forecasts"], title, run.plots_dir / "test_volatility.png"
    )
    log.info(
        "Test period %s to %s, %s, realised volatility of the next %d day(s):\n%s",
        periods["test"]["first"],
        periods["test"]["last"],
        source,
        config.horizon,
        format_volatility_table(scores),
    )
    best = min(scores, key=lambda name: scores[name]["qlike"])
    log.info("Lowest QLIKE on the test days: %s", VOLATILITY_METHODS[best])
    run.finish(model, metrics)
    return metrics


def plot_volatility(windows: Windows, split: Split, forecasts: dict, title: str, path) -> None:
    """Realised volatility of the test period against each method's forecast of it."""
    test = windows.subset(split.test)
    figure, axis = plt.subplots(figsize=(10, 4.5))
    axis.plot(test.origin_dates, test.targets[:, 0], color="black", linewidth=1.2, label="realised")
    for name, colour in (
        ("naive", "tab:orange"),
        ("har", "tab:green"),
        ("garch", "tab:purple"),
        ("model", "tab:blue"),
    ):
        axis.plot(
            test.origin_dates,
            forecasts[name][split.test],
            color=colour,
            linewidth=1,
            label=VOLATILITY_METHODS[name],
        )
    axis.set_title(f"{title}: realised volatility of the next days, test period")
    axis.set_xlabel("forecast origin")
    axis.set_ylabel("volatility (log-return units)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    save_figure(figure, path)


def choose_combination(raw_val: np.ndarray, targets_val: np.ndarray) -> dict:
    """w of ``naive + w·(model - naive)``, from the validation windows only.

    The w with the lowest validation MAE, kept only if its validation errors beat
    the naive forecast's significantly (Diebold-Mariano p < 0.05); otherwise 0: a
    gain that small on a few hundred days is as likely luck, and on the test
    days it can turn into a loss.
    """
    naive = np.zeros_like(raw_val)
    best = combination_weight(raw_val, naive, targets_val)
    test = diebold_mariano(
        np.abs(targets_val - best * raw_val).mean(axis=1),
        np.abs(targets_val).mean(axis=1),
        raw_val.shape[1],
    )
    significant = test["statistic"] < 0 and test["p_value"] < COMBINATION_SIGNIFICANCE
    return {
        "weight": best if significant else 0.0,
        "best_validation_weight": best,
        "validation_diebold_mariano": test,
    }


def period(windows: Windows, rows: slice) -> dict:
    """First and last origin dates and the number of windows of a part."""
    dates = windows.origin_dates[rows]
    return {
        "first": str(np.datetime_as_string(dates[0], unit="D")),
        "last": str(np.datetime_as_string(dates[-1], unit="D")),
        "windows": int(len(dates)),
    }


def main(config: StockConfig) -> dict:
    """Train, evaluate against the baselines, save the run; returns metrics.json's content."""
    run = start_run("stock_lstm", config)
    if config.tickers:
        return train_global(config, run)
    prices, source = load_config_prices(config)
    check_length(prices, config, source)
    features = compute_features(prices)
    windows = make_windows(prices, features, config.window, config.horizon, config.target)
    split = split_windows(len(windows), config.horizon, config.val_fraction, config.test_fraction)
    periods = {name: period(windows, getattr(split, name)) for name in ("train", "val", "test")}
    for name, part in periods.items():
        log.info("%-5s %s to %s (%d windows)", name, part["first"], part["last"], part["windows"])

    strategy = select_strategy(config.strategy)
    stats = normalisation_stats(windows, split.train)
    model = fit_forecaster(
        config,
        windows,
        split,
        stats,
        strategy,
        standard_callbacks(run.path, examples_per_epoch=split.train.stop - split.train.start),
        verbose=fit_verbosity(),
        restore_best_weights=False,
    )
    run.keep_chosen_epoch(model)  # --keep: the best validation epoch (default) or the last
    if config.target == "volatility":
        return finish_volatility_run(run, model, config, windows, split, prices, source, periods)
    close = prices["Close"].to_numpy(dtype=np.float64)
    evaluation = evaluate_split(model, config, windows, split, stats, close)
    methods = evaluation["methods"]
    metrics = {
        "source": source,
        "cell": config.cell,
        "features": list(features.columns),
        "feature_mean": stats[0].tolist(),
        "periods": periods,
        "test": methods,
        "interval": evaluation["interval"],
        "combination_weight": evaluation["combination_weight"],
        "combination": evaluation["combination"],
        "model_beats_naive_rmse": methods["model"]["rmse"] < methods["naive"]["rmse"],
    }
    if config.walk_forward:
        metrics["walk_forward"] = walk_forward(config, windows, split, strategy, close, methods)

    title = Path(source).name if config.csv else source
    plot_test_forecast(windows, split, evaluation, title, run.plots_dir / "test_forecast.png")
    log.info(
        "Test period %s to %s, %s:\n%s",
        periods["test"]["first"],
        periods["test"]["last"],
        source,
        format_table(methods),
    )
    for name, measured in evaluation["interval"]["methods"].items():
        log.info(
            "%.0f%% interval, %-18s: %s of test outcomes inside, mean width %s (log return)%s",
            100 * config.interval,
            name,
            ", ".join(f"{value:.1%}" for value in measured["coverage"]),
            ", ".join(f"{value:.4f}" for value in measured["mean_width"]),
            " (reported)" if name == evaluation["interval"]["method"] else "",
        )
    log.info(
        "The raw %s %s the naive forecast on test RMSE (relative MAE %s).",
        config.cell.upper(),
        "beats" if metrics["model_beats_naive_rmse"] else "does NOT beat",
        ratio_text(methods["model"]["relative_mae"]),
    )
    combination = evaluation["combination"]
    dm = combination["validation_diebold_mariano"]
    log.info(
        "Reported forecast: naive + %.2f x (%s - naive), w from the validation days: %s "
        "(test relative MAE %s)",
        combination["weight"],
        config.cell.upper(),
        f"the best w there, {combination['best_validation_weight']:.2f}, beats naive "
        f"significantly (Diebold-Mariano p = {dm['p_value']:.3f})"
        if combination["weight"]
        else f"the model adds nothing there that is not luck (best w "
        f"{combination['best_validation_weight']:.2f}, Diebold-Mariano p = "
        f"{dm['p_value']:.2f}), so the reported forecast is the naive one",
        ratio_text(methods["reported"]["relative_mae"]),
    )
    run.finish(shrunk_towards_naive(model, combination["weight"]), metrics)
    return metrics


def shrunk_towards_naive(model: keras.Model, weight: float) -> keras.Model:
    """The saved forecaster: the network's log returns times w (the naive log return is 0)."""
    inputs = keras.Input(model.input.shape[1:], name="features")
    outputs = keras.layers.Rescaling(weight, name="shrink_to_naive")(model(inputs))
    return keras.Model(inputs, outputs, name=f"{model.name}_reported")


def walk_forward(
    config: StockConfig,
    windows: Windows,
    last_split: Split,
    strategy: tf.distribute.Strategy,
    close: np.ndarray,
    last_methods: dict,
) -> dict:
    """Rolling-origin evaluation: K consecutive test periods, each model trained on all before it.

    The last period is the main split, whose results are reused.
    """
    folds = []
    test_size = last_split.test.stop - last_split.test.start
    for fold in range(config.walk_forward):
        offset = (config.walk_forward - 1 - fold) * test_size
        if offset == 0:
            split, methods = last_split, last_methods
        else:
            split = split_windows(
                len(windows),
                config.horizon,
                config.val_fraction,
                config.test_fraction,
                test_end=len(windows) - offset,
            )
            log.info("Walk-forward fold %d/%d", fold + 1, config.walk_forward)
            stats = normalisation_stats(windows, split.train)
            model = fit_forecaster(
                config,
                windows,
                split,
                stats,
                strategy,
                [],
                verbose=0,
                restore_best_weights=config.keep == "best",
            )
            methods = evaluate_split(model, config, windows, split, stats, close)["methods"]
        folds.append({"test": period(windows, split.test), "methods": methods})
        log.info(
            "Fold %d, test %s to %s:\n%s",
            fold + 1,
            folds[-1]["test"]["first"],
            folds[-1]["test"]["last"],
            format_table(methods),
        )
    mean = {
        name: {
            metric: float(np.mean([fold["methods"][name][metric] for fold in folds]))
            for metric in COMPARED_METRICS
            if all(fold["methods"][name][metric] is not None for fold in folds)
        }
        for name in folds[0]["methods"]
    }
    log.info(
        "Walk-forward mean relative MAE over %d folds: %s",
        len(folds),
        ", ".join(
            f"{name} {ratio_text(values.get('relative_mae'))}" for name, values in mean.items()
        ),
    )
    return {"folds": folds, "mean": mean}


def plot_test_forecast(windows: Windows, split: Split, evaluation: dict, title: str, path) -> None:
    """The test period: prices with the naive and reported forecasts and the interval
    (next day, and the last step when the horizon is longer), then predicted against
    actual next-day returns, where a one-day price plot cannot flatter."""
    test = windows.subset(split.test)
    interval = evaluation["interval"]
    horizon = test.targets.shape[1]
    steps = [0] + ([horizon - 1] if horizon > 1 else [])
    figure, axes = plt.subplots(len(steps) + 1, 1, figsize=(10, 4.2 * (len(steps) + 1)))
    for axis, step in zip(axes, steps, strict=False):
        ahead = step + 1
        predicted = evaluation["predictions"][split.test][:, step]
        lower = test.origin_close * np.exp(evaluation["bounds"][0][:, step])
        upper = test.origin_close * np.exp(evaluation["bounds"][1][:, step])
        # The forecast made on day t for day t+k is drawn at the date of day t+k.
        dates = test.origin_dates[ahead:]
        shown = slice(0, len(dates))
        axis.plot(dates, test.origin_close[ahead:], color="black", linewidth=1.2, label="actual")
        axis.plot(
            dates,
            test.origin_close[shown],
            color="tab:orange",
            linewidth=1,
            label=f"naive (the close {ahead} day{'s' if ahead > 1 else ''} before)",
        )
        axis.plot(
            dates,
            (test.origin_close * np.exp(predicted))[shown],
            color="tab:blue",
            linewidth=1,
            label="reported forecast",
        )
        axis.fill_between(
            dates,
            lower[shown],
            upper[shown],
            color="tab:blue",
            alpha=0.2,
            label=f"{interval['coverage_target']:.0%} interval, {interval['method']} "
            f"(test coverage {interval['methods'][interval['method']]['coverage'][step]:.0%})",
        )
        axis.set_title(
            f"{title}: test period, forecasts {ahead} day{'s' if ahead > 1 else ''} ahead"
        )
        axis.set_ylabel("price")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    axis = axes[-1]
    actual = test.targets[:, 0]
    axis.scatter(
        actual,
        evaluation["raw_predictions"][split.test][:, 0],
        s=6,
        alpha=0.5,
        color="tab:gray",
        label="raw network",
    )
    axis.scatter(
        actual,
        evaluation["predictions"][split.test][:, 0],
        s=6,
        alpha=0.6,
        color="tab:blue",
        label=f"reported (w = {evaluation['combination_weight']:.2f})",
    )
    axis.axhline(0, color="tab:orange", linewidth=1, label="naive (0)")
    correlation = np.corrcoef(actual, evaluation["raw_predictions"][split.test][:, 0])[0, 1]
    axis.set_title(
        "next-day log returns: predicted against actual "
        f"(raw network's correlation {correlation:.2f})"
    )
    axis.set_xlabel("actual log return")
    axis.set_ylabel("predicted log return")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    save_figure(figure, path)


if __name__ == "__main__":
    run_training_cli(main, StockConfig)
