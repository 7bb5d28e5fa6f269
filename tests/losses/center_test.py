import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from tfcell.layers import centers as centers_lib
from tfcell.losses import center
from tfcell.testing import test_case


def reference(c, x):
    out = []
    for i in range(len(x)):
        out.append(0.5 * sum((x[i, k] - c[i, k]) ** 2 for k in range(x.shape[1])))
    return np.array(out)


class CenterLossTest(test_case.TestCase):
    def setUp(self):
        super().setUp()
        rng = np.random.RandomState(0)
        self.x = rng.normal(size=(4, 3)).astype("float32")
        self.c = rng.normal(size=(4, 3)).astype("float32")

    def test_hand_checked(self):
        # 0.5 * ((3-0)^2 + (4-0)^2) = 12.5
        self.assertAllClose(center.center_loss([[0.0, 0.0]], [[3.0, 4.0]]), [12.5])

    def test_reference_and_reductions(self):
        ref = reference(self.c, self.x)
        self.assertAllClose(center.center_loss(self.c, self.x), ref, atol=1e-5)
        self.assertAllClose(center.CenterLoss(reduction=None)(self.c, self.x), ref, atol=1e-5)
        self.assertAllClose(center.CenterLoss()(self.c, self.x), ref.mean(), atol=1e-5)
        self.assertAllClose(
            center.CenterLoss(reduction="sum")(self.c, self.x), ref.sum(), atol=1e-5
        )
        w = np.array([1.0, 0.0, 2.0, 0.5])
        self.assertAllClose(
            center.CenterLoss(reduction="sum")(self.c, self.x, sample_weight=w),
            (ref * w).sum(),
            atol=1e-5,
        )

    def test_low_precision(self):
        for dtype in ("float16", "bfloat16"):
            out = center.CenterLoss(dtype=dtype, reduction=None)(self.c, self.x)
            self.assertEqual(keras.backend.standardize_dtype(out.dtype), dtype)
            self.assertAllClose(out, reference(self.c, self.x), atol=0.1, rtol=0.05)

    def test_gradients_and_degenerate(self):
        x = tf.Variable(self.x)
        with tf.GradientTape() as tape:
            loss = center.CenterLoss()(self.c, x)
        g = tape.gradient(loss, x)
        self.assertAllClose(g, (self.x - self.c) / 4)  # analytic
        # Identical features and centres, one sample: zero loss, zero finite grad.
        x1 = tf.Variable(self.c[:1])
        with tf.GradientTape() as tape:
            loss = center.CenterLoss()(self.c[:1], x1)
        self.assertAllClose(loss, 0.0)
        self.assertAllFinite(tape.gradient(loss, x1))

    def test_serialization(self):
        self.run_serialization_test(center.CenterLoss(reduction="sum", name="c"))

    def test_train_with_wen_centers_jit(self):
        # Compiled use: y_pred = features, y_true = their centres gathered by a
        # Wen-updated Centers layer; jit fit, then .keras save/load with compile=True.
        inp = keras.Input((3,))
        feats = keras.layers.Dense(2)(inp)
        model = keras.Model(inp, feats)
        model.compile("sgd", center.CenterLoss(), jit_compile=True)
        centers_layer = centers_lib.Centers(2, update_rule="wen")
        ids = np.array([0, 1, 0, 1])
        feats_np = model.predict(self.x, verbose=0)
        c = centers_layer(feats_np, ids, training=True)
        history = model.fit(self.x, np.asarray(c), epochs=1, verbose=0)
        self.assertTrue(np.isfinite(history.history["loss"][0]))
        path = os.path.join(tempfile.mkdtemp(), "m.keras")
        model.save(path)
        revived = keras.saving.load_model(path, compile=True)
        self.assertIsInstance(revived.loss, center.CenterLoss)
        self.assertAllClose(revived.predict(self.x, verbose=0), model.predict(self.x, verbose=0))
