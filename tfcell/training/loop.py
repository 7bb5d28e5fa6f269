"""`fit` and `predict` that work under every `tf.distribute` strategy,
`MultiWorkerMirroredStrategy` included.

Keras 3's `Model.fit` fails under `MultiWorkerMirroredStrategy`
(keras-team/keras#20585, open): before the first step it reduces a batch of
the distributed dataset with `strategy.reduce`, and the collective strategy
cannot convert that `PerReplica` value ("Attempt to convert a value
(PerReplica:{...}) to a Tensor", TF 2.21 / Keras 3.15 on two loopback
workers); `Model.evaluate` fails the same way. The model's own `train_step`
and `test_step` run fine inside `strategy.run`, and the optimizer all-reduces
the gradients there (as it does for `fit` under `MirroredStrategy`). So this
module keeps everything of `fit` that a method defines (its `train_step`, its
metrics, Keras callbacks, `History`) and replaces only the loop around it:

    train = strategy.experimental_distribute_dataset(x)   # each replica: its part
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics(); callbacks.on_epoch_begin(epoch)
        for batch in train:                                # all workers in lockstep
            strategy.run(model.train_step, args=(batch,))
        logs = model.get_metrics_result()                  # summed over ALL replicas
        logs |= {"val_" + k: v for k, v in evaluate(model, validation_data).items()}
        callbacks.on_epoch_end(epoch, logs)
        model.stop_training = from_chief(model.stop_training)

`fit` calls `Model.fit` unchanged under every other strategy, so the harness
and every trainer use one call for both. Every trainer of `tfcell.training`
(and any compiled model) trains this way, with the loss scaling of
HOUSE_STYLE: per-sample terms over the global batch, batch statistics divided
by the replica count.

Under `MultiWorkerMirroredStrategy`:
- Metrics in the epoch logs (and `History`) are over all workers: Keras's
  metric variables are `ON_READ` sums, read here outside `strategy.run`. The
  batch-level logs callbacks see are this worker's.
- Decisions (early stopping, `model.stop_training`) are the chief's,
  broadcast every epoch, so no worker waits forever in a collective.
- `predict` runs inference on this worker alone, over the whole input, in
  order (no collective): every worker gets the same scores.
- A final batch too small to give every replica an example is dropped (at
  most `replicas - 1` examples per epoch, logged once) instead of handing a
  replica an empty batch.

Example:
```python
strategy = tfcell.training.get_strategy()    # MultiWorkerMirroredStrategy from TF_CONFIG
with strategy.scope():
    model = tfcell.training.CORALTrainer(featurizer, classifier)
    model.compile(optimizer="adam")
history = tfcell.training.fit(model, train_dataset, epochs=5)   # same call on every worker
if tfcell.training.is_chief():
    model.save("model.keras")
```
"""

import json
import logging
import os

import keras
import numpy as np
import tensorflow as tf

__all__ = [
    "broadcast_from_chief",
    "evaluate",
    "fit",
    "is_chief",
    "is_multi_worker",
    "predict",
    "task_info",
]

_log = logging.getLogger(__name__)


