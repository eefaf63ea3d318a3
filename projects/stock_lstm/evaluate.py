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
from scipy.stats import t as student_t
from sklearn.linear_model import Ridge

from projects.stock_lstm.data import Split, Windows

RIDGE_PENALTIES = (0.1, 1.0, 10.0, 100.0, 1000.0)
COMBINATION_WEIGHTS = np.linspace(0.0, 1.0, 101)


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
    predicted: np.ndarray,
    windows: Windows,
    naive_mae: float | None = None,
    naive_scale: float | None = None,
) -> dict[str, float | int | None]:
    """Price errors and directional accuracy of ``predicted`` log returns on ``windows``.

    Args:
        predicted: (n, horizon) predicted log returns.
        windows: The windows they are for.
        naive_mae: MAE of the naive forecast on the same windows (relative MAE).
        naive_scale: In-sample one-step naive MAE of the training days (true MASE).

    Returns:
        rmse, mae, mape (percent) on prices; relative_mae (MAE / the naive
        forecast's MAE on the same days); mase (MAE / the in-sample naive MAE,
        Hyndman & Koehler's scaled error); directional_accuracy over the
        predictions with a direction (None when a method never predicts one,
        like the naive forecast), its count and the two-sided binomial-test
        p-value against 50%. With a horizon above 1 the direction is scored on
        the last step of every horizon-th window only, so no two scored returns
        share a day and the binomial test's independence holds.
    """
    predicted_close = windows.origin_close[:, None] * np.exp(predicted.astype(np.float64))
    errors = predicted_close - windows.future_close
    mae = float(np.mean(np.abs(errors)))
    result: dict[str, float | int | None] = {
        "rmse": float(np.sqrt(np.mean(errors**2))),
        "mae": mae,
        "mape": float(100 * np.mean(np.abs(errors) / windows.future_close)),
        "relative_mae": None if not naive_mae else mae / naive_mae,
        "mase": None if not naive_scale else mae / naive_scale,
    }
    horizon = predicted.shape[1]
    scored, actual = predicted, windows.targets
    if horizon > 1:
        scored, actual = predicted[::horizon, -1:], windows.targets[::horizon, -1:]
    has_direction = (scored != 0) & (actual != 0)
    count = int(has_direction.sum())
    if count == 0:
        result.update(directional_accuracy=None, direction_count=0, direction_p_value=None)
        return result
    correct = int((np.sign(scored) == np.sign(actual))[has_direction].sum())
    result.update(
        directional_accuracy=correct / count,
        direction_count=count,
        direction_p_value=float(binomtest(correct, count, 0.5).pvalue),
    )
    return result


def price_errors(predicted: np.ndarray, windows: Windows) -> np.ndarray:
    """(n,) mean absolute price error over the steps of each window."""
    predicted_close = windows.origin_close[:, None] * np.exp(predicted.astype(np.float64))
    return np.abs(predicted_close - windows.future_close).mean(axis=1)


def compare_methods(
    model_predictions: np.ndarray,
    windows: Windows,
    split: Split,
    close: np.ndarray,
    mean: np.ndarray,
    variance: np.ndarray,
    ma_window: int,
    combination: float | None = None,
) -> dict[str, dict]:
    """Metrics of the model, the reported forecast and every baseline on the test windows.

    ``combination`` is the w of the reported forecast ``naive + w·(model - naive)``
    (`combination_weight`, chosen on the validation windows); None leaves it out.
    The model and the reported forecast also get a Diebold-Mariano test against
    the naive forecast on the mean absolute price error of each window.
    """
    train_days = windows.inputs[split.train][:, -1, 0]  # each training day's log return, once
    predictions = {"model": model_predictions}
    naive = naive_forecast(windows)
    if combination is not None:
        predictions["reported"] = naive + combination * (model_predictions - naive)
    predictions.update(
        {
            "naive": naive,
            "drift": drift_forecast(windows, float(train_days.mean())),
            "moving_average": moving_average_forecast(windows, close, ma_window),
        }
    )
    predictions["linear"], penalty = linear_forecast(windows, split, mean, variance)
    test = windows.subset(split.test)
    naive_mae = forecast_metrics(naive[split.test], test)["mae"]
    scale = in_sample_naive_mae(windows.origin_close[split.train])
    results = {
        name: forecast_metrics(values[split.test], test, naive_mae, scale)
        for name, values in predictions.items()
    }
    results["linear"]["ridge_penalty"] = penalty
    naive_errors = price_errors(naive[split.test], test)
    horizon = windows.targets.shape[1]
    for name in ("model", "reported"):
        if name in predictions:
            errors = price_errors(predictions[name][split.test], test)
            results[name]["diebold_mariano_vs_naive"] = diebold_mariano(
                errors, naive_errors, horizon
            )
    if combination is not None:
        results["reported"]["combination_weight"] = combination
    return results


