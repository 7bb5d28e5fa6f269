"""Test-session setup: two logical CPUs so distribution tests can run anywhere."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Must run before TensorFlow initialises its devices: the MirroredStrategy tests
# mirror over "/cpu:0" and "/cpu:1" (as keras's distribute_test.py does).
_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
    )
except RuntimeError:  # Devices already initialised by an earlier import.
    pass


@pytest.fixture(scope="session")
def shared_data():
    """The real data folder (../shared/data); skips the test when it is absent."""
    from tfcell.data import paths

    root = paths.shared_data_root()
    if root is None:
        pytest.skip("../shared/data is absent (set TFCELL_SHARED_DATA to point at it)")
    return root
