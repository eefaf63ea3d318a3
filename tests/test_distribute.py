"""Strategy selection, and 2-replica MirroredStrategy training equal to one device."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from projects.xor_mlp.config import XorConfig
from projects.xor_mlp.train import main as train_xor
from shared.distribute import batch_normalization, select_strategy
from shared.runs import load_run


def test_auto_on_a_machine_without_gpus_is_the_default_strategy():
    if tf.config.list_logical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    strategy = select_strategy("auto")
    assert strategy is tf.distribute.get_strategy()
    assert strategy.num_replicas_in_sync == 1


def test_default_is_one_replica():
    assert select_strategy("default").num_replicas_in_sync == 1


def test_mirrored_uses_every_logical_cpu():
    # conftest.py splits the CPU into two logical devices.
    strategy = select_strategy("mirrored")
    assert isinstance(strategy, tf.distribute.MirroredStrategy)
    assert strategy.num_replicas_in_sync == 2
    # One object per process: a second one can break TensorFlow's collective ops.
    assert select_strategy("mirrored") is strategy


def test_unknown_strategy_is_rejected():
    with pytest.raises(ValueError, match="unknown strategy 'tpu'"):
        select_strategy("tpu")


def test_two_replicas_train_to_the_same_result_as_one_device(tmp_path):
    settings = dict(seed=5, epochs=6, batch_size=16, repeats=16, numpy_epochs=10)
    single = train_xor(XorConfig(strategy="default", run_dir=str(tmp_path / "one"), **settings))
    mirrored = train_xor(XorConfig(strategy="mirrored", run_dir=str(tmp_path / "two"), **settings))

    np.testing.assert_allclose(
        single["mlp"]["probabilities"], mirrored["mlp"]["probabilities"], rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(single["mlp"]["loss"], mirrored["mlp"]["loss"], rtol=1e-5)
    # Identical per-epoch losses: same data order, same steps (the batch is global).
    history_one = np.genfromtxt(tmp_path / "one" / "history.csv", delimiter=",", names=True)
    history_two = np.genfromtxt(tmp_path / "two" / "history.csv", delimiter=",", names=True)
    np.testing.assert_allclose(history_one["loss"], history_two["loss"], rtol=1e-5)
    weights_one = load_run(tmp_path / "one").model.get_weights()
    weights_two = load_run(tmp_path / "two").model.get_weights()
    for left, right in zip(weights_one, weights_two, strict=True):
        np.testing.assert_allclose(left, right, rtol=1e-5, atol=1e-6)


def test_batch_norm_under_two_replicas_normalises_by_the_global_batch():
    # Each replica gets one half of the batch: all zeros, or all tens. Plain Keras batch
    # norm would let each replica keep its own moving mean (0 and 5): predictions then
    # depended on the replica that made them, and the saved model held replica 0's.
    features = np.concatenate([np.zeros((8, 3)), np.full((8, 3), 10.0)]).astype("float32")
    targets = np.zeros((16, 1), "float32")
    probe = np.full((4, 3), 5.0, "float32")  # split over the replicas when predicting
    results = {}
    for name in ("default", "mirrored"):
        with select_strategy(name).scope():
            inputs = keras.Input((3,))
            normalised = batch_normalization(momentum=0.5, name="bn")(inputs)
            model = keras.Model(
                inputs, keras.layers.Dense(1, kernel_initializer="ones")(normalised)
            )
            model.compile(optimizer="sgd", loss="mse")
        model.fit(features, targets, batch_size=16, epochs=1, shuffle=False, verbose=0)
        moving_mean = keras.ops.convert_to_numpy(model.get_layer("bn").moving_mean)
        results[name] = (moving_mean, model.predict(probe, batch_size=4, verbose=0))
    np.testing.assert_allclose(results["default"][0], 2.5)  # 0.5 * the batch mean of 5
    np.testing.assert_allclose(results["mirrored"][0], results["default"][0], rtol=1e-6)
    np.testing.assert_allclose(results["mirrored"][1], results["default"][1], rtol=1e-5)


def test_every_project_trains_under_two_replicas(tmp_path):
    # conftest.py gives this process two logical CPUs, so "mirrored" runs 2 replicas.
    from projects.shakespeare.config import ShakespeareConfig
    from projects.shakespeare.train import main as train_shakespeare
    from projects.stock_lstm.config import StockConfig
    from projects.stock_lstm.train import main as train_stock

    stock = train_stock(
        StockConfig(strategy="mirrored", run_dir=str(tmp_path / "stock"), **StockConfig.QUICK)
    )
    assert np.isfinite(stock["test"]["model"]["rmse"])
    shakespeare = train_shakespeare(
        ShakespeareConfig(
            strategy="mirrored", run_dir=str(tmp_path / "shakespeare"), **ShakespeareConfig.QUICK
        )
    )
    assert np.isfinite(shakespeare["validation"]["nats_per_char"])
    assert load_run(tmp_path / "shakespeare").model.input.dtype == "string"
    attention = train_shakespeare(
        ShakespeareConfig.create(
            cell="transformer",
            layers=1,
            strategy="mirrored",
            run_dir=str(tmp_path / "attention"),
            quick=True,
        )
    )
    assert np.isfinite(attention["validation"]["nats_per_char"])
    assert load_run(tmp_path / "attention").model.name == "char_transformer"


# CIFAR-10's default airbench and the lecture's architectures (LeNet-5 to DenseNet) train
# under two replicas in test_cifar_cnn.py's quick_runs, which also checks the runs they
# write and uses them for predict, inspect, evaluate and fine-tuning.