# --------------------------------------------------------------------- cluster
def task_info():
    """`(task_type, task_index, cluster)` from `TF_CONFIG`; `(None, 0, {})` without it."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None, 0, {}
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"TF_CONFIG is not valid JSON ({error}); expected e.g. "
            '{"cluster": {"worker": ["host1:port", "host2:port"]}, '
            '"task": {"type": "worker", "index": 0}}.'
        ) from error
    task = config.get("task", {})
    return task.get("type"), int(task.get("index", 0)), config.get("cluster", {})


def is_chief():
    """Whether this process writes results: the `chief` task of `TF_CONFIG`, or
    worker 0 of a cluster without one, or any process without `TF_CONFIG`
    (TensorFlow's convention, as in `multi_worker_with_keras`)."""
    task_type, index, cluster = task_info()
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    return task_type == "worker" and index == 0 and "chief" not in cluster


def is_multi_worker(strategy=None):
    """Whether `strategy` (default: the current one) spans more than one worker."""
    strategy = strategy or tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    cluster = strategy.cluster_resolver.cluster_spec().as_dict()
    return len(cluster.get("worker", [])) + len(cluster.get("chief", [])) > 1


def broadcast_from_chief(value, strategy=None):
    """The chief's `value` on every worker (an all-reduce in which only the
    chief's first replica contributes); `value` unchanged on one worker.

    Args:
        value: a number, bool or array of numbers (same shape on every worker).
        strategy: the strategy (default: the current one).

    Returns:
        A float64 numpy array of `value`'s shape (a Python scalar for a scalar
        input); bools come back as 0.0 / 1.0.
    """
    strategy = strategy or tf.distribute.get_strategy()
    array = np.asarray(value, "float64")
    if not is_multi_worker(strategy):
        return array.item() if array.ndim == 0 else array
    contribution = tf.constant(array if is_chief() else np.zeros_like(array), tf.float32)

    def replica_fn():
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        first = tf.cast(tf.equal(replica, 0), tf.float32)
        return contribution * first

    @tf.function
    def run():
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(replica_fn), axis=None)

    out = np.asarray(run().numpy(), "float64")
    return out.item() if out.ndim == 0 else out


# ------------------------------------------------------------------ helpers
def _as_dataset(x, y, batch_size):
    if isinstance(x, tf.data.Dataset):
        if y is not None:
            raise ValueError("fit: pass labels inside the tf.data.Dataset, not as `y`.")
        return x
    if batch_size is None:
        raise ValueError(
            "fit/predict under MultiWorkerMirroredStrategy: pass a tf.data.Dataset of "
            "batches, or arrays with `batch_size` (the GLOBAL batch size)."
        )
    data = x if y is None else (x, y)
    return tf.data.Dataset.from_tensor_slices(data).batch(batch_size)


def _first_tensor(batch):
    return tf.nest.flatten(batch)[0]


def _local(value, strategy):
    """This worker's first replica's value of a (possibly per-replica) structure."""
    return tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], value)


def _drop_tiny_batches(dataset, replicas):
    """Keeps batches with at least one example per replica."""

    def big_enough(*batch):
        return tf.shape(_first_tensor(batch))[0] >= replicas

    return dataset.filter(big_enough)


class _Steps:
    """The compiled distributed train / test steps of one model."""

    def __init__(self, model, strategy):
        self.model, self.strategy = model, strategy
        # XLA as `compile(jit_compile=True)` asks ("auto" stays off: Keras turns
        # it off under tf.distribute too).
        jit = getattr(model, "jit_compile", False) is True

        @tf.function(reduce_retracing=True, jit_compile=jit)
        def train(batch):
            return strategy.run(model.train_step, args=(batch,))

        @tf.function(reduce_retracing=True, jit_compile=jit)
        def test(batch):
            return strategy.run(model.test_step, args=(batch,))

        self.train, self.test = train, test


def _metrics_logs(model, keys):
    """The model's metric results (over all replicas), restricted to `keys`
    (the names its step returned), as Python floats."""
    results = model.get_metrics_result()
    logs = {}
    for key in keys:
        if key in results:
            value = results[key]
            logs[key] = float(np.asarray(value)) if np.ndim(value) == 0 else np.asarray(value)
    return logs


def _distributed(dataset, strategy):
    dataset = _drop_tiny_batches(dataset, strategy.num_replicas_in_sync)
    return strategy.experimental_distribute_dataset(dataset)


def _run_test_loop(steps, dataset):
    model, strategy = steps.model, steps.strategy
    model.reset_metrics()
    keys = ()
    iterator = iter(_distributed(dataset, strategy))
    while True:
        optional = iterator.get_next_as_optional()
        if not bool(optional.has_value()):
            break
        keys = tuple(steps.test(optional.get_value()).keys())
    return _metrics_logs(model, keys)


