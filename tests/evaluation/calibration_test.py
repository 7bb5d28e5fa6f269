"""Tests for tfcell.evaluation.calibration and tfcell.models.with_probabilities."""

import logging
import math
import os
import tempfile

import keras
import numpy as np

import tfcell
from tfcell.evaluation import calibration, ensembles
from tfcell.testing import test_case


def ref_probabilities(logits, temperature):
    """Loop reference: exp(z_j / T) / sum_k exp(z_k / T), row by row."""
    out = np.zeros_like(logits, dtype="float64")
    for i, row in enumerate(logits):
        shifted = [v / temperature - max(row) / temperature for v in row]
        total = sum(math.exp(v) for v in shifted)
        out[i] = [math.exp(v) / total for v in shifted]
    return out


def ref_nll(logits, labels, temperature):
    p = ref_probabilities(logits, temperature)
    return -np.mean([math.log(p[i, y]) for i, y in enumerate(labels)])


def overconfident(n=2000, num_classes=4, seed=0):
    """Logits 6x too large for labels drawn from the softmax of the true logits."""
    rng = np.random.default_rng(seed)
    true_logits = rng.normal(size=(n, num_classes)) * 1.5
    true_p = ref_probabilities(true_logits, 1.0)
    labels = np.array([rng.choice(num_classes, p=row) for row in true_p])
    return 6.0 * true_logits, labels


class CalibrationTest(test_case.TestCase):
    def test_to_logits(self):
        logits = np.array([[0.0, np.log(3.0), 9.0]])
        np.testing.assert_allclose(calibration.to_logits(logits, "softmax", 2), logits[:, :2])
        cos = np.array([[0.1, -0.5]])
        np.testing.assert_allclose(
            calibration.to_logits(cos, "cosine", 2, scale=30.0), [[3.0, -15]]
        )
        aff = np.array([[0.2, 0.6], [0.0, 0.0]])
        got = calibration.to_logits(aff, "affinity", 2)
        np.testing.assert_allclose(got[0], np.log([0.2, 0.6]))
        self.assertTrue(np.all(np.isfinite(got)))
        self.assertEqual(got.dtype, np.float64)
        with self.assertRaisesRegex(ValueError, "head must be one of"):
            calibration.to_logits(aff, "svm", 2)
        with self.assertRaisesRegex(ValueError, r"\(N, C\) with C = 3"):
            calibration.to_logits(aff, "softmax", 3)

    def test_affinity_logits_keep_the_argmax(self):
        rng = np.random.default_rng(1)
        features, centers = rng.normal(size=(200, 8)) * 4, rng.normal(size=(5, 8)) * 4
        sq = ((features[:, None] - centers[None]) ** 2).sum(-1)
        aff = np.exp(-sq / 130.0).astype("float32")
        logits = calibration.to_logits(aff, "affinity", 5)
        np.testing.assert_array_equal(logits.argmax(1), aff.argmax(1))
        np.testing.assert_allclose(logits, -sq / 130.0, atol=1e-5)  # log d = -d^2 / sigma
        # Softmax of log-affinities = affinities normalised to sum 1.
        np.testing.assert_allclose(
            calibration.probabilities(logits), aff / aff.sum(1, keepdims=True), rtol=1e-6
        )

    def test_probabilities_reference_and_stability(self):
        rng = np.random.default_rng(2)
        logits = rng.normal(size=(7, 4)) * 5
        for temperature in (0.3, 1.0, 2.5):
            got = calibration.probabilities(logits, temperature)
            np.testing.assert_allclose(got, ref_probabilities(logits, temperature), rtol=1e-12)
            np.testing.assert_allclose(got.sum(1), 1.0)
        huge = calibration.probabilities(np.array([[1e4, -1e4, 0.0], [-708.0, -708.0, -708.0]]))
        np.testing.assert_allclose(huge, [[1.0, 0.0, 0.0], [1 / 3] * 3])
        with self.assertRaisesRegex(ValueError, "temperature"):
            calibration.probabilities(logits, 0.0)

    def test_fit_temperature_improves_nll_and_ece(self):
        logits, labels = overconfident()
        temperature = calibration.fit_temperature(logits, labels)
        self.assertGreater(temperature, 3.0)  # About 6 (the over-confidence factor).
        self.assertLess(temperature, 9.0)
        self.assertLessEqual(ref_nll(logits, labels, temperature), ref_nll(logits, labels, 1.0))
        # The NLL is minimal at T: a little either side is worse.
        for factor in (0.9, 1.1):
            self.assertGreater(
                ref_nll(logits, labels, temperature * factor), ref_nll(logits, labels, temperature)
            )
        before = calibration.expected_calibration_error(calibration.probabilities(logits), labels)
        after = calibration.expected_calibration_error(
            calibration.probabilities(logits, temperature), labels
        )
        self.assertLess(after, before)
        self.assertLess(after, 0.05)

    def test_fit_temperature_degenerate_inputs(self):
        logger = "tfcell.evaluation"
        with self.assertLogs(logger, logging.WARNING) as logs:
            self.assertEqual(calibration.fit_temperature(np.zeros((0, 3)), []), 1.0)
        self.assertIn("no validation samples", logs.output[0])
        with self.assertLogs(logger, logging.WARNING) as logs:
            self.assertEqual(calibration.fit_temperature(np.ones((4, 1)), [0] * 4), 1.0)
        self.assertIn("one class", logs.output[0])
        with self.assertLogs(logger, logging.WARNING) as logs:
            correct = np.array([[3.0, 0.0], [0.0, 2.0], [5.0, 1.0]])
            self.assertEqual(calibration.fit_temperature(correct, [0, 1, 0]), 1.0)
        self.assertIn("every validation prediction is correct", logs.output[0])
        with self.assertLogs(logger, logging.WARNING) as logs:
            self.assertEqual(calibration.fit_temperature(np.zeros((5, 3)), [0, 1, 2, 0, 1]), 1.0)
        self.assertIn("no temperature improves", logs.output[0])
        # Labels all of one class, some wrong: an ordinary fit, finite.
        t = calibration.fit_temperature(np.array([[2.0, 0.0], [0.0, 3.0], [1.0, 0.5]]), [0, 0, 0])
        self.assertTrue(math.isfinite(t) and t > 0)
        with self.assertRaisesRegex(ValueError, r"\[0, 2\)"):
            calibration.fit_temperature(np.zeros((2, 2)), [0, 2])
        with self.assertRaisesRegex(ValueError, "NaN or inf"):
            calibration.fit_temperature(np.array([[np.nan, 0.0], [0.0, 1.0]]), [0, 1])

    def test_expected_calibration_error_hand_checked(self):
        # Bins of width 0.5: confidences 0.9, 0.8 (bin 2, accuracy 1/2) and 0.6 (bin 2,
        # correct) -> one bin: |2/3 - 0.7667| = 0.1; a 0.5 confidence lands in bin 1.
        p = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])
        labels = np.array([0, 0, 0, 1])
        # Bin 1: conf 0.5, wrong -> 1/4 * 0.5; bin 2: 3/4 * |2/3 - 2.3/3|.
        expected = 0.25 * 0.5 + 0.75 * abs(2 / 3 - 2.3 / 3)
        self.assertAlmostEqual(
            calibration.expected_calibration_error(p, labels, num_bins=2), expected
        )
        self.assertAlmostEqual(calibration.expected_calibration_error(np.eye(3), [0, 1, 2]), 0.0)
        self.assertTrue(np.isnan(calibration.expected_calibration_error(np.zeros((0, 2)), [])))

    def test_ensembles_route_through_calibration(self):
        logits, labels = overconfident(n=50)
        np.testing.assert_allclose(
            ensembles.to_probabilities(logits, "softmax", 4, temperature=3.0),
            calibration.probabilities(logits, 3.0),
        )
        np.testing.assert_allclose(
            ensembles.to_probabilities(logits, "softmax", 4), calibration.probabilities(logits)
        )

    def test_temperature_scaling_layer(self):
        layer = calibration.TemperatureScaling("cosine", 3, temperature=2.0, scale=10.0)
        cos = np.random.default_rng(3).uniform(-1, 1, size=(5, 3)).astype("float32")
        expected = calibration.probabilities(calibration.to_logits(cos, "cosine", 3, 10.0), 2.0)
        self.assertAllClose(layer(cos), expected, atol=1e-6)
        self.run_serialization_test(layer)
        self.assertEqual(layer.get_config()["temperature"], 2.0)
        layer.temperature_variable.assign(4.0)
        self.assertEqual(layer.get_config()["temperature"], 4.0)
        with self.assertRaisesRegex(ValueError, "head must be one of"):
            calibration.TemperatureScaling("svm", 3)
        with self.assertRaisesRegex(ValueError, "temperature"):
            calibration.TemperatureScaling("softmax", 3, temperature=-1.0)


