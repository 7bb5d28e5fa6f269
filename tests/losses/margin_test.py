"""Tests for tfcell.losses.margin: class-balanced ArcFace, CosFace, SphereFace."""

import math

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tfcell import layers, losses, testing

COS = np.array(
    [[0.5, 0.0, -0.2], [0.1, 0.9, 0.3], [-0.95, 0.2, 0.0], [0.99, -0.5, 0.999]], "float32"
)
Y = np.array([0, 1, 0, 2])
W = [0.5, 1.0, 2.0]


def _ce(logits, y):
    log_z = math.log(sum(math.exp(v) for v in logits))
    return log_z - logits[y]


def _clip(c):
    return min(max(c, -1 + 1e-7), 1 - 1e-7)


def ref_cosface(labels, cos, margin, scale, weights):
    out = []
    for i, y in enumerate(labels):
        logits = [scale * (c - (margin if j == y else 0.0)) for j, c in enumerate(cos[i])]
        out.append(weights[y] * _ce(logits, y))
    return np.array(out)


def ref_arcface(labels, cos, margin, scale, weights):
    out = []
    for i, y in enumerate(labels):
        logits = []
        for j, c in enumerate(cos[i]):
            if j == y:
                theta = math.acos(_clip(c))
                c = (
                    math.cos(theta + margin)
                    if theta + margin <= math.pi
                    else c - margin * math.sin(margin)
                )
            logits.append(scale * c)
        out.append(weights[y] * _ce(logits, y))
    return np.array(out)


def ref_psi(c, margin):
    theta = math.acos(_clip(c))
    k = math.floor(margin * theta / math.pi)
    return (-1) ** k * math.cos(margin * theta) - 2 * k


def ref_sphereface(labels, cos, margin, scale, weights, norms=None):
    out = []
    for i, y in enumerate(labels):
        r = scale if norms is None else norms[i]
        logits = [r * (ref_psi(c, margin) if j == y else c) for j, c in enumerate(cos[i])]
        out.append(weights[y] * _ce(logits, y))
    return np.array(out)


NORMS = np.array([2.0, 0.5, 3.0, 1.0], "float32")
COS_NORMS = np.concatenate([COS, NORMS[:, None]], axis=-1)
# What CosineHead(3, sphereface_margin=4.0) outputs for these cosines and norms.
ASOFTMAX = np.asarray(losses.asoftmax_scores(COS, NORMS, 4.0), "float32")


def ref_asoftmax_scores(cos, norms, margin):
    """scores[i, j]: -A-Softmax loss of sample i were j its label (loop reference)."""
    out = np.zeros(cos.shape)
    for i in range(len(cos)):
        for j in range(cos.shape[1]):
            out[i, j] = -ref_sphereface(
                [j], cos[i : i + 1], margin, None, [1.0] * 3, norms[i : i + 1]
            )[0]
    return out


# name -> (loss factory, function twin call, reference, y_pred used)
CASES = {
    "arcface": (
        lambda **kw: losses.ArcFaceLoss(margin=0.5, scale=30.0, class_weights=W, **kw),
        lambda y, p: losses.arcface(y, p, 0.5, 30.0, W),
        lambda: ref_arcface(Y, COS.astype("float64"), 0.5, 30.0, W),
        COS,
    ),
    "cosface": (
        lambda **kw: losses.CosFaceLoss(margin=0.35, scale=20.0, class_weights=W, **kw),
        lambda y, p: losses.cosface(y, p, 0.35, 20.0, W),
        lambda: ref_cosface(Y, COS.astype("float64"), 0.35, 20.0, W),
        COS,
    ),
    "sphereface_table9": (
        lambda **kw: losses.SphereFaceLoss(margin=0.35, scale=30.0, class_weights=W, **kw),
        lambda y, p: losses.sphereface(y, p, 0.35, 30.0, W),
        lambda: ref_sphereface(Y, COS.astype("float64"), 0.35, 30.0, W),
        COS,
    ),
    # A-Softmax: the head applies margin and norm, the loss picks the label's score.
    "sphereface_asoftmax": (
        lambda **kw: losses.SphereFaceLoss(scale=None, class_weights=W, **kw),
        lambda y, p: losses.sphereface(y, p, None, None, W),
        lambda: ref_sphereface(Y, COS.astype("float64"), 4.0, None, W, NORMS),
        ASOFTMAX,
    ),
}
NAMES = [(name, name) for name in CASES]


