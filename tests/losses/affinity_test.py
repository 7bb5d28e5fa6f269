"""Tests for tfcell.losses.affinity: affinity, CFAL and the diversity regulariser."""

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tfcell import layers, losses, testing

# Affinities in (0, 1] as GaussianAffinity gives them; classes 0..2.
D = np.array([[0.9, 0.5, 0.85], [0.2, 0.3, 0.1], [0.4, 0.4, 0.4], [0.05, 0.7, 0.65]], "float32")
Y = np.array([0, 1, 2, 1])
W = [2.0, 1.0, 0.5]


def ref_affinity(labels, d, margin):
    out = []
    for i, y in enumerate(labels):
        total = 0.0
        for j in range(d.shape[1]):
            if j != y:
                total += max(0.0, margin + d[i, j] - d[i, y])
        out.append(total)
    return np.array(out)


def ref_cfal(labels, d, margin, gamma, weights):
    l_mm = ref_affinity(labels, d, margin)
    return np.array([weights[y] * (1.0 - d[i, y]) ** gamma * l_mm[i] for i, y in enumerate(labels)])


def ref_diversity(centers):
    flat = centers.reshape(-1, centers.shape[-1]).astype("float64")
    dists = []
    for a in range(len(flat)):
        for b in range(a + 1, len(flat)):
            dists.append(float(np.sum((flat[a] - flat[b]) ** 2)))
    mu = sum(dists) / len(dists)
    return sum((g - mu) ** 2 for g in dists) / len(dists)


def _head_model(num_classes=3, num_centers=2, sigma=4.0):
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, kernel_initializer="glorot_uniform")(inputs)
    outputs = layers.GaussianAffinity(num_classes, sigma=sigma, num_centers=num_centers)(hidden)
    return keras.Model(inputs, outputs)


LOSSES = {
    "affinity": lambda **kw: losses.AffinityLoss(margin=0.1, **kw),
    "affinity_cb": lambda **kw: losses.AffinityLoss(margin=0.1, class_weights=W, **kw),
    "cfal": lambda **kw: losses.CFALoss(margin=0.1, gamma=2.0, class_weights=W, **kw),
}


def _expected(name, labels=Y, d=D):
    d = d.astype("float64")
    if name == "affinity":
        return ref_affinity(labels, d, 0.1)
    if name == "affinity_cb":
        return np.array(W)[labels] * ref_affinity(labels, d, 0.1)
    return ref_cfal(labels, d, 0.1, 2.0, W)


class AffinityFunctionsTest(testing.TestCase):
    def test_hand_checked(self):
        # Sample 0: hinges max(0, .1+.5-.9)=0 and max(0, .1+.85-.9)=.05.
        self.assertAllClose(losses.affinity(Y[:1], D[:1], 0.1), [0.05])
        # CFAL: w=2, (1 - 0.9)**2 = 0.01 -> 2 * 0.01 * 0.05 = 0.001.
        # Relative check (the value is 1e-3); 1 - 0.9 cancels float32's rounding
        # of 0.9 into ~9 ulps of 0.1, squared: a reduction-sized budget.
        self.assertAllClose(
            losses.cfal(Y[:1], D[:1], 0.1, 2.0, W), [0.001], atol=0.0, op="reduction"
        )

    def test_reference(self):
        self.assertAllClose(losses.affinity(Y, D, 0.1), _expected("affinity"), op="reduction")
        onehot = np.eye(3, dtype="float32")[Y]
        self.assertAllClose(losses.cfal(onehot, D, 0.1, 2.0, W), _expected("cfal"), op="reduction")
        self.assertAllClose(
            losses.cfal(Y[:, None], D, 0.3, 0.5, None),
            ref_cfal(Y, D.astype("float64"), 0.3, 0.5, [1.0] * 3),
            op="reduction",
        )

    def test_focal_term_stops_gradient(self):
        d = tf.Variable(D)
        with tf.GradientTape(persistent=True) as tape:
            cfal = keras.ops.sum(losses.cfal(Y, d, 0.1, 2.0, None))
            focus = tf.stop_gradient((1.0 - tf.reduce_sum(tf.one_hot(Y, 3) * d, -1)) ** 2)
            plain = keras.ops.sum(focus * losses.affinity(Y, d, 0.1))
        self.assertAllClose(tape.gradient(cfal, d), tape.gradient(plain, d), op="reduction")

    def test_prototype_diversity(self):
        centers = np.array([[[0.0, 0.0]], [[1.0, 0.0]], [[0.0, 2.0]]], "float32")
        # G = (1, 4, 5); mu = 10/3; R = ((7/3)^2 + (2/3)^2 + (5/3)^2) / 3 = 78/27.
        self.assertAllClose(losses.prototype_diversity(centers), 78.0 / 27.0, op="reduction")
        rng = np.random.RandomState(1)
        centers = rng.normal(size=(3, 2, 5)).astype("float32")
        self.assertAllClose(losses.prototype_diversity(centers), ref_diversity(centers), rtol=1e-5)
        self.assertAllClose(
            losses.prototype_diversity(centers.reshape(6, 5)), ref_diversity(centers), rtol=1e-5
        )
        self.assertAllClose(losses.prototype_diversity(np.ones((1, 1, 3))), 0.0)
        variable = tf.Variable(centers)
        with tf.GradientTape() as tape:
            value = losses.prototype_diversity(variable)
        self.assertAllFinite(tape.gradient(value, variable))

    @given(
        d=hnp.arrays("float32", (5, 4), elements=st.floats(0.0, 1.0, width=32)),
        labels=hnp.arrays("int32", (5,), elements=st.integers(0, 3)),
        margin=st.floats(0.0, 1.0),
        gamma=st.one_of(st.just(0.0), st.floats(0.01, 5.0)),
    )
    @settings(max_examples=30, deadline=None)
    def test_fuzz(self, d, labels, margin, gamma):
        w = [1.0, 0.5, 2.0, 0.0]
        got = losses.cfal(labels, d, margin, gamma, w)
        expected = ref_cfal(labels, d.astype("float64"), margin, gamma, w)
        self.assertAllClose(got, expected, atol=1e-5, rtol=1e-4)


