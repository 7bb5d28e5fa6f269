"""Tests for tfcell.evaluation against small hand-checked cases."""

import os
import tempfile

import numpy as np
import pytest
from absl.testing import absltest

from tfcell.evaluation import ensembles, metrics, plots, report, statistics
from tfcell.testing import test_case


class MetricsTest(test_case.TestCase):
    def test_hand_checked_metrics(self):
        y_true = [0, 0, 0, 1, 1, 2]
        y_pred = [0, 0, 1, 1, 1, 0]
        out = metrics.classification_metrics(y_true, y_pred, 3)
        # precision: c0 2/3, c1 2/3, c2 0 -> 4/9; recall: 2/3, 1, 0 -> 5/9.
        self.assertAlmostEqual(out["precision"], 4 / 9)
        self.assertAlmostEqual(out["recall"], 5 / 9)
        # F1: c0 2/3, c1 0.8, c2 0 -> 22/45.
        self.assertAlmostEqual(out["f1"], (2 / 3 + 0.8) / 3)
        self.assertAlmostEqual(out["accuracy"], 4 / 6)
        self.assertAlmostEqual(out["balanced_accuracy"], 5 / 9)

    def test_confusion_rows_sum_to_one_and_absent_class_is_zero(self):
        matrix = metrics.normalized_confusion_matrix([0, 0, 1], [0, 1, 1], 3)
        np.testing.assert_allclose(matrix, [[0.5, 0.5, 0], [0, 1, 0], [0, 0, 0]])

    def test_auroc(self):
        y = [0, 0, 1, 1]
        p = np.array([[0.9, 0.1], [0.6, 0.4], [0.7, 0.3], [0.2, 0.8]])
        auroc = metrics.classwise_auroc(y, p)
        self.assertAlmostEqual(auroc[1], 0.75)  # 3 of 4 positive/negative pairs ordered.
        self.assertAlmostEqual(auroc[0], 0.75)
        self.assertTrue(np.isnan(metrics.classwise_auroc([0, 0], p[:2])[1]))

    def test_scores_accuracy_ignores_norm_column(self):
        metric = metrics.ScoresAccuracy(2)
        y_pred = np.array([[0.9, 0.1, 50.0], [0.2, 0.8, 50.0]], "float32")
        metric.update_state(np.array([0, 0]), y_pred)
        self.assertAlmostEqual(float(metric.result()), 0.5)
        self.run_serialization_test(metric)


class EnsembleTest(test_case.TestCase):
    # Three models, two samples, three classes.
    P = [
        np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]]),
        np.array([[0.1, 0.8, 0.1], [0.3, 0.3, 0.4]]),
        np.array([[0.5, 0.4, 0.1], [0.1, 0.2, 0.7]]),
    ]

    def test_average(self):
        pred, scores = ensembles.average_ensemble(self.P)
        np.testing.assert_allclose(scores[0], [0.4, 0.5, 0.1])
        np.testing.assert_array_equal(pred, [1, 2])

    def test_maximum_confidence(self):
        pred, scores = ensembles.max_confidence_ensemble(self.P)
        # Sample 0: model 1 (0.8) -> class 1; sample 1: model 2 (0.7) -> class 2.
        np.testing.assert_array_equal(pred, [1, 2])
        np.testing.assert_allclose(scores[1], self.P[2][1])

    def test_vote(self):
        pred, scores = ensembles.vote_ensemble(self.P)
        # Sample 0: votes 0, 1, 0 -> class 0 although the average says 1.
        np.testing.assert_array_equal(pred, [0, 2])
        np.testing.assert_allclose(scores.sum(axis=1), [1.0, 1.0])

    def test_vote_tie_broken_by_mean_probability(self):
        p = [np.array([[0.6, 0.4]]), np.array([[0.1, 0.9]])]
        pred, _ = ensembles.vote_ensemble(p)
        self.assertEqual(pred[0], 1)  # One vote each; mean 0.35 vs 0.65.

    def test_to_probabilities(self):
        logits = np.array([[0.0, np.log(3.0)]])
        np.testing.assert_allclose(ensembles.to_probabilities(logits, "softmax", 2), [[0.25, 0.75]])
        cos = np.array([[0.0, 0.5, 7.0]])  # Third column: a SphereFace norm, dropped.
        p = ensembles.to_probabilities(cos, "cosine", 2, scale=2 * np.log(3.0))
        np.testing.assert_allclose(p, [[0.25, 0.75]])
        aff = np.array([[0.2, 0.6], [0.0, 0.0]])
        np.testing.assert_allclose(
            ensembles.to_probabilities(aff, "affinity", 2), [[0.25, 0.75], [0.5, 0.5]]
        )
        with self.assertRaisesRegex(ValueError, "head must be"):
            ensembles.to_probabilities(aff, "svm", 2)

    def test_unknown_rule(self):
        with self.assertRaisesRegex(ValueError, "rule must be"):
            ensembles.ensemble(self.P, "median")


