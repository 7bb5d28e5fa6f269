"""Tests for tfcell.layers.GaussianAffinity."""

import keras
import numpy as np
import tensorflow as tf

from tfcell import layers, losses, testing


def ref_affinity(features, centers, sigma):
    out = np.zeros((len(features), centers.shape[0]))
    for i, f in enumerate(features):
        for j in range(centers.shape[0]):
            out[i, j] = max(np.exp(-np.sum((f - w) ** 2) / sigma) for w in centers[j])
    return out


def ref_diversity(centers):
    flat = centers.reshape(-1, centers.shape[-1]).astype("float64")
    g = [
        np.sum((flat[a] - flat[b]) ** 2) for a in range(len(flat)) for b in range(a + 1, len(flat))
    ]
    return float(np.mean((np.array(g) - np.mean(g)) ** 2))


class GaussianAffinityTest(testing.TestCase):
    def test_layer_basics(self):
        self.run_layer_test(
            layers.GaussianAffinity,
            {"num_classes": 3, "sigma": 2.0, "num_centers": 2, "diversity_weight": 0.5},
            input_shape=(4, 5),
            expected_output_shape=(4, 3),
        )

    def test_values_and_regulariser(self):
        layer = layers.GaussianAffinity(3, sigma=2.0, num_centers=2, diversity_weight=0.5)
        x = np.random.RandomState(0).normal(size=(4, 5)).astype("float32")
        out = layer(x)
        centers = layer.centers.numpy()
        self.assertEqual(centers.shape, (3, 2, 5))
        self.assertAllClose(out, ref_affinity(x, centers, 2.0), op="reduction")
        self.assertLen(layer.losses, 1)
        self.assertAllClose(layer.losses[0], 0.5 * ref_diversity(centers), rtol=1e-5)
        self.assertAllClose(
            layer.losses[0], 0.5 * losses.prototype_diversity(layer.centers), op="reduction"
        )

    def test_hand_checked(self):
        layer = layers.GaussianAffinity(2, sigma=2.0)
        layer.build((None, 2))
        layer.centers.assign(np.array([[[0.0, 0.0]], [[1.0, 1.0]]], "float32"))
        # f = (1, 0): squared distances 1 and 1 -> exp(-1/2) for both classes.
        self.assertAllClose(layer(np.array([[1.0, 0.0]], "float32")), [[np.exp(-0.5)] * 2])
        # Two prototypes: G = 2, one pair, mu = 2, R = 0.
        self.assertAllClose(layer.losses[0], 0.0)

    def test_regulariser_in_model_losses_and_off_switch(self):
        inputs = keras.Input((3,))
        outputs = layers.GaussianAffinity(4, sigma=1.0, num_centers=2)(inputs)
        model = keras.Model(inputs, outputs)
        model(np.zeros((2, 3), "float32"))
        self.assertLen(model.losses, 1)
        quiet = layers.GaussianAffinity(4, sigma=1.0, diversity_weight=0.0)
        quiet(np.zeros((2, 3), "float32"))
        self.assertEmpty(quiet.losses)

    def test_low_precision_and_degenerate(self):
        layer = layers.GaussianAffinity(3, sigma=130.0, dtype="mixed_float16")
        out = layer(np.full((2, 300), 100.0, "float32"))  # squared distances ~3e6
        self.assertEqual(keras.backend.standardize_dtype(out.dtype), "float16")
        self.assertAllFinite(keras.ops.cast(out, "float32"))
        layer = layers.GaussianAffinity(3, sigma=1.0, num_centers=2)
        x = tf.Variable(np.ones((3, 4), "float32"))  # identical samples
        with tf.GradientTape() as tape:
            value = keras.ops.sum(layer(x)) + keras.ops.sum(layer.losses)
        grads = tape.gradient(value, [x, layer.centers])
        for grad in grads:
            self.assertAllFinite(grad)

    def test_validation(self):
        with self.assertRaisesRegex(ValueError, "sigma"):
            layers.GaussianAffinity(3, sigma=0.0)
        with self.assertRaisesRegex(ValueError, "num_centers"):
            layers.GaussianAffinity(3, sigma=1.0, num_centers=0)
        with self.assertRaisesRegex(ValueError, "num_classes"):
            layers.GaussianAffinity(2.5, sigma=1.0)
        with self.assertRaisesRegex(ValueError, "diversity_weight"):
            layers.GaussianAffinity(3, sigma=1.0, diversity_weight=-1.0)
