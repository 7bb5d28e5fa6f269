"""CORAL, MMD, the AE-CFE domain loss and the pairwise helper vs NumPy loops."""

import itertools

import numpy as np
import tensorflow as tf

import tfcell
from tfcell import testing

GAMMAS = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)


# ------------------------------------------------------------ NumPy references
def np_mean_cov(x):
    x = np.asarray(x, "float64")
    n = len(x)
    mean = x.sum(0) / max(n, 1)
    cov = np.zeros((x.shape[1], x.shape[1]))
    for row in x:  # one outer product per sample, divided by (n - 1)
        cov += np.outer(row - mean, row - mean)
    return mean, cov / max(n - 1, 1)


def np_coral(a, b):
    mean_a, cov_a = np_mean_cov(a)
    mean_b, cov_b = np_mean_cov(b)
    return np.mean((mean_a - mean_b) ** 2) + np.mean((cov_a - cov_b) ** 2)


def np_kernel(x, y, gammas):
    d = max(float(np.sum((np.asarray(x, "float64") - y) ** 2)), 1e-30)
    return sum(np.exp(-g * d) for g in gammas)


def np_mmd(a, b, gammas=GAMMAS):
    def mean_k(x, y):
        return np.mean([np_kernel(u, v, gammas) for u in x for v in y])

    return mean_k(a, a) + mean_k(b, b) - 2 * mean_k(a, b)


