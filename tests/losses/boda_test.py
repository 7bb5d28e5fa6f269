"""BoDA against a NumPy loop over samples and centroids."""

import numpy as np
import tensorflow as tf

import tfcell
from tfcell import testing


def np_boda(z, y, d, mu, cd, cl, counts, nu=0.5, temperature=1.0):
    """The written formula, one sample and one centroid at a time."""
    total, num_pos = 0.0, 0
    for i in range(len(z)):
        n_i = max(counts[d[i], y[i]], 1)
        logits = []
        for k in range(len(mu)):
            n_k = max(counts[cd[k], cl[k]], 1)
            dist = np.sqrt(np.sum((np.asarray(mu[k], "float64") - z[i]) ** 2))
            logits.append(-dist / n_i * (n_k / n_i) ** nu / temperature)
        others = [k for k in range(len(mu)) if not (cl[k] == y[i] and cd[k] == d[i])]
        log_norm = np.log(sum(np.exp(logits[k]) for k in others)) if others else 0.0
        for k in range(len(mu)):
            if cl[k] == y[i] and cd[k] != d[i]:
                total += logits[k] - log_norm
                num_pos += 1
    return -total / max(num_pos, 1)


def _table(counts):
    return [np.asarray(v) for v in tfcell.losses.boda_centroid_table(counts)]


def _call(z, y, d, mu, counts, **kwargs):
    cd, cl = _table(counts)
    return tfcell.losses.boda(z, y, d, mu, cd, cl, counts, **kwargs)


class BoDATest(testing.TestCase):
    def test_centroid_table_lists_existing_pairs_domain_major(self):
        cd, cl = tfcell.losses.boda_centroid_table([[3, 0, 1], [0, 2, 0]])
        self.assertEqual((cd, cl), ([0, 0, 1], [0, 2, 1]))
        with self.assertRaisesRegex(ValueError, "no positive entry"):
            tfcell.losses.boda_centroid_table([[0, 0]])

    def test_hand_checked(self):
        # 1-D: centroids (d, c): (0,0)=0, (0,1)=10, (1,0)=1, (1,1)=11; equal
        # counts, so no calibration. Sample z=0.5, y=0, d=0: logits of the
        # others -9.5, -0.5, -10.5; the positive is (1, 0) at -0.5.
        counts = np.ones((2, 2), "int64")
        mu = np.array([[0.0], [10.0], [1.0], [11.0]])
        value = _call([[0.5]], [0], [0], mu, counts)
        self.assertAllClose(value, np.log1p(np.exp(-9.0) + np.exp(-10.0)), rtol=1e-4)

    def test_matches_numpy_loop_with_calibration(self):
        rng = np.random.RandomState(0)
        counts = np.array([[4, 1, 0], [2, 3, 5], [0, 6, 1]])
        cd, cl = _table(counts)
        mu = rng.normal(size=(len(cd), 4))
        z = rng.normal(size=(8, 4))
        y = np.array([0, 1, 1, 2, 1, 0, 2, 1])
        d = np.array([0, 0, 1, 1, 2, 1, 2, 0])
        for nu, temperature in ((0.5, 1.0), (1.0, 0.5), (0.0, 2.0)):
            value = tfcell.losses.boda(z, y, d, mu, cd, cl, counts, nu=nu, temperature=temperature)
            expected = np_boda(z, y, d, mu, cd, cl, counts, nu, temperature)
            self.assertAllClose(value, expected, op="reduction")

    def test_gradient_finite_and_nonzero(self):
        rng = np.random.RandomState(1)
        counts = np.array([[2, 3], [4, 1]])
        mu = tf.constant(rng.normal(size=(4, 3)), "float32")
        cd, cl = _table(counts)
        z = tf.Variable(rng.normal(size=(4, 3)).astype("float32"))
        with tf.GradientTape() as tape:
            value = tfcell.losses.boda(z, [0, 1, 0, 1], [0, 0, 1, 1], mu, cd, cl, counts)
        grad = tape.gradient(value, z)
        self.assertAllFinite(grad)
        self.assertGreater(float(np.abs(grad).sum()), 0.0)

    def test_degenerate_batches_finite(self):
        counts = np.array([[2, 3], [4, 0]])  # class 1 exists in domain 0 only
        mu = np.array([[0.0, 0.0], [1.0, 1.0], [0.5, -0.5]])
        cases = {
            "one sample": ([[0.2, 0.1]], [0], [0]),
            "one domain": ([[0.2, 0.1], [0.3, 0.3]], [0, 1], [0, 0]),
            "class in one domain": ([[0.2, 0.1]], [1], [0]),
            "feature on a centroid": ([[0.5, -0.5], [0.0, 0.0]], [0, 0], [0, 0]),
            "identical features": (np.ones((3, 2)), [0, 0, 1], [0, 1, 0]),
        }
        for name, (z, y, d) in cases.items():
            with self.subTest(case=name):
                cd, cl = _table(counts)
                z = tf.Variable(np.asarray(z, "float32"))
                with tf.GradientTape() as tape:
                    value = tfcell.losses.boda(z, y, d, mu, cd, cl, counts)
                self.assertAllFinite(value)
                self.assertAllFinite(tape.gradient(value, z))
                expected = np_boda(z.numpy(), np.array(y), np.array(d), mu, cd, cl, counts)
                self.assertAllClose(value, expected, op="reduction")
        # No positive pair: 0.
        self.assertAllClose(_call([[0.2, 0.1]], [1], [0], mu, counts), 0.0)

    def test_only_own_centroid(self):
        counts = np.array([[1]])
        value = _call([[0.2]], [0], [0], np.array([[0.0]]), counts)
        self.assertAllClose(value, 0.0)

    def test_graph_unknown_batch_and_xla(self):
        counts = np.array([[2, 3], [4, 1]])
        cd, cl = _table(counts)
        rng = np.random.RandomState(2)
        mu = rng.normal(size=(4, 3)).astype("float32")
        z = rng.normal(size=(4, 3)).astype("float32")
        y, d = np.array([0, 1, 0, 1], "int32"), np.array([0, 0, 1, 1], "int32")
        signature = [
            tf.TensorSpec((None, 3), tf.float32),
            tf.TensorSpec((None,), tf.int32),
            tf.TensorSpec((None,), tf.int32),
        ]
        fn = tf.function(
            lambda z, y, d: tfcell.losses.boda(z, y, d, mu, cd, cl, counts),
            input_signature=signature,
            jit_compile=True,
        )
        self.assertAllClose(fn(z, y, d), np_boda(z, y, d, mu, cd, cl, counts), rtol=1e-5)

    def test_validates_arguments(self):
        with self.assertRaisesRegex(ValueError, "nu"):
            _call([[0.0]], [0], [0], [[0.0]], np.ones((1, 1)), nu=-1.0)
        with self.assertRaisesRegex(ValueError, "temperature"):
            _call([[0.0]], [0], [0], [[0.0]], np.ones((1, 1)), temperature=0.0)
