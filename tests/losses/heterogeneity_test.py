import itertools

import numpy as np
import tensorflow as tf

from tfcell.losses import heterogeneity
from tfcell.testing import test_case


def reference(x, y, s, c1, c2, subject_labels):
    """Eqs. 3-5 written as loops over classes, subjects and subject pairs."""
    class_term = 0.0
    for c in range(len(c1)):
        members = [i for i in range(len(x)) if y[i] == c]
        if members:
            class_term += np.mean([np.sum((x[i] - c1[c]) ** 2) for i in members])
    subject_term = 0.0
    present = []
    for k in range(len(c2)):
        members = [i for i in range(len(x)) if s[i] == k]
        if members:
            present.append(k)
            subject_term += np.mean([np.sum((x[i] - c2[k]) ** 2) for i in members])
    pair_term = 0.0
    for si, sj in itertools.permutations(present, 2):
        d2 = np.sum((c2[si] - c2[sj]) ** 2)
        pair_term += d2 if subject_labels[si] == subject_labels[sj] else 1.0 / (1.0 + d2)
    return class_term, subject_term, pair_term


class HeterogeneityTermsTest(test_case.TestCase):
    def test_hand_checked(self):
        x = np.array([[0.0], [2.0], [4.0]], "float32")
        out = heterogeneity.heterogeneity_terms(
            x, [0, 0, 1], [0, 1, 2], [[1.0], [4.0]], [[0.0], [2.0], [5.0]], [0, 0, 1]
        )
        # class: mean(1, 1) + 0; subject: 0 + 0 + 1; pairs: 2*4 + 2/26 + 2/10
        self.assertAllClose(out, [1.0, 1.0, 8.0 + 2.0 / 26.0 + 0.2], atol=1e-5)

    def test_reference_random(self):
        rng = np.random.RandomState(3)
        n, h, num_classes, num_subjects = 9, 4, 3, 6
        x = rng.normal(size=(n, h)).astype("float32")
        subject_labels = np.array([0, 1, 2, 0, 1, 1])
        s = np.array([0, 0, 1, 3, 3, 3, 4, 4, 0])  # subjects 2 and 5 absent
        y = subject_labels[s]  # class 2 absent
        c1 = rng.normal(size=(num_classes, h)).astype("float32")
        c2 = rng.normal(size=(num_subjects, h)).astype("float32")
        expected = reference(x, y, s, c1, c2, subject_labels)
        got = heterogeneity.heterogeneity_terms(x, y, s[:, None], c1, c2, subject_labels)
        self.assertAllClose(got, expected, atol=1e-4, rtol=1e-5)
        # one-hot labels give the same numbers
        onehot = np.eye(num_classes)[y]
        got = heterogeneity.heterogeneity_terms(x, onehot, s, c1, c2, subject_labels)
        self.assertAllClose(got, expected, atol=1e-4, rtol=1e-5)

    def test_degenerate_batches(self):
        rng = np.random.RandomState(4)
        c1 = rng.normal(size=(2, 3)).astype("float32")
        c2 = rng.normal(size=(3, 3)).astype("float32")
        # One sample: no pair, finite terms.
        x1 = rng.normal(size=(1, 3)).astype("float32")
        out = heterogeneity.heterogeneity_terms(x1, [1], [2], c1, c2, [0, 0, 1])
        self.assertAllClose(out, reference(x1, [1], [2], c1, c2, [0, 0, 1]), atol=1e-5)
        self.assertAllClose(out[2], 0.0)
        # Identical features and identical centres: zero distances, finite gradients.
        xv = tf.Variable(np.ones((4, 3), "float32"))
        c2v = tf.Variable(np.ones((3, 3), "float32"))
        c1v = tf.Variable(np.ones((2, 3), "float32"))
        with tf.GradientTape() as tape:
            terms = heterogeneity.heterogeneity_terms(
                xv, [0, 0, 1, 1], [0, 1, 2, 2], c1v, c2v, [0, 0, 1]
            )
            total = terms[0] + terms[1] + terms[2]
        for g in tape.gradient(total, [xv, c1v, c2v]):
            self.assertAllFinite(tf.convert_to_tensor(g))
        # pairs: (0,1),(1,0) same class d2=0; 4 different-class pairs 1/(1+0) = 4
        self.assertAllClose(terms[2], 4.0)

    def test_gradients_non_zero(self):
        rng = np.random.RandomState(5)
        xv = tf.Variable(rng.normal(size=(4, 2)).astype("float32"))
        c1v = tf.Variable(rng.normal(size=(2, 2)).astype("float32"))
        c2v = tf.Variable(rng.normal(size=(3, 2)).astype("float32"))
        with tf.GradientTape(persistent=True) as tape:
            terms = heterogeneity.heterogeneity_terms(
                xv, [0, 1, 0, 1], [0, 1, 2, 2], c1v, c2v, [0, 1, 1]
            )
        for term, var in ((terms[0], xv), (terms[0], c1v), (terms[1], c2v), (terms[2], c2v)):
            g = tf.convert_to_tensor(tape.gradient(term, var))
            self.assertAllFinite(g)
            self.assertGreater(float(tf.reduce_sum(tf.abs(g))), 0.0)
        # finite difference on one centre coordinate of Eq. 5
        eps = 1e-3
        c2 = c2v.numpy()
        g = tf.convert_to_tensor(tape.gradient(terms[2], c2v)).numpy()
        plus, minus = c2.copy(), c2.copy()
        plus[0, 0] += eps
        minus[0, 0] -= eps
        x_np, c1_np = xv.numpy(), c1v.numpy()

        def f(c):
            return reference(x_np, [0, 1, 0, 1], [0, 1, 2, 2], c1_np, c, [0, 1, 1])[2]

        self.assertAllClose(g[0, 0], (f(plus) - f(minus)) / (2 * eps), atol=1e-3, rtol=1e-3)

    def test_low_precision_and_jit(self):
        rng = np.random.RandomState(6)
        x = rng.normal(size=(4, 2)).astype("float32")
        c1 = rng.normal(size=(2, 2)).astype("float32")
        c2 = rng.normal(size=(3, 2)).astype("float32")
        expected = reference(x, [0, 1, 0, 1], [0, 1, 2, 2], c1, c2, [0, 1, 1])
        for dtype in ("float16", "bfloat16"):
            out = heterogeneity.heterogeneity_terms(
                tf.cast(x, dtype),
                [0, 1, 0, 1],
                [0, 1, 2, 2],
                tf.cast(c1, dtype),
                tf.cast(c2, dtype),
                [0, 1, 1],
            )
            self.assertEqual(out[0].dtype, dtype)
            self.assertAllClose(
                [float(tf.cast(t, "float32")) for t in out], expected, atol=0.1, rtol=0.05
            )
        fn = tf.function(heterogeneity.heterogeneity_terms, jit_compile=True)
        self.assertAllClose(
            [
                float(t)
                for t in fn(
                    x,
                    tf.constant([0, 1, 0, 1]),
                    tf.constant([0, 1, 2, 2]),
                    c1,
                    c2,
                    tf.constant([0, 1, 1]),
                )
            ],
            expected,
            atol=1e-5,
        )
