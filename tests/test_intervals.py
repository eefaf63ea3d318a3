"""Prediction intervals of the stock project: conformal coverage and no look-ahead."""

from __future__ import annotations

import numpy as np
import pytest

from projects.stock_lstm.intervals import (
    adaptive_conformal,
    conformal_quantile,
    coverage_and_width,
    residual_quantile,
    split_conformal,
)


def test_conformal_quantile_is_the_ceil_n_plus_1_level_th_smallest():
    scores = np.arange(1.0, 10.0)  # n = 9: ceil(10 * 0.8) = 8th smallest
    assert conformal_quantile(scores, 0.8) == 8.0
    assert conformal_quantile(scores, 0.95) == 9.0  # rank 10 > n: the largest


def test_split_conformal_covers_the_level_when_errors_are_exchangeable():
    rng = np.random.default_rng(0)
    validation = rng.standard_t(df=4, size=(20_000, 2))  # heavy tails, like returns
    outcomes = rng.standard_t(df=4, size=(50_000, 2))
    predicted = np.zeros_like(outcomes)
    lower, upper = split_conformal(predicted, validation, 0.8)
    measured = coverage_and_width(lower, upper, outcomes)
    assert measured["coverage"] == pytest.approx([0.8, 0.8], abs=0.015)
    # The residual-quantile interval of the same residuals covers about as much.
    lower, upper = residual_quantile(predicted, validation, 0.8)
    assert coverage_and_width(lower, upper, outcomes)["coverage"][0] == pytest.approx(0.8, abs=0.02)


def test_adaptive_conformal_recovers_the_level_after_volatility_doubles():
    rng = np.random.default_rng(1)
    validation = rng.normal(size=(500, 1))
    outcomes = 2.0 * rng.normal(size=(4000, 1))  # a calmer validation period than test
    predicted = np.zeros_like(outcomes)
    split = coverage_and_width(*split_conformal(predicted, validation, 0.8), outcomes)
    adaptive = coverage_and_width(
        *adaptive_conformal(predicted, outcomes, validation, 0.8, gamma=0.01), outcomes
    )
    assert split["coverage"][0] < 0.6  # the fixed interval is far too narrow
    assert adaptive["coverage"][0] == pytest.approx(0.8, abs=0.02)
    assert adaptive["mean_width"][0] > split["mean_width"][0]


@pytest.mark.parametrize("horizon", [1, 3])
def test_adaptive_conformal_uses_no_outcome_before_it_is_known(horizon):
    rng = np.random.default_rng(2)
    validation = rng.normal(size=(300, horizon))
    outcomes = rng.normal(size=(800, horizon))
    predicted = 0.1 * rng.normal(size=(800, horizon))
    lower, upper = adaptive_conformal(predicted, outcomes, validation, 0.8)
    changed = outcomes.copy()
    changed[500:] = 50.0  # a later crash: everything from day 500 on is different
    lower2, upper2 = adaptive_conformal(predicted, changed, validation, 0.8)
    for step in range(horizon):
        # Day 500's step-k outcome is known from day 500 + k + 1 on; no earlier day moves.
        known_from = 500 + step + 1
        np.testing.assert_array_equal(lower2[:known_from, step], lower[:known_from, step])
        np.testing.assert_array_equal(upper2[:known_from, step], upper[:known_from, step])
        assert not np.array_equal(upper2[known_from:, step], upper[known_from:, step])
