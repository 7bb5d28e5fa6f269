"""Tests for tfcell.losses.focal: class-balanced focal loss (softmax and sigmoid)."""

import math

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tfcell import losses, testing

LOGITS = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0], [0.0, 1.0, 3.0], [1.0, -2.0, 0.0]], "float32")
Y = np.array([0, 1, 2, 0])
W = [0.5, 1.0, 1.5]


def ref_softmax_focal(labels, logits, gamma, weights):
    out = []
    for i, y in enumerate(labels):
        z = sum(math.exp(v) for v in logits[i])
        p = math.exp(logits[i][y]) / z
        out.append(-weights[y] * (1.0 - p) ** gamma * math.log(p))
    return np.array(out)


def ref_sigmoid_focal(labels, logits, gamma, weights):
    out = []
    for i, y in enumerate(labels):
        total = 0.0
        for c, z in enumerate(logits[i]):
            p = 1.0 / (1.0 + math.exp(-z))
            t = 1.0 if c == y else 0.0
            p_t = p if t else 1.0 - p
            bce = -(t * math.log(p) + (1.0 - t) * math.log(1.0 - p))
            total += (1.0 - p_t) ** gamma * bce
        out.append(weights[y] * total)
    return np.array(out)


def _expected(variant, gamma=2.0):
    ref = ref_softmax_focal if variant == "softmax" else ref_sigmoid_focal
    return ref(Y, LOGITS.astype("float64"), gamma, W)


VARIANTS = [("softmax", "softmax"), ("sigmoid", "sigmoid")]


def _loss(variant, **kwargs):
    return losses.ClassBalancedFocalLoss(
        gamma=2.0, class_weights=W, from_logits=True, variant=variant, **kwargs
    )