def np_softmax_rows(m):
    e = np.exp(m - m.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def np_aecfe(s, t):
    mean_s, cov_s = np_mean_cov(s)
    mean_t, cov_t = np_mean_cov(t)
    p, q = np_softmax_rows(cov_s), np_softmax_rows(cov_t)
    kl_pq = np.mean(
        [p[i, j] * np.log(p[i, j] / q[i, j]) for i in range(len(p)) for j in range(len(p))]
    )
    kl_qp = np.mean(
        [q[i, j] * np.log(q[i, j] / p[i, j]) for i in range(len(p)) for j in range(len(p))]
    )
    return np.mean((mean_t - mean_s) ** 2) + 0.5 * (kl_pq + kl_qp)


def np_pairwise(features, domains, num_domains, fn, min_samples=1):
    values = []
    for a, b in itertools.combinations(range(num_domains), 2):
        x_a, x_b = features[domains == a], features[domains == b]
        if len(x_a) >= min_samples and len(x_b) >= min_samples and len(x_a) and len(x_b):
            values.append(fn(x_a, x_b))
    return np.mean(values) if values else 0.0


def _grad(fn, x):
    x = tf.Variable(np.asarray(x, "float32"))
    with tf.GradientTape() as tape:
        value = fn(x)
    return value, tape.gradient(value, x)


class CoralTest(testing.TestCase):
    def test_hand_checked(self):
        a = np.array([[0.0, 0.0], [2.0, 2.0]])  # mean (1, 1), cov [[2, 2], [2, 2]]
        b = np.array([[1.0, 1.0], [3.0, 3.0]])  # mean (2, 2), same cov
        self.assertAllClose(tfcell.losses.coral(a, b), 1.0)
        c = np.array([[1.0, 1.0], [1.0, 1.0]])  # mean (1, 1), cov 0
        self.assertAllClose(tfcell.losses.coral(a, c), 4.0)

    def test_matches_numpy_loops(self):
        rng = np.random.RandomState(0)
        a, b = rng.normal(size=(5, 3)), rng.normal(1.0, 2.0, size=(7, 3))
        self.assertAllClose(tfcell.losses.coral(a, b), np_coral(a, b), op="reduction")

    def test_masks_select_rows(self):
        rng = np.random.RandomState(1)
        x = rng.normal(size=(6, 3))
        mask_a = np.array([1, 1, 1, 0, 0, 0])
        value = tfcell.losses.coral(x, x, mask_a=mask_a, mask_b=1 - mask_a)
        self.assertAllClose(value, np_coral(x[:3], x[3:]), op="reduction")

    def test_gradient_finite_and_nonzero(self):
        rng = np.random.RandomState(2)
        b = tf.constant(rng.normal(size=(4, 3)), "float32")
        value, grad = _grad(lambda x: tfcell.losses.coral(x, b), rng.normal(size=(5, 3)))
        self.assertAllFinite(grad)
        self.assertGreater(float(np.abs(grad).sum()), 0.0)

    def test_one_sample_and_identical_features_are_finite(self):
        b = tf.constant([[0.0, 1.0], [1.0, 0.0]])
        for x in ([[1.0, 2.0]], [[1.0, 1.0], [1.0, 1.0]]):
            value, grad = _grad(lambda v: tfcell.losses.coral(v, b), x)
            self.assertAllFinite(value)
            self.assertAllFinite(grad)
        # Identical sets: zero penalty, zero gradient.
        value, grad = _grad(
            lambda v: tfcell.losses.coral(v, tf.identity(v)), [[1.0, 2.0], [3.0, 0.0]]
        )
        self.assertAllClose(value, 0.0)
        self.assertAllFinite(grad)


class MMDTest(testing.TestCase):
    def test_hand_checked(self):
        # k(a, a) = k(b, b) = exp(-1e-30) = 1, k(a, b) = exp(-1): 2 - 2 / e.
        value = tfcell.losses.mmd([[0.0]], [[1.0]], gammas=(1.0,))
        self.assertAllClose(value, 2.0 - 2.0 * np.exp(-1.0))

    def test_matches_numpy_loops(self):
        rng = np.random.RandomState(0)
        a, b = rng.normal(size=(4, 3)) * 0.3, rng.normal(0.5, 0.3, size=(6, 3))
        self.assertAllClose(tfcell.losses.mmd(a, b), np_mmd(a, b), rtol=1e-4, atol=1e-5)
        self.assertAllClose(
            tfcell.losses.mmd(a, b, gammas=(0.5, 2.0)),
            np_mmd(a, b, (0.5, 2.0)),
            rtol=1e-4,
            atol=1e-5,
        )

    def test_gradients_finite_including_identical_rows(self):
        rng = np.random.RandomState(1)
        b = tf.constant(rng.normal(size=(3, 2)) * 0.3, "float32")
        value, grad = _grad(lambda x: tfcell.losses.mmd(x, b), rng.normal(size=(4, 2)) * 0.3)
        self.assertAllFinite(grad)
        self.assertGreater(float(np.abs(grad).sum()), 0.0)
        value, grad = _grad(lambda x: tfcell.losses.mmd(x, b), np.ones((3, 2)))
        self.assertAllFinite(value)
        self.assertAllFinite(grad)

    def test_rejects_empty_gammas(self):
        with self.assertRaisesRegex(ValueError, "gammas"):
            tfcell.losses.mmd([[0.0]], [[1.0]], gammas=())


class AECFEDomainLossTest(testing.TestCase):
    def test_hand_checked(self):
        s = np.array([[0.0, 0.0], [2.0, 2.0]])  # mean (1, 1); cov rows uniform
        t = np.array([[1.0, 2.0], [1.0, 4.0]])  # mean (1, 3); cov [[0, 0], [0, 2]]
        q1 = np.array([1.0, np.exp(2.0)]) / (1.0 + np.exp(2.0))  # softmax([0, 2])
        kl_pq = np.sum(0.5 * np.log(0.5 / q1)) / 4.0
        kl_qp = np.sum(q1 * np.log(q1 / 0.5)) / 4.0
        expected = 2.0 + 0.5 * (kl_pq + kl_qp)  # mean((1-1)^2, (3-1)^2) = 2
        self.assertAllClose(tfcell.losses.aecfe_domain_loss(s, t), expected, rtol=1e-5)
        self.assertAllClose(expected, 2.0952, atol=1e-4)

    def test_matches_numpy_loops_and_is_symmetric(self):
        rng = np.random.RandomState(0)
        s, t = rng.normal(size=(6, 4)), rng.normal(0.3, 1.5, size=(5, 4))
        value = tfcell.losses.aecfe_domain_loss(s, t)
        self.assertAllClose(value, np_aecfe(s, t), op="reduction")
        self.assertAllClose(tfcell.losses.aecfe_domain_loss(t, s), value, op="reduction")

    def test_multi_target_sums_over_present_targets(self):
        rng = np.random.RandomState(1)
        z = rng.normal(size=(9, 3))
        d = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
        expected = np_aecfe(z[d == 0], z[d == 1]) + np_aecfe(z[d == 0], z[d == 2])
        value = tfcell.losses.aecfe_multi_domain_loss(z, d, num_domains=4)  # domain 3 absent
        self.assertAllClose(value, expected, op="reduction")
        # Source absent: 0.
        self.assertAllClose(tfcell.losses.aecfe_multi_domain_loss(z[3:], d[3:], 3), 0.0)

    def test_degenerate_batches_finite(self):
        d = tf.constant([0, 1, 1])
        for x in ([[1.0, 2.0], [0.0, 1.0], [2.0, 0.0]], np.ones((3, 2))):
            value, grad = _grad(lambda v: tfcell.losses.aecfe_multi_domain_loss(v, d, 2), x)
            self.assertAllFinite(value)
            self.assertAllFinite(grad)


class PairwiseDomainPenaltyTest(testing.TestCase):
    def _check(self, features, domains, num_domains, tf_fn, np_fn, min_samples=1):
        value = tfcell.losses.pairwise_domain_penalty(
            features, domains, num_domains, penalty_fn=tf_fn, min_samples=min_samples
        )
        expected = np_pairwise(features, domains, num_domains, np_fn, min_samples)
        self.assertAllClose(value, expected, rtol=1e-4, atol=1e-5)

    def test_matches_numpy_loops(self):
        rng = np.random.RandomState(0)
        z = rng.normal(size=(10, 3)) * 0.5
        d = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
        self._check(z, d, 3, tfcell.losses.coral, np_coral)
        self._check(z, d, 3, tfcell.losses.mmd, np_mmd)
        self._check(z, d, 3, tfcell.losses.aecfe_domain_loss, np_aecfe)

    def test_hand_checked_two_pairs(self):
        # Domains 0 and 1 as in CoralTest (penalty 1), domain 2 absent: one pair.
        z = np.array([[0.0, 0.0], [2.0, 2.0], [1.0, 1.0], [3.0, 3.0]])
        d = np.array([0, 0, 1, 1])
        self.assertAllClose(tfcell.losses.pairwise_domain_penalty(z, d, 3), 1.0)

    def test_absent_and_single_sample_domains(self):
        rng = np.random.RandomState(1)
        z = rng.normal(size=(6, 3))
        d = np.array([0, 0, 0, 2, 2, 3])  # domain 1 absent, domain 3 has one sample
        self._check(z, d, 4, tfcell.losses.coral, np_coral)
        self._check(z, d, 4, tfcell.losses.coral, np_coral, min_samples=2)
        self._check(z, d, 4, tfcell.losses.mmd, np_mmd)
        value, grad = _grad(
            lambda v: tfcell.losses.pairwise_domain_penalty(v, d, 4, min_samples=2), z
        )
        self.assertAllFinite(grad)
        self.assertGreater(float(np.abs(grad).sum()), 0.0)

    def test_degenerate_batches_give_finite_values_and_gradients(self):
        cases = {
            "one domain": (np.random.RandomState(0).normal(size=(4, 2)), [1, 1, 1, 1]),
            "one sample": ([[0.5, -1.0]], [0]),
            "identical": (np.ones((4, 2)), [0, 0, 1, 1]),
            "one sample per domain": ([[0.0, 1.0], [1.0, 0.0]], [0, 1]),
        }
        for fn in (tfcell.losses.coral, tfcell.losses.mmd, tfcell.losses.aecfe_domain_loss):
            for name, (z, d) in cases.items():
                with self.subTest(fn=fn.__name__, case=name):
                    value, grad = _grad(
                        lambda v, d=d, fn=fn: tfcell.losses.pairwise_domain_penalty(
                            v, tf.constant(d), 3, penalty_fn=fn
                        ),
                        z,
                    )
                    self.assertAllFinite(value)
                    self.assertAllFinite(grad)
        value = tfcell.losses.pairwise_domain_penalty(*cases["one domain"], 3)
        self.assertAllClose(value, 0.0)

    def test_graph_unknown_batch_and_xla(self):
        rng = np.random.RandomState(2)
        z = rng.normal(size=(6, 3)).astype("float32")
        d = np.array([0, 0, 1, 1, 2, 2], "int32")
        signature = [tf.TensorSpec((None, 3), tf.float32), tf.TensorSpec((None,), tf.int32)]
        for jit in (False, True):
            fn = tf.function(
                lambda z, d: tfcell.losses.pairwise_domain_penalty(z, d, 3),
                input_signature=signature,
                jit_compile=jit,
            )
            self.assertAllClose(fn(z, d), np_pairwise(z, d, 3, np_coral), op="reduction")

    def test_rejects_bad_num_domains(self):
        with self.assertRaisesRegex(ValueError, "num_domains"):
            tfcell.losses.pairwise_domain_penalty(np.ones((2, 2)), [0, 1], 0)