# ------------------------------------------------------------------ public
def evaluate(model, x, y=None, batch_size=None):
    """`model.evaluate(...)` as a dict of metric results; under
    `MultiWorkerMirroredStrategy` a distributed `test_step` loop over all
    workers (every worker must call it)."""
    strategy = model.distribute_strategy
    if not is_multi_worker(strategy):
        return model.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True)
    return _run_test_loop(_Steps(model, strategy), _as_dataset(x, y, batch_size))


def predict(model, x, batch_size=None, verbose=0):
    """`model.predict(x)`; under `MultiWorkerMirroredStrategy` this worker runs
    the whole input through the model alone, in order, with no collective (a
    worker does not wait for the others; all get the same scores).

    Args:
        model: a built Keras model.
        x: a `tf.data.Dataset` of input batches (or `(inputs, ...)` tuples, of
            which the first item is used), or an array with `batch_size`.
        batch_size: for arrays; default 32.
        verbose: passed to `Model.predict`.

    Returns:
        The outputs as numpy arrays, concatenated over batches.
    """
    if not is_multi_worker(model.distribute_strategy):
        return model.predict(x, batch_size=batch_size, verbose=verbose)
    if not isinstance(x, tf.data.Dataset):
        x = tf.data.Dataset.from_tensor_slices(x).batch(batch_size or 32)

    forward = tf.function(lambda inputs: model(inputs, training=False), reduce_retracing=True)
    outputs = []
    for batch in x:
        if isinstance(batch, tuple):
            batch = batch[0]
        outputs.append(tf.nest.map_structure(lambda t: np.asarray(t), forward(batch)))
    if not outputs:
        raise ValueError("predict: the input yielded no batch.")
    return tf.nest.map_structure(lambda *parts: np.concatenate(parts, axis=0), *outputs)