class AffinityLossesTest(testing.TestCase):
    @parameterized.named_parameters(*[(name, name) for name in LOSSES])
    def test_reference_and_reductions(self, name):
        expected = _expected(name)
        self.assertAllClose(LOSSES[name](reduction=None)(Y, D), expected, op="reduction")
        self.assertAllClose(LOSSES[name](reduction="sum")(Y, D), expected.sum(), op="reduction")
        sw = np.array([0.0, 1.0, 2.0, 3.0])
        self.assertAllClose(
            LOSSES[name]()(Y, D, sample_weight=sw), (sw * expected).mean(), op="reduction"
        )

    @parameterized.named_parameters(*[(name, name) for name in LOSSES])
    def test_low_precision(self, name):
        for dtype in ("float16", "bfloat16"):
            d = keras.ops.cast(D, dtype)
            value = LOSSES[name](reduction=None, dtype=dtype)(Y, d)
            self.assertEqual(keras.backend.standardize_dtype(value.dtype), dtype)
            self.assertAllClose(keras.ops.cast(value, "float32"), _expected(name), atol=3e-2)
            self.assertAllFinite(keras.ops.cast(LOSSES[name]()(Y, d), "float32"))

    @parameterized.named_parameters(*[(name, name) for name in LOSSES])
    def test_gradients_and_degenerate(self, name):
        loss = LOSSES[name]()
        rng = np.random.RandomState(0)
        cases = [
            (Y, rng.normal(size=(4, 3)).astype("float32")),
            (np.array([1]), rng.normal(size=(1, 3)).astype("float32")),  # one sample
            (np.array([0, 0, 0]), np.tile(rng.normal(size=(1, 3)), (3, 1))),  # identical
            (np.array([2, 0]), np.full((2, 3), 1e4, "float32")),  # huge features
        ]
        for index, (labels, features) in enumerate(cases):
            model = _head_model()
            x = tf.constant(features, "float32")
            with tf.GradientTape() as tape:
                value = loss(labels, model(x)) + keras.ops.sum(model.losses)
            grads = tape.gradient(value, model.trainable_variables)
            self.assertAllFinite(value)
            for grad in grads:
                self.assertAllFinite(grad)
            if index == 0:
                self.assertGreater(sum(float(np.abs(g.numpy()).sum()) for g in grads), 0.0)

    @parameterized.named_parameters(*[(name, name) for name in LOSSES])
    def test_serialization_and_saving(self, name):
        loss = LOSSES[name](reduction="sum")
        self.run_serialization_test(loss)
        keys = set(loss.get_config())
        self.assertEqual(
            keys - {"gamma"}, {"margin", "class_weights", "reduction", "name", "dtype"}
        )
        model = _head_model()
        model.compile(optimizer="sgd", loss=loss)
        x = np.random.RandomState(0).normal(size=(5, 3)).astype("float32")
        revived = self.run_model_saving_test(model, x)
        self.assertEqual(revived.loss.get_config(), loss.get_config())

    @parameterized.named_parameters(("affinity", "affinity"), ("cfal", "cfal"))
    def test_fit_jit_unknown_batch(self, name):
        rng = np.random.RandomState(0)
        x = rng.normal(size=(7, 3)).astype("float32")
        y = rng.randint(0, 3, size=(7,))
        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(3, drop_remainder=False)
        self.assertIsNone(data.element_spec[0].shape[0])
        model = _head_model()
        model.compile(optimizer="sgd", loss=LOSSES[name](), jit_compile=True)
        history = model.fit(data, epochs=1, verbose=0)
        self.assertTrue(np.isfinite(history.history["loss"][0]))

    def test_validation(self):
        with self.assertRaisesRegex(ValueError, "margin"):
            losses.CFALoss(margin=-0.1)
        with self.assertRaisesRegex(ValueError, "gamma"):
            losses.CFALoss(gamma="2")
        with self.assertRaisesRegex(ValueError, "class_weights"):
            losses.AffinityLoss(class_weights=[[1.0]])
        with self.assertRaisesRegex(ValueError, "2 entries"):
            losses.CFALoss(class_weights=[1.0, 1.0])(Y, D)


