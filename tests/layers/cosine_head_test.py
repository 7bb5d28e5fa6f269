"""Tests for tfcell.layers.CosineHead (cosines and A-Softmax scores) and class_scores."""

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


def ref_asoftmax(x, kernel, margin):
    """Loop reference: scores[i, j] = log softmax_k(||x_i|| * (psi_j if k == j else cos_k))[j]."""
    cos = ref_cosines(x, kernel)
    out = np.zeros_like(cos)
    for i in range(len(x)):
        r = np.linalg.norm(x[i])
        for j in range(cos.shape[1]):
            theta = np.arccos(np.clip(cos[i, j], -1 + 1e-7, 1 - 1e-7))
            k = np.floor(margin * theta / np.pi)
            psi = (-1) ** k * np.cos(margin * theta) - 2 * k
            logits = [r * (psi if c == j else cos[i, c]) for c in range(cos.shape[1])]
            out[i, j] = logits[j] - np.log(np.sum(np.exp(logits)))
    return out


class CosineHeadTest(testing.TestCase):
    def test_layer_basics(self):
        self.run_layer_test(layers.CosineHead, {"num_classes": 3}, (4, 5), (4, 3))
        self.run_layer_test(
            layers.CosineHead, {"num_classes": 3, "sphereface_margin": 4.0}, (4, 5), (4, 3)
        )

    def test_values(self):
        x = np.random.RandomState(0).normal(size=(4, 5)).astype("float32")
        layer = layers.CosineHead(3)
        out = layer(x).numpy()
        kernel = layer.kernel.numpy()
        self.assertEqual(kernel.shape, (5, 3))
        self.assertAllClose(out, ref_cosines(x, kernel), atol=1e-5)

    def test_asoftmax_scores(self):
        x = 3.0 * np.random.RandomState(0).normal(size=(6, 5)).astype("float32")
        layer = layers.CosineHead(3, sphereface_margin=4.0)
        out = layer(x).numpy()
        kernel = layer.kernel.numpy()
        self.assertEqual(out.shape, (6, 3))
        self.assertAllClose(out, ref_asoftmax(x, kernel, 4.0), rtol=1e-4, atol=1e-4)
        self.assertTrue(np.all(out <= 1e-6))
        # argmax is the margin-free argmax of the cosines.
        self.assertAllClose(np.argmax(out, -1), np.argmax(ref_cosines(x, kernel), -1))

    def test_hand_checked(self):
        layer = layers.CosineHead(2)
        layer.build((None, 2))
        layer.kernel.assign(np.array([[2.0, 0.0], [0.0, 3.0]], "float32"))
        # x = (3, 4): ||x|| = 5, cosines (3/5, 4/5).
        self.assertAllClose(layer(np.array([[3.0, 4.0]], "float32")), [[0.6, 0.8]])
        # A-Softmax, m = 4, x = (0, 2): cosines (0, 1), ||x|| = 2. Class 0: theta = pi/2,
        # psi = cos(2 pi) - 4 = -3, logits (-6, 2). Class 1: psi(0) = 1, logits (0, 2).
        head = layers.CosineHead(2, sphereface_margin=4.0)
        head.build((None, 2))
        head.kernel.assign(np.array([[2.0, 0.0], [0.0, 3.0]], "float32"))
        expected = [[-6.0 - np.logaddexp(-6.0, 2.0), 2.0 - np.logaddexp(0.0, 2.0)]]
        self.assertAllClose(head(np.array([[0.0, 2.0]], "float32")), expected, atol=1e-5)

    def test_degenerate_and_low_precision(self):
        for margin in (None, 4.0):
            layer = layers.CosineHead(3, sphereface_margin=margin)
            for value in (0.0, 1e6):
                x = tf.Variable(np.full((2, 4), value, "float32"))
                with tf.GradientTape() as tape:
                    out = layer(x)
                    total = keras.ops.sum(out)
                self.assertAllFinite(out)
                for grad in tape.gradient(total, [x, layer.kernel]):
                    self.assertAllFinite(grad)
            half = layers.CosineHead(3, sphereface_margin=margin, dtype="mixed_bfloat16")
            out = half(np.ones((2, 4), "float32"))
            self.assertEqual(keras.backend.standardize_dtype(out.dtype), "bfloat16")
            self.assertAllFinite(keras.ops.cast(out, "float32"))

    def test_predict_is_margin_free_argmax_and_accuracy_works(self):
        inputs = keras.Input((4,))
        outputs = layers.CosineHead(3, sphereface_margin=4.0)(inputs)
        model = keras.Model(inputs, outputs)
        model.compile(optimizer="sgd", loss=losses.SphereFaceLoss(scale=None), metrics=["accuracy"])
        rng = np.random.RandomState(1)
        x = rng.normal(size=(5, 4)).astype("float32")
        y = rng.randint(0, 3, 5)
        pred = model.predict(x, verbose=0)
        self.assertEqual(pred.shape, (5, 3))
        self.assertAllClose(
            np.argmax(pred, -1), np.argmax(ref_cosines(x, model.layers[-1].kernel.numpy()), -1)
        )
        _, accuracy = model.evaluate(x, y, verbose=0)
        self.assertAllClose(accuracy, np.mean(np.argmax(pred, -1) == y))

    def test_class_scores_is_deprecated_identity(self):
        out = np.arange(6.0).reshape(2, 3)
        with self.assertWarns(DeprecationWarning):
            self.assertAllClose(layers.class_scores(out, 3), out)

    def test_deprecated_norm_column(self):
        x = np.random.RandomState(0).normal(size=(4, 5)).astype("float32")
        with self.assertWarns(DeprecationWarning):
            layer = layers.CosineHead(3, return_norms=True)
        out = layer(x).numpy()
        self.assertEqual(out.shape, (4, 4))
        self.assertAllClose(out[:, :3], ref_cosines(x, layer.kernel.numpy()), atol=1e-5)
        self.assertAllClose(out[:, 3], np.linalg.norm(x, axis=1), rtol=1e-5)
        self.assertTrue(layer.get_config()["return_norms"])
        self.assertNotIn("return_norms", layers.CosineHead(3).get_config())

    def test_validation(self):
        with self.assertRaisesRegex(ValueError, "num_classes"):
            layers.CosineHead(0)
        with self.assertRaisesRegex(ValueError, "return_norms"):
            layers.CosineHead(3, return_norms=1)
        with self.assertRaisesRegex(ValueError, "exclude"):
            layers.CosineHead(3, return_norms=True, sphereface_margin=4.0)
        with self.assertRaisesRegex(ValueError, "sphereface_margin"):
            layers.CosineHead(3, sphereface_margin=0.0)
