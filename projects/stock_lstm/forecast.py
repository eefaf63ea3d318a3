"""Forecast the next trading days with a trained run, with prediction intervals.

    python -m projects.stock_lstm.forecast --run-dir runs/stock_lstm/latest --days 5
    python -m projects.stock_lstm.forecast --days 10 --ticker MSFT     # another ticker
    python -m projects.stock_lstm.forecast --days 5 --csv prices.csv  # your own file

Prints one row per future trading day (weekdays; exchange holidays are not
known here) with the forecast close and its interval, and saves a plot in the
run's ``plots/`` folder. Online it uses the latest Yahoo Finance prices;
offline it starts after the last bundled day (2023-12-29) and says so.

Days beyond the model's ``--horizon`` are forecast recursively: each predicted
return is fed back as the newest input day (the other features at their
training mean), and the interval widens with the square root of the steps
beyond the horizon, assuming independent daily errors. Expect it to be
optimistic far out.

For a ``--target volatility`` run it prints the forecast realised volatility
of the ``--horizon`` trading days after the latest close instead.

A global run (``--tickers``) forecasts one of its series: ``--ticker NAME`` (a
CSV series by its file name, or ``--csv`` with a file of that name); the first
series by default.
"""

from __future__ import annotations

import argparse

from shared.cli import parse_args_before_tensorflow
from shared.config import program_name
from shared.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    """The command line: run directory, days, and optionally another series."""
    parser = argparse.ArgumentParser(
        prog=program_name(), description="Forecast the next trading days with a trained run."
    )
    parser.add_argument(
        "--run-dir", default="runs/stock_lstm/latest", help="Run directory (default: %(default)s)."
    )
    parser.add_argument(
        "--days", type=int, default=5, help="Trading days to forecast (default: 5)."
    )
    parser.add_argument(
        "--ticker", help="Forecast this ticker (default: the run's; a global run's first series)."
    )
    parser.add_argument("--csv", help="Forecast from this CSV (Date, Close, ...).")
    parser.add_argument("--cache-dir", help="Price cache folder (default: the run's).")
    return parser


class ForecastError(UserError):
    """The forecast cannot be made as asked."""


def check_days(days: int) -> None:
    """Raise `ForecastError` unless ``days`` is a number of days to forecast."""
    if days < 1:
        raise ForecastError(f"--days must be at least 1, got {days}.")


if __name__ == "__main__":
    # Answer --help, usage errors and impossible settings at once, before TensorFlow
    # loads (seconds).
    parse_args_before_tensorflow(build_parser(), check=lambda args: check_days(args.days))

import dataclasses
import datetime as dt
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import keras
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import tensorflow as tf

from projects.stock_lstm.data import compute_features, make_windows, split_windows
from projects.stock_lstm.global_model import series_name
from shared.cli import exit_on_user_error, setup_logging
from shared.export import HeldOut, Serving, float32_twin, keras_call
from shared.plots import save_figure
from shared.prices import load_prices, read_price_csv
from shared.runs import LoadedRun, load_run
from shared.saving import read_json_or_none

log = logging.getLogger("stock_lstm")


@dataclasses.dataclass
class SeriesModel:
    """A run's model as the forecaster of one series: raw windows in, its forecasts out.

    Attributes:
        model: The run's ``model.keras``.
        series_number: For a global run, the series' place in ``metrics["series"]``
            (the model's second input); None for a single-ticker run.
        feature_mean: The series' training-day feature means.
        interval: The series' interval record from ``metrics.json`` (price runs).
    """

    model: keras.Model
    series_number: int | None
    feature_mean: np.ndarray
    interval: dict | None

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        """Forecasts for a batch of raw windows (one compiled call, no prediction loop).

        ``predict_on_batch`` traces the model once and reuses the graph: a recursive
        forecast calls it once per day, and an eager call ran the recurrent layer's
        time steps one Python step at a time.
        """
        inputs = windows.astype(np.float32)
        if self.series_number is not None:
            inputs = [inputs, np.full(len(windows), self.series_number, np.int32)]
        return np.asarray(self.model.predict_on_batch(inputs), dtype=np.float64)


