"""Stock project: windows, no look-ahead, baselines and metrics, NumPy cells, CLI round trip."""

from __future__ import annotations

import json
import logging

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from projects.stock_lstm import numpy_cells
from projects.stock_lstm.config import StockConfig
from projects.stock_lstm.data import (
    check_length,
    compute_features,
    make_windows,
    minimum_days,
    normalisation_stats,
    split_windows,
)
from projects.stock_lstm.evaluate import (
    combination_weight,
    compare_methods,
    diebold_mariano,
    forecast_metrics,
    format_table,
    in_sample_naive_mae,
)
from projects.stock_lstm.forecast import ForecastError, forecast, interval_for_steps
from projects.stock_lstm.forecast import main as forecast_main
from projects.stock_lstm.intervals import residual_quantile
from projects.stock_lstm.train import main as train_stock
from shared.cli import run_training_cli
from shared.config import ConfigError
from shared.prices import BUNDLED_DIR, PriceDataError, read_price_csv
from tests.helpers import history_epochs, kill_after_first_epoch, run_module

QUICK = dict(epochs=2, window=20, units=8, start="2021-01-01", patience=2)


@pytest.fixture(scope="module")
def aapl() -> pd.DataFrame:
    return read_price_csv(BUNDLED_DIR / "AAPL.csv")


def test_features_are_stationary_and_aligned(aapl):
    features = compute_features(aapl)
    assert list(features.columns) == ["log_return", "log_range", "log_volume_change"]
    assert len(features) == len(aapl) - 1
    assert features.index[0] == aapl.index[1]
    expected = np.log(aapl["Close"].iloc[5] / aapl["Close"].iloc[4])
    assert features["log_return"].iloc[4] == pytest.approx(expected)
    assert compute_features(aapl[["Close"]]).columns.tolist() == ["log_return"]


@pytest.mark.parametrize("horizon", [1, 5])
def test_window_shapes_and_targets(aapl, horizon):
    prices = aapl.iloc[:300]
    features = compute_features(prices)
    windows = make_windows(prices, features, window=30, horizon=horizon)
    count = 300 - 30 - horizon
    assert windows.inputs.shape == (count, 30, 3)
    assert windows.targets.shape == (count, horizon)
    close = prices["Close"].to_numpy()
    i = 17
    origin = windows.origin_rows[i]
    assert windows.origin_close[i] == close[origin]
    # The window ends with the origin day's own return: nothing after day t.
    assert windows.inputs[i, -1, 0] == pytest.approx(np.log(close[origin] / close[origin - 1]))
    np.testing.assert_allclose(
        windows.targets[i],
        np.log(close[origin + 1 : origin + 1 + horizon] / close[origin]),
        rtol=1e-6,
    )


@pytest.mark.parametrize("horizon", [1, 3, 10])
def test_splits_are_chronological_without_look_ahead(aapl, horizon):
    features = compute_features(aapl)
    windows = make_windows(aapl, features, window=60, horizon=horizon)
    split = split_windows(len(windows), horizon, 0.15, 0.15)
    rows = windows.origin_rows
    last_train_target = rows[split.train.stop - 1] + horizon
    first_val_target = rows[split.val.start] + 1
    last_val_target = rows[split.val.stop - 1] + horizon
    first_test_target = rows[split.test.start] + 1
    assert last_train_target < first_val_target
    assert last_val_target < first_test_target
    assert split.test.stop == len(windows)
    assert split.train.stop <= split.val.start <= split.val.stop <= split.test.start


def test_normalisation_uses_training_days_only(aapl):
    features = compute_features(aapl)
    windows = make_windows(aapl, features, window=60, horizon=1)
    split = split_windows(len(windows), 1, 0.15, 0.15)
    mean, variance = normalisation_stats(windows, split.train)
    last_train_day = windows.origin_rows[split.train.stop - 1]  # price row of the last input day
    expected = features.iloc[:last_train_day].to_numpy()  # feature rows 0..last_train_day-1
    np.testing.assert_allclose(mean, expected.mean(axis=0), rtol=1e-4)
    np.testing.assert_allclose(variance, expected.var(axis=0), rtol=1e-3)
    # Changing every later day leaves the statistics unchanged.
    shocked = aapl.copy()
    shocked.iloc[last_train_day + 1 :, :] *= 3.0
    shocked_windows = make_windows(shocked, compute_features(shocked), window=60, horizon=1)
    np.testing.assert_array_equal(normalisation_stats(shocked_windows, split.train)[0], mean)