class CFALDistributionTest(testing.TestCase):
    def test_mirrored_fit_equals_single_device(self):
        rng = np.random.RandomState(0)
        x = rng.normal(size=(8, 3)).astype("float32")
        y = np.array([0, 1, 2, 0, 0, 1, 2, 1])
        self.run_mirrored_fit_test(
            _head_model,
            losses.CFALoss(margin=0.1, gamma=1.0, class_weights=W),
            x,
            y,
            learning_rate=0.5,
        )


def ref_cfal_eq7_total(labels, d, margin, gamma, weights, r):
    """Eq. 7 with Eq. 4, averaged over the batch: mean_i w f_i (L_mm_i + R)."""
    l_mm = ref_affinity(labels, d, margin)
    total = 0.0
    for i, y in enumerate(labels):
        total += weights[y] * (1.0 - d[i, y]) ** gamma * (l_mm[i] + r)
    return total / len(labels)


class CFALRegularizerFactorTest(testing.TestCase):
    def test_factor_against_loop_reference(self):
        expected = np.mean([W[y] * (1.0 - float(D[i, y])) ** 2.0 for i, y in enumerate(Y)])
        got = losses.cfal_regularizer_factor(Y, D, gamma=2.0, class_weights=W)
        self.assertAllClose(got, expected, rtol=1e-6, atol=1e-7)
        loss = losses.CFALoss(margin=0.1, gamma=2.0, class_weights=W)
        self.assertAllClose(loss.regularizer_factor(np.eye(3)[Y], D), expected, rtol=1e-6)
        self.assertAllClose(
            losses.cfal_regularizer_factor(Y, D), np.mean([1 - D[i, y] for i, y in enumerate(Y)])
        )
        d = tf.Variable(D)
        with tf.GradientTape() as tape:
            value = losses.cfal_regularizer_factor(Y, d, 2.0, W)
        self.assertIsNone(tape.gradient(value, d))  # A weight, not an objective.

    def test_layer_weight_set_to_the_factor_gives_eq7(self):
        # With diversity_weight = the batch's factor, the model's total loss is
        # the paper's Eq. 7 (with Eq. 4) averaged over the batch.
        rng = np.random.RandomState(0)
        x = rng.normal(size=(6, 3)).astype("float32")
        y = np.array([0, 1, 2, 0, 1, 1])
        model = _head_model()
        loss = losses.CFALoss(margin=0.1, gamma=2.0, class_weights=W)
        d = model.predict(x, verbose=0)
        factor = float(loss.regularizer_factor(y, d))
        self.assertGreater(factor, 0.0)
        head = model.layers[-1]
        head.diversity_weight = factor
        model.compile(loss=loss)
        r = ref_diversity(head.centers.numpy())
        expected = ref_cfal_eq7_total(y, d.astype("float64"), 0.1, 2.0, W, r)
        self.assertAllClose(model.evaluate(x, y, verbose=0), expected, rtol=1e-5, atol=1e-6)
