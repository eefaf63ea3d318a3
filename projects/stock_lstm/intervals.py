"""Prediction intervals that say how sure a forecast is, and are checked on the test period.

Three ways to turn point forecasts into ``level`` intervals (e.g. 80%), all per
forecast step (column) and in log returns:

* ``residual_quantile``: the ``(1 - level)/2`` and ``(1 + level)/2`` quantiles of
  the validation residuals added to the forecast (what the project did first).
* ``split_conformal``: split conformal prediction. The score of a validation
  window is its absolute error; the interval is the forecast ± the
  ``ceil((n + 1)·level)``-th smallest of the n validation scores, which covers a
  new outcome with probability at least ``level`` whenever the test errors are
  exchangeable with the validation errors (Vovk et al. 2005; Lei et al. 2018).
* ``adaptive_conformal``: adaptive conformal inference (Gibbs & Candès 2021) for
  when they are not (markets change): the miscoverage level used on day t,
  ``alpha_t``, moves after every revealed outcome by ``gamma·(alpha - missed)``,
  widening the intervals after misses and narrowing them after hits, and each
  revealed test error joins the scores. Only outcomes known on day t are used:
  with horizon h the outcome of the forecast made on day s is known from day
  s + h on.
"""

from __future__ import annotations

import math

import numpy as np

# Gibbs & Candes: coverage over T days is within (1 + gamma) / (gamma T) of the target.
DEFAULT_GAMMA = 0.05


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The ``ceil((n + 1)·level)``-th smallest score (the largest if that exceeds n)."""
    ordered = np.sort(np.asarray(scores, dtype=np.float64))
    if not len(ordered):
        raise ValueError("conformal_quantile needs at least one score")
    rank = min(max(math.ceil((len(ordered) + 1) * level), 1), len(ordered))
    return float(ordered[rank - 1])


def residual_quantile(
    predicted: np.ndarray, validation_residuals: np.ndarray, level: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(lower, upper)`` bounds: the forecast plus the residuals' tail quantiles per step."""
    tail = (1 - level) / 2
    low = np.quantile(validation_residuals, tail, axis=0)
    high = np.quantile(validation_residuals, 1 - tail, axis=0)
    return predicted + low, predicted + high


def split_conformal(
    predicted: np.ndarray, validation_residuals: np.ndarray, level: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(lower, upper)``: the forecast ± the conformal quantile of |validation residual|."""
    half_widths = np.array(
        [
            conformal_quantile(np.abs(validation_residuals[:, step]), level)
            for step in range(validation_residuals.shape[1])
        ]
    )
    return predicted - half_widths, predicted + half_widths


def adaptive_conformal(
    predicted: np.ndarray,
    targets: np.ndarray,
    validation_residuals: np.ndarray,
    level: float,
    gamma: float = DEFAULT_GAMMA,
) -> tuple[np.ndarray, np.ndarray]:
    """``(lower, upper)`` for consecutive days, each using only what is known that day.

    Args:
        predicted: (days, horizon) forecasts, one row per origin day, in time order.
        targets: (days, horizon) outcomes; row s, step k is revealed on day s + k + 1,
            so day t's step-k interval depends only on rows up to t - k - 1.
        validation_residuals: (n, horizon) residuals of the validation period.
        level: Target coverage.
        gamma: Step size of the miscoverage update.
    """
    days, horizon = predicted.shape
    lower = np.empty_like(predicted, dtype=np.float64)
    upper = np.empty_like(predicted, dtype=np.float64)
    for step in range(horizon):
        scores = list(np.abs(validation_residuals[:, step]))
        alpha = 1 - level
        delay = step + 1  # the outcome of day s, step k, is known from day s + k + 1
        missed: list[bool] = []
        for day in range(days):
            revealed = day - delay
            if revealed >= 0:
                # Day `revealed`'s outcome is now known: update alpha and the scores.
                alpha += gamma * ((1 - level) - float(missed[revealed]))
                scores.append(abs(targets[revealed, step] - predicted[revealed, step]))
            if alpha <= 0:
                half_width = max(scores)  # as wide as any error seen
            elif alpha >= 1:
                half_width = 0.0
            else:
                half_width = conformal_quantile(np.asarray(scores), 1 - alpha)
            lower[day, step] = predicted[day, step] - half_width
            upper[day, step] = predicted[day, step] + half_width
            outcome = targets[day, step]
            missed.append(not lower[day, step] <= outcome <= upper[day, step])
    return lower, upper


def coverage_and_width(
    lower: np.ndarray, upper: np.ndarray, targets: np.ndarray
) -> dict[str, list[float]]:
    """Per step: the share of outcomes inside and the mean width (log-return units)."""
    inside = (targets >= lower) & (targets <= upper)
    return {
        "coverage": inside.mean(axis=0).tolist(),
        "mean_width": (upper - lower).mean(axis=0).tolist(),
    }


INTERVAL_METHODS = ("residual_quantile", "split_conformal", "adaptive_conformal")
REPORTED_INTERVAL = "adaptive_conformal"


def compare_intervals(
    predicted: np.ndarray,
    targets: np.ndarray,
    validation: slice,
    test: slice,
    level: float,
    gamma: float = DEFAULT_GAMMA,
) -> dict:
    """The three interval methods on the test windows, calibrated on the validation ones.

    Args:
        predicted: (windows, horizon) forecasts in log returns, in time order.
        targets: The outcomes of the same windows.
        validation: Rows that calibrate (their residuals are the scores).
        test: Consecutive rows that are scored.
        level: Target coverage.
        gamma: The adaptive method's step size.

    Returns:
        ``methods``: coverage and mean width per step of each method;
        ``bounds``: the test-period (lower, upper) log returns of each method;
        ``next_offsets``: (lower, upper) offsets of the adaptive method for a
        forecast made after the last test day (what ``forecast.py`` uses).
    """
    residuals = targets[validation] - predicted[validation]
    outcomes = targets[test]
    bounds = {
        "residual_quantile": residual_quantile(predicted[test], residuals, level),
        "split_conformal": split_conformal(predicted[test], residuals, level),
    }
    # One more row after the test period: its interval uses everything known by then.
    extended_predicted = np.vstack([predicted[test], np.zeros((1, predicted.shape[1]))])
    extended_targets = np.vstack([outcomes, np.full((1, predicted.shape[1]), np.nan)])
    lower, upper = adaptive_conformal(extended_predicted, extended_targets, residuals, level, gamma)
    bounds["adaptive_conformal"] = (lower[:-1], upper[:-1])
    return {
        "methods": {name: coverage_and_width(*bounds[name], outcomes) for name in INTERVAL_METHODS},
        "bounds": bounds,
        "next_offsets": (lower[-1], upper[-1]),
    }
