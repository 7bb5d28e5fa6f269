"""Tests for tfcell.evaluation.detection: box IoU, greedy one-to-one matching by
score, precision / recall / F1 (against loop references), empty inputs."""

import numpy as np

from tfcell import evaluation
from tfcell.testing import test_case


def iou_reference(a, b):
    inter_h = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_w = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_h * inter_w
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def scores_reference(pred, scores, truth, threshold=0.5):
    """Greedy by score, one true box per prediction, loops only."""
    order = sorted(range(len(pred)), key=lambda k: -scores[k])
    taken = [False] * len(truth)
    tp = 0
    for k in order:
        best, best_iou = None, -1.0
        for t, box in enumerate(truth):
            if not taken[t] and iou_reference(pred[k], box) > best_iou:
                best, best_iou = t, iou_reference(pred[k], box)
        if best is not None and best_iou >= threshold:
            taken[best] = True
            tp += 1
    fp, fn = len(pred) - tp, len(truth) - tp
    return {
        "precision": tp / (tp + fp) if tp + fp else 1.0,
        "recall": tp / (tp + fn) if tp + fn else 1.0,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0,
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }


def _random_boxes(rng, count, size=40):
    corner = rng.uniform(0, size, (count, 2))
    extent = rng.uniform(3, 10, (count, 2))
    return np.concatenate([corner, corner + extent], axis=1)


class BoxIouTest(test_case.TestCase):
    def test_hand_made_and_reference(self):
        a = np.array([[0, 0, 10, 10], [0, 0, 0, 5]], "float64")  # the second has no area
        b = np.array([[0, 5, 10, 15], [20, 20, 30, 30], [0, 0, 10, 10]], "float64")
        iou = evaluation.box_iou(a, b)
        self.assertAllClose(iou[0], [50 / 150, 0.0, 1.0], dtype="float64")
        self.assertAllClose(iou[1], [0.0, 0.0, 0.0], dtype="float64")
        rng = np.random.RandomState(0)
        x, y = _random_boxes(rng, 6), _random_boxes(rng, 5)
        expected = [[iou_reference(p, q) for q in y] for p in x]
        self.assertAllClose(evaluation.box_iou(x, y), expected, dtype="float64")
        self.assertEqual(evaluation.box_iou(np.zeros((0, 4)), y).shape, (0, 5))


class DetectionScoresTest(test_case.TestCase):
    def test_one_to_one_by_score(self):
        truth = np.array([[0, 0, 10, 10], [0, 20, 10, 30]], "float64")
        pred = np.array(
            [
                [0, 1, 10, 11],  # IoU 0.82 with truth 0, lower score
                [0, 0, 10, 10],  # exact on truth 0, higher score: wins it
                [0, 24, 10, 34],  # IoU 60 / 140 = 0.43 with truth 1: too low
                [50, 50, 60, 60],  # nowhere
            ],
            "float64",
        )
        scores = np.array([0.6, 0.9, 0.8, 0.7])
        matches = evaluation.match_detections(pred, scores, truth)
        self.assertEqual(matches.tolist(), [-1, 0, -1, -1])
        result = evaluation.detection_scores(pred, scores, truth)
        self.assertEqual((result["tp"], result["fp"], result["fn"]), (1, 3, 1))
        self.assertAllClose(result["precision"], 0.25, dtype="float64")
        self.assertAllClose(result["recall"], 0.5, dtype="float64")
        self.assertAllClose(result["f1"], 2 * 1 / (2 + 3 + 1), dtype="float64")

    def test_falls_back_to_the_next_free_true_box(self):
        truth = np.array([[0, 0, 10, 10], [0, 2, 10, 12]], "float64")
        pred = np.array([[0, 0, 10, 10], [0, 1, 10, 11]], "float64")
        # Both predictions prefer truth 0; the second takes truth 1 (IoU 0.82).
        matches = evaluation.match_detections(pred, [0.9, 0.8], truth)
        self.assertEqual(matches.tolist(), [0, 1])

    def test_iou_exactly_at_the_threshold_counts(self):
        truth = np.array([[0, 0, 10, 10]], "float64")
        pred = np.array([[0, 0, 10, 5]], "float64")  # IoU 50 / 100 = 0.5
        self.assertEqual(evaluation.detection_scores(pred, [1.0], truth)["tp"], 1)
        self.assertEqual(evaluation.detection_scores(pred, [1.0], truth, 0.6)["tp"], 0)

    def test_reference_on_random_boxes(self):
        rng = np.random.RandomState(1)
        for _ in range(10):
            truth = _random_boxes(rng, rng.randint(0, 8))
            pred = np.concatenate(
                [truth + rng.normal(0, 1.5, truth.shape), _random_boxes(rng, rng.randint(0, 4))]
            )
            scores = rng.rand(len(pred))
            got = evaluation.detection_scores(pred, scores, truth)
            expected = scores_reference(pred, scores, truth)
            self.assertEqual(
                {k: got[k] for k in ("tp", "fp", "fn")},
                {k: expected[k] for k in ("tp", "fp", "fn")},
            )
            for key in ("precision", "recall", "f1"):
                self.assertAllClose(got[key], expected[key], dtype="float64")

    def test_empty_inputs_give_no_nan(self):
        boxes = np.array([[0, 0, 10, 10]], "float64")
        none = np.zeros((0, 4))
        no_predictions = evaluation.detection_scores(none, [], boxes)
        self.assertEqual(
            no_predictions, {"precision": 1.0, "recall": 0.0, "f1": 0.0, "tp": 0, "fp": 0, "fn": 1}
        )
        no_truth = evaluation.detection_scores(boxes, [0.5], none)
        self.assertEqual(
            no_truth, {"precision": 0.0, "recall": 1.0, "f1": 0.0, "tp": 0, "fp": 1, "fn": 0}
        )
        nothing = evaluation.detection_scores(none, [], none)
        self.assertEqual(nothing["f1"], 1.0)
        for result in (no_predictions, no_truth, nothing):
            self.assertAllFinite([result["precision"], result["recall"], result["f1"]])

    def test_counts_add_over_images(self):
        totals = evaluation.precision_recall_f1(tp=8, fp=2, fn=4)
        self.assertAllClose(
            [totals["precision"], totals["recall"], totals["f1"]],
            [0.8, 8 / 12, 16 / 22],
            dtype="float64",
        )

    def test_mismatched_scores(self):
        with self.assertRaisesRegex(ValueError, "one score per predicted box"):
            evaluation.match_detections(np.zeros((2, 4)), [0.5], np.zeros((1, 4)))
