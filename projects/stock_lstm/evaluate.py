"""Baselines, error metrics and prediction intervals, all on the same test windows.

Every method predicts the same thing as the network: the log returns from the
origin day's close to each of the next ``horizon`` closes. Prices follow as
``origin_close * exp(prediction)``.

Baselines:
    naive           tomorrow = today (a zero return); the forecast to beat.
    drift           the mean daily log return of the training days, times k.
    moving_average  the mean of the last ``ma_window`` closes.
    linear          ridge regression on the same flattened, normalised windows
                    (penalty chosen on the validation windows, never the test).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import binomtest
from sklearn.linear_model import Ridge

from projects.stock_lstm.data import Split, Windows

RIDGE_PENALTIES = (0.1, 1.0, 10.0, 100.0, 1000.0)


def naive_forecast(windows: Windows) -> np.ndarray:
    """Zero log return: every future close equals the origin close."""
    return np.zeros_like(windows.targets)


def drift_forecast(windows: Windows, daily_drift: float) -> np.ndarray:
    """``k * daily_drift`` for step k."""
    steps = np.arange(1, windows.targets.shape[1] + 1, dtype=np.float32)
    return np.broadcast_to(daily_drift * steps, windows.targets.shape).copy()


def moving_average_forecast(windows: Windows, close: np.ndarray, ma_window: int) -> np.ndarray:
    """log(mean of the closes of days t-ma_window+1..t / close of day t), for every step."""
    averages = np.array(
        [close[max(0, row - ma_window + 1) : row + 1].mean() for row in windows.origin_rows]
    )
    returns = np.log(averages / windows.origin_close).astype(np.float32)
    return np.repeat(returns[:, None], windows.targets.shape[1], axis=1)


def linear_forecast(
    windows: Windows, split: Split, mean: np.ndarray, variance: np.ndarray
) -> tuple[np.ndarray, float]:
    """Ridge regression on flattened normalised windows; returns (all predictions, penalty)."""
    flat = ((windows.inputs - mean) / np.sqrt(variance)).reshape(len(windows), -1)
    best_penalty, best_error, best_model = None, math.inf, None
    for penalty in RIDGE_PENALTIES:
        model = Ridge(alpha=penalty).fit(flat[split.train], windows.targets[split.train])
        error = np.mean((model.predict(flat[split.val]) - windows.targets[split.val]) ** 2)
        if error < best_error:
            best_penalty, best_error, best_model = penalty, error, model
    predictions = best_model.predict(flat).reshape(windows.targets.shape).astype(np.float32)
    return predictions, float(best_penalty)


def forecast_metrics(
    predicted: np.ndarray, windows: Windows, naive_mae: float | None = None
) -> dict[str, float | int | None]:
    """Price errors and directional accuracy of ``predicted`` log returns on ``windows``.

    Args:
        predicted: (n, horizon) predicted log returns.
        windows: The windows they are for.
        naive_mae: MAE of the naive forecast on the same windows, for MASE.

    Returns:
        rmse, mae, mape (percent) on prices; mase (MAE / naive MAE);
        directional_accuracy over the predictions with a direction (None when a
        method never predicts one, like the naive forecast), its count and the
        two-sided binomial-test p-value against 50%.
    """
    predicted_close = windows.origin_close[:, None] * np.exp(predicted.astype(np.float64))
    errors = predicted_close - windows.future_close
    mae = float(np.mean(np.abs(errors)))
    result: dict[str, float | int | None] = {
        "rmse": float(np.sqrt(np.mean(errors**2))),
        "mae": mae,
        "mape": float(100 * np.mean(np.abs(errors) / windows.future_close)),
        "mase": None if not naive_mae else mae / naive_mae,
    }
    has_direction = (predicted != 0) & (windows.targets != 0)
    count = int(has_direction.sum())
    if count == 0:
        result.update(directional_accuracy=None, direction_count=0, direction_p_value=None)
        return result
    correct = int((np.sign(predicted) == np.sign(windows.targets))[has_direction].sum())
    result.update(
        directional_accuracy=correct / count,
        direction_count=count,
        direction_p_value=float(binomtest(correct, count, 0.5).pvalue),
    )
    return result


def interval_offsets(
    predicted_val: np.ndarray, targets_val: np.ndarray, coverage: float
) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper residual quantiles per step, from the validation windows.

    A forecast ``p`` then has the interval ``[p + lower, p + upper]`` in log
    returns, which holds ``coverage`` of the validation outcomes.
    """
    residuals = targets_val.astype(np.float64) - predicted_val
    tail = (1 - coverage) / 2
    return np.quantile(residuals, tail, axis=0), np.quantile(residuals, 1 - tail, axis=0)


def interval_coverage(
    predicted: np.ndarray, targets: np.ndarray, lower: np.ndarray, upper: np.ndarray
) -> float:
    """Share of outcomes inside their intervals."""
    inside = (targets >= predicted + lower) & (targets <= predicted + upper)
    return float(inside.mean())


def compare_methods(
    model_predictions: np.ndarray,
    windows: Windows,
    split: Split,
    close: np.ndarray,
    mean: np.ndarray,
    variance: np.ndarray,
    ma_window: int,
) -> dict[str, dict]:
    """Metrics of the model and every baseline on the test windows of ``split``."""
    train_days = windows.inputs[split.train][:, -1, 0]  # each training day's log return, once
    predictions = {
        "model": model_predictions,
        "naive": naive_forecast(windows),
        "drift": drift_forecast(windows, float(train_days.mean())),
        "moving_average": moving_average_forecast(windows, close, ma_window),
    }
    predictions["linear"], penalty = linear_forecast(windows, split, mean, variance)
    test = windows.subset(split.test)
    naive_mae = forecast_metrics(predictions["naive"][split.test], test)["mae"]
    results = {
        name: forecast_metrics(values[split.test], test, naive_mae)
        for name, values in predictions.items()
    }
    results["linear"]["ridge_penalty"] = penalty
    return results


def format_table(results: dict[str, dict]) -> str:
    """A plain-text table of the methods' test metrics."""
    header = f"{'method':<15}{'RMSE':>9}{'MAE':>9}{'MAPE%':>8}{'MASE':>8}{'dir.acc':>9}{'p':>8}"
    lines = [header, "-" * len(header)]
    for name, metrics in results.items():
        direction = metrics["directional_accuracy"]
        p_value = metrics["direction_p_value"]
        lines.append(
            f"{name:<15}{metrics['rmse']:>9.3f}{metrics['mae']:>9.3f}{metrics['mape']:>8.2f}"
            f"{metrics['mase']:>8.3f}"
            + (
                f"{direction:>9.3f}{p_value:>8.3f}"
                if direction is not None
                else f"{'-':>9}{'-':>8}"
            )
        )
    return "\n".join(lines)
