import keras
import numpy as np

from tfcell.layers import centers as centers_lib
from tfcell.testing import test_case


def wen_reference(centers, features, ids, alpha):
    """Wen et al. Eq. 4, looping over centres and samples."""
    new = centers.copy()
    for j in range(centers.shape[0]):
        delta = np.zeros(centers.shape[1])
        n_j = 0
        for i in range(len(ids)):
            if ids[i] == j:
                delta += centers[j] - features[i]
                n_j += 1
        new[j] = centers[j] - alpha * delta / (1 + n_j)
    return new


class CentersTest(test_case.TestCase):
    def test_gather_and_shapes(self):
        layer = centers_lib.Centers(3)
        x = np.random.RandomState(0).normal(size=(4, 2)).astype("float32")
        ids = np.array([[0], [2], [2], [1]])
        out = layer(x, ids)
        self.assertEqual(tuple(out.shape), (4, 2))
        c = keras.ops.convert_to_numpy(layer.centers)
        self.assertAllClose(out, c[[0, 2, 2, 1]])
        self.assertEqual(layer.compute_output_shape((4, 2)), (4, 2))
        self.assertLen(layer.trainable_weights, 1)

    def test_symbolic(self):
        f = keras.Input((5,))
        y = keras.Input((), dtype="int32")
        out = centers_lib.Centers(4)(f, y)
        self.assertEqual(tuple(out.shape), (None, 5))

    def test_wen_update_matches_reference(self):
        layer = centers_lib.Centers(3, update_rule="wen", alpha=0.5)
        rng = np.random.RandomState(1)
        x = rng.normal(size=(5, 2)).astype("float32")
        ids = np.array([0, 0, 2, 0, 2])  # centre 1 absent: must not move
        layer.build((None, 2))
        before = keras.ops.convert_to_numpy(layer.centers).copy()
        out = layer(x, ids, training=True)
        self.assertAllClose(out, before[ids])  # loss uses pre-update centres
        after = keras.ops.convert_to_numpy(layer.centers)
        self.assertAllClose(after, wen_reference(before, x, ids, 0.5), op="reduction")
        self.assertAllClose(after[1], before[1])
        self.assertEmpty(layer.trainable_weights)
        # No update at inference.
        layer(x, ids, training=False)
        self.assertAllClose(layer.centers, after)

    def test_hand_checked_wen(self):
        layer = centers_lib.Centers(1, update_rule="wen", alpha=1.0, center_initializer="zeros")
        layer(np.array([[2.0], [4.0]], "float32"), np.array([0, 0]), training=True)
        # delta = ((0-2) + (0-4)) / 3 = -2 -> c = 2
        self.assertAllClose(layer.centers, [[2.0]])

    def test_gradient_mode_gradients(self):
        import tensorflow as tf

        layer = centers_lib.Centers(2)
        x = np.ones((3, 2), "float32")
        layer.build((None, 2))
        with tf.GradientTape() as tape:
            loss = keras.ops.sum(keras.ops.square(layer(x, np.array([0, 0, 1])) - x))
        g = tf.convert_to_tensor(tape.gradient(loss, layer.centers.value))
        self.assertAllFinite(g)
        self.assertGreater(float(np.abs(g).sum()), 0.0)

    def test_serialization(self):
        self.run_serialization_test(centers_lib.Centers(7, update_rule="wen", alpha=0.3))

    def test_jit_fit_with_centers(self):
        feats_in = keras.Input((3,))
        ids_in = keras.Input((), dtype="int32")
        h = keras.layers.Dense(2)(feats_in)
        c = centers_lib.Centers(2, update_rule="wen")(h, ids_in)
        model = keras.Model([feats_in, ids_in], keras.layers.Subtract()([h, c]))
        model.compile("sgd", "mse", jit_compile=True)
        x = np.random.rand(4, 3).astype("float32")
        model.fit([x, np.array([0, 1, 0, 1])], np.zeros((4, 2)), epochs=1, verbose=0)
        self.assertAllFinite(model.layers[-2].centers)

    def test_invalid_args(self):
        with self.assertRaisesRegex(ValueError, "num_centers"):
            centers_lib.Centers(0)
        with self.assertRaisesRegex(ValueError, "update_rule"):
            centers_lib.Centers(2, update_rule="ema")
        with self.assertRaisesRegex(ValueError, "alpha"):
            centers_lib.Centers(2, alpha=0.0)


def test_ids_outside_the_table_raise_instead_of_gathering_zeros():
    import numpy as np
    import pytest

    from tfcell import layers

    centers = layers.Centers(3)
    features = np.zeros((2, 4), "float32")
    centers(features, np.array([0, 2]))  # Builds; in range.
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        centers(features, np.array([0, 3]))
