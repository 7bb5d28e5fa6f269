"""`tfcell.training.fit`'s strategy.run loop equals `Model.fit` (one device and
two logical CPUs), drives Keras callbacks, and the cluster helpers read
TF_CONFIG. The two-process tests are in multi_worker_test.py."""

import json
import os
from unittest import mock

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcell import training
from tfcell.testing import multi_worker_program as program
from tfcell.testing import two_cpu_strategy


def _fit_both(case, strategy_fn, validation=False, epochs=2):
    """Weights and histories of Model.fit and of the loop, from the same start."""
    out = []
    for force_loop in (False, True):
        with strategy_fn().scope():
            model = program.build(case)
        data = program.dataset(case)
        history = training.fit(
            model, data, epochs=epochs, verbose=0, shuffle=False,
            validation_data=data if validation else None, force_loop=force_loop,
        )  # fmt: skip
        out.append((model.get_weights(), history.history))
    return out


def _assert_same(test_case, first, second, atol=1e-6):
    (w_fit, h_fit), (w_loop, h_loop) = first, second
    for a, b in zip(w_fit, w_loop):
        np.testing.assert_allclose(a, b, atol=atol, rtol=atol)
    assert sorted(h_fit) == sorted(h_loop)
    for key in h_fit:
        np.testing.assert_allclose(h_fit[key], h_loop[key], atol=1e-5, rtol=1e-5, err_msg=key)


@pytest.mark.parametrize("case", ["per_sample", "coral"])
def test_loop_equals_fit_on_one_device(case):
    fit, loop = _fit_both(case, tf.distribute.get_strategy, validation=True)
    _assert_same(None, fit, loop)
    assert "val_loss" in loop[1] and len(loop[1]["loss"]) == 2


@pytest.mark.parametrize("case", ["per_sample", "coral"])
def test_loop_equals_fit_under_two_cpu_mirrored_strategy(case):
    fit, loop = _fit_both(case, two_cpu_strategy)
    _assert_same(None, fit, loop)


def test_the_weights_move_and_the_comparison_can_fail():
    # The loop is not trivially equal to fit: one epoch less gives other weights.
    with tf.distribute.get_strategy().scope():
        one = program.build("per_sample")
    training.fit(one, program.dataset("per_sample"), epochs=1, verbose=0, force_loop=True)
    (w_two, _), _ = _fit_both("per_sample", tf.distribute.get_strategy)
    assert max(float(np.abs(a - b).max()) for a, b in zip(one.get_weights(), w_two)) > 1e-4


class _Recorder(keras.callbacks.Callback):
    def __init__(self, stop_after=None):
        super().__init__()
        self.events, self.stop_after = [], stop_after

    def on_train_begin(self, logs=None):
        self.events.append("train_begin")

    def on_epoch_begin(self, epoch, logs=None):
        self.events.append(f"epoch_begin {epoch}")

    def on_train_batch_end(self, batch, logs=None):
        self.events.append(f"batch {batch}")
        assert "loss" in logs

    def on_epoch_end(self, epoch, logs=None):
        self.events.append(f"epoch_end {epoch} {sorted(logs)}")
        if self.stop_after is not None and epoch >= self.stop_after:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        self.events.append("train_end")


def test_callbacks_see_fit_order_and_stop_training():
    with tf.distribute.get_strategy().scope():
        model = program.build("per_sample")
    recorder = _Recorder(stop_after=1)
    data = program.dataset("per_sample", num_examples=32)  # 2 batches of 16
    history = training.fit(model, data, epochs=5, verbose=0, callbacks=[recorder], force_loop=True)
    assert recorder.events == [
        "train_begin",
        "epoch_begin 0", "batch 0", "batch 1", "epoch_end 0 ['accuracy', 'loss']",
        "epoch_begin 1", "batch 0", "batch 1", "epoch_end 1 ['accuracy', 'loss']",
        "train_end",
    ]  # fmt: skip
    assert len(history.history["loss"]) == 2


def test_steps_per_epoch_continues_one_iterator():
    # 3 batches in all, 2 steps per epoch over a repeated dataset: epoch 2 starts
    # at batch 3, as in Model.fit. Compare with fit.
    data = program.dataset("per_sample", num_examples=48).repeat()
    weights = []
    for force_loop in (False, True):
        with tf.distribute.get_strategy().scope():
            model = program.build("per_sample")
        training.fit(model, data, epochs=2, steps_per_epoch=2, verbose=0, force_loop=force_loop)
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_epoch_variable_callback_under_the_loop():
    from tfcell.losses import ExclusiveCrossentropyLoss

    loss = ExclusiveCrossentropyLoss()
    seen = []

    class Watch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append(float(loss.epoch.numpy()))

    model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Conv2D(2, 1)])
    model.compile(optimizer="sgd", loss=loss)
    x = np.random.RandomState(0).rand(8, 4, 4, 3).astype("float32")
    y = (x[..., 0] > 0.5).astype("int32")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    training.fit(
        model, data, epochs=3, verbose=0, force_loop=True,
        callbacks=[training.EpochVariableCallback(loss), Watch()],
    )  # fmt: skip
    assert seen == [0.0, 1.0, 2.0]


