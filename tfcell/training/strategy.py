"""Picks the `tf.distribute` strategy for the devices at hand."""

import json
import logging
import os

import tensorflow as tf

__all__ = ["get_strategy"]

_log = logging.getLogger(__name__)


def _num_workers():
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 1
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"TF_CONFIG is not valid JSON ({error}); expected e.g. "
            '{"cluster": {"worker": ["host1:port", "host2:port"]}, '
            '"task": {"type": "worker", "index": 0}}.'
        ) from error
    return len(config.get("cluster", {}).get("worker", [])) or 1


def get_strategy():
    """Returns the distribution strategy for this machine.

    - `TF_CONFIG` naming more than one worker: `MultiWorkerMirroredStrategy`.
    - More than one GPU: `MirroredStrategy` over all of them.
    - One GPU: `OneDeviceStrategy("/gpu:0")`.
    - No GPU: the default strategy (`tf.distribute.get_strategy()`).

    Build and compile under `strategy.scope()`; give `fit` the GLOBAL batch
    size (each of the `strategy.num_replicas_in_sync` replicas gets a part).

    Returns:
        A `tf.distribute.Strategy`.

    Note:
        Keras 3 does not support `MultiWorkerMirroredStrategy`: `Model.fit`
        fails under it (keras-team/keras#20585, open; the Keras author's
        answer there: "Keras 3 does not work with
        tf.distribute.MultiWorkerMirroredStrategy"). The strategy is still
        returned, with a warning, for a custom training loop; for `fit`, use
        one machine with `MirroredStrategy` (or Keras 3 on JAX with
        `keras.distribution` across machines).
    """
    workers = _num_workers()
    if workers > 1:
        _log.warning(
            "TF_CONFIG names %d workers: MultiWorkerMirroredStrategy. Keras 3 fit "
            "fails under it (keras-team/keras#20585); use a custom loop.",
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
