"""Tests for tfcell.losses.DetectionLoss: a loop-based reference, the exclusive
background term, ignore cells, reductions, degenerate batches, gradients, saving."""

import math
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

import tfcell
from tfcell import training
from tfcell.losses import detection
from tfcell.testing import test_case


def _sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z))


def _bce(target, logit):
    p = _sigmoid(logit)
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


def reference(y_true, y_pred, epoch=0.0, exclusive=False, u=None, lam_bg=10.0, lam_obj=1.0):
    """The written formula, one image and one cell at a time (lambda_box = 10)."""
    out = []
    for b in range(y_true.shape[0]):
        obj_sum = box_sum = bg_sum = 0.0
        n_obj = n_bg = 0
        for i in range(y_true.shape[1]):
            for j in range(y_true.shape[2]):
                t, p = y_true[b, i, j].astype("float64"), y_pred[b, i, j].astype("float64")
                ignore = t[5] if len(t) == 6 else 0.0
                bce = _bce(t[4], p[4])
                if t[4] == 1:
                    n_obj += 1
                    obj_sum += bce
                    pred_box = [_sigmoid(p[0]), _sigmoid(p[1]), p[2], p[3]]
                    box_sum += sum((a - c) ** 2 for a, c in zip(pred_box, t[:4])) / 4
                elif ignore == 0:
                    n_bg += 1
                    if exclusive:
                        s = u[b, i, j] <= 0.5 * _sigmoid((epoch - 150) / 10) and _sigmoid(
                            p[4]
                        ) <= 0.5 * _sigmoid((epoch - 50) / 10)
                        bg_sum += 0.2 * (1 - math.exp(-bce)) ** 0.1 * bce * s
                    else:
                        bg_sum += bce
        out.append(
            lam_obj * obj_sum / max(n_obj, 1)
            + 10.0 * box_sum / max(n_obj, 1)
            + lam_bg * bg_sum / max(n_bg, 1)
        )
    return np.array(out)


def _batch(seed=0, batch=3, grid=4):
    rng = np.random.RandomState(seed)
    y_true = np.zeros((batch, grid, grid, 6), "float32")
    obj = rng.rand(batch, grid, grid) < 0.3
    y_true[..., 0:2] = rng.rand(batch, grid, grid, 2)
    y_true[..., 2:4] = rng.normal(0, 0.3, (batch, grid, grid, 2))
    y_true[..., 4] = obj
    y_true[..., :4] *= obj[..., None]
    y_true[..., 5] = (~obj) & (rng.rand(batch, grid, grid) < 0.2)
    y_pred = rng.normal(0, 1.5, (batch, grid, grid, 5)).astype("float32")
    return y_true, y_pred


def _tiny_grid_model():
    """16 x 16 images -> a 2 x 2 grid of 5 raw outputs (the detector's layout)."""
    image = keras.Input((16, 16, 3))
    return keras.Model(image, keras.layers.Conv2D(5, 8, strides=8)(image))