def fit(
    model,
    x=None,
    y=None,
    *,
    batch_size=None,
    epochs=1,
    verbose="auto",
    callbacks=None,
    validation_data=None,
    shuffle=True,
    initial_epoch=0,
    steps_per_epoch=None,
    force_loop=False,
    **kwargs,
):
    """`model.fit(...)` under every strategy; a `strategy.run` loop under
    `MultiWorkerMirroredStrategy` (see the module docstring).

    Args:
        model: a compiled Keras model (a `tfcell.training` trainer or any
            model with `compile(loss=...)`), built under the strategy's scope.
        x, y, batch_size: as `Model.fit`; for the loop, `x` is a
            `tf.data.Dataset` of GLOBAL batches (or arrays with `batch_size`).
            Under several workers the dataset is split between them by
            `tf.data` auto-sharding (by file for TFRecord shards, otherwise by
            element), so give every worker the same dataset.
        epochs, verbose, callbacks, validation_data, initial_epoch,
            steps_per_epoch: as `Model.fit` (with `steps_per_epoch`, one
            iterator continues across epochs, as in `fit`).
        shuffle: as `Model.fit`; the loop never shuffles (shuffle the dataset).
        force_loop: use the loop under any strategy (tests compare it with
            `Model.fit`).
        **kwargs: further `Model.fit` arguments; the loop accepts none.

    Returns:
        The `keras.callbacks.History` (its `history` holds the epoch logs).
    """
    strategy = model.distribute_strategy
    if not (force_loop or is_multi_worker(strategy)):
        return model.fit(
            x, y, batch_size=batch_size, epochs=epochs, verbose=verbose, callbacks=callbacks,
            validation_data=validation_data, shuffle=shuffle, initial_epoch=initial_epoch,
            steps_per_epoch=steps_per_epoch, **kwargs,
        )  # fmt: skip
    if kwargs:
        raise ValueError(
            f"tfcell.training.fit under {type(strategy).__name__}: the strategy.run loop "
            f"does not support {sorted(kwargs)}; put sample or class weights in the "
            "dataset / the trainer (e.g. ERMTrainer(class_weights=...))."
        )
    dataset = _as_dataset(x, y, batch_size)
    chief = is_chief()
    multi_worker = is_multi_worker(strategy)
    replicas = strategy.num_replicas_in_sync
    if verbose == "auto":
        verbose = 1
    verbose = verbose if chief else 0
    steps = _Steps(model, strategy)
    callback_list = keras.callbacks.CallbackList(
        callbacks, add_history=True, add_progbar=verbose != 0, model=model, verbose=verbose,
        epochs=epochs, steps=steps_per_epoch,
    )  # fmt: skip
    train = _distributed(dataset, strategy)
    validation = None
    if validation_data is not None:
        validation = (
            validation_data
            if isinstance(validation_data, tf.data.Dataset)
            else _as_dataset(*validation_data, batch_size=batch_size)
        )
    _log.info(
        "fit: strategy.run loop under %s, %d replica(s), %s",
        type(strategy).__name__, replicas, "chief" if chief else "worker",
    )  # fmt: skip
    model.stop_training = False
    callback_list.on_train_begin()
    iterator = iter(train) if steps_per_epoch else None
    infinite = bool(dataset.cardinality() == tf.data.INFINITE_CARDINALITY)
    known_steps = None  # Batches per epoch, counted in the first full epoch.
    logs = {}
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        epoch_iterator = iterator if steps_per_epoch else iter(train)
        state = {"step": 0, "keys": ()}

        def run_step(batch, state=state):
            callback_list.on_train_batch_begin(state["step"])
            step_logs = _local(steps.train(batch), strategy)
            state["keys"] = tuple(step_logs.keys())
            callback_list.on_train_batch_end(state["step"], step_logs)
            state["step"] += 1
            # Several workers stop together, at the end of the epoch.
            return model.stop_training and not multi_worker

        # A step's `get_next_as_optional().has_value()` is a collective across
        # workers (about 20 ms over loopback); it is needed only where the end
        # of the data is unknown. Known: an infinite dataset under
        # steps_per_epoch, and every epoch after the first (same batch count).
        fixed = steps_per_epoch if (steps_per_epoch and infinite) else None
        if fixed is None and not steps_per_epoch and known_steps is not None:
            fixed = known_steps
        stopped = False
        if fixed is not None:
            for _ in range(fixed):
                try:
                    batch = next(epoch_iterator)
                except (StopIteration, tf.errors.OutOfRangeError):
                    raise ValueError(
                        f"fit: epoch {epoch + 1} yielded {state['step']} batches, epoch 1 "
                        f"{known_steps}; the loop needs the same number of batches every "
                        "epoch (a dataset of fixed size, reshuffled)."
                    ) from None
                if run_step(batch):
                    stopped = True
                    break
        if not stopped and (fixed is None or not steps_per_epoch):
            # Unknown end, or (after `fixed` steps) confirming the end: one collective.
            while steps_per_epoch is None or state["step"] < steps_per_epoch:
                optional = epoch_iterator.get_next_as_optional()
                if not bool(optional.has_value()):
                    if steps_per_epoch:
                        _log.warning(
                            "fit: the dataset ended after %d of %d steps of epoch %d; "
                            "repeat it (dataset.repeat()) for steps_per_epoch.",
                            state["step"], steps_per_epoch, epoch + 1,
                        )  # fmt: skip
                    break
                if fixed is not None:
                    _log.warning(
                        "fit: epoch %d has more batches than epoch 1 (%d); counting again.",
                        epoch + 1, fixed,
                    )  # fmt: skip
                    fixed = None
                if run_step(optional.get_value()):
                    break
            if not steps_per_epoch and (known_steps is None or fixed is None):
                known_steps = state["step"]
        step, keys = state["step"], state["keys"]
        if step == 0:
            raise ValueError(
                f"fit: the training dataset yielded no batch in epoch {epoch + 1} (with "
                f"{replicas} replicas, each batch needs at least {replicas} examples)."
            )
        logs = _metrics_logs(model, keys)
        if validation is not None:
            val_logs = _run_test_loop(steps, validation)
            logs.update({f"val_{k}": v for k, v in val_logs.items()})
        callback_list.on_epoch_end(epoch, logs)
        # The chief decides (early stopping, NaN): every worker stops together.
        model.stop_training = bool(broadcast_from_chief(float(model.stop_training), strategy))
        if model.stop_training:
            break
    callback_list.on_train_end(logs)
    return model.history
