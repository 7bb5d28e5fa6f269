"""GradientReversal: identity forward, -factor * grad backward, settable factor."""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

import tfcell
from tfcell import testing


class GradientReversalTest(testing.TestCase):
    def test_layer_basics(self):
        self.run_layer_test(tfcell.layers.GradientReversal, {"factor": 0.5}, (2, 3), (2, 3))

    def test_forward_identity_backward_reversed(self):
        layer = tfcell.layers.GradientReversal(factor=2.0)
        x = tf.constant(np.arange(6.0).reshape(2, 3), "float32")
        upstream = tf.constant([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * upstream)
        self.assertAllClose(y, x)
        self.assertAllClose(tape.gradient(loss, x), -2.0 * upstream.numpy())
        layer.factor_variable.assign(0.25)
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.function(layer)(x) * upstream)
        self.assertAllClose(tape.gradient(loss, x), -0.25 * upstream.numpy())

    def test_factor_is_non_trainable_and_float16_works(self):
        layer = tfcell.layers.GradientReversal(factor=1.0, dtype="mixed_float16")
        x = tf.constant([[1.0, -2.0]], "float16")
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x))
        grad = tape.gradient(loss, x)
        self.assertEqual(grad.dtype, tf.float16)
        self.assertAllClose(grad, [[-1.0, -1.0]])
        self.assertEqual(layer.trainable_weights, [])
        self.assertLen(layer.non_trainable_weights, 1)

    def test_factor_changed_mid_training(self):
        # w -> GRL -> loss = w * x with x = 1: the reversed SGD step is
        # w += lr * factor. Factor 1 at step 0, 3 from step 1 (a callback).
        inputs = keras.Input((1,))
        dense = keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")
        reversal = tfcell.layers.GradientReversal(factor=1.0)
        model = keras.Model(inputs, reversal(dense(inputs)))
        model.compile(
            optimizer=keras.optimizers.SGD(0.1),
            loss=lambda y_true, y_pred: ops.mean(y_pred, axis=-1),
        )

        class SetFactor(keras.callbacks.Callback):
            def on_train_batch_begin(self, batch, logs=None):
                if batch == 1:
                    reversal.factor_variable.assign(3.0)

        x, y = np.ones((2, 1), "float32"), np.zeros((2, 1), "float32")
        model.fit(x, y, batch_size=1, epochs=1, shuffle=False, verbose=0, callbacks=[SetFactor()])
        self.assertAllClose(dense.kernel, [[1.0 + 0.1 * 1.0 + 0.1 * 3.0]], op="reduction")

    def test_saving(self):
        inputs = keras.Input((2,))
        outputs = keras.layers.Dense(2)(tfcell.layers.GradientReversal(0.3)(inputs))
        model = keras.Model(inputs, outputs)
        revived = self.run_model_saving_test(model, np.ones((2, 2), "float32"))
        layer = [x for x in revived.layers if isinstance(x, tfcell.layers.GradientReversal)][0]
        self.assertAllClose(layer.factor_variable, 0.3)