class DetectionLossTest(test_case.TestCase):
    def test_hand_checked(self):
        # One object cell and one background cell, all logits 0, box exact
        # for x, y (0.5) and log sizes 0: loss = log 2 + 10 * log 2.
        y_true = np.zeros((1, 1, 2, 6), "float32")
        y_true[0, 0, 0] = [0.5, 0.5, 0.0, 0.0, 1.0, 0.0]
        out = detection.detection_loss(y_true, np.zeros((1, 1, 2, 5), "float32"))
        self.assertAllClose(out, [11 * math.log(2)])

    def test_reference_cross_entropy(self):
        y_true, y_pred = _batch()
        self.assertGreater(y_true[..., 4].sum(), 0)
        self.assertGreater(y_true[..., 5].sum(), 0)
        got = detection.detection_loss(y_true, y_pred)
        self.assertAllClose(got, reference(y_true, y_pred), op="reduction")
        got = detection.detection_loss(y_true, y_pred, lambda_background=2.0, lambda_objects=3.0)
        self.assertAllClose(got, reference(y_true, y_pred, lam_bg=2.0, lam_obj=3.0), op="reduction")

    def test_reference_exclusive(self):
        y_true, y_pred = _batch(1)
        u = np.random.RandomState(2).rand(*y_true.shape[:3]).astype("float32")
        for epoch in (0.0, 60.0, 160.0, 300.0):
            got = detection.detection_loss(y_true, y_pred, epoch, exclusive=True, random_draws=u)
            self.assertAllClose(
                got, reference(y_true, y_pred, epoch, True, u), op="reduction", msg=f"{epoch}"
            )

    def test_five_channel_targets_have_no_ignore_cells(self):
        y_true, y_pred = _batch(3)
        five = y_true[..., :5]
        self.assertAllClose(
            detection.detection_loss(five, y_pred), reference(five, y_pred), op="reduction"
        )

    def test_ignore_cells_leave_the_background_term(self):
        y_true = np.zeros((1, 2, 2, 6), "float32")
        y_pred = np.zeros((1, 2, 2, 5), "float32")
        y_pred[0, 1, 1, 4] = 6.0  # a confident "object" where nothing is annotated
        plain = float(detection.detection_loss(y_true, y_pred)[0])
        y_true[0, 1, 1, 5] = 1.0  # known unannotated nucleus: ignored
        ignored = float(detection.detection_loss(y_true, y_pred)[0])
        self.assertAllClose(ignored, 10 * math.log(2))
        self.assertGreater(plain, ignored)

    def test_exclusive_spares_confident_objects_and_anneals(self):
        y_true = np.zeros((1, 1, 2, 6), "float32")
        y_pred = np.zeros((1, 1, 2, 5), "float32")
        y_pred[0, 0, 0, 4] = 4.0  # confident object on a background cell
        y_pred[0, 0, 1, 4] = -4.0  # confident background
        u = np.zeros((1, 1, 2), "float32")  # always sampled (once annealed)
        early = detection.detection_loss(y_true, y_pred, 0.0, exclusive=True, random_draws=u)
        late = detection.detection_loss(y_true, y_pred, 300.0, exclusive=True, random_draws=u)
        self.assertAllClose(early, [0.0], atol=1e-6)
        bce = _bce(0, -4.0)
        expected = 10 * (0.2 * (1 - math.exp(-bce)) ** 0.1 * bce) / 2  # only the -4 cell
        self.assertAllClose(late, [expected])

    def test_loss_reductions_and_sample_weight(self):
        y_true, y_pred = _batch(4)
        per = reference(y_true, y_pred)
        self.assertAllClose(
            detection.DetectionLoss(reduction=None)(y_true, y_pred), per, op="reduction"
        )
        self.assertAllClose(
            detection.DetectionLoss(reduction="sum")(y_true, y_pred), per.sum(), op="reduction"
        )
        self.assertAllClose(detection.DetectionLoss()(y_true, y_pred), per.mean(), op="reduction")
        w = np.array([1.0, 0.0, 2.0])
        self.assertAllClose(
            detection.DetectionLoss(reduction="sum")(y_true, y_pred, sample_weight=w),
            (per * w).sum(),
            op="reduction",
        )

    def test_all_background_and_all_ignored_batches_are_finite(self):
        y_pred = np.random.RandomState(0).normal(0, 30, (2, 4, 4, 5)).astype("float32")
        background = np.zeros((2, 4, 4, 6), "float32")
        ignored = background.copy()
        ignored[..., 5] = 1.0
        for exclusive in (False, True):
            loss = detection.DetectionLoss(exclusive=exclusive, epoch=300, seed=0)
            for y_true in (background, ignored):
                value = loss(y_true, y_pred)
                self.assertAllFinite(value)
            self.assertAllClose(loss(ignored, y_pred), 0.0)

    def test_gradients_finite_and_non_zero(self):
        y_true, y_pred = _batch(5)
        for exclusive in (False, True):
            loss = detection.DetectionLoss(exclusive=exclusive, epoch=300, seed=1)
            logits = tf.Variable(y_pred)
            with tf.GradientTape() as tape:
                value = loss(y_true, logits)
            grad = tape.gradient(value, logits)
            self.assertAllFinite(grad)
            self.assertGreater(float(tf.reduce_sum(tf.abs(grad))), 0.0)
        # A saturated, correct background logit: the focal power stays finite.
        saturated = np.full((1, 1, 1, 5), -200.0, "float32")
        logits = tf.Variable(saturated)
        with tf.GradientTape() as tape:
            value = detection.detection_loss(
                np.zeros((1, 1, 1, 6), "float32"),
                logits,
                300.0,
                exclusive=True,
                random_draws=np.zeros((1, 1, 1)),
            )
        self.assertAllFinite(tape.gradient(value, logits))

    def test_low_precision(self):
        y_true, y_pred = _batch(6)
        expected = reference(y_true, y_pred)
        for dtype in ("float16", "bfloat16"):
            got = detection.detection_loss(y_true, keras.ops.cast(y_pred, dtype))
            self.assertEqual(keras.backend.standardize_dtype(got.dtype), dtype)
            self.assertAllClose(got, expected, rtol=0.05, atol=0.05)

    def test_config_round_trip_and_registry(self):
        loss = detection.DetectionLoss(exclusive=True, lambda_background=20.0, seed=3, epoch=7)
        revived = self.run_serialization_test(loss)
        self.assertTrue(revived.exclusive)
        self.assertEqual(float(keras.ops.convert_to_numpy(revived.epoch)), 7.0)
        self.assertIsInstance(tfcell.losses.get("detection"), detection.DetectionLoss)
        self.assertIsInstance(tfcell.losses.get("DetectionLoss"), detection.DetectionLoss)
        self.assertEqual(tfcell.losses.get("detection", exclusive=True).exclusive, True)

    def test_rejects_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "lambda_background"):
            detection.DetectionLoss(lambda_background=-1.0)
        with self.assertRaisesRegex(ValueError, "sampling_threshold"):
            detection.DetectionLoss(sampling_threshold=2.0)
        with self.assertRaisesRegex(ValueError, "temperature"):
            detection.DetectionLoss(temperature=0.0)
        with self.assertRaisesRegex(ValueError, "y_pred"):
            detection.detection_loss(np.zeros((1, 2, 2, 6)), np.zeros((1, 2, 2, 4)))

    def test_saved_with_the_model_and_epoch_callback(self):
        loss = detection.DetectionLoss(exclusive=True, seed=0)
        model = _tiny_grid_model()
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss=loss)
        images = np.random.RandomState(0).uniform(0, 255, (2, 16, 16, 3)).astype("float32")
        y_true = np.zeros((2, 2, 2, 6), "float32")
        y_true[0, 0, 0] = [0.5, 0.5, 0.0, 0.0, 1.0, 0.0]
        model.fit(
            images,
            y_true,
            epochs=2,
            verbose=0,
            callbacks=[training.EpochVariableCallback(loss)],
        )
        self.assertEqual(float(keras.ops.convert_to_numpy(loss.epoch)), 1.0)
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        path = os.path.join(folder.name, "model.keras")
        model.save(path)
        revived = keras.saving.load_model(path, compile=True, safe_mode=True)
        self.assertIsInstance(revived.loss, detection.DetectionLoss)
        self.assertTrue(revived.loss.exclusive)
        self.assertEqual(float(keras.ops.convert_to_numpy(revived.loss.epoch)), 1.0)

    def test_mirrored_fit_equals_one_device(self):
        images = np.random.RandomState(2).uniform(0, 255, (4, 16, 16, 3)).astype("float32")
        y_true = np.zeros((4, 2, 2, 6), "float32")
        y_true[:2, 0, 0] = [0.5, 0.5, 0.0, 0.0, 1.0, 0.0]  # two images without objects
        self.run_mirrored_fit_test(
            _tiny_grid_model, detection.DetectionLoss(), images, y_true, learning_rate=1e-4
        )

    def test_jit_compiled_fit_is_finite(self):
        model = _tiny_grid_model()
        model.compile(
            optimizer=keras.optimizers.SGD(0.01),
            loss=detection.DetectionLoss(exclusive=True, epoch=300, seed=0),
            jit_compile=True,
        )
        images = np.random.RandomState(1).uniform(0, 255, (2, 16, 16, 3)).astype("float32")
        history = model.fit(images, np.zeros((2, 2, 2, 6), "float32"), epochs=1, verbose=0)
        self.assertAllFinite(history.history["loss"])
