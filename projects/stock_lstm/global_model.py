"""One model, many tickers: a global forecaster trained on the windows of every series.

    python -m projects.stock_lstm.train --tickers AAPL,MSFT,NVDA,GOOGL
    python -m projects.stock_lstm.train --tickers AAPL,MSFT --target volatility --horizon 5
    python -m projects.stock_lstm.train --tickers AAPL,prices/acme.csv   # CSV files too

Each series gets its own normalisation (its training days' feature mean and
variance, and the spread of its training targets), so a $400 stock and a $40
one look alike to the network; the windows of all series are pooled and one
network learns from all of them. The chronological split is made at the same
dates for every series (those of the first ticker's split), so the global model
is scored per ticker on exactly the test days of the single-ticker runs, next to
the same baselines.

The saved ``model.keras`` is self-contained, like a single-ticker run's: it takes
raw feature windows and the series' number (its place in ``metrics.json``'s
``series``) and looks up that series' normalisation, output scale and reported
weight w itself, so ``forecast.py --ticker NAME`` and ``shared.export`` work on
global runs too.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import keras
import numpy as np

from projects.stock_lstm.config import StockConfig, parse_tickers
from projects.stock_lstm.data import (
    Split,
    Windows,
    check_length,
    compute_features,
    daily_log_returns,
    make_windows,
    normalisation_stats,
    split_windows,
)
from projects.stock_lstm.evaluate import format_table
from shared.callbacks import standard_callbacks
from shared.cli import fit_verbosity
from shared.distribute import select_strategy
from shared.errors import UserError
from shared.prices import load_prices, read_price_csv

log = logging.getLogger("stock_lstm")


@dataclasses.dataclass
class Series:
    """One ticker's windows, its split at the shared dates and its normalisation."""

    ticker: str
    prices: object
    windows: Windows
    split: Split
    feature_mean: np.ndarray
    feature_variance: np.ndarray
    target_scale: float

    def normalised_inputs(self) -> np.ndarray:
        return ((self.windows.inputs - self.feature_mean) / np.sqrt(self.feature_variance)).astype(
            np.float32
        )


def split_at_dates(windows: Windows, reference: Windows, reference_split: Split) -> Split:
    """The split of ``windows`` whose parts start and end at the dates of the reference's."""
    dates = windows.origin_dates
    bounds = {}
    for name in ("train", "val", "test"):
        part = getattr(reference_split, name)
        first = reference.origin_dates[part.start]
        last = reference.origin_dates[part.stop - 1]
        start = int(np.searchsorted(dates, first, side="left"))
        stop = int(np.searchsorted(dates, last, side="right"))
        if stop - start < 10:
            raise UserError(
                f"a series has only {stop - start} windows in the {name} period "
                f"{str(first)[:10]} to {str(last)[:10]} of the first ticker; give tickers "
                "that cover the same years (--start, --end)."
            )
        bounds[name] = slice(start, stop)
    return Split(bounds["train"], bounds["val"], bounds["test"])


def series_name(entry: str) -> str:
    """What a ``--tickers`` entry is called in tables and in ``forecast.py --ticker``.

    A price file by its file name, a ticker in capitals.
    """
    entry = entry.strip()
    return Path(entry).name if entry.lower().endswith(".csv") else entry.upper()


def load_all_series(config: StockConfig) -> list[Series]:
    """Every ticker's windows, split at the first ticker's dates, with its statistics."""
    series = []
    reference = None
    columns = None
    for entry in parse_tickers(config.tickers):
        if entry.lower().endswith(".csv"):
            prices = read_price_csv(entry)
        else:
            prices = load_prices(entry, config.start, config.end, config.cache_dir or None)
        ticker = series_name(entry)
        if any(one.ticker == ticker for one in series):
            raise UserError(
                f"two series are called {ticker}: rename one of the files so that each "
                "series has its own name."
            )
        check_length(prices, config, ticker)
        features = compute_features(prices)
        if columns is None:
            columns = list(features.columns)
        elif list(features.columns) != columns:
            raise UserError(
                f"{ticker} gives the features {list(features.columns)} but {series[0].ticker} "
                f"gives {columns}: one global model needs the same price columns (High/Low, "
                "Volume) in every series; drop the columns the others lack from the CSV."
            )
        windows = make_windows(prices, features, config.window, config.horizon, config.target)
        if reference is None:
            split = split_windows(
                len(windows), config.horizon, config.val_fraction, config.test_fraction
            )
            reference = (windows, split)
        else:
            split = split_at_dates(windows, *reference)
        mean, variance = normalisation_stats(windows, split.train)
        scale = float(np.sqrt(np.mean(windows.targets[split.train].astype(np.float64) ** 2)))
        series.append(Series(ticker, prices, windows, split, mean, variance, scale))
    return series


