import keras
import numpy as np

from tfcell.losses import exclusive
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
        self.assertAllClose(early.history["loss"], [0.0, 0.0], atol=1e-6)
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
