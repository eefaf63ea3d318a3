"""Prices -> features -> windows -> chronological train/validation/test split.

No look-ahead anywhere:

* a window's inputs end at its *origin* day t; its targets are the log returns
  from the close of day t to the closes of days t+1..t+horizon;
* the splits are consecutive in time, train first, and ``horizon - 1`` windows
  are left out between them, so no training target lies in the validation
  period and no validation target in the test period;
* the normalisation statistics come from the training windows' days only.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pandas as pd

from projects.stock_lstm.config import StockConfig
from shared.prices import PriceDataError, load_prices, read_price_csv

log = logging.getLogger("stock_lstm")

MIN_WINDOWS_PER_SPLIT = 10


def load_config_prices(config: StockConfig) -> tuple[pd.DataFrame, str]:
    """The price frame ``config`` asks for (``--csv`` or ``--ticker``) and its name."""
    if config.csv:
        frame = read_price_csv(config.csv)
        log.info("Prices: %s (%d days)", config.csv, len(frame))
        return frame, config.csv
    return load_prices(
        config.ticker, config.start, config.end, config.cache_dir or None
    ), config.ticker


def compute_features(prices: pd.DataFrame) -> pd.DataFrame:
    """Stationary daily features; row i describes day i+1 of ``prices``.

    ``log_return`` (always), ``log_range`` = log(High/Low) when both exist,
    ``log_volume_change`` when Volume exists and is never zero.
    """
    close = prices["Close"]
    features = {"log_return": np.log(close).diff()}
    if {"High", "Low"} <= set(prices.columns):
        features["log_range"] = np.log(prices["High"] / prices["Low"])
    if "Volume" in prices.columns and (prices["Volume"] > 0).all():
        features["log_volume_change"] = np.log(prices["Volume"]).diff()
    return pd.DataFrame(features).iloc[1:]


@dataclasses.dataclass
class Windows:
    """Every (input window, future) pair of a series, in time order.

    Attributes:
        inputs: (n, window, features) float32 feature windows ending at the origin day.
        targets: (n, horizon) log(close[t+k] / close[t]) for k = 1..horizon.
        origin_close: (n,) close of the origin day t.
        future_close: (n, horizon) closes of days t+1..t+horizon.
        origin_dates: (n,) dates of the origin days.
        origin_rows: (n,) row of the origin day in the price frame.
    """

    inputs: np.ndarray
    targets: np.ndarray
    origin_close: np.ndarray
    future_close: np.ndarray
    origin_dates: np.ndarray
    origin_rows: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, rows: slice) -> Windows:
        """The windows in ``rows`` (a slice of window numbers)."""
        return Windows(**{f.name: getattr(self, f.name)[rows] for f in dataclasses.fields(self)})


def realised_volatility(returns: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
    """sqrt(sum of r^2 over days origin+1 .. origin+horizon) for each origin row of ``returns``."""
    squares = np.concatenate([[0.0], np.cumsum(np.asarray(returns, np.float64) ** 2)])
    return np.sqrt(squares[origins + 1 + horizon] - squares[origins + 1])


def daily_log_returns(prices: pd.DataFrame) -> np.ndarray:
    """log(close_t / close_(t-1)) for every price row (0 for the first)."""
    close = prices["Close"].to_numpy(dtype=np.float64)
    return np.concatenate([[0.0], np.diff(np.log(close))])


def make_windows(
    prices: pd.DataFrame,
    features: pd.DataFrame,
    window: int,
    horizon: int,
    target: str = "price",
) -> Windows:
    """Cut the series into windows; window i has its origin at price row ``window + i``.

    ``target="volatility"``: the target is the realised volatility of the next
    ``horizon`` days instead, shape (n, 1).
    """
    close = prices["Close"].to_numpy(dtype=np.float64)
    values = features.to_numpy(dtype=np.float32)
    count = len(close) - window - horizon
    if count <= 0:
        raise PriceDataError(
            f"{len(close)} days are too few for --window {window} and --horizon {horizon}."
        )
    origins = np.arange(window, window + count)
    # Feature row r describes price row r + 1, so price rows t-window+1..t are rows t-window..t-1.
    inputs = np.stack([values[t - window : t] for t in origins])
    steps = np.arange(1, horizon + 1)
    future_close = close[origins[:, None] + steps[None, :]]
    origin_close = close[origins]
    targets = np.log(future_close / origin_close[:, None])
    if target == "volatility":
        targets = realised_volatility(daily_log_returns(prices), origins, horizon)[:, None]
    return Windows(
        inputs=inputs,
        targets=targets.astype(np.float32),
        origin_close=origin_close,
        future_close=future_close,
        origin_dates=prices.index.to_numpy()[origins],
        origin_rows=origins,
    )


@dataclasses.dataclass(frozen=True)
class Split:
    """Window numbers of each part: ``train``, ``val`` and ``test`` slices."""

    train: slice
    val: slice
    test: slice


def split_windows(
    count: int,
    horizon: int,
    val_fraction: float,
    test_fraction: float,
    test_end: int | None = None,
) -> Split:
    """Consecutive train | gap | validation | gap | test, each gap ``horizon - 1`` windows.

    Args:
        count: Number of windows.
        horizon: Forecast horizon (sets the gaps).
        val_fraction: Share of ``count`` for validation.
        test_fraction: Share of ``count`` for the test period.
        test_end: Window number where the test period ends (default: the last);
            earlier ends give the folds of a walk-forward evaluation.

    Raises:
        PriceDataError: A part would hold fewer than ``MIN_WINDOWS_PER_SPLIT`` windows.
    """
    test_size = round(count * test_fraction)
    val_size = round(count * val_fraction)
    gap = horizon - 1
    test_stop = count if test_end is None else test_end
    test_start = test_stop - test_size
    val_stop = test_start - gap
    val_start = val_stop - val_size
    train_stop = val_start - gap
    if min(test_size, val_size, train_stop) < MIN_WINDOWS_PER_SPLIT:
        raise PriceDataError(
            f"{count} windows cannot be split into train/validation/test parts of at least "
            f"{MIN_WINDOWS_PER_SPLIT} windows each."
        )
    return Split(slice(0, train_stop), slice(val_start, val_stop), slice(test_start, test_stop))


def minimum_days(config: StockConfig) -> int:
    """The fewest price rows that ``config``'s window, horizon, splits and folds need."""
    folds = max(config.walk_forward, 1)
    days = config.window + config.horizon + 1
    # StockConfig guarantees the fractions leave room, so this ends (within a few thousand).
    while days < 10**6:
        count = days - config.window - config.horizon
        try:
            test_size = round(count * config.test_fraction)
            split_windows(
                count,
                config.horizon,
                config.val_fraction,
                config.test_fraction,
                test_end=count - (folds - 1) * test_size,
            )
            return days
        except PriceDataError:
            days += 1
    raise PriceDataError("no series length satisfies these window, horizon and split settings.")


def check_length(prices: pd.DataFrame, config: StockConfig, source: str) -> None:
    """Raise `PriceDataError` if ``prices`` is too short (naming the minimum length) or
    its Close never changes (no error could be scaled by the naive forecast's)."""
    needed = minimum_days(config)
    if len(prices) < needed:
        raise PriceDataError(
            f"{source} has {len(prices)} days; --window {config.window}, --horizon "
            f"{config.horizon}, the validation/test fractions and --walk-forward "
            f"{config.walk_forward} need at least {needed}. Use a longer date range or a "
            "smaller --window."
        )
    if prices["Close"].nunique() == 1:
        raise PriceDataError(
            f"{source}: Close is {prices['Close'].iloc[0]:g} on all {len(prices)} days; a "
            "series that never moves has nothing to forecast."
        )


def normalisation_stats(windows: Windows, train: slice) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of each feature over the days the training windows cover."""
    first_window, last_window = train.start or 0, train.stop - 1
    days = np.concatenate(
        [windows.inputs[first_window], windows.inputs[first_window + 1 : last_window + 1, -1]]
    )
    variance = days.var(axis=0)
    return days.mean(axis=0), np.where(variance > 0, variance, 1.0)