def _head_model(sphereface_margin=None):
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(5)(inputs)
    outputs = layers.CosineHead(3, sphereface_margin=sphereface_margin)(hidden)
    return keras.Model(inputs, outputs)


def _head_margin(name):
    return 4.0 if name == "sphereface_asoftmax" else None


class MarginFunctionsTest(testing.TestCase):
    def test_hand_checked(self):
        # CosFace, s=1, m=0.35: logits (0.15, 0) -> log(1 + exp(-0.15)) = 0.620957.
        got = losses.cosface([0], [[0.5, 0.0]], margin=0.35, scale=1.0)
        self.assertAllClose(got, [0.620957])
        # ArcFace, cos_y = 0 -> theta = pi/2, target cos(pi/2 + .5) = -sin(.5) = -0.479426.
        got = losses.arcface([0], [[0.0, 0.0]], margin=0.5, scale=1.0)
        self.assertAllClose(got, [math.log(1 + math.exp(0.479426))])
        # ArcFace fallback: cos_y = -0.95 (theta = 2.824 > pi - .5), target -0.95 - .5 sin .5.
        got = losses.arcface([0], [[-0.95, 0.0]], margin=0.5, scale=1.0)
        self.assertAllClose(got, [math.log(1 + math.exp(0.95 + 0.5 * math.sin(0.5)))])
        # A-Softmax m=4, cos_y = 0: k = 2, psi = cos(2 pi) - 4 = -3; ||x|| = 2 -> logit -6.
        got = losses.sphereface([0], [[0.0, 0.0, 2.0]], margin=4.0, scale=None)
        self.assertAllClose(got, [math.log(1 + math.exp(6.0))], atol=1e-5)
        # The same through the head's scores: scores[0, 0] = -log(1 + exp(6)).
        scores = losses.asoftmax_scores([[0.0, 0.0]], [2.0], 4.0)
        self.assertAllClose(scores, [[-math.log(1 + math.exp(6.0))] * 2], atol=1e-5)
        got = losses.sphereface([0], scores, margin=None, scale=None)
        self.assertAllClose(got, [math.log(1 + math.exp(6.0))], atol=1e-5)
        # Table IX SphereFace, m = 0.35 < 1: k = 0, psi = cos(0.35 * pi / 2) > cos = 0.
        got = losses.sphereface([0], [[0.0, 0.0]], margin=0.35, scale=1.0)
        self.assertAllClose(got, [math.log(1 + math.exp(-math.cos(0.35 * math.pi / 2)))])

    @parameterized.named_parameters(*NAMES)
    def test_reference(self, name):
        _, fn, ref, y_pred = CASES[name]
        self.assertAllClose(fn(Y, y_pred), ref(), rtol=1e-4, atol=1e-4)
        self.assertAllClose(fn(np.eye(3)[Y], y_pred), ref(), rtol=1e-4, atol=1e-4)

    def test_asoftmax_scores_reference(self):
        # The head's scores against a loop over candidate labels, and the loss on
        # them against the (cosines, norm) formula: the same A-Softmax values.
        self.assertAllClose(
            ASOFTMAX, ref_asoftmax_scores(COS.astype("float64"), NORMS, 4.0), rtol=1e-4, atol=1e-4
        )
        self.assertAllClose(
            losses.sphereface(Y, ASOFTMAX, None, None, W),
            losses.sphereface(Y, COS_NORMS, 4.0, None, W),
            rtol=1e-5,
            atol=1e-5,
        )
        self.assertAllClose(
            losses.sphereface(Y, COS_NORMS, 4.0, None, W),
            ref_sphereface(Y, COS.astype("float64"), 4.0, None, W, NORMS),
            rtol=1e-4,
            atol=1e-4,
        )
        # Gradients through the head's scores equal those of the formula.
        cos, norms = tf.Variable(COS), tf.Variable(NORMS[:, None])
        with tf.GradientTape(persistent=True) as tape:
            via_head = keras.ops.sum(
                losses.sphereface(Y, losses.asoftmax_scores(cos, norms, 4.0), None, None, W)
            )
            direct = keras.ops.sum(
                losses.sphereface(Y, keras.ops.concatenate([cos, norms], -1), 4.0, None, W)
            )
        for a, b in zip(tape.gradient(via_head, [cos, norms]), tape.gradient(direct, [cos, norms])):
            self.assertAllClose(a, b, rtol=1e-4, atol=1e-5)
        # argmax of the scores is the argmax of the cosines.
        self.assertAllClose(np.argmax(ASOFTMAX, -1), np.argmax(COS, -1))

    def test_psi_is_monotonic(self):
        cos = np.cos(np.linspace(0.0, math.pi, 200)).astype("float32")[:, None]
        for margin in (4.0, 1.35, 0.35):
            psi = [ref_psi(float(c), margin) for c in cos[:, 0]]
            self.assertTrue(np.all(np.diff(psi) <= 1e-6), margin)
            # The loss at the target is -log softmax of (psi, 0): increasing with theta.
            values = losses.sphereface(
                np.zeros(200, "int32"), np.concatenate([cos, np.zeros_like(cos)], -1), margin, 1.0
            ).numpy()
            self.assertTrue(np.all(np.diff(values) >= -1e-5), margin)

    def test_arcface_target_decreasing_with_fallback(self):
        cos = np.linspace(1.0, -1.0, 400).astype("float32")[:, None]
        values = losses.arcface(
            np.zeros(400, "int32"), np.concatenate([cos, np.zeros_like(cos)], -1), 0.5, 1.0
        ).numpy()
        self.assertTrue(np.all(np.diff(values) >= -1e-6))

    @given(
        cos=hnp.arrays("float32", (4, 3), elements=st.floats(-1.0, 1.0, width=32)),
        labels=hnp.arrays("int32", (4,), elements=st.integers(0, 2)),
        margin=st.floats(0.05, 1.0),
        scale=st.floats(1.0, 30.0),
    )
    @settings(max_examples=25, deadline=None)
    def test_fuzz(self, cos, labels, margin, scale):
        for fn, ref in ((losses.arcface, ref_arcface), (losses.cosface, ref_cosface)):
            got = fn(labels, cos, margin, scale, W)
            self.assertAllClose(
                got, ref(labels, cos.astype("float64"), margin, scale, W), rtol=1e-3, atol=2e-3
            )


