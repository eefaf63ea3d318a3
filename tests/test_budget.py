"""Timing training: --minutes measures its epoch count once per run and keeps it when the
run resumes; the ``make bench-*`` rate counts steps, not the start of ``fit``."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

import keras
import numpy as np
import pytest
import tensorflow as tf

from shared.benchmarks import fit_rate
from shared.budget import BUDGET_FILE, budgeted_epochs, epochs_for_budget, time_one_epoch
from tests.helpers import history_epochs, kill_after_first_epoch


def test_epochs_for_budget_counts_whole_epochs_within_limits():
    assert epochs_for_budget(10, seconds_per_epoch=150, most=100) == 3  # 4 would fill it
    assert epochs_for_budget(0.01, seconds_per_epoch=150, most=100) == 1
    assert epochs_for_budget(1000, seconds_per_epoch=1, most=100) == 100


def test_the_plan_leaves_room_for_what_the_timing_does_not_see():
    # A 20-minute LSTM run timed 51 s per epoch; its epochs took 55 s on average, so the
    # 23 epochs that fit 51 s exactly would run 21 minutes. The margin plans 21 (19.3).
    assert epochs_for_budget(20, seconds_per_epoch=51) == 21


def test_the_budget_is_measured_once_per_run(tmp_path):
    assert budgeted_epochs(tmp_path, 10, lambda: 150.0) == (3, 150.0)

    def must_not_measure() -> float:
        raise AssertionError("a resumed run must not time itself again")

    assert budgeted_epochs(tmp_path, 10, must_not_measure) == (3, 150.0)
    # A different budget on the same run directory is measured afresh.
    assert budgeted_epochs(tmp_path, 20, lambda: 100.0) == (10, 100.0)
    saved = json.loads((tmp_path / BUDGET_FILE).read_text())
    assert saved.pop("timing_seconds") < 1.0  # an instant "timing"
    assert saved == {"minutes": 20, "seconds_per_epoch": 100.0, "epochs": 10}


def test_the_timing_counts_against_the_budget(tmp_path):
    # 10 minutes, 540 s of them planned: 3 epochs of 150 s, or 2 when 100 s went before
    # (a CIFAR run that timed its default width, then the narrower one).
    assert budgeted_epochs(tmp_path / "a", 10, lambda: 150.0) == (3, 150.0)
    earlier = time.perf_counter() - 100.0
    assert budgeted_epochs(tmp_path / "b", 10, lambda: 150.0, started=earlier) == (2, 150.0)

    def slow_timing() -> float:  # like timing a large net on a slow CPU
        time.sleep(1.5)
        return 1.0

    # 0.1 minutes: 5.4 s planned, of which the timing took 1.5 s: 3 epochs of 1 s, not 5.
    assert budgeted_epochs(tmp_path / "c", 0.1, slow_timing) == (3, 1.0)
    saved = json.loads((tmp_path / "c" / BUDGET_FILE).read_text())
    assert saved["timing_seconds"] >= 1.5


@pytest.mark.parametrize(
    "damage", ["{not json", '{"minutes": 10}', '{"minutes": 10, "epochs": "x"}']
)
def test_a_damaged_budget_file_is_measured_again(tmp_path, damage):
    (tmp_path / BUDGET_FILE).write_text(damage)
    assert budgeted_epochs(tmp_path, 10, lambda: 200.0) == (2, 200.0)


def test_shakespeare_minutes_run_resumes_with_its_first_epoch_count(tmp_path, caplog):
    from projects.shakespeare.config import ShakespeareConfig
    from projects.shakespeare.train import main as train_shakespeare

    run_dir = tmp_path / "run"
    # 0.3 minutes: 16 s planned, of which the timing (steps, 2 whole epochs, a validation
    # pass) takes about 6 s here, and more when the tests share the cores.
    args = ["--quick", "--minutes", "0.3", "--steps-per-epoch", "40", "--run-dir", str(run_dir)]
    kill_after_first_epoch("projects.shakespeare.train", args, run_dir)
    planned = json.loads((run_dir / BUDGET_FILE).read_text())["epochs"]
    assert planned >= 2
    # The same run, resumed in this process (a fresh one would add TensorFlow's start-up).
    same = ShakespeareConfig.create(
        quick=True, minutes=0.3, steps_per_epoch=40, run_dir=str(run_dir)
    )
    with caplog.at_level(logging.INFO):
        metrics = train_shakespeare(same)
    # Shakespeare's resume after SIGKILL (each project's is tested; this one with a budget).
    assert "Resuming the interrupted run" in caplog.text
    assert f"keeping this run's {planned} epochs" in caplog.text
    assert history_epochs(run_dir / "history.csv") == list(range(planned))
    assert metrics["validation"]["nats_per_char"] > 0


def tiny_model_and_slow_batches(
    wait: Callable[[int], None], rows_per_batch: int
) -> tuple[keras.Model, tf.data.Dataset]:
    """A one-layer regression, and batches that each call ``wait(index)`` before they
    arrive: sleeping there stands for a slow input, a slow CPU or another program."""

    def arrive(index):
        wait(int(index))
        return index

    rows = np.random.default_rng(0).normal(size=(rows_per_batch, 4)).astype("float32")
    batches = tf.data.Dataset.range(100).map(
        lambda index: tf.py_function(arrive, [index], tf.int64)
    )
    data = batches.map(lambda index: (tf.constant(rows), tf.constant(rows[:, :1])))
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer="sgd", loss="mse")
    return model, data


def test_one_stalled_step_does_not_stretch_the_planned_epoch():
    stall_seconds, stalled_batch = 3.0, 6  # a timed step (after the 3 warm-up steps)
    stalled = []

    def maybe_stall(index):
        if index == stalled_batch and not stalled:  # once: e.g. another program
            stalled.append(index)  # taking the cores
            time.sleep(stall_seconds)

    model, data = tiny_model_and_slow_batches(maybe_stall, rows_per_batch=64)
    before = [weight.copy() for weight in model.get_weights()]
    # 10 timed steps of milliseconds each: with the stall in one of them, their mean
    # would plan 100 steps at about 0.3 s; without the slowest, what the steps take.
    seconds = time_one_epoch(model, data, steps_per_epoch=100, timed_steps=10)
    assert seconds < stall_seconds
    for saved, restored in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(saved, restored)  # the timing leaves no trace


def test_slow_steps_are_timed_fewer_times():
    step_seconds, drawn = 0.3, []

    def slow_batch(index):  # like a large batch on a slow CPU
        drawn.append(index)
        time.sleep(step_seconds)

    model, data = tiny_model_and_slow_batches(slow_batch, rows_per_batch=8)
    # 3 warm-up steps, then 20 timed ones, unless 3 timed steps already took 0.8 s.
    seconds = time_one_epoch(model, data, steps_per_epoch=50, timed_steps=20, timed_seconds=0.8)
    assert 0.7 * 50 * step_seconds < seconds < 1.5 * 50 * step_seconds
    # 3 + 3 steps ran (the input pipeline may read a few batches ahead), not 3 + 20.
    assert int(model.optimizer.iterations) == 3 + 3
    assert len(drawn) <= 12, drawn


@pytest.mark.parametrize("step_seconds, warmup_steps", [(0.6, 1), (0.05, 3)])
def test_slow_steps_need_only_the_first_as_warm_up(step_seconds, warmup_steps):
    # Steps as slow as a large net's on a slow CPU (here: 0.5 s or more) leave the input
    # pipeline time to fill its buffers during the first: the next ones are timed.
    model, data = tiny_model_and_slow_batches(
        lambda index: time.sleep(step_seconds), rows_per_batch=8
    )
    steps = 200  # epochs of 10 s or more: not also timed whole (SHORT_EPOCH_SECONDS)
    seconds = time_one_epoch(
        model, data, steps_per_epoch=steps, timed_steps=20, timed_seconds=0.1, slow_step=0.5
    )
    assert int(model.optimizer.iterations) == warmup_steps + 3  # at least 3 are timed
    assert 0.7 * steps * step_seconds < seconds
    if warmup_steps == 1:  # the traced first step is not among the timed ones
        assert seconds < 1.5 * steps * step_seconds


def test_a_short_epoch_is_timed_whole_to_see_what_each_pass_over_the_data_costs():
    pass_start_seconds, steps = 0.3, 10

    def slow_pass_start(index):  # like filling a shuffle buffer at the start of each pass
        if index == 0:
            time.sleep(pass_start_seconds)

    model, data = tiny_model_and_slow_batches(slow_pass_start, rows_per_batch=8)
    one_pass = data.take(steps)  # an epoch: each pass starts with the slow batch
    before = [weight.copy() for weight in model.get_weights()]
    # The steps alone (the slow one among them trimmed away as a stall) plan milliseconds.
    seconds = time_one_epoch(model, one_pass, steps_per_epoch=steps)
    assert seconds >= pass_start_seconds
    for saved, restored in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(saved, restored)


def test_the_epoch_includes_the_validation_pass_fit_will_make():
    model, data = tiny_model_and_slow_batches(lambda index: None, rows_per_batch=8)
    _, slow_batches = tiny_model_and_slow_batches(lambda index: time.sleep(0.2), rows_per_batch=8)
    steps_only = time_one_epoch(model, data, steps_per_epoch=50)
    with_validation = time_one_epoch(
        model, data, steps_per_epoch=50, validation_data=slow_batches.take(5)
    )
    # One pass over 5 validation batches of 0.2 s each (two would take 2 s or more).
    assert 0.9 < with_validation - steps_only < 1.8


def test_one_stalled_validation_pass_does_not_stretch_the_planned_epoch():
    stall_seconds, stalled = 3.0, []

    def stall_once(index):  # the first pass meets another program taking the cores
        # Not batch 0 or 1: the one-batch pass that traces the test step reads both.
        if index == 3 and not stalled:
            stalled.append(index)
            time.sleep(stall_seconds)

    model, data = tiny_model_and_slow_batches(lambda index: None, rows_per_batch=8)
    _, validation = tiny_model_and_slow_batches(stall_once, rows_per_batch=8)
    steps_only = time_one_epoch(model, data, steps_per_epoch=50)
    with_validation = time_one_epoch(
        model, data, steps_per_epoch=50, validation_data=validation.take(5)
    )
    assert stalled  # the stall happened, in a pass the timing made
    assert with_validation - steps_only < 1.0


def test_the_bench_rate_counts_the_steps_and_not_the_start_of_each_fit():
    first_step_seconds, step_seconds, images_per_step = 1.0, 0.2, 64

    def wait_for_batch(index):  # a batch that takes this long to arrive, like a slow input
        time.sleep(first_step_seconds if index == 0 else step_seconds)

    model, data = tiny_model_and_slow_batches(wait_for_batch, rows_per_batch=images_per_step)
    # Every fit starts a new pass over `data`, so its first step waits 1 s: counted, it
    # would give 5 steps in 2 s, half the steady rate of one step per 0.2 s. The timing
    # starts at the end of the first step, while the next batch is already on its way:
    # on a busy machine that step's own work (30 ms seen) shortens the timed second a
    # little. (With 50 ms steps that made one suite run's rate 13% too high.)
    rate = fit_rate(model, data, steps=6, units_per_step=images_per_step)
    steady_rate = images_per_step / step_seconds
    assert 0.75 * steady_rate < rate <= 1.1 * steady_rate
    with pytest.raises(ValueError, match="at least 2 steps"):
        fit_rate(model, data, steps=1, units_per_step=images_per_step)