class WithProbabilitiesTest(test_case.TestCase):
    def _model(self, head, **head_kwargs):
        backbone = keras.Sequential(
            [keras.Input((6, 6, 3)), keras.layers.Flatten(), keras.layers.Dense(8)], name="mlp"
        )
        return tfcell.models.build_classifier(backbone, 3, head, 4, **head_kwargs)

    def test_predict_gives_calibrated_probabilities_and_round_trips(self):
        x = np.random.default_rng(4).uniform(0, 255, (5, 6, 6, 3)).astype("float32")
        for head, scale, kwargs in (
            ("softmax", 1.0, {}),
            ("cosine", 20.0, {}),
            ("affinity", 1.0, {"sigma": 130.0}),
        ):
            model = self._model(head, **kwargs)
            served = tfcell.models.with_probabilities(model, head, 1.7, scale=scale)
            scores = model.predict(x, verbose=0)
            probs = served.predict(x, verbose=0)
            expected = calibration.probabilities(calibration.to_logits(scores, head, 3, scale), 1.7)
            self.assertAllClose(probs, expected, atol=1e-6, msg=head)
            self.assertAllClose(probs.sum(1), np.ones(5), atol=1e-6)
            path = os.path.join(tempfile.mkdtemp(), f"{head}.keras")
            served.save(path)
            revived = keras.saving.load_model(path, safe_mode=True)
            self.assertAllClose(revived.predict(x, verbose=0), probs, atol=1e-6, msg=head)
            layer = revived.get_layer("probabilities")
            self.assertAllClose(layer.temperature_variable, 1.7)

    def test_rejects_models_without_one_output(self):
        class Plain(keras.Model):
            def call(self, x):
                return x

        with self.assertRaisesRegex(ValueError, "functional model"):
            tfcell.models.with_probabilities(Plain(), "softmax", 1.0)