def recursive_forecast(
    model, feature_window: np.ndarray, feature_mean: np.ndarray, days: int
) -> np.ndarray:
    """Cumulative log returns for the next ``days`` days from the last input window.

    ``model`` maps a batch of raw windows to log returns (a `SeriesModel`).
    """
    window = feature_window.astype(np.float32).copy()
    cumulative, total = [], 0.0
    while len(cumulative) < days:
        predicted = model(window[None])[0]
        daily = np.diff(np.concatenate([[0.0], predicted]))
        for step_return in daily[: days - len(cumulative)]:
            total += step_return
            cumulative.append(total)
            new_day = feature_mean.astype(np.float32).copy()
            new_day[0] = step_return
            window = np.vstack([window[1:], new_day])
    return np.array(cumulative)


def interval_for_steps(lower: Sequence[float], upper: Sequence[float], days: int):
    """Per-step log-return offsets; beyond the horizon, the last one times sqrt(step/horizon)."""
    horizon = len(lower)
    steps = np.arange(1, days + 1)
    scale = np.sqrt(np.maximum(steps / horizon, 1.0))
    index = np.minimum(steps, horizon) - 1
    return np.asarray(lower)[index] * scale, np.asarray(upper)[index] * scale


def _prices_until_today(ticker: str, config: dict, cache_dir: str | None) -> pd.DataFrame:
    tomorrow = dt.date.today() + dt.timedelta(days=1)
    return load_prices(ticker, config["start"], f"{tomorrow:%Y-%m-%d}", cache_dir)


def latest_prices(config: dict, ticker: str | None, csv: str | None, cache_dir: str | None):
    """The price history to forecast from, and its name."""
    if csv:
        return read_price_csv(csv), csv
    if config.get("csv") and not ticker:
        raise ForecastError("this run was trained on a CSV file: pass --csv PATH or --ticker.")
    ticker = ticker or config["ticker"]
    return _prices_until_today(ticker, config, cache_dir), ticker


def check_global_run_is_self_contained(metrics: dict) -> None:
    """Global runs saved before the model held each series' statistics cannot forecast."""
    if "series" not in metrics:
        raise ForecastError(
            "this global run was saved by an earlier version, whose model needs inputs "
            "normalised outside it; train it again to forecast or export it."
        )


def series_to_forecast(
    run: LoadedRun, ticker: str | None, csv: str | None, cache_dir: str | None
) -> tuple[pd.DataFrame, str, SeriesModel]:
    """The prices to forecast from, their name, and the run's model for that series.

    A global run forecasts one of the series it was trained on: the one named by
    ``ticker`` (or by ``csv``'s file name), else the first.
    """
    config, metrics = run.config, run.metrics
    if not metrics.get("global"):
        prices, name = latest_prices(config, ticker, csv, cache_dir)
        mean = np.asarray(metrics.get("feature_mean", []), dtype=np.float64)
        return prices, name, SeriesModel(run.model, None, mean, metrics.get("interval"))
    check_global_run_is_self_contained(metrics)
    names, sources = metrics["series"], metrics["series_sources"]
    name = series_name(csv or ticker) if csv or ticker else names[0]
    if name not in names:
        raise ForecastError(
            f"this global model was trained on {', '.join(names)}; {name} is not one of them: "
            "pass --ticker with one of those names (a CSV series by its file name)."
        )
    number = names.index(name)
    source = sources[number]
    if csv:
        prices = read_price_csv(csv)
    elif source.lower().endswith(".csv"):
        prices = read_price_csv(source)
    else:
        prices = _prices_until_today(source, config, cache_dir)
    record = metrics["tickers"][name]
    mean = np.asarray(record["normalisation"]["feature_mean"], dtype=np.float64)
    return prices, name, SeriesModel(run.model, number, mean, record.get("interval"))


@dataclasses.dataclass
class Forecast:
    """A forecast table (date index; forecast, lower, upper) and what it came from."""

    table: pd.DataFrame
    history: pd.Series
    name: str
    coverage: float


def _checked_features(prices: pd.DataFrame, name: str, config: dict, metrics: dict):
    """The series' features, if they are the model's and there are enough days."""
    features = compute_features(prices)
    if list(features.columns) != metrics["features"]:
        raise ForecastError(
            f"the model was trained on features {metrics['features']}, but {name} gives "
            f"{list(features.columns)}: it lacks the columns they come from (High/Low, Volume)."
        )
    if len(features) < config["window"]:
        raise ForecastError(
            f"{name} has {len(prices)} days; the model needs at least {config['window'] + 1}."
        )
    return features


