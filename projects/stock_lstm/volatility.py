"""A target with signal: the size of the next days' returns, against the standard baselines.

Daily returns are close to unpredictable; their size is not: calm and turbulent
weeks cluster. ``--target volatility`` forecasts the realised volatility of the
next ``h = --horizon`` days, ``sqrt(r_(t+1)^2 + ... + r_(t+h)^2)`` (r: daily log
returns), and is scored against, on the same test days:

* naive: the realised volatility of the last h days;
* HAR-RV (Corsi 2009): a linear regression of the next h days' realised
  variance on the average squared return of the last 1, 5 and 22 days, fitted
  on the training days;
* GARCH(1,1) (Bollerslev 1986), fitted by the ``arch`` package on the training
  days' returns only, then run forward over the later days with those fixed
  parameters (no refitting on test data): on each day its variance forecast for
  the next h days uses the returns up to that day.

Losses, on the variance (volatility squared), as the volatility literature
scores forecasts (Patton 2011): MSE and QLIKE = RV/F - log(RV/F) - 1, which
punishes forecasting calm before a storm more than the reverse and ranks
forecasts correctly even though the realised variance is a noisy proxy.
"""

from __future__ import annotations

import numpy as np
from arch import arch_model
from sklearn.linear_model import LinearRegression

from projects.stock_lstm.data import realised_volatility
from projects.stock_lstm.evaluate import diebold_mariano

# Returns in percent: the arch package's optimiser is tuned for numbers of that size.
PERCENT = 100.0
HAR_DAYS = (1, 5, 22)
# Realised variances of exactly zero (a week without price changes) would make QLIKE
# infinite; they are floored at a tiny fraction of a typical daily variance.
VARIANCE_FLOOR = 1e-10


def naive_volatility(returns: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
    """The realised volatility of the h days up to and including each origin."""
    return realised_volatility(returns, origins - horizon, horizon)


def har_features(returns: np.ndarray, origins: np.ndarray) -> np.ndarray:
    """(n, 3): mean squared return of the last 1, 5 and 22 days up to each origin."""
    squares = np.concatenate([[0.0], np.cumsum(np.asarray(returns, np.float64) ** 2)])
    return np.stack(
        [(squares[origins + 1] - squares[origins + 1 - days]) / days for days in HAR_DAYS], axis=1
    )


def har_volatility(
    returns: np.ndarray, origins: np.ndarray, horizon: int, train: slice
) -> np.ndarray:
    """HAR-RV forecasts for every origin, the regression fitted on the ``train`` origins."""
    features = har_features(returns, origins)
    variance = realised_volatility(returns, origins, horizon) ** 2
    model = LinearRegression().fit(features[train], variance[train])
    return np.sqrt(np.maximum(model.predict(features), VARIANCE_FLOOR))


def garch_volatility(
    returns: np.ndarray, origins: np.ndarray, horizon: int, train_end: int
) -> tuple[np.ndarray, dict[str, float]]:
    """GARCH(1,1) volatility forecasts for every origin, fitted on returns[:train_end] only.

    Returns:
        The forecasts and the fitted parameters (omega, alpha[1], beta[1], mu).
    """
    scaled = np.asarray(returns, np.float64) * PERCENT
    fitted = arch_model(scaled[:train_end], mean="Constant", vol="GARCH", p=1, q=1).fit(disp="off")
    # The same model over the whole series with the training parameters fixed: its
    # conditional variances are a filter that only looks backwards.
    frozen = arch_model(scaled, mean="Constant", vol="GARCH", p=1, q=1).fix(fitted.params)
    first = int(origins.min())
    forecast = frozen.forecast(horizon=horizon, start=first, reindex=False)
    variance = forecast.variance.to_numpy().sum(axis=1)  # rows: origins first .. end
    per_origin = variance[origins - first] / PERCENT**2
    return np.sqrt(per_origin), {name: float(value) for name, value in fitted.params.items()}


def qlike(realised_variance: np.ndarray, forecast_variance: np.ndarray) -> np.ndarray:
    """Patton's QLIKE loss per day: RV/F - log(RV/F) - 1 (0 for a perfect forecast)."""
    ratio = np.maximum(realised_variance, VARIANCE_FLOOR) / np.maximum(
        forecast_variance, VARIANCE_FLOOR
    )
    return ratio - np.log(ratio) - 1


def volatility_metrics(
    forecasts: dict[str, np.ndarray], realised: np.ndarray, horizon: int, model: str = "model"
) -> dict[str, dict]:
    """MSE and QLIKE of each forecast's variance, and Diebold-Mariano tests of ``model``
    against each other forecast on both losses (negative statistic: the model is better)."""
    variance = realised**2
    losses = {
        name: {
            "mse": (np.asarray(values) ** 2 - variance) ** 2,
            "qlike": qlike(variance, np.asarray(values) ** 2),
        }
        for name, values in forecasts.items()
    }
    results = {
        name: {loss: float(values.mean()) for loss, values in per_day.items()}
        for name, per_day in losses.items()
    }
    if model in losses:
        for name in losses:
            if name == model:
                continue
            results[name]["model_vs_this"] = {
                loss: diebold_mariano(
                    np.sqrt(losses[model][loss]), np.sqrt(losses[name][loss]), horizon, power=2
                )
                for loss in ("mse", "qlike")
            }
    return results
