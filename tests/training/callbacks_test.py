import keras
import numpy as np
import tensorflow as tf

from tfcell import training
from tfcell.data import pipeline
from tfcell.losses import exclusive
from tfcell.models import backbones
from tfcell.testing import test_case
from tfcell.training import callbacks


class Recorder(keras.callbacks.Callback):
    def __init__(self, loss):
        super().__init__()
        self.loss = loss
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(float(keras.ops.convert_to_numpy(self.loss.epoch)))


def zero_model():
    # Zero kernel: logits all 0, so every unannotated element passes the
    # confidence gate and only the annealed sampling threshold decides.
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, kernel_initializer="zeros")])
    return model


class EpochVariableCallbackTest(test_case.TestCase):
    def test_annealing_changes_under_fit(self):
        x = np.random.RandomState(0).rand(64, 2).astype("float32")
        y = np.zeros((64,), "int32")  # all unannotated
        loss = exclusive.ExclusiveCrossentropyLoss(seed=0)
        model = zero_model()
        model.compile(keras.optimizers.SGD(0.0), loss, jit_compile=True)
        recorder = Recorder(loss)
        cb = callbacks.EpochVariableCallback(loss)
        early = model.fit(x, y, batch_size=64, epochs=2, verbose=0, callbacks=[cb, recorder])
        late = model.fit(
            x, y, batch_size=64, initial_epoch=200, epochs=201, verbose=0, callbacks=[cb, recorder]
        )
        self.assertEqual(recorder.epochs, [0.0, 1.0, 200.0])
        self.assertAllClose(early.history["loss"], [0.0, 0.0])
        # ~half the elements sampled at epoch 200: 0.2 * (2/3)^0.1 * log 3 * ~0.5
        self.assertGreater(late.history["loss"][0], 0.05)
        self.assertLess(late.history["loss"][0], 0.17)

    def test_finds_compiled_loss_and_variable(self):
        loss = exclusive.ExclusiveCrossentropyLoss()
        model = zero_model()
        model.compile("sgd", loss)
        x, y = np.zeros((4, 2), "float32"), np.zeros((4,), "int32")
        model.fit(
            x,
            y,
            initial_epoch=3,
            epochs=4,
            verbose=0,
            callbacks=[callbacks.EpochVariableCallback()],
        )
        self.assertAllClose(loss.epoch, 3.0)
        variable = keras.Variable(0.0, trainable=False)
        model.fit(
            x,
            y,
            initial_epoch=5,
            epochs=6,
            verbose=0,
            callbacks=[callbacks.EpochVariableCallback(variable)],
        )
        self.assertAllClose(variable, 5.0)

    def test_no_variable_raises(self):
        model = zero_model()
        model.compile("sgd", "mse")
        with self.assertRaisesRegex(ValueError, "epoch variable"):
            model.fit(
                np.zeros((2, 2)),
                np.zeros((2, 3)),
                verbose=0,
                callbacks=[callbacks.EpochVariableCallback()],
            )


def _bn_model():
    # BatchNorm straight on the inputs: its batch statistics are those of the data.
    return keras.Sequential(
        [keras.Input((3,)), keras.layers.BatchNormalization(momentum=0.9), keras.layers.Dense(2)]
    )


def _batches(x, y, batch_size):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)


class StatisticsRecorder(keras.callbacks.Callback):
    """Records the BatchNorm moving mean the validation pass sees."""

    def __init__(self):
        super().__init__()
        self.means = []

    def on_test_begin(self, logs=None):
        bn = [v for v in self.model.non_trainable_variables if "moving_mean" in v.path]
        self.means.append(keras.ops.convert_to_numpy(bn[0]).copy())


