import inspect
import math
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from tfcell.losses import exclusive
from tfcell.testing import test_case


def sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z))


def reference(ids, logits, epoch, annotated, u):
    """ece_loss v1.1 per element, looping over elements (last axis = classes)."""
    flat_logits = logits.reshape(-1, logits.shape[-1]).astype("float64")
    out = []
    for k, (y, z) in enumerate(zip(ids.reshape(-1), flat_logits)):
        ce = -(z[y] - np.log(np.sum(np.exp(z - z.max()))) - z.max())
        top = np.sort(z)[::-1]
        conf = top[0] - top[1]
        a = annotated.reshape(-1)[k]
        s = (
            (not a)
            and u.reshape(-1)[k] <= 0.5 * sigmoid((epoch - 150) / 10)
            and conf <= 0.5 * sigmoid((epoch - 50) / 10)
        )
        out.append(ce * a + 0.2 * (1 - math.exp(-ce)) ** 0.1 * ce * s)
    return np.array(out).reshape(ids.shape)


class ExclusiveCrossentropyTest(test_case.TestCase):
    def setUp(self):
        super().setUp()
        rng = np.random.RandomState(0)
        self.logits = (0.3 * rng.normal(size=(6, 3))).astype("float32")
        self.ids = np.array([0, 1, 2, 0, 0, 1])
        self.u = np.array([0.1, 0.9, 0.2, 0.3, 0.9, 0.05], "float32")

    def test_hand_checked(self):
        # Unannotated (label 0), zero logits, epoch far past both midpoints,
        # u = 0 -> sampled: 0.2 * (2/3) ** 0.1 * log 3.
        out = exclusive.exclusive_crossentropy(
            [0], np.zeros((1, 3), "float32"), 1000.0, random_draws=[0.0]
        )
        self.assertAllClose(out, [0.2 * (2 / 3) ** 0.1 * math.log(3)])
        # Annotated: plain CE.
        out = exclusive.exclusive_crossentropy(
            [2], np.zeros((1, 3), "float32"), 0.0, random_draws=[0.0]
        )
        self.assertAllClose(out, [math.log(3)])

    def test_reference_classification(self):
        annotated = self.ids != 0
        for epoch in (0.0, 60.0, 160.0, 300.0):
            got = exclusive.exclusive_crossentropy(
                self.ids, self.logits, epoch, random_draws=self.u
            )
            self.assertAllClose(
                got, reference(self.ids, self.logits, epoch, annotated, self.u), atol=1e-5
            )

    def test_reference_segmentation_with_mask(self):
        rng = np.random.RandomState(1)
        logits = (0.2 * rng.normal(size=(2, 3, 3, 2))).astype("float32")
        ids = rng.randint(0, 2, size=(2, 3, 3))
        annotated = rng.rand(2, 3, 3) > 0.5  # explicit mask: label 0 may be annotated
        u = rng.rand(2, 3, 3).astype("float32")
        got = exclusive.exclusive_crossentropy(
            ids[..., None], logits, 200.0, annotated_mask=annotated, random_draws=u
        )
        self.assertEqual(tuple(got.shape), (2, 3, 3))
        self.assertAllClose(got, reference(ids, logits, 200.0, annotated, u), atol=1e-5)
        # one-hot labels
        got = exclusive.exclusive_crossentropy(
            np.eye(2)[ids], logits, 200.0, annotated_mask=annotated, random_draws=u
        )
        self.assertAllClose(got, reference(ids, logits, 200.0, annotated, u), atol=1e-5)

    def test_annealing_changes_with_epoch(self):
        ids = np.zeros((64,), "int32")
        logits = np.zeros((64, 3), "float32")
        early = exclusive.exclusive_crossentropy(ids, logits, 0.0, seed=1)
        late = exclusive.exclusive_crossentropy(ids, logits, 300.0, seed=1)
        self.assertAllClose(np.sum(early), 0.0)
        self.assertGreater(float(np.sum(late)), 0.0)

    def test_seeded_draws_deterministic(self):
        a = exclusive.ExclusiveCrossentropyLoss(seed=3, epoch=300, reduction=None)
        b = exclusive.ExclusiveCrossentropyLoss(seed=3, epoch=300, reduction=None)
        ids = np.zeros((32,), "int32")
        logits = np.zeros((32, 2), "float32")
        first_a, first_b = a(ids, logits), b(ids, logits)
        self.assertAllClose(first_a, first_b)
        self.assertAllClose(a(ids, logits), b(ids, logits))
        self.assertFalse(np.allclose(first_a, a(ids, logits)))  # fresh draws each call
        x = exclusive.exclusive_crossentropy(ids, logits, 300.0, seed=7)
        y = exclusive.exclusive_crossentropy(ids, logits, 300.0, seed=7)
        self.assertAllClose(x, y)

    def test_loss_reductions_and_sample_weight(self):
        per = reference(self.ids, self.logits, 0.0, self.ids != 0, self.u)  # epoch 0: ~no sampling
        loss = exclusive.ExclusiveCrossentropyLoss(reduction=None, seed=0)
        self.assertAllClose(loss(self.ids, self.logits), per, atol=1e-5)
        self.assertAllClose(
            exclusive.ExclusiveCrossentropyLoss(reduction="sum")(self.ids, self.logits),
            per.sum(),
            atol=1e-5,
        )
        self.assertAllClose(
            exclusive.ExclusiveCrossentropyLoss()(self.ids, self.logits), per.mean(), atol=1e-5
        )
        w = np.array([1.0, 2.0, 0.0, 1.0, 1.0, 0.5])
        self.assertAllClose(
            exclusive.ExclusiveCrossentropyLoss(reduction="sum")(
                self.ids, self.logits, sample_weight=w
            ),
            (per * w).sum(),
            atol=1e-5,
        )
        # Segmentation: per-image mean over pixels.
        ids = np.ones((2, 4, 4), "int32")
        logits = np.zeros((2, 4, 4, 2), "float32")
        out = exclusive.ExclusiveCrossentropyLoss(reduction=None)(ids, logits)
        self.assertAllClose(out, [math.log(2)] * 2, op="reduction")

    def test_low_precision(self):
        per = reference(self.ids, self.logits, 0.0, self.ids != 0, self.u)
        for dtype in ("float16", "bfloat16"):
            out = exclusive.ExclusiveCrossentropyLoss(dtype=dtype, reduction=None)(
                self.ids, self.logits
            )
            self.assertEqual(keras.backend.standardize_dtype(out.dtype), dtype)
            self.assertAllClose(out, per, atol=0.02, rtol=0.02)

    def test_gradients_and_large_logits(self):
        # finite-difference check on an annotated and a sampled element
        z = tf.Variable(self.logits)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(
                exclusive.exclusive_crossentropy(self.ids, z, 300.0, random_draws=self.u)
            )
        g = tape.gradient(loss, z).numpy()
        self.assertAllFinite(g)
        self.assertGreater(np.abs(g).sum(), 0.0)
        eps = 1e-3
        for row in (1, 0):  # row 1 annotated, row 0 unannotated and sampled (u = 0.1)
            plus, minus = self.logits.copy(), self.logits.copy()
            plus[row, 1] += eps
            minus[row, 1] -= eps
            f = lambda x: reference(self.ids, x, 300.0, self.ids != 0, self.u).sum()  # noqa: E731
            self.assertAllClose(g[row, 1], (f(plus) - f(minus)) / (2 * eps), atol=1e-3, rtol=1e-3)
        # Very large logits, saturated correct (ce == 0) and wrong: finite values and grads.
        big = tf.Variable(
            np.array([[1e4, -1e4, 0.0], [1e4, 0.0, -1e4], [0.0, 1e4, 0.0]], "float32")
        )
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(
                exclusive.exclusive_crossentropy(
                    [0, 1, 0],
                    big,
                    300.0,
                    annotated_mask=[False, True, False],
                    random_draws=[0.0, 0.0, 0.0],
                )
            )
        self.assertAllFinite(loss)
        self.assertAllFinite(tape.gradient(loss, big))

    def test_serialization_and_epoch_in_config(self):
        loss = exclusive.ExclusiveCrossentropyLoss(seed=2, epoch=7, exclusivity_epoch=40)
        loss.epoch.assign(12.0)
        revived = self.run_serialization_test(loss)
        self.assertAllClose(revived.epoch, 12.0)
        self.assertEqual(
            set(loss.get_config()),
            set(inspect.signature(exclusive.ExclusiveCrossentropyLoss).parameters),
        )

    def test_save_load_compiled_and_jit_fit(self):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        loss = exclusive.ExclusiveCrossentropyLoss(seed=0, epoch=200)
        model.compile("sgd", loss, jit_compile=True)
        x = np.random.RandomState(0).rand(8, 4).astype("float32")
        y = np.array([0, 1, 2, 0, 0, 1, 2, 0])
        history = model.fit(x, y, epochs=1, verbose=0)
        self.assertTrue(np.isfinite(history.history["loss"][0]))
        path = os.path.join(tempfile.mkdtemp(), "m.keras")
        model.save(path)
        revived = keras.saving.load_model(path, compile=True)
        self.assertIsInstance(revived.loss, exclusive.ExclusiveCrossentropyLoss)
        self.assertAllClose(revived.loss.epoch, 200.0)
        self.assertAllClose(revived.predict(x, verbose=0), model.predict(x, verbose=0))

    def test_invalid_args(self):
        with self.assertRaisesRegex(ValueError, "sampling_threshold"):
            exclusive.ExclusiveCrossentropyLoss(sampling_threshold=2.0)
        with self.assertRaisesRegex(ValueError, "temperature"):
            exclusive.ExclusiveCrossentropyLoss(temperature=0)
        with self.assertRaisesRegex(ValueError, "unannotated_label"):
            exclusive.ExclusiveCrossentropyLoss(unannotated_label=0.5)
        with self.assertRaisesRegex(ValueError, "y_true"):
            exclusive.exclusive_crossentropy(np.zeros((2, 5)), np.zeros((2, 3)), 0.0)