def test_too_short_series_fail_with_the_minimum_length(aapl):
    config = StockConfig(window=60, horizon=5)
    needed = minimum_days(config)
    check_length(aapl.iloc[:needed], config, "AAPL")  # exactly enough
    features = compute_features(aapl.iloc[:needed])
    windows = make_windows(aapl.iloc[:needed], features, 60, 5)
    split_windows(len(windows), 5, config.val_fraction, config.test_fraction)
    with pytest.raises(PriceDataError, match=f"has {needed - 1} days.*need at least {needed}"):
        check_length(aapl.iloc[: needed - 1], config, "AAPL")
    more_folds = StockConfig(window=60, horizon=5, walk_forward=4)
    assert minimum_days(more_folds) > needed


def test_a_series_that_never_moves_is_refused_and_zero_naive_errors_print_as_dashes(aapl):
    flat = aapl.copy()
    flat["Close"] = 10.0
    with pytest.raises(PriceDataError, match="Close is 10 on all .* days; a series that never"):
        check_length(flat, StockConfig(), "FLAT")
    # Prices flat over the scored days alone: relative MAE and MASE are 0/0, so the
    # table shows a dash where it would fail to format a number.
    windows = make_windows(aapl, compute_features(aapl), window=20, horizon=1)
    scored = forecast_metrics(np.zeros_like(windows.targets), windows, 0.0, 0.0)
    assert scored["relative_mae"] is None and scored["mase"] is None
    row = format_table({"naive": scored}).splitlines()[2].split()
    assert row[0] == "naive" and row[4:6] == ["-", "-"]


def test_invalid_stock_settings_are_rejected():
    with pytest.raises(ConfigError, match="--cell 'rnn' is not valid"):
        StockConfig(cell="rnn")
    with pytest.raises(ConfigError, match="leave 10% of the windows for training"):
        StockConfig(val_fraction=0.5, test_fraction=0.45)
    with pytest.raises(ConfigError, match="leave 10% of the windows for training"):
        StockConfig(walk_forward=6)
    with pytest.raises(ConfigError, match="--dropout must be at most 0.9"):
        StockConfig(dropout=1.0)


def test_metrics_on_a_hand_made_example(aapl):
    features = compute_features(aapl.iloc[:100])
    windows = make_windows(aapl.iloc[:100], features, window=10, horizon=1).subset(slice(0, 40))
    naive = forecast_metrics(np.zeros_like(windows.targets), windows)
    errors = windows.future_close[:, 0] - windows.origin_close
    assert naive["mae"] == pytest.approx(np.mean(np.abs(errors)))
    assert naive["rmse"] == pytest.approx(np.sqrt(np.mean(errors**2)))
    assert naive["directional_accuracy"] is None  # "no change" has no direction
    perfect = forecast_metrics(windows.targets.astype(np.float64), windows, naive["mae"], 1.0)
    assert perfect["mae"] == pytest.approx(0, abs=1e-4) and perfect["relative_mae"] < 1e-4
    assert perfect["directional_accuracy"] == 1.0
    assert perfect["direction_p_value"] < 1e-6  # 40 of 40 is no coin flip
    wrong = forecast_metrics(-windows.targets.astype(np.float64), windows, naive["mae"])
    assert wrong["directional_accuracy"] == 0.0


def test_residual_quantile_intervals_hold_their_coverage_on_the_data_they_came_from():
    rng = np.random.default_rng(0)
    targets = rng.normal(size=(1000, 2))
    predictions = np.zeros_like(targets)
    lower, upper = residual_quantile(predictions, targets, 0.8)
    inside = ((targets >= lower) & (targets <= upper)).mean()
    assert inside == pytest.approx(0.8, abs=0.01)
    lower, upper = lower[0], upper[0]  # offsets: the forecasts are 0
    steps_lower, steps_upper = interval_for_steps(lower, upper, days=8)
    assert steps_lower[1] == lower[1] and steps_upper[7] == pytest.approx(upper[1] * 2)