class StatisticsTest(test_case.TestCase):
    def test_mean_std(self):
        self.assertEqual(statistics.mean_std([1.0, 2.0, 3.0]), (2.0, 1.0))
        self.assertEqual(statistics.mean_std([4.0]), (4.0, 0.0))
        self.assertEqual(statistics.format_mean_std([0.5, 0.7]), "0.600 +- 0.141")
        self.assertEqual(statistics.format_mean_std([]), "-")

    def test_paired_t_test_hand_checked(self):
        # Differences 0.1, 0.2, 0.3: mean 0.2, sd 0.1, t = 0.2 / (0.1 / sqrt 3) = 3.4641.
        out = statistics.paired_t_test([0.6, 0.7, 0.8], [0.5, 0.5, 0.5])
        self.assertAlmostEqual(out["t"], 2 * np.sqrt(3), places=4)
        self.assertAlmostEqual(out["p"], 0.07418, places=4)  # Two-sided, 2 dof.
        self.assertFalse(out["significant"])
        out = statistics.paired_t_test([0.61, 0.72, 0.80, 0.9], [0.5, 0.6, 0.7, 0.8])
        self.assertTrue(out["better"])

    def test_degenerate_and_mismatched(self):
        self.assertTrue(np.isnan(statistics.paired_t_test([0.5], [0.4])["p"]))
        self.assertTrue(np.isnan(statistics.paired_t_test([0.6, 0.7], [0.5, 0.6])["p"]))
        with self.assertRaisesRegex(ValueError, "one baseline value per repeat"):
            statistics.paired_t_test([0.5, 0.6], [0.5])


class ReportTest(test_case.TestCase):
    def test_results_round_trip_and_done(self):
        workdir = tempfile.mkdtemp()
        writer = report.ResultsWriter(workdir)
        writer.write({"method": "cfal", "repeat": 1, "f1": np.float32(0.5), "auroc": [np.nan]})
        writer.write({"method": "cfal", "repeat": 0, "f1": 0.25})
        records = report.read_results(workdir)
        self.assertIsNone(records[0]["auroc"][0])
        self.assertEqual(report.group_results(records, ("method",), "f1"), {("cfal",): [0.25, 0.5]})
        self.assertFalse(report.is_done(workdir))
        report.write_done(workdir)
        self.assertTrue(report.is_done(workdir))

    def test_markdown_and_plot(self):
        table = report.markdown_table(["a", "b"], [[1, None]])
        self.assertEqual(table.splitlines()[-1], "| 1 | - |")
        path = os.path.join(tempfile.mkdtemp(), "cm.png")
        plots.plot_confusion_matrix(np.eye(2), ["x", "y"], path, title="t")
        with open(path, "rb") as f:
            self.assertEqual(f.read(4), b"\x89PNG")


if __name__ == "__main__":
    absltest.main()


def test_replace_marked_block(tmp_path):
    from tfcell.evaluation import report

    path = tmp_path / "doc.md"
    path.write_text("intro\n<!-- t:start -->\nold\n<!-- t:end -->\noutro\n")
    report.replace_marked_block(str(path), "t", "| a |\n|---|")
    assert path.read_text() == "intro\n<!-- t:start -->\n| a |\n|---|\n<!-- t:end -->\noutro\n"
    with pytest.raises(ValueError, match="lacks the markers"):
        report.replace_marked_block(str(path), "missing", "x")
