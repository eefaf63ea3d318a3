"""Volatility target of the stock project: realised volatility, HAR-RV and GARCH baselines."""

from __future__ import annotations

import numpy as np
import pytest
from arch.univariate import GARCH, Normal, ZeroMean

from projects.stock_lstm.data import realised_volatility
from projects.stock_lstm.volatility import (
    garch_volatility,
    har_volatility,
    naive_volatility,
    qlike,
    volatility_metrics,
)


def test_realised_volatility_sums_the_next_days_squared_returns():
    returns = np.array([0.0, 0.01, -0.02, 0.03, 0.0, 0.04])
    assert realised_volatility(returns, np.array([1]), 3)[0] == pytest.approx(
        np.sqrt(0.02**2 + 0.03**2 + 0.0)
    )
    # The naive forecast on day 4 is the realised volatility of days 2, 3 and 4.
    assert naive_volatility(returns, np.array([4]), 3)[0] == pytest.approx(
        np.sqrt(0.02**2 + 0.03**2)
    )
    assert qlike(np.array([2.0]), np.array([2.0]))[0] == 0.0


@pytest.fixture(scope="module")
def garch_series():
    """3,000 days from a known GARCH(1,1): omega 0.05, alpha 0.08, beta 0.9 (percent units)."""
    process = ZeroMean(volatility=GARCH(1, 0, 1), distribution=Normal(seed=0))
    simulated = process.simulate([0.05, 0.08, 0.9], 3000, burn=500)
    return np.concatenate([[0.0], simulated["data"].to_numpy() / 100])


def test_garch_forecasts_best_on_garch_data_and_har_beats_naive(garch_series):
    returns = garch_series
    horizon = 5
    origins = np.arange(60, len(returns) - horizon)
    train = slice(0, 2000)
    test = slice(2000, len(origins))
    realised = realised_volatility(returns, origins, horizon)
    garch, params = garch_volatility(returns, origins, horizon, train_end=int(origins[1999]) + 1)
    forecasts = {
        "naive": naive_volatility(returns, origins, horizon)[test],
        "har": har_volatility(returns, origins, horizon, train)[test],
        "garch": garch[test],
    }
    scores = volatility_metrics(forecasts, realised[test], horizon, model="garch")
    assert params["beta[1]"] == pytest.approx(0.9, abs=0.06)
    best = min(score["qlike"] for score in scores.values())
    assert scores["garch"]["qlike"] <= best * 1.02
    assert scores["har"]["qlike"] < scores["naive"]["qlike"]
    dm = scores["naive"]["model_vs_this"]["qlike"]
    assert dm["statistic"] < 0 and dm["p_value"] < 0.01  # GARCH beats naive, clearly


def test_garch_uses_no_returns_after_the_forecast_day(garch_series):
    returns = garch_series.copy()
    origins = np.arange(60, 2500)
    before, _ = garch_volatility(returns, origins, 5, train_end=1500)
    returns[2000:] *= 5  # a later crash
    after, _ = garch_volatility(returns, origins, 5, train_end=1500)
    # The forecast made on day 1999 uses returns up to day 1999 only.
    np.testing.assert_allclose(after[origins <= 1999], before[origins <= 1999])
    assert not np.allclose(after[origins >= 2000], before[origins >= 2000])
