"""Test set-up: two logical CPU devices, so MirroredStrategy runs 2 replicas without GPUs.

Logical devices can only be configured before TensorFlow initialises its
runtime, so this happens once, when pytest starts, in each process that runs
tests. pytest-xdist's controller (``-n 2``, the default) only hands test files
to its workers: it does not load TensorFlow, which would cost both cores
seconds while the workers start.

The controller hands out whole files (``--dist loadfile``) in collection order
(``--no-loadscope-reorder``), and that order puts the longest files first, so
the two workers finish together instead of one waiting for the other's last
long file.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    runs_no_tests = config.getoption("numprocesses", None) and not hasattr(config, "workerinput")
    if runs_no_tests:
        return
    from shared.cli import load_tensorflow_quietly

    load_tensorflow_quietly()  # without TensorFlow's start-up banner in the test output
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )


# The files that take longest, longest first (seconds per file, summed over its tests, in
# a suite run on the 2-core AMD EPYC: 376 to 38); the others follow in their usual order.
LONGEST_FIRST = (
    "test_cifar_cnn.py",
    "test_serving.py",
    "test_multiworker.py",
    "test_shakespeare.py",
    "test_checkpoint.py",
    "test_stock_lstm.py",
    "test_xor_mlp.py",
    "test_cli.py",
    "test_runs.py",
    "test_distribute.py",
    "test_budget.py",
    "test_airbench.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: position for position, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files stay whole