def pooled(series: list[Series]) -> tuple[Windows, Split]:
    """The training windows of every series, then the validation ones, normalised."""
    parts = {"train": [], "val": []}
    for one in series:
        inputs = one.normalised_inputs()
        targets = one.windows.targets / one.target_scale
        for name in parts:
            rows = getattr(one.split, name)
            parts[name].append((inputs[rows], targets[rows]))
    inputs = np.concatenate([x for name in parts for x, _ in parts[name]])
    targets = np.concatenate([y for name in parts for _, y in parts[name]]).astype(np.float32)
    train_count = sum(len(y) for _, y in parts["train"])
    empty = np.zeros(len(targets))
    windows = Windows(
        inputs=inputs,
        targets=targets,
        origin_close=empty,
        future_close=np.zeros_like(targets, dtype=np.float64),
        origin_dates=empty,
        origin_rows=np.zeros(len(targets), dtype=np.int64),
    )
    return windows, Split(slice(0, train_count), slice(train_count, len(targets)), slice(0, 0))


def self_contained(core: keras.Model, series: list[Series], weights: list[float]) -> keras.Model:
    """The saved global forecaster: raw ``features`` windows and a ``series`` number in.

    The network was trained on windows normalised per series and on targets in
    units of each series' spread; three frozen lookup tables (one row per series)
    put both steps inside the model: the feature mean, 1/standard deviation, and
    the output scale (target spread times the reported weight w).
    """
    window, features = core.input.shape[1:]
    count = len(series)
    raw = keras.Input((window, features), name="features")
    number = keras.Input((), dtype="int32", name="series")
    tables = {
        "series_feature_mean": np.stack([one.feature_mean for one in series]),
        "series_feature_inverse_std": np.stack(
            [1.0 / np.sqrt(one.feature_variance) for one in series]
        ),
        "series_output_scale": np.array(
            [[one.target_scale * weight] for one, weight in zip(series, weights, strict=True)]
        ),
    }
    looked_up = {}
    for name, values in tables.items():
        table = keras.layers.Embedding(count, values.shape[1], trainable=False, name=name)
        looked_up[name] = table(number)
        table.set_weights([values.astype(np.float32)])
    mean = keras.ops.expand_dims(looked_up["series_feature_mean"], 1)
    inverse_std = keras.ops.expand_dims(looked_up["series_feature_inverse_std"], 1)
    outputs = core((raw - mean) * inverse_std) * looked_up["series_output_scale"]
    return keras.Model([raw, number], outputs, name=f"{core.name}_global")


def train_global(config: StockConfig, run) -> dict:
    """Train one network on every ticker; score it per ticker; returns metrics.json's content."""
    from projects.stock_lstm.train import (
        evaluate_price_predictions,
        evaluate_volatility_predictions,
        fit_forecaster,
        format_volatility_table,
        period,
    )

    series = load_all_series(config)
    windows, split = pooled(series)
    features = windows.inputs.shape[-1]
    log.info(
        "Global model on %s: %d training and %d validation windows in all",
        ", ".join(one.ticker for one in series),
        split.train.stop,
        split.val.stop - split.val.start,
    )
    model = fit_forecaster(
        config,
        windows,
        split,
        (np.zeros(features), np.ones(features)),
        select_strategy(config.strategy),
        standard_callbacks(run.path, examples_per_epoch=split.train.stop),
        verbose=fit_verbosity(),
        restore_best_weights=False,
    )
    run.keep_chosen_epoch(model)
    per_ticker = {}
    weights = []
    for one in series:
        predicted = (
            model.predict(one.normalised_inputs(), batch_size=1024, verbose=0).astype(np.float64)
            * one.target_scale
        )
        periods = {
            name: period(one.windows, getattr(one.split, name)) for name in ("train", "val", "test")
        }
        if config.target == "volatility":
            evaluation = evaluate_volatility_predictions(
                predicted[:, 0], config, one.windows, one.split, daily_log_returns(one.prices)
            )
            table = format_volatility_table(evaluation["methods"])
        else:
            close = one.prices["Close"].to_numpy(dtype=np.float64)
            evaluation = evaluate_price_predictions(
                predicted,
                config,
                one.windows,
                one.split,
                (one.feature_mean, one.feature_variance),
                close,
            )
            table = format_table(evaluation["methods"])
        weights.append(evaluation["combination_weight"] if config.target == "price" else 1.0)
        log.info(
            "%s, test period %s to %s (global model):\n%s",
            one.ticker,
            periods["test"]["first"],
            periods["test"]["last"],
            table,
        )
        per_ticker[one.ticker] = {
            "periods": periods,
            "test": evaluation["methods"],
            "normalisation": {
                "feature_mean": one.feature_mean.tolist(),
                "feature_variance": one.feature_variance.tolist(),
                "target_scale": one.target_scale,
            },
            **(
                {"interval": evaluation["interval"], "combination": evaluation["combination"]}
                if config.target == "price"
                else {"garch_parameters": evaluation["garch_parameters"]}
            ),
        }
    metrics = {
        "source": config.tickers,
        "global": True,
        "target": config.target,
        "cell": config.cell,
        "features": list(compute_features(series[0].prices).columns),
        "series": [one.ticker for one in series],
        "series_sources": parse_tickers(config.tickers),
        "tickers": per_ticker,
    }
    run.finish(self_contained(model, series, weights), metrics)
    return metrics