class MarginLossesTest(testing.TestCase):
    @parameterized.named_parameters(*NAMES)
    def test_reductions_and_sample_weight(self, name):
        make, _, ref, y_pred = CASES[name]
        expected = ref()
        self.assertAllClose(make(reduction=None)(Y, y_pred), expected, rtol=1e-4, atol=1e-4)
        self.assertAllClose(make(reduction="sum")(Y, y_pred), expected.sum(), rtol=1e-4)
        sw = np.array([1.0, 0.0, 0.5, 2.0])
        self.assertAllClose(make()(Y, y_pred, sample_weight=sw), (sw * expected).mean(), rtol=1e-4)

    @parameterized.named_parameters(*NAMES)
    def test_low_precision(self, name):
        make, fn, ref, y_pred = CASES[name]
        for dtype in ("float16", "bfloat16"):
            cast = keras.ops.cast(y_pred, dtype)
            value = fn(Y, cast)
            self.assertEqual(keras.backend.standardize_dtype(value.dtype), dtype)
            # Against the float32 computation on the same (quantised) inputs.
            expected = fn(Y, keras.ops.cast(cast, "float32"))
            self.assertAllClose(keras.ops.cast(value, "float32"), expected, rtol=2e-2, atol=2e-2)
            self.assertAllFinite(keras.ops.cast(make(dtype=dtype)(Y, cast), "float32"))

    @parameterized.named_parameters(*NAMES)
    def test_gradients_and_degenerate(self, name):
        make = CASES[name][0]
        loss = make()
        norms = name == "sphereface_asoftmax"
        rng = np.random.RandomState(0)
        cases = [
            (Y, rng.normal(size=(4, 4))),
            (np.array([2]), rng.normal(size=(1, 4))),  # one sample, classes absent
            (np.array([1, 1]), np.tile(rng.normal(size=(1, 4)), (2, 1))),  # identical
            (np.array([0, 2]), np.full((2, 4), 1e6)),  # huge features
            (np.array([0, 1]), np.zeros((2, 4))),  # zero features
        ]
        for index, (labels, features) in enumerate(cases):
            model = _head_model(_head_margin(name))
            x = tf.constant(features, "float32")
            with tf.GradientTape() as tape:
                value = loss(labels, model(x))
            grads = tape.gradient(value, model.trainable_variables)
            self.assertAllFinite(value, f"case {index}")
            for grad in grads:
                self.assertAllFinite(grad, f"case {index}")
            if index == 0:
                self.assertGreater(sum(float(np.abs(g.numpy()).sum()) for g in grads), 0.0)
        # Cosines exactly at +-1 (acos is clipped).
        cos = tf.Variable(np.array([[1.0, -1.0, 1.0], [-1.0, 1.0, 0.0]], "float32"))
        with tf.GradientTape() as tape:
            y_pred = losses.asoftmax_scores(cos, [3.0, 1.0], 4.0) if norms else cos
            value = loss(np.array([0, 0]), y_pred)
        self.assertAllFinite(value)
        self.assertAllFinite(tape.gradient(value, cos))

    @parameterized.named_parameters(*NAMES)
    def test_serialization_and_saving(self, name):
        loss = CASES[name][0](reduction="sum")
        self.run_serialization_test(loss)
        self.assertEqual(
            set(loss.get_config()),
            {"margin", "scale", "class_weights", "reduction", "name", "dtype"},
        )
        model = _head_model(_head_margin(name))
        model.compile(optimizer="sgd", loss=loss)
        x = np.random.RandomState(0).normal(size=(5, 4)).astype("float32")
        revived = self.run_model_saving_test(model, x)
        self.assertEqual(revived.loss.get_config(), loss.get_config())

    @parameterized.named_parameters(*NAMES)
    def test_fit_jit_unknown_batch(self, name):
        rng = np.random.RandomState(0)
        x = rng.normal(size=(7, 4)).astype("float32")
        y = rng.randint(0, 3, size=(7, 1))
        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(3, drop_remainder=False)
        model = _head_model(_head_margin(name))
        model.compile(optimizer="sgd", loss=CASES[name][0](), jit_compile=True)
        history = model.fit(data, epochs=1, verbose=0)
        self.assertTrue(np.isfinite(history.history["loss"][0]))

    def test_validation(self):
        with self.assertRaisesRegex(ValueError, "radians"):
            losses.ArcFaceLoss(margin=4.0)
        with self.assertRaisesRegex(ValueError, "scale"):
            losses.CosFaceLoss(scale=0.0)
        with self.assertRaisesRegex(ValueError, "scale"):
            losses.ArcFaceLoss(scale=None)
        with self.assertRaisesRegex(ValueError, "margin"):
            losses.SphereFaceLoss(margin=0.0)
        with self.assertRaisesRegex(ValueError, "class_weights"):
            losses.CosFaceLoss(class_weights="balanced")
        self.assertIsNone(losses.SphereFaceLoss(scale=None).scale)
        self.assertIsNone(losses.SphereFaceLoss(scale=None).margin)
        self.assertEqual(losses.SphereFaceLoss().margin, 0.35)  # Table IX
        # The deprecated (N, C + 1) input of CosineHead(return_norms=True).
        with self.assertWarns(DeprecationWarning):
            legacy = losses.SphereFaceLoss(margin=4.0, scale=None, class_weights=W)
        self.assertAllClose(
            legacy(Y, COS_NORMS, sample_weight=None),
            ref_sphereface(Y, COS.astype("float64"), 4.0, None, W, NORMS).mean(),
            rtol=1e-4,
        )