def forecast(
    run_dir: str,
    days: int,
    ticker: str | None = None,
    csv: str | None = None,
    cache_dir: str | None = None,
) -> Forecast:
    """Forecast ``days`` trading days after the latest price of the run's (or a given) series."""
    check_days(days)
    run = load_run(run_dir, inference="projects.stock_lstm.forecast")
    config, metrics = run.config, run.metrics
    prices, name, model = series_to_forecast(run, ticker, csv, cache_dir or config.get("cache_dir"))
    features = _checked_features(prices, name, config, metrics)
    window = config["window"]
    last_date = prices.index[-1]
    age = (pd.Timestamp(dt.date.today()) - last_date).days
    if age > 7:
        log.warning(
            "The latest price of %s is from %s, %d days ago: forecasting from there.",
            name,
            f"{last_date:%Y-%m-%d}",
            age,
        )
    cumulative = recursive_forecast(model, features.to_numpy()[-window:], model.feature_mean, days)
    interval = model.interval
    lower, upper = interval_for_steps(
        interval["lower_log_return"], interval["upper_log_return"], days
    )
    last_close = float(prices["Close"].iloc[-1])
    dates = pd.bdate_range(last_date + pd.offsets.BDay(1), periods=days, name="Date")
    table = pd.DataFrame(
        {
            "forecast": last_close * np.exp(cumulative),
            "lower": last_close * np.exp(cumulative + lower),
            "upper": last_close * np.exp(cumulative + upper),
        },
        index=dates,
    )
    return Forecast(table, prices["Close"], name, float(interval["coverage_target"]))


@dataclasses.dataclass
class VolatilityForecast:
    """The network's forecast of the realised volatility of the next ``horizon`` days."""

    name: str
    last_date: pd.Timestamp
    horizon: int
    volatility: float

    def describe(self) -> str:
        """Two lines for the terminal: the figure, and what it means in percent."""
        annualised = self.volatility * np.sqrt(252 / self.horizon)
        return (
            f"{self.name}: realised volatility of the {self.horizon} trading days after "
            f"{self.last_date:%Y-%m-%d}: {self.volatility:.4f} in log returns\n"
            f"(the typical size of a {self.horizon}-day move: about ±{self.volatility:.1%}; "
            f"annualised {annualised:.0%})"
        )


def forecast_volatility(
    run_dir: str, ticker: str | None = None, csv: str | None = None, cache_dir: str | None = None
) -> VolatilityForecast:
    """A --target volatility run's forecast from the latest window of the series."""
    run = load_run(run_dir, inference="projects.stock_lstm.forecast")
    prices, name, model = series_to_forecast(
        run, ticker, csv, cache_dir or run.config.get("cache_dir")
    )
    features = _checked_features(prices, name, run.config, run.metrics)
    window = features.to_numpy(dtype=np.float32)[-run.config["window"] :]
    predicted = float(model(window[None])[0, 0])
    return VolatilityForecast(
        name, prices.index[-1], int(run.config["horizon"]), max(predicted, 1e-4)
    )


def _scored_series(config: dict, run: LoadedRun) -> list[tuple[int | None, str, object, object]]:
    """(series number, name, windows, split) of each series the run was scored on."""
    if run.metrics.get("global"):
        check_global_run_is_self_contained(run.metrics)
        from projects.stock_lstm.config import StockConfig
        from projects.stock_lstm.global_model import load_all_series

        fields = {f.name for f in dataclasses.fields(StockConfig)}
        settings = StockConfig.create(**{k: v for k, v in config.items() if k in fields})
        return [
            (number, one.ticker, one.windows, one.split)
            for number, one in enumerate(load_all_series(settings))
        ]
    if config.get("csv"):
        prices, name = read_price_csv(config["csv"]), config["csv"]
    else:
        name = config["ticker"]
        prices = load_prices(name, config["start"], config["end"], config.get("cache_dir") or None)
    features = _checked_features(prices, name, config, run.metrics)
    windows = make_windows(
        prices, features, config["window"], config["horizon"], config.get("target", "price")
    )
    split = split_windows(
        len(windows), config["horizon"], config["val_fraction"], config["test_fraction"]
    )
    return [(None, name, windows, split)]