def in_sample_naive_mae(train_close: np.ndarray) -> float:
    """Mean |close_t - close_(t-1)| over the training days: the scale of the true MASE.

    Hyndman & Koehler (2006) scale a forecast's MAE by this in-sample MAE of the
    one-step naive forecast, so MASE < 1 means "better than the naive forecast
    was on the training data", comparable across series and periods.
    """
    close = np.asarray(train_close, dtype=np.float64)
    if len(close) < 2:
        raise ValueError("the in-sample naive MAE needs at least two training closes")
    return float(np.mean(np.abs(np.diff(close))))


def combination_weight(
    model_val: np.ndarray, naive_val: np.ndarray, targets_val: np.ndarray
) -> float:
    """The w in [0, 1] of ``naive + w·(model - naive)`` with the lowest validation MAE.

    Ties go to the smaller w: without evidence on validation, the reported
    forecast stays at the naive one (w = 0).
    """
    errors = [
        np.mean(np.abs(naive_val + w * (model_val - naive_val) - targets_val))
        for w in COMBINATION_WEIGHTS
    ]
    return float(COMBINATION_WEIGHTS[int(np.argmin(errors))])


def diebold_mariano(
    errors_a: np.ndarray, errors_b: np.ndarray, horizon: int = 1, power: int = 1
) -> dict[str, float]:
    """Diebold-Mariano test of equal accuracy of two forecasts of the same outcomes.

    The loss differential ``d_t = |e_a,t|^power - |e_b,t|^power``; its mean over
    n days is divided by a HAC standard error that sums the autocovariances up to
    lag ``horizon - 1`` (h-step forecasts made on consecutive days overlap, so
    their errors are correlated), with Harvey, Leybourne & Newbold's (1997)
    small-sample correction and a Student t with n - 1 degrees of freedom.

    Returns:
        ``statistic`` (negative: a is more accurate) and the two-sided ``p_value``.
    """
    d = (
        np.abs(np.asarray(errors_a, np.float64)) ** power
        - np.abs(np.asarray(errors_b, np.float64)) ** power
    )
    n = len(d)
    centred = d - d.mean()
    variance = np.mean(centred**2)
    for lag in range(1, horizon):
        variance += 2 * np.mean(centred[lag:] * centred[:-lag])
    if not variance > 0:
        return {"statistic": 0.0, "p_value": 1.0}
    statistic = d.mean() / math.sqrt(variance / n)
    statistic *= math.sqrt((n + 1 - 2 * horizon + horizon * (horizon - 1) / n) / n)
    return {
        "statistic": float(statistic),
        "p_value": float(2 * student_t.sf(abs(statistic), df=n - 1)),
    }


def ratio_text(ratio: float | None) -> str:
    """A relative MAE or MASE to three decimals, or "-" when the naive error it is scaled
    by is 0 (prices that did not move over those days)."""
    return "-" if ratio is None else f"{ratio:.3f}"


def format_table(results: dict[str, dict]) -> str:
    """A plain-text table of the methods' test metrics."""
    header = (
        f"{'method':<15}{'RMSE':>9}{'MAE':>9}{'MAPE%':>8}{'rel.MAE':>9}{'MASE':>8}"
        f"{'dir.acc':>9}{'p':>8}"
    )
    lines = [header, "-" * len(header)]
    for name, metrics in results.items():
        direction = metrics["directional_accuracy"]
        p_value = metrics["direction_p_value"]
        lines.append(
            f"{name:<15}{metrics['rmse']:>9.3f}{metrics['mae']:>9.3f}{metrics['mape']:>8.2f}"
            f"{ratio_text(metrics['relative_mae']):>9}{ratio_text(metrics['mase']):>8}"
            + (
                f"{direction:>9.3f}{p_value:>8.3f}"
                if direction is not None
                else f"{'-':>9}{'-':>8}"
            )
        )
    lines.append(
        "rel.MAE: MAE / the naive forecast's MAE on the same days; MASE: MAE / the "
        "training days' one-step naive MAE (Hyndman & Koehler)"
    )
    return "\n".join(lines)