class PreciseBatchNormCallbackTest(test_case.TestCase):
    def _data(self, n=64):
        rng = np.random.RandomState(0)
        x = (rng.randn(n, 3) * [1.0, 2.0, 3.0] + [5.0, -1.0, 0.5]).astype("float32")
        return x, rng.randint(0, 2, n).astype("int32")

    def test_statistics_are_the_mean_of_batch_statistics(self):
        x, y = self._data()
        model = _bn_model()
        model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
        data = _batches(x, y, 16)
        cb = callbacks.PreciseBatchNormCallback(data, num_batches=3)
        recorder = StatisticsRecorder()
        model.fit(data, validation_data=data, epochs=2, verbose=0, callbacks=[cb, recorder])
        # Loop reference: the plain mean over the first 3 batches of the (biased)
        # per-batch mean and variance, what BatchNorm normalises a batch with.
        means, variances = [], []
        for k in range(3):
            batch = x[16 * k : 16 * (k + 1)].astype("float64")
            means.append(batch.mean(0))
            variances.append(((batch - batch.mean(0)) ** 2).mean(0))
        bn = model.layers[0]
        self.assertAllClose(bn.moving_mean, np.mean(means, 0), atol=1e-5)
        self.assertAllClose(bn.moving_variance, np.mean(variances, 0), atol=1e-5)
        # Validation (val_loss, early stopping) saw the re-estimated statistics,
        # and fit's training momentum is restored.
        self.assertLen(recorder.means, 2)
        self.assertAllClose(recorder.means[-1], np.mean(means, 0), atol=1e-5)
        self.assertEqual(bn.momentum, 0.9)

    def test_inference_matches_batch_statistics_on_the_estimation_batch(self):
        x, y = self._data(32)
        model = keras.Sequential(
            [
                keras.Input((8, 8, 3)),
                keras.layers.Conv2D(4, 3, use_bias=False),
                keras.layers.BatchNormalization(),
                keras.layers.ReLU(),
                keras.layers.Conv2D(4, 3, use_bias=False),
                keras.layers.BatchNormalization(),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(2),
            ]
        )
        images = np.random.RandomState(1).uniform(0, 1, (32, 8, 8, 3)).astype("float32")
        model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
        data = _batches(images, y, 32)
        cb = callbacks.PreciseBatchNormCallback(data, num_batches=1)
        model.fit(data, epochs=3, verbose=0, callbacks=[cb])
        self.assertAllClose(
            model(images, training=False), model(images, training=True), atol=1e-3, rtol=1e-3
        )

    def test_trainer_with_dict_batches_and_nested_backbone(self):
        images = np.random.RandomState(0).uniform(0, 255, (16, 16, 16, 3)).astype("float32")
        labels = np.arange(16) % 3
        featurizer = backbones.small_cnn((16, 16, 3), widths=(4, 8), norm="batch")
        classifier = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
        trainer = training.ERMTrainer(featurizer, classifier)
        trainer.compile(optimizer=keras.optimizers.Adam(0.01))
        data = pipeline.from_arrays(images, labels, batch_size=16, shuffle=False, output="dict")
        cb = callbacks.PreciseBatchNormCallback(data, num_batches=1)
        trainer.fit(data, validation_data=data, epochs=2, verbose=0, callbacks=[cb])
        self.assertAllClose(
            trainer(images, training=False), trainer(images, training=True), atol=1e-3, rtol=1e-3
        )
        self.assertEqual(featurizer.get_layer("bn0").momentum, 0.9)

    def test_mirrored_strategy(self):
        # Under MirroredStrategy the estimate runs in cross-replica context and
        # every replica's copy of the statistics gets it.
        x, y = self._data()
        with test_case.two_cpu_strategy().scope():
            model = _bn_model()
            model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
        cb = callbacks.PreciseBatchNormCallback(_batches(x, y, 64), num_batches=1)
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[cb])
        expected = x.astype("float64").mean(0)
        moving_mean = model.layers[0].moving_mean.value
        for replica_value in getattr(moving_mean, "values", [moving_mean]):
            self.assertAllClose(replica_value, expected, atol=1e-5)

    def test_no_batch_norm_and_frozen_batch_norm_are_left_alone(self):
        x, y = self._data()
        model = _bn_model()
        model.layers[0].trainable = False
        model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
        cb = callbacks.PreciseBatchNormCallback(_batches(x, y, 16))
        model.fit(x, y, epochs=1, verbose=0, callbacks=[cb])
        self.assertAllClose(model.layers[0].moving_mean, np.zeros(3))
        self.assertEqual(cb.update(), 0)

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "num_batches must be a positive int"):
            callbacks.PreciseBatchNormCallback([], num_batches=0)
        x, y = self._data()
        model = _bn_model()
        model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
        cb = callbacks.PreciseBatchNormCallback(_batches(x, y, 16).take(0))
        with self.assertRaisesRegex(ValueError, "yielded no batch"):
            model.fit(x, y, epochs=1, verbose=0, callbacks=[cb])
        self.assertEqual(model.layers[0].momentum, 0.9)
        # A failed estimate leaves the statistics as they were.
        before = keras.ops.convert_to_numpy(model.layers[0].moving_mean).copy()
        cb = callbacks.PreciseBatchNormCallback([{"images": x}])
        cb.set_model(model)
        with self.assertRaisesRegex(ValueError, "'image' key"):
            cb.update()
        self.assertAllClose(model.layers[0].moving_mean, before)


