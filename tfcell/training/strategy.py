"""Picks the `tf.distribute` strategy for the devices at hand."""

import logging

import tensorflow as tf

__all__ = ["get_strategy", "num_workers"]

_log = logging.getLogger(__name__)


def num_workers():
    """The number of tasks (chief and workers) `TF_CONFIG` names; 1 without it."""
    from tfcell.training import loop  # TF_CONFIG is parsed in one place.

    cluster = loop.task_info()[2]
    return len(cluster.get("worker", [])) + len(cluster.get("chief", [])) or 1


def get_strategy():
    """Returns the distribution strategy for this machine.

    - `TF_CONFIG` naming more than one task (chief and workers):
      `MultiWorkerMirroredStrategy`.
    - More than one GPU: `MirroredStrategy` over all of them.
    - One GPU: `OneDeviceStrategy("/gpu:0")`.
    - No GPU: the default strategy (`tf.distribute.get_strategy()`).

    Build and compile under `strategy.scope()`; give `fit` the GLOBAL batch
    size (each of the `strategy.num_replicas_in_sync` replicas gets a part).

    Returns:
        A `tf.distribute.Strategy`.

    Note:
        Keras 3's `Model.fit` and `Model.evaluate` fail under
        `MultiWorkerMirroredStrategy` (keras-team/keras#20585, open). Train
        with `tfcell.training.fit` (and predict with `tfcell.training.predict`):
        it calls `Model.fit` under every other strategy and runs the model's
        own `train_step` in a `strategy.run` loop under this one
        (`tfcell/training/loop.py`); the experiment harness always does.
    """
    workers = num_workers()
    if workers > 1:
        _log.info(
            "TF_CONFIG names %d tasks: MultiWorkerMirroredStrategy; train with "
            "tfcell.training.fit (Keras 3 Model.fit fails under it, keras-team/keras#20585).",
            workers,
        )
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        _log.info("MirroredStrategy over %d GPUs.", len(gpus))
        return tf.distribute.MirroredStrategy([gpu.name for gpu in gpus])
    if len(gpus) == 1:
        _log.info("OneDeviceStrategy on %s.", gpus[0].name)
        return tf.distribute.OneDeviceStrategy(gpus[0].name)
    _log.info("No GPU: the default strategy (one CPU device).")
    return tf.distribute.get_strategy()
