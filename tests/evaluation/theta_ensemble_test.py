"""Tests for Goswami et al.'s theta ensemble and the saved-fold-model prediction."""

import os
import tempfile

import keras
import numpy as np
from absl.testing import absltest, parameterized

from tfcell.evaluation import ensembles
from tfcell.testing import test_case


def _theta_reference(probabilities, theta, epsilon=1e-12):
    """Sec. 5.2 as written, one sample at a time (strict `>`, zeros clipped)."""
    p = np.asarray(probabilities, "float64")
    num_models, num_samples, num_classes = p.shape
    predictions, scores = [], []
    for n in range(num_samples):
        best_model, best_confidence = 0, -1.0
        for m in range(num_models):
            if max(p[m, n]) > best_confidence:  # Ties keep the first model.
                best_model, best_confidence = m, max(p[m, n])
        if best_confidence > theta:
            row = p[best_model, n].copy()
        else:
            row = np.array(
                [
                    num_models / sum(1.0 / max(p[m, n, c], epsilon) for m in range(num_models))
                    for c in range(num_classes)
                ]
            )
            row = row / row.sum()
        predictions.append(int(np.argmax(row)))
        scores.append(row)
    return np.array(predictions), np.array(scores)


def _softmax(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class ThetaEnsembleTest(test_case.TestCase):
    # Seven models, one sample: six say class 0 with 0.9, one says class 1 with 0.96.
    MAJORITY = [np.array([[0.9, 0.1]])] * 6 + [np.array([[0.04, 0.96]])]

    def test_confident_model_wins_against_the_majority(self):
        pred, scores = ensembles.theta_ensemble(self.MAJORITY, theta=0.95)
        self.assertEqual(pred[0], 1)  # 0.96 > 0.95: the seventh model decides.
        np.testing.assert_array_equal(scores, [[0.04, 0.96]])
        # The average, the vote and the harmonic mean all say class 0 here.
        self.assertEqual(ensembles.average_ensemble(self.MAJORITY)[0][0], 0)
        self.assertEqual(ensembles.vote_ensemble(self.MAJORITY)[0][0], 0)

    def test_below_theta_takes_the_harmonic_mean(self):
        pred, scores = ensembles.theta_ensemble(self.MAJORITY, theta=0.98)
        # Hand-checked: H0 = 7 / (6 / 0.9 + 1 / 0.04) = 0.221053,
        # H1 = 7 / (6 / 0.1 + 1 / 0.96) = 0.114676; normalised 0.658427, 0.341573.
        h0, h1 = 7 / (6 / 0.9 + 1 / 0.04), 7 / (6 / 0.1 + 1 / 0.96)
        self.assertAlmostEqual(h0, 0.221053, places=6)
        self.assertEqual(pred[0], 0)
        self.assertAllClose(scores, [[h0 / (h0 + h1), h1 / (h0 + h1)]], dtype="float64")

    def test_harmonic_mean_is_not_the_arithmetic_mean(self):
        # Six models at [0.8, 0.2], one at [0.03, 0.97]: the mean says class 0
        # (p1 = 0.31), the harmonic mean class 1 (a small probability dominates).
        p = [np.array([[0.8, 0.2]])] * 6 + [np.array([[0.03, 0.97]])]
        self.assertEqual(ensembles.average_ensemble(p)[0][0], 0)
        pred, scores = ensembles.theta_ensemble(p, theta=0.98)
        h = np.array([7 / (6 / 0.8 + 1 / 0.03), 7 / (6 / 0.2 + 1 / 0.97)])
        self.assertEqual(pred[0], 1)
        self.assertAllClose(scores[0], h / h.sum(), dtype="float64")

    def test_confidence_equal_to_theta_takes_the_harmonic_mean(self):
        # "more than theta" (Sec. 5.2, A.1): equality is not enough.
        p = [np.array([[0.75, 0.25]]), np.array([[0.5, 0.5]])]
        _, scores = ensembles.theta_ensemble(p, theta=0.75)
        # H = [2 / (4/3 + 2), 2 / (4 + 2)] = [0.6, 1/3] -> [9/14, 5/14].
        self.assertAllClose(scores, [[9 / 14, 5 / 14]], dtype="float64")
        _, scores = ensembles.theta_ensemble(p, theta=0.74)
        np.testing.assert_array_equal(scores, [[0.75, 0.25]])

    def test_ties_between_models_go_to_the_first(self):
        p = [np.array([[0.99, 0.01]]), np.array([[0.01, 0.99]])]
        self.assertEqual(ensembles.theta_ensemble(p, 0.95)[0][0], 0)
        self.assertEqual(ensembles.theta_ensemble(p[::-1], 0.95)[0][0], 1)

    @parameterized.parameters((0.95, 2), (0.98, 2), (0.95, 3), (0.6, 4), (0.0, 3), (1.0, 3))
    def test_matches_loop_reference(self, theta, num_classes):
        rng = np.random.default_rng(num_classes)
        # Sharp Dirichlet draws for half the samples (a model above theta) and
        # flat ones for the other half (all below theta).
        p = np.concatenate(
            [
                rng.dirichlet(np.full(num_classes, 0.3), size=(7, 32)),
                rng.dirichlet(np.full(num_classes, 5.0), size=(7, 32)),
            ],
            axis=1,
        )
        pred, scores = ensembles.theta_ensemble(list(p), theta)
        ref_pred, ref_scores = _theta_reference(p, theta)
        np.testing.assert_array_equal(pred, ref_pred)
        self.assertAllClose(scores, ref_scores, dtype="float64")
        self.assertAllClose(scores.sum(axis=1), np.ones(64), dtype="float64")
        confident = p.max(axis=2).max(axis=0) > theta
        if 0.0 < theta < 1.0:
            self.assertTrue(confident.any() and not confident.all())
        # A (M, N, C) array is the same input as a list of M (N, C) arrays.
        np.testing.assert_array_equal(ensembles.theta_ensemble(p, theta)[1], scores)

    def test_theta_zero_and_one_are_the_limits(self):
        p = np.random.default_rng(0).dirichlet([1.0, 1.0, 1.0], size=(5, 20))
        np.testing.assert_array_equal(
            ensembles.theta_ensemble(p, 0.0)[1], ensembles.max_confidence_ensemble(p)[1]
        )
        _, scores = ensembles.theta_ensemble(p, 1.0)
        harmonic = 5 / (1 / p).sum(axis=0)
        self.assertAllClose(scores, harmonic / harmonic.sum(1, keepdims=True), dtype="float64")

    def test_exact_zero_probabilities_stay_finite(self):
        # Below theta with zeros; in the second sample every class has a 0 somewhere.
        p = [
            np.array([[0.6, 0.4, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]]),
            np.array([[0.5, 0.0, 0.5, 0.0], [0.0, 0.0, 0.5, 0.5]]),
        ]
        with np.errstate(divide="raise", invalid="raise", over="raise"):
            pred, scores = ensembles.theta_ensemble(p, 0.95)
        self.assertAllFinite(scores)
        self.assertAllClose(scores.sum(axis=1), [1.0, 1.0], dtype="float64")
        self.assertEqual(pred[0], 0)  # H0 = 2 / (1/0.6 + 1/0.5) = 0.545; others ~2e-12.
        self.assertAllClose(scores[0, 0], 1.0, atol=1e-10, dtype="float64")
        ref_pred, ref_scores = _theta_reference(p, 0.95)
        np.testing.assert_array_equal(pred, ref_pred)
        self.assertAllClose(scores, ref_scores, dtype="float64")

    def test_rule_names_in_ensemble(self):
        p = self.MAJORITY
        for rule, theta in (("theta", 0.95), ("theta_0.98", 0.98), ("theta_0.95", 0.95)):
            expected = ensembles.theta_ensemble(p, theta)
            got = ensembles.ensemble(p, rule)
            np.testing.assert_array_equal(got[0], expected[0])
            np.testing.assert_array_equal(got[1], expected[1])
        self.assertIn("theta", ensembles.ENSEMBLE_RULES)
        for rule in ("average", "maximum", "vote"):  # Unchanged.
            np.testing.assert_array_equal(
                ensembles.ensemble(p, rule)[1],
                {
                    "average": ensembles.average_ensemble,
                    "maximum": ensembles.max_confidence_ensemble,
                    "vote": ensembles.vote_ensemble,
                }[rule](p)[1],
            )
        for rule in ("theta_x", "theta_1.5", "theta_"):
            with self.assertRaisesRegex(ValueError, "theta_<value>"):
                ensembles.ensemble(p, rule)
        with self.assertRaisesRegex(ValueError, "rule must be one of"):
            ensembles.ensemble(p, "median")

    @parameterized.named_parameters(
        ("empty", [], "no models"),
        (
            "one_d",
            [np.array([0.5, 0.5])],
            r"probabilities\[0\] has shape \(2,\); expected \(N, C\)",
        ),
        (
            "samples_differ",
            [np.full((3, 2), 0.5), np.full((2, 2), 0.5)],
            r"probabilities\[1\] has shape \(2, 2\) but probabilities\[0\] has \(3, 2\)",
        ),
        (
            "classes_differ",
            [np.full((2, 2), 0.5), np.full((2, 3), 1 / 3)],
            "same N samples over the same C classes",
        ),
        ("array_2d", np.full((2, 2), 0.5), r"shape \(2, 2\); expected \(M, N, C\)"),
        ("logits", [np.array([[2.0, 0.5]])], r"row 0 is .*\(sum 2.5\).*to_probabilities"),
        ("negative", [np.array([[0.5, 0.5], [1.5, -0.5]])], "row 1 is"),
        ("nan", [np.array([[np.nan, 0.5]])], "finite, non-negative"),
    )
    def test_shape_and_value_errors(self, probabilities, message):
        with self.assertRaisesRegex(ValueError, message):
            ensembles.theta_ensemble(probabilities)

    @parameterized.parameters(1.5, -0.1, "0.95", True, None)
    def test_theta_errors(self, theta):
        with self.assertRaisesRegex(ValueError, r"theta must be a number in \[0, 1\]"):
            ensembles.theta_ensemble(self.MAJORITY, theta)


def _tiny_classifier(num_classes, softmax, scale):
    """A fully convolutional classifier: any image size in, (N, C) out."""
    model = keras.Sequential(
        [
            keras.Input((None, None, 3)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(num_classes, activation="softmax" if softmax else None),
        ]
    )
    # Large weights make confident (and crop-dependent) predictions.
    for weight in model.weights:
        weight.assign(weight.numpy() * scale)
    return model


class PredictFoldEnsembleTest(test_case.TestCase):
    CORNERS = [(0, 0), (0, 2), (2, 0), (2, 2), (1, 1)]  # 8x8 images, 6x6 crops.

    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp()
        self.images = np.random.default_rng(0).uniform(0, 1, (12, 8, 8, 3)).astype("float32")
        # Model a outputs logits, model b softmax probabilities.
        self.models = [_tiny_classifier(3, False, 3.0), _tiny_classifier(3, True, 2.0)]
        self.paths = [os.path.join(self.dir, f"fold{k}.keras") for k in range(2)]
        for model, path in zip(self.models, self.paths):
            model.save(path)

    def _manual_probabilities(self, crop):
        out = []
        for model, is_logits in zip(self.models, (True, False)):
            views = (
                [self.images]
                if crop is None
                else [self.images[:, y : y + 6, x : x + 6] for y, x in self.CORNERS]
            )
            probs = []
            for view in views:
                o = np.asarray(model.predict(view, batch_size=32, verbose=0), "float64")
                probs.append(_softmax(o) if is_logits else o)
            out.append(np.mean(probs, axis=0))
        return np.stack(out)

    @parameterized.parameters(None, 6)
    def test_matches_manual_computation(self, crop_size):
        manual = self._manual_probabilities(crop_size)
        # A theta between the samples' confidences, so both branches are used.
        confidence = manual.max(axis=2).max(axis=0)
        theta = float(np.median(confidence))
        self.assertTrue((confidence > theta).any() and (confidence <= theta).any())
        pred, scores = ensembles.predict_fold_ensemble(
            self.paths, self.images, theta=theta, crop_size=crop_size
        )
        ref_pred, ref_scores = _theta_reference(manual, theta)
        np.testing.assert_array_equal(pred, ref_pred)
        self.assertAllClose(scores, ref_scores, atol=1e-6, rtol=1e-6)
        self.assertEqual(scores.shape, (12, 3))

    def test_crops_average_probabilities_not_logits(self):
        manual = self._manual_probabilities(6)
        logit_mean = _softmax(
            np.mean(
                [
                    self.models[0].predict(self.images[:, y : y + 6, x : x + 6], verbose=0)
                    for y, x in self.CORNERS
                ],
                axis=0,
            )
        )
        # The test can tell the two apart, and the function averages probabilities.
        self.assertGreater(np.abs(logit_mean - manual[0]).max(), 1e-3)
        _, scores = ensembles.predict_fold_ensemble(
            self.paths[:1], self.images, theta=1.0, crop_size=6
        )
        self.assertAllClose(scores, manual[0], atol=1e-6, rtol=1e-6)

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "list of .keras files"):
            ensembles.predict_fold_ensemble(self.paths[0], self.images)
        with self.assertRaisesRegex(ValueError, "model_paths is empty"):
            ensembles.predict_fold_ensemble([], self.images)
        with self.assertRaisesRegex(FileNotFoundError, "missing.keras"):
            ensembles.predict_fold_ensemble([os.path.join(self.dir, "missing.keras")], self.images)
        with self.assertRaisesRegex(ValueError, "theta must be"):
            ensembles.predict_fold_ensemble(self.paths, self.images, theta=95)
        with self.assertRaisesRegex(ValueError, r"images must be a batch \(N, H, W, C\)"):
            ensembles.predict_fold_ensemble(self.paths, self.images[0])
        with self.assertRaisesRegex(ValueError, "exceeds the image size"):
            ensembles.predict_fold_ensemble(self.paths, self.images, crop_size=9)
        other = os.path.join(self.dir, "four_classes.keras")
        _tiny_classifier(4, True, 1.0).save(other)
        with self.assertRaisesRegex(ValueError, "four_classes.keras predicts 4 classes"):
            ensembles.predict_fold_ensemble([self.paths[0], other], self.images)
        sigmoid = os.path.join(self.dir, "sigmoid.keras")
        _tiny_classifier(1, False, 1.0).save(sigmoid)
        with self.assertRaisesRegex(ValueError, "sigmoid.keras outputs shape"):
            ensembles.predict_fold_ensemble([sigmoid], self.images)


if __name__ == "__main__":
    absltest.main()
