import math
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from tfcell.losses import ssim
from tfcell.testing import test_case


def reference(x, y, size=11, sigma=1.5, k1=0.01, k2=0.03, max_val=1.0):
    """1 - mean SSIM over valid windows, looping over window positions (single channel)."""
    g = np.array([math.exp(-((i - (size - 1) / 2) ** 2) / (2 * sigma**2)) for i in range(size)])
    w = np.outer(g, g)
    w /= w.sum()
    c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
    out = []
    for n in range(x.shape[0]):
        values = []
        for r in range(x.shape[1] - size + 1):
            for c in range(x.shape[2] - size + 1):
                a = x[n, r : r + size, c : c + size, 0]
                b = y[n, r : r + size, c : c + size, 0]
                ma, mb = (w * a).sum(), (w * b).sum()
                va, vb = (w * a * a).sum() - ma**2, (w * b * b).sum() - mb**2
                cov = (w * a * b).sum() - ma * mb
                values.append(
                    (2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
                )
        out.append(1.0 - np.mean(values))
    return np.array(out)


class SSIMLossTest(test_case.TestCase):
    def setUp(self):
        super().setUp()
        rng = np.random.RandomState(0)
        self.x = rng.rand(2, 13, 13, 1).astype("float32")
        self.y = np.clip(self.x + 0.1 * rng.normal(size=self.x.shape), 0, 1).astype("float32")

    def test_identical_is_zero(self):
        self.assertAllClose(ssim.ssim_loss(self.x, self.x), [0.0, 0.0], op="reduction")

    def test_reference(self):
        self.assertAllClose(ssim.ssim_loss(self.x, self.y), reference(self.x, self.y), atol=1e-5)
        self.assertAllClose(
            ssim.SSIMLoss(filter_size=7, reduction=None)(self.x, self.y),
            reference(self.x, self.y, size=7),
            atol=1e-5,
        )

    def test_reductions(self):
        ref = reference(self.x, self.y)
        self.assertAllClose(ssim.SSIMLoss()(self.x, self.y), ref.mean(), atol=1e-5)
        self.assertAllClose(ssim.SSIMLoss(reduction="sum")(self.x, self.y), ref.sum(), atol=1e-5)
        self.assertAllClose(
            ssim.SSIMLoss(reduction="sum")(self.x, self.y, sample_weight=[0.5, 2.0]),
            0.5 * ref[0] + 2.0 * ref[1],
            atol=1e-5,
        )

    def test_low_precision(self):
        for dtype in ("float16", "bfloat16"):
            out = ssim.SSIMLoss(dtype=dtype, reduction=None)(self.x, self.y)
            self.assertEqual(keras.backend.standardize_dtype(out.dtype), dtype)
            self.assertAllClose(out, reference(self.x, self.y), atol=0.02, rtol=0.05)

    def test_gradients(self):
        y = tf.Variable(self.y)
        with tf.GradientTape() as tape:
            loss = ssim.SSIMLoss()(self.x, y)
        g = tape.gradient(loss, y)
        self.assertAllFinite(g)
        self.assertGreater(float(tf.reduce_sum(tf.abs(g))), 0.0)
        # constant images (zero variance): finite
        c = tf.Variable(np.full((1, 11, 11, 1), 0.5, "float32"))
        with tf.GradientTape() as tape:
            loss = ssim.SSIMLoss()(np.zeros((1, 11, 11, 1), "float32"), c)
        self.assertAllFinite(loss)
        self.assertAllFinite(tape.gradient(loss, c))

    def test_serialization_save_load_jit(self):
        self.run_serialization_test(ssim.SSIMLoss(filter_size=10, k1=0.02))
        model = keras.Sequential(
            [keras.Input((11, 11, 1)), keras.layers.Conv2D(1, 3, padding="same")]
        )
        model.compile("sgd", ssim.SSIMLoss(), jit_compile=True)
        x = self.x[:, :11, :11]
        history = model.fit(x, x, epochs=1, verbose=0)
        self.assertTrue(np.isfinite(history.history["loss"][0]))
        path = os.path.join(tempfile.mkdtemp(), "m.keras")
        model.save(path)
        revived = keras.saving.load_model(path, compile=True)
        self.assertIsInstance(revived.loss, ssim.SSIMLoss)
        self.assertAllClose(
            revived.predict(x, verbose=0), model.predict(x, verbose=0), op="reduction"
        )

    def test_invalid_args(self):
        with self.assertRaisesRegex(ValueError, "filter_size"):
            ssim.SSIMLoss(filter_size=0)
        with self.assertRaisesRegex(ValueError, "max_val"):
            ssim.SSIMLoss(max_val=-1)
