"""get_strategy: default / one device / mirrored / multi-worker selection."""

import json
import os
from unittest import mock

import tensorflow as tf

import tfcell
from tfcell import testing
from tfcell.training import strategy as strategy_module


class _Device:
    def __init__(self, name):
        self.name = name


class GetStrategyTest(testing.TestCase):
    def setUp(self):
        super().setUp()
        self.enter_context(mock.patch.dict("os.environ", {}, clear=False))
        os.environ.pop("TF_CONFIG", None)

    def _gpus(self, n):
        devices = [_Device(f"/device:GPU:{i}") for i in range(n)]
        return mock.patch.object(
            tf.config,
            "list_logical_devices",
            side_effect=lambda kind=None: devices if kind == "GPU" else [],
        )

    def test_cpu_only_gives_default_strategy(self):
        with self._gpus(0):
            strategy = tfcell.training.get_strategy()
        self.assertIs(strategy, tf.distribute.get_strategy())
        self.assertEqual(strategy.num_replicas_in_sync, 1)

    def test_one_gpu_gives_one_device_strategy(self):
        with self._gpus(1), mock.patch.object(tf.distribute, "OneDeviceStrategy") as one:
            tfcell.training.get_strategy()
        one.assert_called_once_with("/device:GPU:0")

    def test_several_gpus_give_mirrored_strategy(self):
        with self._gpus(2), mock.patch.object(tf.distribute, "MirroredStrategy") as mirrored:
            tfcell.training.get_strategy()
        mirrored.assert_called_once_with(["/device:GPU:0", "/device:GPU:1"])

    def test_tf_config_with_two_workers_gives_multi_worker(self):
        os.environ["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}
        )
        with mock.patch.object(tf.distribute, "MultiWorkerMirroredStrategy") as mwms:
            with self.assertLogs(strategy_module._log, "INFO") as logs:
                tfcell.training.get_strategy()
        mwms.assert_called_once_with()
        self.assertIn("tfcell.training.fit", logs.output[0])

    def test_tf_config_with_chief_and_worker_gives_multi_worker(self):
        os.environ["TF_CONFIG"] = json.dumps(
            {
                "cluster": {"chief": ["a:1"], "worker": ["b:2"]},
                "task": {"type": "chief", "index": 0},
            }
        )
        with mock.patch.object(tf.distribute, "MultiWorkerMirroredStrategy") as mwms:
            tfcell.training.get_strategy()
        mwms.assert_called_once_with()

    def test_tf_config_with_one_worker_is_ignored(self):
        os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": ["a:1"]}})
        with self._gpus(0):
            self.assertIs(tfcell.training.get_strategy(), tf.distribute.get_strategy())

    def test_bad_tf_config(self):
        os.environ["TF_CONFIG"] = "{not json"
        with self.assertRaisesRegex(ValueError, "TF_CONFIG"):
            tfcell.training.get_strategy()

    def test_docstring_mentions_keras_issue(self):
        self.assertIn("keras-team/keras#20585", tfcell.training.get_strategy.__doc__)
