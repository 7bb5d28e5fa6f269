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


# The numerical subset: float comparisons whose last digits depend on the
# kernels' summation order (oneDNN on or off, one device or two replicas).
# `.ci/run` runs it once more under the other TF_ENABLE_ONEDNN_OPTS setting.
_NUMERICAL_DIRS = ("losses", "layers", "training")


def pytest_collection_modifyitems(config, items):
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    for item in items:
        relative = os.path.relpath(str(item.path), tests_dir)
        if relative.split(os.sep)[0] in _NUMERICAL_DIRS:
            item.add_marker(pytest.mark.numerical)