def serving(run: LoadedRun) -> Serving:
    """What ``python -m shared.export`` exports: raw ``features`` windows -> ``forecast``.

    The normalisation and the shrinkage towards the naive forecast are inside the
    model, so the export takes the same raw windows as ``forecast``. A global run's
    export takes the series' number as a second input, ``series``.
    """
    config = run.config
    model = float32_twin(run.model)
    series = _scored_series(config, run)
    is_global = series[0][0] is not None

    def batch_of_one(window: np.ndarray, number: int | None) -> list[np.ndarray]:
        if number is None:
            return [window[None]]
        return [window[None], np.array([number], np.int32)]

    tests = [
        (batch_of_one(window, number), target)
        for number, _, windows, split in series
        for window, target in zip(
            windows.inputs[split.test], windows.targets[split.test], strict=True
        )
    ]

    def mean_absolute_error(runner) -> float:
        outputs = np.concatenate([runner(inputs)[0] for inputs, _ in tests])
        targets = np.stack([target for _, target in tests])
        return float(np.mean(np.abs(outputs - targets)))

    target = config.get("target", "price")
    meaning = (
        f"forecast: realised volatility of the next {config['horizon']} trading days"
        if target == "volatility"
        else f"forecast: log return of the close 1..{config['horizon']} trading days ahead "
        "(close_t+k = close_t * exp(forecast[k-1]))"
    )
    feature_count = series[0][2].inputs.shape[-1]
    inputs = [tf.TensorSpec((None, config["window"], feature_count), tf.float32, "features")]
    which = ""
    if is_global:
        inputs.append(tf.TensorSpec((None,), tf.int32, "series"))
        which = (
            "series: which series each window is from, "
            + ", ".join(f"{number} = {name}" for number, name, _, _ in series)
            + ". "
        )
    names = ", ".join(name for _, name, _, _ in series)
    # Calibration and comparison samples from every series, so each lookup row is used.
    representative = [
        batch_of_one(window, number)
        for number, _, windows, split in series
        for window in windows.inputs[split.train][-100 // len(series) :]
    ]
    samples = [sample for sample, _ in tests[:: max(1, len(tests) // 8)]][:8]
    return Serving(
        call=keras_call(model),
        trackable=model,
        inputs=inputs,
        outputs=["forecast"],
        samples=samples,
        representative=representative,
        held_out=HeldOut(f"MAE on the {len(tests)} test windows of {names}", mean_absolute_error),
        calibrate_int8=False,
        description=f"features: the last {config['window']} trading days, oldest first, one "
        f"row per day with these raw columns: {', '.join(run.metrics['features'])}. {which}"
        f"{meaning}.",
    )


def plot_forecast(result: Forecast, path) -> None:
    """The last 120 closes, then the forecast with its interval."""
    table, name = result.table, result.name
    recent = result.history.iloc[-120:]
    figure, axis = plt.subplots(figsize=(10, 4.5))
    axis.plot(recent.index, recent.values, color="black", linewidth=1.2, label="close")
    joined_dates = [recent.index[-1], *table.index]
    axis.plot(
        joined_dates,
        [recent.iloc[-1], *table["forecast"]],
        color="tab:blue",
        marker="o",
        markersize=3,
        label="forecast",
    )
    axis.fill_between(
        table.index,
        table["lower"],
        table["upper"],
        color="tab:blue",
        alpha=0.2,
        label=f"{result.coverage:.0%} interval",
    )
    axis.set_title(f"{name}: forecast of the next {len(table)} trading days")
    axis.set_xlabel("date")
    axis.set_ylabel("price")
    axis.grid(alpha=0.3)
    axis.legend()
    save_figure(figure, path)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()

    # Only the settings decide which forecast to make; forecast() loads and checks the run.
    run_config = read_json_or_none(Path(args.run_dir) / "config.json")
    run_config = run_config if isinstance(run_config, dict) else {}
    if run_config.get("target") == "volatility":
        result = exit_on_user_error(
            lambda: forecast_volatility(args.run_dir, args.ticker, args.csv, args.cache_dir)
        )
        print(result.describe())
        return 0
    result = exit_on_user_error(
        lambda: forecast(args.run_dir, args.days, args.ticker, args.csv, args.cache_dir)
    )
    path = Path(args.run_dir) / "plots" / f"forecast_{Path(result.name).stem}.png"
    exit_on_user_error(lambda: plot_forecast(result, path))
    history = result.history
    print(f"{result.name}: last close {history.iloc[-1]:.2f} on {history.index[-1]:%Y-%m-%d}")
    print(
        f"{'date':<12}{'forecast':>10}{'lower':>10}{'upper':>10}   ({result.coverage:.0%} interval)"
    )
    for date, row in result.table.iterrows():
        print(
            f"{date:%Y-%m-%d}  {row['forecast']:>10.2f}{row['lower']:>10.2f}{row['upper']:>10.2f}"
        )
    print(f"Plot: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