def test_tiny_final_batches_are_dropped_not_given_to_an_empty_replica():
    # 33 examples, batch 16: the last batch has 1 example, fewer than the two
    # replicas; it is dropped, so nothing is NaN.
    with two_cpu_strategy().scope():
        model = program.build("coral")
    data = program.dataset("coral", num_examples=33)
    history = training.fit(model, data, epochs=1, verbose=0, force_loop=True)
    assert np.isfinite(history.history["loss"]).all()
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_predict_equals_model_predict():
    with tf.distribute.get_strategy().scope():
        model = program.build("per_sample")
    images, _, _ = program.data(20)
    expected = model.predict(images, verbose=0, batch_size=8)
    np.testing.assert_allclose(training.predict(model, images, batch_size=8), expected, atol=1e-6)


def test_the_loop_refuses_what_it_cannot_do():
    with tf.distribute.get_strategy().scope():
        model = program.build("per_sample")
    data = program.dataset("per_sample")
    with pytest.raises(ValueError, match="class_weight"):
        training.fit(model, data, epochs=1, class_weight={0: 1.0}, force_loop=True, verbose=0)
    with pytest.raises(ValueError, match="no batch"):
        training.fit(model, data.take(0), epochs=1, force_loop=True, verbose=0)
    images, labels, _ = program.data(8)
    with pytest.raises(ValueError, match="batch_size"):
        training.fit(model, images, labels, epochs=1, force_loop=True, verbose=0)


# ------------------------------------------------------------- TF_CONFIG
@pytest.mark.parametrize(
    "tf_config, chief",
    [
        (None, True),
        ({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}, True),
        ({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}, False),
        (
            {"cluster": {"chief": ["c:0"], "worker": ["a:1"]}, "task": {"type": "worker", "index": 0}},
            False,
        ),
        ({"cluster": {"chief": ["c:0"], "worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}, True),
    ],
)  # fmt: skip
def test_is_chief_follows_tensorflow_convention(tf_config, chief):
    env = {} if tf_config is None else {"TF_CONFIG": json.dumps(tf_config)}
    with mock.patch.dict(os.environ, env, clear=False):
        if tf_config is None:
            os.environ.pop("TF_CONFIG", None)
        assert training.is_chief() is chief


def test_bad_tf_config_is_a_clear_error():
    with mock.patch.dict(os.environ, {"TF_CONFIG": "{nope"}):
        with pytest.raises(ValueError, match="TF_CONFIG is not valid JSON"):
            training.task_info()


def test_one_worker_needs_no_collective():
    assert not training.is_multi_worker()
    assert not training.is_multi_worker(two_cpu_strategy())
    assert training.broadcast_from_chief(3.0) == 3.0
    np.testing.assert_array_equal(training.broadcast_from_chief([1, 0, 1]), [1.0, 0.0, 1.0])


def _compiled(jit_compile):
    with tf.distribute.get_strategy().scope():
        model = program.build("per_sample")
        model.compile(
            optimizer=keras.optimizers.SGD(0.05),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=jit_compile,
        )
    return model


def test_the_loop_compiles_with_xla_when_the_model_asks():
    from tfcell.training import loop

    batch = next(iter(program.dataset("per_sample")))
    xla = loop._Steps(_compiled(True), tf.distribute.get_strategy())
    assert "HloModule" in xla.train.experimental_get_compiler_ir(batch)(stage="hlo")
    plain = loop._Steps(_compiled(False), tf.distribute.get_strategy())
    with pytest.raises(ValueError, match="jit_compile=True"):
        plain.train.experimental_get_compiler_ir(batch)(stage="hlo")
    model = _compiled(True)
    history = training.fit(
        model, program.dataset("per_sample"), epochs=1, verbose=0, force_loop=True
    )
    assert np.isfinite(history.history["loss"]).all()


def _varying_dataset(sizes):
    """Epoch k yields sizes[k] batches of 16 (a generator re-run every epoch)."""
    images, labels, _ = program.data(16 * max(sizes))
    calls = {"epoch": 0}

    def generate():
        n = sizes[min(calls["epoch"], len(sizes) - 1)]
        calls["epoch"] += 1
        for i in range(n):
            yield images[16 * i : 16 * (i + 1)], labels[16 * i : 16 * (i + 1)]

    spec = (tf.TensorSpec((None, 8, 8, 3), tf.float32), tf.TensorSpec((None,), tf.int32))
    return tf.data.Dataset.from_generator(generate, output_signature=spec)


def test_later_epochs_run_the_counted_batches_and_check_the_end():
    # After epoch 1 the loop runs the counted number of batches without a
    # per-step end check; a larger epoch is still trained in full, a smaller
    # one is a clear error.
    with tf.distribute.get_strategy().scope():
        model = program.build("per_sample")
    recorder = _Recorder()
    training.fit(
        model, _varying_dataset([2, 3]), epochs=2, verbose=0, callbacks=[recorder], force_loop=True
    )
    assert recorder.events.count("batch 2") == 1  # Epoch 2: three batches.
    with tf.distribute.get_strategy().scope():
        model = program.build("per_sample")
    with pytest.raises(ValueError, match="same number of batches every epoch"):
        training.fit(model, _varying_dataset([3, 2]), epochs=2, verbose=0, force_loop=True)
