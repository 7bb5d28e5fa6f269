"""Tests for tfcell.models.detector: the 7-layer detector, box encoding and decoding,
non-maximum suppression, saving and a few training steps."""

import math
import os
import tempfile

import keras
import numpy as np

from tfcell import losses, models
from tfcell.data import nuclei, synthetic
from tfcell.testing import test_case


def _logit(p):
    return math.log(p / (1.0 - p))


def _scenes(n=4, size=32):
    frame = synthetic.nuclei_scenes(n, image_size=size, seed=0, nuclei_per_image=(2, 4))
    images = np.stack(frame["image"].to_list()).astype("float32")
    targets = np.stack([models.encode_instances(mask) for mask in frame["mask"]])
    return images, targets


class DetectorModelTest(test_case.TestCase):
    def test_output_grid(self):
        model = models.yolo_detector(width=4)
        for height, width in ((32, 32), (64, 48)):
            out = model(np.zeros((2, height, width, 3), "float32"))
            self.assertEqual(tuple(out.shape), (2, height // 8, width // 8, 5))
        self.assertEqual(models.DETECTOR_STRIDE, 8)

    def test_seven_convolutions_with_batch_norm_and_pooling(self):
        model = models.yolo_detector((32, 32, 3), width=4)

        def count(kind):
            return sum(isinstance(layer, kind) for layer in model.layers)

        self.assertEqual(count(keras.layers.Conv2D), 7)
        self.assertEqual(count(keras.layers.BatchNormalization), 6)
        self.assertEqual(count(keras.layers.MaxPooling2D), 3)
        self.assertEqual(model.get_layer("rescale").scale, 1.0 / 255.0)

    def test_rejects_sizes_off_the_stride(self):
        with self.assertRaisesRegex(ValueError, "multiple of the stride 8"):
            models.yolo_detector((36, 32, 3))

    def test_save_and_load_give_identical_predictions(self):
        images, _ = _scenes(2)
        model = models.yolo_detector(width=4)
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        path = os.path.join(folder.name, "detector.keras")
        expected = model.predict(images, verbose=0)
        model.save(path)
        revived = keras.saving.load_model(path, safe_mode=True)
        np.testing.assert_array_equal(revived.predict(images, verbose=0), expected)

    def test_a_few_steps_reduce_the_detection_loss(self):
        images, targets = _scenes(4)
        self.assertGreater(targets[..., 4].sum(), 0)
        model = models.yolo_detector(width=8)
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=losses.DetectionLoss())
        history = model.fit(images, targets, batch_size=4, epochs=8, verbose=0, shuffle=False)
        values = history.history["loss"]
        self.assertAllFinite(values)
        self.assertLess(values[-1], 0.7 * values[0])

    def test_detect_returns_boxes_per_image(self):
        images, _ = _scenes(3)
        found = models.detect(models.yolo_detector(width=4), images, score_threshold=0.0)
        self.assertLen(found, 3)
        for boxes, scores in found:
            self.assertEqual(boxes.shape[1:], (4,))
            self.assertEqual(len(boxes), len(scores))
            self.assertTrue(np.all(np.diff(scores) <= 0))  # highest score first


class BoxCodingTest(test_case.TestCase):
    def test_encode_hand_made_box(self):
        # rows 3..13, cols 17..23: centre (y, x) = (8, 20), height 10, width 6.
        instance_map = np.zeros((32, 32), "int32")
        instance_map[3:13, 17:23] = 1
        target = models.encode_instances(instance_map)
        self.assertEqual(target.shape, (4, 4, 6))
        self.assertEqual(target[..., 4].sum(), 1.0)
        self.assertAllClose(
            target[1, 2], [20 / 8 - 2, 8 / 8 - 1, math.log(6 / 8), math.log(10 / 8), 1.0, 0.0]
        )
        self.assertEqual(np.abs(np.delete(target.reshape(16, 6), 6, axis=0)).sum(), 0.0)

    def test_larger_box_wins_a_shared_cell_and_ignore_cells(self):
        boxes = [[0, 0, 4, 4], [0, 0, 6, 6]]  # both centred in cell (0, 0)
        target = models.encode_boxes(boxes, (16, 16), ignore_boxes=[[1, 1, 5, 5], [8, 8, 14, 14]])
        self.assertAllClose(target[0, 0, 2:5], [math.log(6 / 8), math.log(6 / 8), 1.0])
        self.assertEqual(target[0, 0, 5], 0.0)  # an object cell is never ignored
        self.assertEqual(target[1, 1, 5], 1.0)
        self.assertEqual(target[..., 5].sum(), 1.0)

    def test_unannotated_objects_become_ignore_cells(self):
        full = np.zeros((32, 32), "int32")
        full[2:8, 2:8] = 1
        full[20:28, 20:28] = 2
        kept, annotated = nuclei.sparsify_annotations(full, 0.5, seed=0)
        target = models.encode_instances(kept, unannotated_map=np.where(annotated, 0, full))
        self.assertEqual(target[..., 4].sum(), 1.0)
        self.assertEqual(target[..., 5].sum(), 1.0)
        self.assertEqual(float((target[..., 4] * target[..., 5]).sum()), 0.0)

    def test_encode_rejects_bad_input(self):
        with self.assertRaisesRegex(ValueError, "multiple of the stride"):
            models.encode_boxes([[0, 0, 4, 4]], (12, 16))
        with self.assertRaisesRegex(ValueError, "no area"):
            models.encode_boxes([[4, 4, 4, 8]], (16, 16))

    def test_decode_inverts_encode(self):
        boxes = np.array([[3, 17, 14, 23], [20, 2, 31, 12]], "float64")
        target = models.encode_boxes(boxes, (32, 32))
        raw = np.zeros((1, 4, 4, 5), "float32")
        for row, col in zip(*np.nonzero(target[..., 4])):
            x, y, log_w, log_h = target[row, col, :4]
            raw[0, row, col] = [_logit(x), _logit(y), log_w, log_h, 5.0]
        decoded, scores = models.decode_boxes(raw)
        decoded, scores = np.asarray(decoded), np.asarray(scores)
        self.assertEqual(decoded.shape, (1, 16, 4))
        keep = scores[0] > 0.5
        self.assertAllClose(np.sort(decoded[0, keep], axis=0), np.sort(boxes, axis=0), atol=1e-4)

    def test_decode_clips_the_log_size(self):
        raw = np.zeros((1, 1, 1, 5), "float32")
        raw[..., 2:4] = 1e4
        decoded, _ = models.decode_boxes(raw)
        self.assertAllFinite(decoded)


class NonMaxSuppressionTest(test_case.TestCase):
    def test_removes_boxes_overlapping_above_0_2(self):
        boxes = np.array(
            [
                [0, 0, 10, 10],
                [0, 3, 10, 13],  # IoU 70 / 130 = 0.54 with the first: removed
                [0, 8, 10, 18],  # IoU 20 / 180 = 0.11 with the first: kept
                [0, 6, 10, 16],  # IoU 40 / 160 = 0.25 with the first: removed
            ],
            "float32",
        )
        scores = np.array([0.9, 0.8, 0.7, 0.6], "float32")
        kept, kept_scores = models.non_max_suppression(boxes, scores)
        self.assertAllClose(kept, boxes[[0, 2]])
        self.assertAllClose(kept_scores, [0.9, 0.7])

    def test_score_threshold_and_empty_input(self):
        boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], "float32")
        kept, _ = models.non_max_suppression(boxes, np.array([0.9, 0.3], "float32"))
        self.assertLen(kept, 1)
        kept, kept_scores = models.non_max_suppression(np.zeros((0, 4)), np.zeros((0,)))
        self.assertEqual(kept.shape, (0, 4))
        self.assertEqual(kept_scores.shape, (0,))