class MarginDistributionTest(testing.TestCase):
    def test_mirrored_fit_equals_single_device(self):
        rng = np.random.RandomState(0)
        x = rng.normal(size=(8, 4)).astype("float32")
        y = np.array([0, 1, 2, 0, 0, 1, 2, 1])
        self.run_mirrored_fit_test(
            _head_model,
            losses.ArcFaceLoss(margin=0.5, scale=30.0, class_weights=W),
            x,
            y,
            learning_rate=0.1,
        )


def test_sphereface_margin_below_one_collapses():
    """Why the CFAL configs use m = 1.35, not Table IX's literal 0.35: with a
    multiplicative margin below 1, features orthogonal to every class weight
    (all cosines 0) reach a loss of ~0 whatever their label; above 1 they do not."""
    cos = np.zeros((4, 2), "float32")  # Orthogonal to both class weights.
    labels = np.array([0, 1, 0, 1])
    loose = keras.ops.convert_to_numpy(losses.sphereface(labels, cos, margin=0.35, scale=30.0))
    tight = keras.ops.convert_to_numpy(losses.sphereface(labels, cos, margin=1.35, scale=30.0))
    np.testing.assert_array_less(loose, 1e-9)  # 30 * cos(0.35 * pi / 2) = 25.6 vs 0.
    np.testing.assert_allclose(tight, np.log1p(np.exp(-30 * np.cos(1.35 * np.pi / 2))), rtol=1e-4)
    assert tight.min() > 10.0