@pytest.mark.parametrize("seed", [0, 1])
def test_numpy_simple_rnn_matches_keras(seed):
    rng = np.random.default_rng(seed)
    inputs = rng.normal(size=(4, 7, 3)).astype("float32")
    layer = keras.layers.SimpleRNN(5)
    expected = keras.ops.convert_to_numpy(layer(inputs))
    ours = numpy_cells.simple_rnn(inputs.astype(np.float64), *layer.get_weights())
    np.testing.assert_allclose(ours, expected, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_numpy_lstm_matches_keras(seed):
    rng = np.random.default_rng(seed)
    inputs = rng.normal(size=(4, 7, 3)).astype("float32")
    layer = keras.layers.LSTM(6)
    layer.build(inputs.shape)
    kernel, recurrent, bias = layer.get_weights()
    layer.set_weights([kernel, recurrent, rng.normal(size=bias.shape).astype("float32")])
    expected = keras.ops.convert_to_numpy(layer(inputs))
    ours = numpy_cells.lstm(inputs.astype(np.float64), *layer.get_weights())
    np.testing.assert_allclose(ours, expected, atol=1e-5)


@pytest.mark.parametrize("cell", ["simplernn", "lstm"])
def test_numpy_bptt_gradients_equal_tensorflow_autodiff(cell):
    rng = np.random.default_rng(3)
    inputs = rng.normal(size=(3, 9, 4))
    layer_type = keras.layers.SimpleRNN if cell == "simplernn" else keras.layers.LSTM
    layer = layer_type(5, return_sequences=True, dtype="float64")
    layer.build(inputs.shape)
    # Random biases and larger weights, so no gate sits at a trivial value.
    layer.set_weights([rng.normal(scale=0.6, size=w.shape) for w in layer.get_weights()])
    # A loss that looks at every step with its own weights: L = sum_t sum_u R_tu h_tu.
    loss_weights = rng.normal(size=(3, 9, 5))
    x = tf.constant(inputs)
    with tf.GradientTape() as tape:
        tape.watch(x)
        states = layer(x)
        loss = tf.reduce_sum(states * loss_weights)
    expected = tape.gradient(loss, [*layer.trainable_weights, x])
    backward = numpy_cells.simple_rnn_backward if cell == "simplernn" else numpy_cells.lstm_backward
    ours = backward(inputs, *layer.get_weights(), loss_weights)
    for name, theirs in zip(
        ["kernel", "recurrent_kernel", "bias", "inputs"], expected, strict=True
    ):
        theirs = keras.ops.convert_to_numpy(theirs)
        relative = np.abs(ours[name] - theirs).max() / np.abs(theirs).max()
        assert relative < 1e-6, (name, relative)
    # The total dL/dh_t of the last step is what the loss puts there directly.
    np.testing.assert_allclose(ours["hidden_gradients"][:, -1], loss_weights[:, -1])


def test_quick_run_reports_every_method_and_interval(tmp_path):
    metrics = train_stock(StockConfig(run_dir=str(tmp_path / "run"), **QUICK))
    expected = {"model", "reported", "naive", "drift", "moving_average", "linear"}
    assert set(metrics["test"]) == expected
    for method in metrics["test"].values():
        assert {"rmse", "mae", "relative_mae", "mase", "directional_accuracy"} <= set(method)
    assert metrics["test"]["naive"]["relative_mae"] == 1.0
    # The reported forecast is the model shrunk towards naive by the validation's w.
    weight = metrics["combination_weight"]
    assert 0 <= weight <= 1
    assert metrics["test"]["reported"]["combination_weight"] == weight
    assert set(metrics["interval"]["methods"]) == {
        "residual_quantile",
        "split_conformal",
        "adaptive_conformal",
    }
    # Coverage is a share of the test windows, and the interval brackets no change.
    test_windows = metrics["periods"]["test"]["windows"]
    covered = metrics["interval"]["test_coverage"] * test_windows
    assert covered == pytest.approx(round(covered)) and round(covered) > 0
    assert (
        metrics["interval"]["lower_log_return"][0] < 0 < metrics["interval"]["upper_log_return"][0]
    )
    assert metrics["interval"]["coverage_target"] == 0.8
    assert metrics["periods"]["train"]["last"] < metrics["periods"]["val"]["first"]
    assert metrics["periods"]["val"]["last"] < metrics["periods"]["test"]["first"]
    for png in ["test_forecast.png", "training_curves.png"]:
        assert (tmp_path / "run" / "plots" / png).exists()


def test_multi_step_horizon_and_walk_forward(tmp_path):
    metrics = train_stock(
        StockConfig(run_dir=str(tmp_path / "run"), horizon=3, walk_forward=2, **QUICK)
    )
    assert len(metrics["interval"]["lower_log_return"]) == 3
    folds = metrics["walk_forward"]["folds"]
    assert len(folds) == 2
    assert folds[0]["test"]["last"] < folds[1]["test"]["first"]
    assert folds[1]["methods"] == metrics["test"]
    mean_rmse = np.mean([fold["methods"]["model"]["rmse"] for fold in folds])
    assert metrics["walk_forward"]["mean"]["model"]["rmse"] == pytest.approx(mean_rmse)


def test_training_on_a_user_csv_with_only_date_and_close(tmp_path, aapl):
    path = tmp_path / "close_only.csv"
    aapl.loc["2021-01-01":, ["Close"]].to_csv(path, index_label="Date")
    run_dir = tmp_path / "run"
    metrics = train_stock(StockConfig(run_dir=str(run_dir), csv=str(path), **QUICK))
    assert metrics["features"] == ["log_return"]
    assert metrics["source"] == str(path)
    result = forecast(str(run_dir), days=3, csv=str(path))
    assert len(result.table) == 3
    with pytest.raises(ForecastError, match="trained on a CSV"):
        forecast(str(run_dir), days=3)
    full = tmp_path / "full.csv"
    aapl.loc["2021-01-01":].to_csv(full, index_label="Date")
    with pytest.raises(ForecastError, match="trained on features"):
        forecast(str(run_dir), days=3, csv=str(full))


def test_quick_train_then_forecast_in_fresh_processes(tmp_path):
    run_dir = tmp_path / "run"
    cache = tmp_path / "cache"
    trained = run_module(
        "projects.stock_lstm.train", "--quick", "--run-dir", str(run_dir), "--cache-dir", str(cache)
    )
    assert trained.returncode == 0, trained.stderr
    assert "RMSE" in trained.stderr and "naive" in trained.stderr
    assert f"Run directory: {run_dir}" in trained.stderr

    result = run_module("projects.stock_lstm.forecast", "--run-dir", str(run_dir), "--days", "4")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("AAPL: last close 192.53 on 2023-12-29")
    rows = [line.split() for line in lines[2:6]]
    assert [row[0] for row in rows] == ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"]
    for _, value, lower, upper in rows:
        assert float(lower) < float(value) < float(upper)
    assert (run_dir / "plots" / "forecast_AAPL.png").exists()
    # --days 0 is refused before TensorFlow loads (test_cli.py).


def test_a_price_file_too_short_for_the_settings_is_refused_naming_the_minimum(tmp_path):
    # A bad --ticker is refused with the flags (test_cli.py), a bad file once it is read
    # (a PriceDataError: a UserError, which the command line prints as one line).
    short = tmp_path / "short.csv"
    short.write_text("Date,Close\n2020-01-02,1\n2020-01-03,2\n2020-01-06,3\n")
    with pytest.raises(PriceDataError, match=r"short.csv has 3 days; .* need at least \d+"):
        train_stock(StockConfig.create(csv=str(short), run_dir=str(tmp_path / "b")))
    assert not (tmp_path / "b" / "model.keras").exists()


def test_killed_run_resumes(tmp_path, caplog):
    run_dir = tmp_path / "run"
    args = [
        "--run-dir",
        str(run_dir),
        "--epochs",
        "6",
        "--patience",
        "6",
        "--units",
        "96",
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    kill_after_first_epoch("projects.stock_lstm.train", args, run_dir)
    assert 1 <= len(history_epochs(run_dir / "history.csv")) < 6

    # The same run, resumed in this process (a fresh one would add TensorFlow's start-up).
    same = StockConfig.create(
        run_dir=str(run_dir), epochs=6, patience=6, units=96, cache_dir=str(tmp_path / "cache")
    )
    with caplog.at_level(logging.INFO):
        train_stock(same)
    assert "Resuming the interrupted run" in caplog.text
    assert history_epochs(run_dir / "history.csv") == list(range(6))
    assert json.loads((run_dir / "metrics.json").read_text())["test"]["model"]["rmse"] > 0


@pytest.mark.parametrize("cell", ["simplernn", "gru"])
def test_other_cells_stacked_with_dropout(cell, tmp_path):
    config = StockConfig(run_dir=str(tmp_path / cell), cell=cell, layers=2, dropout=0.2, **QUICK)
    metrics = train_stock(config)
    assert metrics["cell"] == cell
    saved = keras.saving.load_model(tmp_path / cell / "model.keras")
    model = saved.get_layer(f"{cell}_forecaster")  # the network inside the reported forecaster
    recurrent = [layer.name for layer in model.layers if layer.name.startswith(cell)]
    assert recurrent == [f"{cell}_1", f"{cell}_2"]
    assert any(isinstance(layer, keras.layers.Dropout) for layer in model.layers)


def test_true_mase_scales_by_the_training_days_one_step_naive_error(aapl):
    # Closes 10, 12, 11, 14: the in-sample naive errors are 2, 1, 3, so the scale is 2.
    assert in_sample_naive_mae(np.array([10.0, 12.0, 11.0, 14.0])) == 2.0
    features = compute_features(aapl.iloc[:200])
    windows = make_windows(aapl.iloc[:200], features, window=10, horizon=1)
    split = split_windows(len(windows), 1, 0.15, 0.15)
    results = compare_methods(
        np.zeros_like(windows.targets, dtype=np.float64),
        windows,
        split,
        aapl["Close"].to_numpy()[:200],
        np.zeros(3),
        np.ones(3),
        ma_window=5,
    )
    train_close = windows.origin_close[split.train]
    scale = np.mean(np.abs(np.diff(train_close)))
    assert results["naive"]["mase"] == pytest.approx(results["naive"]["mae"] / scale)
    assert results["naive"]["relative_mae"] == 1.0


def test_combination_weight_is_chosen_on_validation_only():
    rng = np.random.default_rng(0)
    targets = rng.normal(scale=0.02, size=(300, 1))
    naive = np.zeros_like(targets)
    informative = 0.5 * targets + rng.normal(scale=0.005, size=targets.shape)
    assert combination_weight(informative, naive, targets) > 0.5
    noise = rng.normal(scale=0.02, size=targets.shape)  # a model that knows nothing
    assert combination_weight(noise, naive, targets) <= 0.1
    wrong_way = -informative  # worse than naive on validation: the naive forecast is kept
    assert combination_weight(wrong_way, naive, targets) == 0.0


def test_the_reported_forecast_stays_naive_unless_validation_shows_a_real_gain():
    from projects.stock_lstm.train import choose_combination

    rng = np.random.default_rng(1)
    targets = rng.normal(scale=0.02, size=(250, 1))
    lucky = rng.normal(scale=0.02, size=targets.shape)  # knows nothing
    chosen = choose_combination(lucky, targets)
    assert chosen["weight"] == 0.0 and chosen["validation_diebold_mariano"]["p_value"] >= 0.05
    skilled = 0.6 * targets + rng.normal(scale=0.004, size=targets.shape)
    chosen = choose_combination(skilled, targets)
    assert chosen["weight"] == chosen["best_validation_weight"] > 0.5


def test_the_reported_weight_ignores_the_test_period(aapl):
    features = compute_features(aapl.iloc[:400])
    windows = make_windows(aapl.iloc[:400], features, window=10, horizon=1)
    split = split_windows(len(windows), 1, 0.15, 0.15)
    model = 0.3 * windows.targets.astype(np.float64)
    model[split.test] *= -50  # nonsense on test days only
    weight = combination_weight(
        model[split.val], np.zeros_like(model[split.val]), windows.targets[split.val]
    )
    clean = 0.3 * windows.targets.astype(np.float64)
    assert weight == combination_weight(
        clean[split.val], np.zeros_like(clean[split.val]), windows.targets[split.val]
    )


def test_diebold_mariano_tells_a_better_forecast_from_an_equal_one():
    rng = np.random.default_rng(0)
    outcomes = rng.normal(size=500)
    good = outcomes + rng.normal(scale=0.5, size=500)
    bad = outcomes + rng.normal(scale=1.5, size=500)
    better = diebold_mariano(good - outcomes, bad - outcomes)
    assert better["statistic"] < 0 and better["p_value"] < 1e-6
    same = diebold_mariano(bad - outcomes, bad - outcomes)
    assert same["p_value"] == 1.0
    # Overlapping 5-day errors are autocorrelated: the HAC variance widens the test.
    shocks = rng.normal(size=505)
    overlapping = np.convolve(shocks, np.ones(5), "valid")[:500]
    one_lag = diebold_mariano(overlapping + 0.1, overlapping, horizon=1)
    five_lag = diebold_mariano(overlapping + 0.1, overlapping, horizon=5)
    assert five_lag["p_value"] > one_lag["p_value"]


def test_the_saved_forecaster_is_the_reported_one(tmp_path):
    from shared.runs import load_run

    metrics = train_stock(StockConfig(run_dir=str(tmp_path / "run"), **QUICK))
    saved = load_run(tmp_path / "run").model
    raw = saved.get_layer("lstm_forecaster")  # the trained network, before the shrinking
    batch = np.random.default_rng(0).normal(scale=0.01, size=(4, 20, 3)).astype("float32")
    np.testing.assert_allclose(
        saved.predict(batch, verbose=0),
        metrics["combination_weight"] * raw.predict(batch, verbose=0),
        rtol=1e-5,
        atol=1e-8,
    )


def test_volatility_target_is_scored_against_naive_har_and_garch_and_forecast(tmp_path, capsys):
    run_dir = tmp_path / "vol"
    metrics = train_stock(
        StockConfig(run_dir=str(run_dir), target="volatility", horizon=5, **QUICK)
    )
    assert set(metrics["test"]) == {"model", "naive", "har", "garch"}
    for name in ("naive", "har", "garch"):
        assert set(metrics["test"][name]["model_vs_this"]) == {"mse", "qlike"}
    assert metrics["test"]["model"]["qlike"] > 0 and 0 < metrics["garch_parameters"]["beta[1]"] < 1
    assert (run_dir / "plots" / "test_volatility.png").exists()
    # The forecast command, in this process (its command line is run in a fresh one by
    # test_quick_train_then_forecast_in_fresh_processes).
    capsys.readouterr()
    assert forecast_main(["--run-dir", str(run_dir)]) == 0
    assert "realised volatility of the 5 trading days after 2023-12-29" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="--walk-forward evaluates price forecasts only"):
        StockConfig(target="volatility", walk_forward=2)


def test_a_global_model_is_split_at_the_same_dates_and_scored_per_ticker(tmp_path, capsys):
    from projects.stock_lstm.global_model import load_all_series

    config = StockConfig(run_dir=str(tmp_path / "global"), tickers="AAPL,nvda", **QUICK)
    series = load_all_series(config)
    assert [one.ticker for one in series] == ["AAPL", "NVDA"]
    for name in ("train", "val", "test"):
        first, second = (one.windows.origin_dates[getattr(one.split, name)] for one in series)
        assert first[0] == second[0] and first[-1] == second[-1]
    # Each series is normalised by its own training days: NVDA's returns are wider.
    assert series[1].target_scale > series[0].target_scale
    metrics = train_stock(config)
    assert set(metrics["tickers"]) == {"AAPL", "NVDA"}
    tested = [metrics["tickers"][t]["periods"]["test"] for t in ("AAPL", "NVDA")]
    assert tested[0] == tested[1]
    for ticker in ("AAPL", "NVDA"):
        assert metrics["tickers"][ticker]["test"]["naive"]["relative_mae"] == 1.0
    # A CSV file can stand in for a ticker (here NVDA's bundled prices under another name).
    (tmp_path / "acme.csv").write_text((BUNDLED_DIR / "NVDA.csv").read_text())
    from_file = load_all_series(
        StockConfig(tickers=f"AAPL,{tmp_path / 'acme.csv'}", **{**QUICK, "start": "2013-01-01"})
    )
    assert from_file[1].ticker == "acme.csv" and len(from_file[1].windows) > len(series[1].windows)
    # The saved model forecasts any of its series by name, and refuses others.
    capsys.readouterr()
    assert forecast_main(["--run-dir", str(tmp_path / "global"), "--ticker", "nvda"]) == 0
    assert capsys.readouterr().out.startswith("NVDA: last close")
    with pytest.raises(ForecastError, match="trained on AAPL, NVDA; MSFT is not one"):
        forecast(str(tmp_path / "global"), 3, ticker="MSFT")
    with pytest.raises(ConfigError, match="does not combine with --csv"):
        StockConfig(tickers="AAPL,MSFT", csv="x.csv")


def test_the_saved_global_model_reproduces_each_series_scores_from_raw_windows(tmp_path):
    """model.keras holds each series' normalisation and scale: raw windows + number in."""
    from projects.stock_lstm.global_model import load_all_series
    from projects.stock_lstm.volatility import qlike
    from shared.runs import load_run

    config = StockConfig(
        run_dir=str(tmp_path / "global"),
        tickers="AAPL,NVDA",
        target="volatility",
        horizon=5,
        **QUICK,
    )
    metrics = train_stock(config)
    model = load_run(tmp_path / "global").model
    assert metrics["series"] == ["AAPL", "NVDA"]
    for number, one in enumerate(load_all_series(config)):
        test = one.split.test
        inputs = one.windows.inputs[test]
        predicted = model.predict([inputs, np.full(len(inputs), number, np.int32)], verbose=0)
        volatility = np.maximum(predicted[:, 0].astype(np.float64), 1e-4)
        realised = one.windows.targets[test, 0].astype(np.float64)
        score = qlike(realised**2, volatility**2).mean()
        expected = metrics["tickers"][one.ticker]["test"]["model"]["qlike"]
        assert score == pytest.approx(expected, rel=1e-4)
    # The same window read as the other series gives another forecast: the lookup is used.
    window = one.windows.inputs[test][:1]
    as_aapl, as_nvda = (
        model.predict([window, np.array([n], np.int32)], verbose=0)[0, 0] for n in (0, 1)
    )
    assert abs(as_aapl - as_nvda) > 1e-4
    # Exported, it takes the same two inputs and gives the same forecasts.
    from shared.export import export_run

    exported = export_run(str(tmp_path / "global"), "tflite", out=str(tmp_path / "tflite"))
    runner = tf.lite.Interpreter(model_path=str(exported.model_path)).get_signature_runner()
    for number, expected in enumerate((as_aapl, as_nvda)):
        output = runner(features=window, series=np.array([number], np.int32))["forecast"]
        assert output[0, 0] == pytest.approx(expected, abs=1e-5)


def test_csv_given_several_times_trains_one_global_model(tmp_path, capsys):
    from shared.config import parse_config

    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    first.write_text((BUNDLED_DIR / "AAPL.csv").read_text())
    second.write_text((BUNDLED_DIR / "MSFT.csv").read_text())
    config = parse_config(StockConfig, ["--csv", str(first), "--csv", str(second), "--quick"])
    assert config.tickers == f"{first},{second}" and config.csv == ""
    assert parse_config(StockConfig, ["--csv", str(first)]).csv == str(first)
    for argv, complaint in [
        (["--csv", str(first), "--csv", "prices.txt"], "must end in .csv"),
        (["--csv", str(first), "--csv", str(second), "--tickers", "AAPL,MSFT"], "drop --tickers"),
    ]:
        result = run_module("projects.stock_lstm.train", *argv)
        assert result.returncode == 2
        assert "Traceback" not in result.stderr and complaint in result.stderr, result.stderr
    # Series without the same price columns cannot share a model: one clear line. (The
    # command's own handling, in this process: its command line ran above.)
    without_volume = pd.read_csv(second).drop(columns=["Volume"])
    without_volume.to_csv(second, index=False)
    argv = ["--csv", str(first), "--csv", str(second), "--quick", "--run-dir", str(tmp_path / "r")]
    capsys.readouterr()
    with pytest.raises(SystemExit) as refused:
        run_training_cli(train_stock, StockConfig, argv)
    said = capsys.readouterr().err
    assert refused.value.code == 2 and "Traceback" not in said
    assert "one global model needs the same price columns" in said


def test_gradients_refuse_a_file_as_out_before_computing(tmp_path, capsys):
    from projects.stock_lstm import gradients

    results = tmp_path / "results"
    results.write_text("kept")
    with pytest.raises(SystemExit) as stopped:
        gradients.main(["--out", str(results)])  # its log goes to stderr
    logged = capsys.readouterr().err
    assert stopped.value.code == 2
    assert f"--out {results} is a file; give a folder to write into." in logged
    assert "Prices of" not in logged  # refused before any data was loaded
    assert results.read_text() == "kept"
