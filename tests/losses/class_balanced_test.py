"""Tests for tfcell.losses.class_balanced (weights, label ids, class-balanced CE)."""

import math

import keras
import numpy as np
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from tfcell import losses, testing


def ref_weights(counts, beta):
    """Cui's formula, one class at a time."""
    raw = []
    for n in counts:
        raw.append(0.0 if n == 0 else (1.0 - beta) / (1.0 - beta**n))
    total = sum(raw)
    return [r / total * len(counts) for r in raw]


def ref_cb_ce(labels, logits, weights):
    out = []
    for i, y in enumerate(labels):
        row = logits[i]
        log_z = math.log(sum(math.exp(v) for v in row))
        out.append(weights[y] * (log_z - row[y]))
    return np.array(out)


LABELS = np.array([0, 1, 2, 1])
LOGITS = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0], [0.0, 1.0, 3.0], [1.0, -2.0, 0.0]], "float32")
WEIGHTS = [0.5, 1.0, 1.5]


class ClassBalancedWeightsTest(testing.TestCase):
    def test_hand_checked(self):
        # beta = 0.5, counts (1, 2): raw (0.5/0.5, 0.5/0.75) = (1, 2/3); sum 5/3;
        # normalised to sum 2: (6/5, 4/5).
        self.assertAllClose(losses.class_balanced_weights([1, 2], 0.5), [1.2, 0.8])

    def test_matches_reference_and_sums_to_c(self):
        counts = [5000, 300, 40, 0, 7]
        w = losses.class_balanced_weights(counts, 0.999)
        self.assertAllClose(w, ref_weights(counts, 0.999), rtol=1e-12)
        self.assertAlmostEqual(sum(w), 5.0)
        self.assertEqual(w[3], 0.0)
        self.assertIsInstance(w, list)

    def test_beta_zero_gives_equal_weights(self):
        self.assertAllClose(losses.class_balanced_weights([10, 1000, 3], 0.0), [1.0, 1.0, 1.0])

    @given(
        counts=st.lists(st.integers(0, 10**6), min_size=1, max_size=12).filter(any),
        beta=st.floats(0.0, 0.99999),
    )
    @settings(max_examples=40, deadline=None)
    def test_fuzz(self, counts, beta):
        w = np.array(losses.class_balanced_weights(counts, beta))
        self.assertTrue(np.all(np.isfinite(w)) and np.all(w >= 0))
        self.assertAlmostEqual(float(w.sum()), len(counts), places=6)
        # Rarer classes never get less weight.
        order = np.argsort([c if c > 0 else np.inf for c in counts])
        nonzero = [w[i] for i in order if counts[i] > 0]
        self.assertTrue(all(a >= b - 1e-9 for a, b in zip(nonzero, nonzero[1:])))

    @staticmethod
    def _bad_args():
        return [
            ([], 0.9),
            ([[1, 2]], 0.9),
            ([1, -1], 0.9),
            ([0, 0], 0.9),
            ([1, 2], 1.0),
            ([1, 2], -0.1),
            ([1, 2], "0.9"),
            ([1, np.nan], 0.9),
        ]

    def test_validation(self):
        for counts, beta in self._bad_args():
            with self.assertRaises(ValueError):
                losses.class_balanced_weights(counts, beta)


class ToClassIdsTest(testing.TestCase):
    def test_layouts(self):
        expected = [2, 0, 1]
        self.assertAllClose(losses.to_class_ids(np.array([2, 0, 1]), 3), expected)
        self.assertAllClose(losses.to_class_ids(np.array([[2.0], [0.0], [1.0]]), 3), expected)
        onehot = np.eye(3, dtype="float32")[expected]
        ids = losses.to_class_ids(onehot, 3)
        self.assertAllClose(ids, expected)
        self.assertEqual(str(ids.dtype), "<dtype: 'int32'>")

    def test_wrong_width(self):
        with self.assertRaisesRegex(ValueError, "one-hot"):
            losses.to_class_ids(np.zeros((2, 4)), 3)