class ScriptedLoss(keras.callbacks.Callback):
    """Placed before TwoStageSchedule: replaces logs["loss"] with a scripted
    sequence and records, per epoch, the learning rate used and the weights
    reached (before the schedule acts on them)."""

    def __init__(self, losses):
        super().__init__()
        self.losses = losses
        self.learning_rates = []
        self.weights = []

    def on_epoch_begin(self, epoch, logs=None):
        lr = self.model.optimizer.learning_rate
        self.learning_rates.append(float(keras.ops.convert_to_numpy(lr)))

    def on_epoch_end(self, epoch, logs=None):
        logs["loss"] = self.losses[epoch]
        self.weights.append([w.copy() for w in self.model.get_weights()])


def regression_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    return model


def regression_data():
    rng = np.random.RandomState(0)
    x = rng.rand(16, 3).astype("float32")
    return x, x @ np.array([[1.0], [-2.0], [3.0]], "float32") + 5.0


def assert_weights_equal(actual, expected):
    for a, e in zip(actual, expected):
        np.testing.assert_array_equal(a, e)


class TwoStageScheduleTest(test_case.TestCase):
    def test_switches_to_stage2_from_best_stage1_weights(self):
        # Stage 1: best at epoch 2, then 2 epochs without improvement (patience 2)
        # -> stage 2 from epoch 5 at 1e-5, resumed from epoch 2's weights. Stage 2:
        # best at epoch 6, patience out at epoch 8 -> stop, end with epoch 6's weights.
        losses = [5.0, 4.0, 3.0, 3.5, 3.2, 2.9, 2.8, 2.85, 3.0, 1.0, 1.0]
        model = regression_model()
        x, y = regression_data()
        script = ScriptedLoss(losses)
        schedule = callbacks.TwoStageSchedule(patience=2)
        history = model.fit(
            x, y, batch_size=16, epochs=len(losses), verbose=0, callbacks=[script, schedule]
        )
        self.assertAllClose(script.learning_rates, [1e-3] * 5 + [1e-5] * 4)
        self.assertEqual(history.history["stage"], [1] * 5 + [2] * 4)
        self.assertAllClose(history.history["learning_rate"], [1e-3] * 5 + [1e-5] * 4)
        self.assertEqual(schedule.stage_start, {1: 0, 2: 5})
        self.assertEqual(schedule.stage_end, {1: 4, 2: 8})
        self.assertEqual(schedule.best_epoch, {1: 2, 2: 6})
        self.assertEqual(schedule.best_value, {1: 3.0, 2: 2.8})

        # The weights really moved after the best stage-1 epoch (lr 1e-3) ...
        def distance(a, b):
            return max(np.abs(u - v).max() for u, v in zip(a, b))

        self.assertGreater(distance(script.weights[4], script.weights[2]), 1e-2)
        # ... and stage 2's first epoch started from epoch 2's weights: one SGD
        # step at 1e-5 from them (~1e-4 here), not from epoch 4's.
        self.assertLess(distance(script.weights[5], script.weights[2]), 1e-3)
        self.assertGreater(distance(script.weights[5], script.weights[4]), 1e-2)
        assert_weights_equal(model.get_weights(), script.weights[6])

    def test_epochs_end_in_stage1_restores_best(self):
        losses = [3.0, 2.0, 2.5]
        model = regression_model()
        x, y = regression_data()
        script = ScriptedLoss(losses)
        schedule = callbacks.TwoStageSchedule(stage1_lr=1e-2, patience=5)
        history = model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[script, schedule])
        self.assertEqual(history.history["stage"], [1, 1, 1])
        self.assertAllClose(script.learning_rates, [1e-2] * 3)
        self.assertEqual(schedule.stage_start, {1: 0})
        assert_weights_equal(model.get_weights(), script.weights[1])

    def test_min_delta_mode_and_no_stop(self):
        # mode="max" on an accuracy; improvements below min_delta do not count.
        accuracies = [0.5, 0.6, 0.61, 0.62, 0.7, 0.65, 0.66, 0.64]
        model = regression_model()
        x, y = regression_data()
        script = ScriptedLoss(accuracies)
        schedule = callbacks.TwoStageSchedule(
            monitor="loss", mode="max", patience=2, min_delta=0.05, stop_after_stage2=False
        )
        history = model.fit(x, y, batch_size=16, epochs=8, verbose=0, callbacks=[script, schedule])
        self.assertEqual(history.history["stage"], [1, 1, 1, 1, 2, 2, 2, 2])
        self.assertEqual(schedule.best_epoch, {1: 1, 2: 4})
        self.assertEqual(schedule.stage_end, {1: 3, 2: 7})
        assert_weights_equal(model.get_weights(), script.weights[4])

    def test_stage1_budget_ends_stage1_while_the_loss_still_improves(self):
        # The loss falls every epoch; stage1_max_epochs=3 ends stage 1 after epoch 2
        # anyway, resuming stage 2 from the best stage-1 weights (epoch 2's).
        losses = [5.0, 4.0, 3.0, 2.0, 1.5, 1.4]
        model = regression_model()
        x, y = regression_data()
        script = ScriptedLoss(losses)
        schedule = callbacks.TwoStageSchedule(patience=5, stage1_max_epochs=3)
        history = model.fit(x, y, batch_size=16, epochs=6, verbose=0, callbacks=[script, schedule])
        self.assertEqual(history.history["stage"], [1, 1, 1, 2, 2, 2])
        self.assertAllClose(script.learning_rates, [1e-3] * 3 + [1e-5] * 3)
        self.assertEqual(schedule.stage_start, {1: 0, 2: 3})
        self.assertEqual(schedule.best_epoch, {1: 2, 2: 5})
        assert_weights_equal(model.get_weights(), script.weights[5])
        with self.assertRaisesRegex(ValueError, "stage1_max_epochs"):
            callbacks.TwoStageSchedule(stage1_max_epochs=0)

    def test_real_training_loss_decreases_in_stage1(self):
        model = regression_model()
        x, y = regression_data()
        schedule = callbacks.TwoStageSchedule(stage1_lr=0.05, stage2_lr=1e-4, patience=1)
        history = model.fit(x, y, batch_size=16, epochs=4, verbose=0, callbacks=[schedule])
        self.assertEqual(history.history["stage"], [1, 1, 1, 1])
        self.assertLess(history.history["loss"][-1], history.history["loss"][0])

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "stage2_lr"):
            callbacks.TwoStageSchedule(stage2_lr=0.0)
        with self.assertRaisesRegex(ValueError, "patience"):
            callbacks.TwoStageSchedule(patience=0)
        with self.assertRaisesRegex(ValueError, "mode"):
            callbacks.TwoStageSchedule(mode="up")
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, 10, 0.5)
        model.compile(optimizer=keras.optimizers.SGD(schedule), loss="mse")
        x, y = regression_data()
        with self.assertRaisesRegex(ValueError, "LearningRateSchedule"):
            model.fit(x, y, epochs=1, verbose=0, callbacks=[callbacks.TwoStageSchedule()])
        self.assertIs(training.TwoStageSchedule, callbacks.TwoStageSchedule)