class FocalTest(testing.TestCase):
    def test_hand_checked(self):
        # Two classes, logits (0, 0): p = 0.5; (1 - .5)^2 * log 2 = 0.25 * 0.693147.
        got = losses.class_balanced_focal([0], [[0.0, 0.0]], gamma=2.0, from_logits=True)
        self.assertAllClose(got, [0.25 * math.log(2.0)])
        # Sigmoid: both entries p_t = .5 -> 2 * 0.25 * log 2; class weight 3.
        got = losses.class_balanced_focal(
            [1], [[0.0, 0.0]], 2.0, [1.0, 3.0], from_logits=True, variant="sigmoid"
        )
        self.assertAllClose(got, [3.0 * 0.5 * math.log(2.0)])

    @parameterized.named_parameters(*VARIANTS)
    def test_reference(self, variant):
        got = losses.class_balanced_focal(Y, LOGITS, 2.0, W, True, variant)
        self.assertAllClose(got, _expected(variant), op="reduction")
        probs = keras.ops.softmax(LOGITS) if variant == "softmax" else keras.ops.sigmoid(LOGITS)
        got = losses.class_balanced_focal(np.eye(3)[Y], probs, 2.0, W, False, variant)
        self.assertAllClose(got, _expected(variant), rtol=1e-4, atol=1e-5)

    def test_gamma_zero_is_class_balanced_ce(self):
        focal = losses.class_balanced_focal(Y, LOGITS, 0.0, W, from_logits=True)
        ce = losses.class_balanced_crossentropy(Y, LOGITS, W, from_logits=True)
        self.assertAllClose(focal, ce, rtol=1e-5)

    @given(
        logits=hnp.arrays("float32", (4, 3), elements=st.floats(-8.0, 8.0, width=32)),
        labels=hnp.arrays("int32", (4,), elements=st.integers(0, 2)),
        gamma=st.sampled_from([0.0, 0.5, 1.0, 2.0, 5.0]),
    )
    @settings(max_examples=25, deadline=None)
    def test_fuzz(self, logits, labels, gamma):
        for variant, ref in (("softmax", ref_softmax_focal), ("sigmoid", ref_sigmoid_focal)):
            got = losses.class_balanced_focal(labels, logits, gamma, W, True, variant)
            expected = ref(labels, logits.astype("float64"), gamma, W)
            self.assertAllClose(got, expected, rtol=1e-3, atol=1e-5)

    @parameterized.named_parameters(*VARIANTS)
    def test_reductions_and_sample_weight(self, variant):
        expected = _expected(variant)
        self.assertAllClose(_loss(variant, reduction=None)(Y, LOGITS), expected, rtol=1e-5)
        self.assertAllClose(_loss(variant, reduction="sum")(Y, LOGITS), expected.sum(), rtol=1e-5)
        sw = np.array([0.0, 1.0, 2.0, 0.5])
        self.assertAllClose(
            _loss(variant)(Y, LOGITS, sample_weight=sw), (sw * expected).mean(), rtol=1e-5
        )

    @parameterized.named_parameters(*VARIANTS)
    def test_low_precision(self, variant):
        for dtype in ("float16", "bfloat16"):
            logits = keras.ops.cast(LOGITS, dtype)
            value = losses.class_balanced_focal(Y, logits, 2.0, W, True, variant)
            self.assertEqual(keras.backend.standardize_dtype(value.dtype), dtype)
            self.assertAllClose(
                keras.ops.cast(value, "float32"), _expected(variant), rtol=3e-2, atol=1e-2
            )
            self.assertAllFinite(keras.ops.cast(_loss(variant, dtype=dtype)(Y, logits), "float32"))

    @parameterized.named_parameters(*VARIANTS)
    def test_gradients_and_degenerate(self, variant):
        for gamma in (2.0, 0.5):
            loss = losses.ClassBalancedFocalLoss(gamma, W, True, variant)
            for labels, logits in [
                (Y, LOGITS),
                (np.array([2]), LOGITS[:1]),  # one sample, classes absent
                (np.array([1, 1]), np.full((2, 3), 0.3, "float32")),  # identical
                (np.array([0, 2]), np.array([[1e4, -1e4, 0.0], [1e4, -1e4, -1e4]], "float32")),
            ]:
                logits = tf.Variable(logits)
                with tf.GradientTape() as tape:
                    value = loss(labels, logits)
                grad = tape.gradient(value, logits)
                self.assertAllFinite(value)
                self.assertAllFinite(grad)
                self.assertGreater(float(np.abs(grad.numpy()).sum()), 0.0)

    @parameterized.named_parameters(*VARIANTS)
    def test_serialization_and_saving(self, variant):
        loss = _loss(variant, reduction="sum")
        self.run_serialization_test(loss)
        self.assertEqual(
            set(loss.get_config()),
            {"gamma", "class_weights", "from_logits", "variant", "reduction", "name", "dtype"},
        )
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        model.compile(optimizer="sgd", loss=loss)
        x = np.random.RandomState(0).normal(size=(5, 4)).astype("float32")
        revived = self.run_model_saving_test(model, x)
        self.assertEqual(revived.loss.get_config(), loss.get_config())

    @parameterized.named_parameters(*VARIANTS)
    def test_fit_jit_unknown_batch(self, variant):
        rng = np.random.RandomState(0)
        x = rng.normal(size=(7, 4)).astype("float32")
        y = rng.randint(0, 3, size=(7,))
        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(3, drop_remainder=False)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        model.compile(optimizer="sgd", loss=_loss(variant), jit_compile=True)
        history = model.fit(data, epochs=1, verbose=0)
        self.assertTrue(np.isfinite(history.history["loss"][0]))

    def test_validation(self):
        with self.assertRaisesRegex(ValueError, "variant"):
            losses.ClassBalancedFocalLoss(variant="softmax_v2")
        with self.assertRaisesRegex(ValueError, "gamma"):
            losses.ClassBalancedFocalLoss(gamma=-1.0)
        with self.assertRaisesRegex(ValueError, "variant"):
            losses.class_balanced_focal(Y, LOGITS, variant="other")