class ClassBalancedCrossentropyTest(testing.TestCase):
    def test_reference(self):
        expected = ref_cb_ce(LABELS, LOGITS.astype("float64"), WEIGHTS)
        got = losses.class_balanced_crossentropy(LABELS, LOGITS, WEIGHTS, from_logits=True)
        self.assertAllClose(got, expected, rtol=1e-5)
        probs = keras.ops.softmax(LOGITS)
        got = losses.class_balanced_crossentropy(np.eye(3)[LABELS], probs, WEIGHTS)
        self.assertAllClose(got, expected, rtol=1e-5)
        # Cui: the mean over N samples, not over the sum of their weights.
        loss = losses.ClassBalancedCrossentropyLoss(WEIGHTS, from_logits=True)
        self.assertAllClose(loss(LABELS, LOGITS), expected.mean(), rtol=1e-5)

    def test_unweighted_equals_keras(self):
        loss = losses.ClassBalancedCrossentropyLoss(from_logits=True)
        keras_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.assertAllClose(loss(LABELS, LOGITS), keras_loss(LABELS, LOGITS), op="reduction")

    def test_reductions_and_sample_weight(self):
        expected = ref_cb_ce(LABELS, LOGITS.astype("float64"), WEIGHTS)
        sw = np.array([1.0, 0.0, 2.0, 0.5])
        none = losses.ClassBalancedCrossentropyLoss(WEIGHTS, True, reduction=None)
        self.assertAllClose(none(LABELS, LOGITS), expected, rtol=1e-5)
        total = losses.ClassBalancedCrossentropyLoss(WEIGHTS, True, reduction="sum")
        self.assertAllClose(total(LABELS, LOGITS), expected.sum(), rtol=1e-5)
        mean = losses.ClassBalancedCrossentropyLoss(WEIGHTS, True)
        self.assertAllClose(
            mean(LABELS, LOGITS, sample_weight=sw), (sw * expected).mean(), rtol=1e-5
        )

    def test_low_precision(self):
        expected = ref_cb_ce(LABELS, LOGITS.astype("float64"), WEIGHTS)
        for dtype in ("float16", "bfloat16"):
            logits = keras.ops.cast(LOGITS, dtype)
            got = losses.class_balanced_crossentropy(LABELS, logits, WEIGHTS, from_logits=True)
            self.assertEqual(keras.backend.standardize_dtype(got.dtype), dtype)
            self.assertAllClose(keras.ops.cast(got, "float32"), expected, rtol=2e-2, atol=2e-2)
            loss = losses.ClassBalancedCrossentropyLoss(WEIGHTS, True, dtype=dtype)
            self.assertAllFinite(keras.ops.cast(loss(LABELS, logits), "float32"))

    def test_gradients_and_degenerate(self):
        loss = losses.ClassBalancedCrossentropyLoss(WEIGHTS, from_logits=True)
        for labels, logits in [
            (LABELS, LOGITS),
            (np.array([1]), LOGITS[:1]),  # one sample, classes absent
            (np.array([0, 0]), np.full((2, 3), 1e4, "float32")),  # huge, identical
            (np.array([2, 1]), np.array([[1e4, -1e4, -1e4], [0.0, 0.0, 0.0]], "float32")),
        ]:
            logits = tf.Variable(logits)
            with tf.GradientTape() as tape:
                value = loss(labels, logits)
            grad = tape.gradient(value, logits)
            self.assertAllFinite(value)
            self.assertAllFinite(grad)
            self.assertGreater(float(np.abs(grad.numpy()).sum()), 0.0)

    def test_validation(self):
        with self.assertRaisesRegex(ValueError, "class_weights"):
            losses.ClassBalancedCrossentropyLoss(class_weights=[1.0, -1.0])
        with self.assertRaisesRegex(ValueError, "from_logits"):
            losses.ClassBalancedCrossentropyLoss(from_logits="yes")
        with self.assertRaisesRegex(ValueError, "2 entries"):
            losses.ClassBalancedCrossentropyLoss([1.0, 2.0])(LABELS, LOGITS)

    def test_serialization_and_saving(self):
        loss = losses.ClassBalancedCrossentropyLoss(WEIGHTS, from_logits=True, reduction="sum")
        self.run_serialization_test(loss)
        self.assertEqual(
            set(loss.get_config()),
            {"class_weights", "from_logits", "reduction", "name", "dtype"},
        )
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        model.compile(optimizer="sgd", loss=loss)
        x = np.random.RandomState(0).normal(size=(5, 4)).astype("float32")
        revived = self.run_model_saving_test(model, x)
        self.assertIsInstance(revived.loss, losses.ClassBalancedCrossentropyLoss)

    def test_fit_jit_unknown_batch(self):
        rng = np.random.RandomState(0)
        x = rng.normal(size=(7, 4)).astype("float32")
        y = rng.randint(0, 3, size=(7, 1))
        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(3, drop_remainder=False)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        model.compile(
            optimizer="sgd",
            loss=losses.ClassBalancedCrossentropyLoss(WEIGHTS, from_logits=True),
            jit_compile=True,
        )
        history = model.fit(data, epochs=1, verbose=0)
        self.assertTrue(np.isfinite(history.history["loss"][0]))
