"""Tests for tfcell.layers.CosineHead and class_scores."""

import keras
import numpy as np
import tensorflow as tf

from tfcell import layers, losses, testing


def ref_cosines(x, kernel):
    out = np.zeros((len(x), kernel.shape[1]))
    for i in range(len(x)):
        for j in range(kernel.shape[1]):
            w = kernel[:, j]
            out[i, j] = np.dot(x[i], w) / (np.linalg.norm(x[i]) * np.linalg.norm(w))
    return out


class CosineHeadTest(testing.TestCase):
    def test_layer_basics(self):
        self.run_layer_test(layers.CosineHead, {"num_classes": 3}, (4, 5), (4, 3))
        self.run_layer_test(
            layers.CosineHead, {"num_classes": 3, "return_norms": True}, (4, 5), (4, 4)
        )

    def test_values_and_norm_column(self):
        x = np.random.RandomState(0).normal(size=(4, 5)).astype("float32")
        layer = layers.CosineHead(3, return_norms=True)
        out = layer(x).numpy()
        kernel = layer.kernel.numpy()
        self.assertEqual(kernel.shape, (5, 3))
        self.assertAllClose(out[:, :3], ref_cosines(x, kernel), atol=1e-5)
        self.assertAllClose(out[:, 3], np.linalg.norm(x, axis=1), rtol=1e-5)
        self.assertAllClose(layers.class_scores(out, 3), out[:, :3])
        plain = layers.CosineHead(3)
        plain.build((None, 5))
        plain.kernel.assign(kernel)
        self.assertAllClose(plain(x), out[:, :3], atol=1e-6)
        self.assertAllClose(layers.class_scores(plain(x), 3), plain(x))

    def test_hand_checked(self):
        layer = layers.CosineHead(2, return_norms=True)
        layer.build((None, 2))
        layer.kernel.assign(np.array([[2.0, 0.0], [0.0, 3.0]], "float32"))
        # x = (3, 4): ||x|| = 5, cosines (3/5, 4/5).
        self.assertAllClose(layer(np.array([[3.0, 4.0]], "float32")), [[0.6, 0.8, 5.0]], atol=1e-6)

    def test_degenerate_and_low_precision(self):
        layer = layers.CosineHead(3, return_norms=True)
        for value in (0.0, 1e6):
            x = tf.Variable(np.full((2, 4), value, "float32"))
            with tf.GradientTape() as tape:
                out = layer(x)
                total = keras.ops.sum(out)
            self.assertAllFinite(out)
            for grad in tape.gradient(total, [x, layer.kernel]):
                self.assertAllFinite(grad)
        half = layers.CosineHead(3, dtype="mixed_bfloat16")
        out = half(np.ones((2, 4), "float32"))
        self.assertEqual(keras.backend.standardize_dtype(out.dtype), "bfloat16")
        self.assertAllFinite(keras.ops.cast(out, "float32"))

    def test_predict_is_margin_free_argmax(self):
        inputs = keras.Input((4,))
        outputs = layers.CosineHead(3, return_norms=True)(inputs)
        model = keras.Model(inputs, outputs)
        model.compile(optimizer="sgd", loss=losses.SphereFaceLoss(margin=4.0, scale=None))
        x = np.random.RandomState(1).normal(size=(5, 4)).astype("float32")
        pred = model.predict(x, verbose=0)
        self.assertEqual(pred.shape, (5, 4))
        scores = layers.class_scores(pred, 3)
        self.assertAllClose(
            np.argmax(scores, -1), np.argmax(ref_cosines(x, model.layers[-1].kernel.numpy()), -1)
        )

    def test_validation(self):
        with self.assertRaisesRegex(ValueError, "num_classes"):
            layers.CosineHead(0)
        with self.assertRaisesRegex(ValueError, "return_norms"):
            layers.CosineHead(3, return_norms=1)
