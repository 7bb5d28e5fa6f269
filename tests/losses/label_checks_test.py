"""Bad labels and non-finite inputs are caught by every loss that indexes by label.

`model.fit(x, y)` with numpy arrays must fail with a message naming the range
received and C, eagerly (`run_eagerly=True`) and in the compiled step
(`tf.function`); under XLA (`jit_compile=True`) the batch loss is NaN.
"""

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tfcell import layers, losses, testing

C = 3
W = [0.5, 1.0, 2.0]


def _softmax_head():
    return keras.layers.Dense(C)


# name -> (head factory, loss factory)
CASES = {
    "class_balanced_ce": (
        _softmax_head,
        lambda: losses.ClassBalancedCrossentropyLoss(W, from_logits=True),
    ),
    "class_balanced_ce_no_weights": (
        _softmax_head,
        lambda: losses.ClassBalancedCrossentropyLoss(from_logits=True),
    ),
    "focal": (_softmax_head, lambda: losses.ClassBalancedFocalLoss(2.0, W, from_logits=True)),
    "focal_sigmoid": (
        _softmax_head,
        lambda: losses.ClassBalancedFocalLoss(2.0, None, from_logits=True, variant="sigmoid"),
    ),
    "affinity": (
        lambda: layers.GaussianAffinity(C, sigma=10.0),
        lambda: losses.AffinityLoss(0.1),
    ),
    "cfal": (
        lambda: layers.GaussianAffinity(C, sigma=10.0),
        lambda: losses.CFALoss(0.1, 2.0, W),
    ),
    "arcface": (lambda: layers.CosineHead(C), lambda: losses.ArcFaceLoss(0.5, 30.0, W)),
    "cosface": (lambda: layers.CosineHead(C), lambda: losses.CosFaceLoss(0.35, 20.0)),
    "sphereface": (lambda: layers.CosineHead(C), lambda: losses.SphereFaceLoss(1.35, 30.0, W)),
    "asoftmax": (
        lambda: layers.CosineHead(C, sphereface_margin=4.0),
        lambda: losses.SphereFaceLoss(scale=None, class_weights=W),
    ),
}
NAMES = [(name, name) for name in CASES]


def _model(name):
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(5)(inputs)
    return keras.Model(inputs, CASES[name][0]()(hidden))


def _data(bad_label=None, nan_image=False):
    rng = np.random.RandomState(0)
    x = rng.normal(size=(6, 4)).astype("float32")
    y = np.array([0, 1, 2, 0, 1, 2])
    if bad_label is not None:
        y[3] = bad_label
    if nan_image:
        x[2, 1] = np.nan
    return x, y


class LossLabelChecksTest(testing.TestCase):
    @parameterized.named_parameters(*NAMES)
    def test_eager_fit_names_range_and_c(self, name):
        for bad in (C, -1):
            model = _model(name)
            model.compile(optimizer="sgd", loss=CASES[name][1](), run_eagerly=True)
            x, y = _data(bad)
            with self.assertRaisesRegex(
                ValueError, rf"labels must be class ids in \[0, {C}\).*from {min(bad, 0)} to "
            ):
                model.fit(x, y, batch_size=6, epochs=1, verbose=0)

    @parameterized.named_parameters(*NAMES)
    def test_compiled_fit_names_range_and_c(self, name):
        for bad in (C, -1):
            model = _model(name)
            model.compile(optimizer="sgd", loss=CASES[name][1]())
            x, y = _data(bad)
            with self.assertRaisesRegex(
                tf.errors.InvalidArgumentError,
                rf"labels must be class ids in \[0, {C}\) \(C = {C}\).*\[{min(bad, 0)}\] \[to\] "
                rf"\[{max(bad, 2)}\]",
            ):
                model.fit(x, y, batch_size=6, epochs=1, verbose=0)

    @parameterized.named_parameters(*NAMES)
    def test_nan_images(self, name):
        x, y = _data(nan_image=True)
        for run_eagerly, error in ((True, ValueError), (False, tf.errors.InvalidArgumentError)):
            model = _model(name)
            model.compile(optimizer="sgd", loss=CASES[name][1](), run_eagerly=run_eagerly)
            with self.assertRaisesRegex(error, "predictions .* not finite.*NaN or inf images"):
                model.fit(x, y, batch_size=6, epochs=1, verbose=0)

    @parameterized.named_parameters(("cfal", "cfal"), ("cosface", "cosface"), ("ce", "focal"))
    def test_jit_compile_gives_nan_loss(self, name):
        # XLA compiles tf.debugging.Assert to a no-op: the loss is poisoned instead.
        model = _model(name)
        model.compile(optimizer="sgd", loss=CASES[name][1](), jit_compile=True)
        x, y = _data(C)
        history = model.fit(x, y, batch_size=6, epochs=1, verbose=0)
        self.assertTrue(np.isnan(history.history["loss"][0]))
        good = _model(name)
        good.compile(optimizer="sgd", loss=CASES[name][1](), jit_compile=True)
        x, y = _data()
        self.assertTrue(np.isfinite(good.fit(x, y, batch_size=6, verbose=0).history["loss"][0]))

    def test_function_twins_and_float_labels(self):
        d = np.full((2, C), 0.5, "float32")
        with self.assertRaisesRegex(ValueError, r"cfal: labels .*\[0, 3\).*from 0 to 7"):
            losses.cfal([0, 7], d)
        with self.assertRaisesRegex(ValueError, r"first at batch position 1: nan"):
            losses.cosface(np.array([0.0, np.nan]), d)
        with self.assertRaisesRegex(ValueError, "not finite"):
            losses.arcface([0, 1], np.array([[0.1, np.inf, 0.0], [0.0, 0.0, 0.0]], "float32"))
        with self.assertRaisesRegex(ValueError, "not finite"):
            losses.center_loss(np.zeros((2, 3)), np.full((2, 3), np.nan, "float32"))
        # One-hot labels are always in range; (N, 1) ids are checked like (N,).
        self.assertAllFinite(losses.cfal(np.eye(C)[[0, 2]], d))
        with self.assertRaisesRegex(ValueError, "from 0 to 3"):
            losses.affinity(np.array([[0], [3]]), d)

    def test_graph_check_passes_good_batches(self):
        loss = losses.CFALoss(0.1, 1.0, W)
        d = tf.constant(np.random.RandomState(0).uniform(size=(4, C)).astype("float32"))
        y = tf.constant([0, 1, 2, 1])
        eager = loss(y, d)
        graph = tf.function(lambda a, b: loss(a, b))(y, d)
        self.assertAllClose(graph, eager)
