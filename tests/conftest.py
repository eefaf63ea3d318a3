"""Test set-up: two logical CPU devices, so MirroredStrategy runs 2 replicas without GPUs.

Logical devices can only be configured before TensorFlow initialises its
runtime, so this happens once, when pytest starts, in each process that runs
tests. pytest-xdist's controller (``-n 2``, the default) only hands test files
to its workers: it does not load TensorFlow, which would cost both cores
seconds while the workers start.
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
