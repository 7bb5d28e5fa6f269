"""Every head of tfcell.models.build_classifier predicts (N, C) scores whose argmax
is the class, so Keras' "accuracy" and plain keras.metrics work unchanged."""

import warnings

import keras
import numpy as np
import pytest
from absl.testing import parameterized

import tfcell
from tfcell.evaluation import metrics
from tfcell.testing import test_case

C = 3

# name -> (head, head kwargs, loss factory)
HEADS = {
    "softmax": ("softmax", {}, lambda: keras.losses.SparseCategoricalCrossentropy(True)),
    "softmax_focal": (
        "softmax",
        {},
        lambda: tfcell.losses.ClassBalancedFocalLoss(2.0, [1.0, 2.0, 0.5], from_logits=True),
    ),
    "affinity_cfal": ("affinity", {"sigma": 130.0}, lambda: tfcell.losses.CFALoss(0.1, 1.0)),
    "cosine_arcface": ("cosine", {}, lambda: tfcell.losses.ArcFaceLoss(0.5, 30.0)),
    "cosine_sphereface": ("cosine", {}, lambda: tfcell.losses.SphereFaceLoss(1.35, 30.0)),
    "cosine_asoftmax": (
        "cosine",
        {"sphereface_margin": 4.0},
        lambda: tfcell.losses.SphereFaceLoss(scale=None),
    ),
}


def _backbone():
    return keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Rescaling(1 / 255.0), keras.layers.Flatten()],
        name="flat",
    )


def _data(n=24, seed=0):
    rng = np.random.RandomState(seed)
    return rng.uniform(0, 255, (n, 8, 8, 3)).astype("float32"), rng.randint(0, C, n)


class ClassifierHeadsTest(test_case.TestCase):
    @parameterized.named_parameters(*[(name, name) for name in HEADS])
    def test_accuracy_is_argmax_of_predict(self, name):
        head, kwargs, make_loss = HEADS[name]
        x, y = _data()
        model = tfcell.models.build_classifier(_backbone(), C, head, 8, **kwargs)
        model.compile(
            optimizer=keras.optimizers.SGD(0.01),
            loss=make_loss(),
            metrics=["accuracy", keras.metrics.SparseTopKCategoricalAccuracy(2, name="top2")],
        )
        history = model.fit(x, y, batch_size=24, epochs=1, verbose=0)
        self.assertTrue(np.isfinite(history.history["loss"][0]))
        pred = model.predict(x, verbose=0)
        self.assertEqual(pred.shape, (24, C))
        results = model.evaluate(x, y, verbose=0, return_dict=True)
        self.assertAllClose(results["accuracy"], np.mean(np.argmax(pred, -1) == y), atol=1e-6)
        top2 = np.mean([y[i] in np.argsort(pred[i])[-2:] for i in range(len(y))])
        self.assertAllClose(results["top2"], top2, atol=1e-6)

    def test_scores_accuracy_is_a_deprecated_alias_of_accuracy(self):
        x, y = _data()
        model = tfcell.models.build_classifier(_backbone(), C, "cosine", 8, sphereface_margin=4.0)
        with pytest.warns(DeprecationWarning):
            legacy = metrics.ScoresAccuracy(C, name="legacy")
        model.compile(loss=tfcell.losses.SphereFaceLoss(scale=None), metrics=["accuracy", legacy])
        results = model.evaluate(x, y, verbose=0, return_dict=True)
        self.assertAllClose(results["legacy"], results["accuracy"])

    def test_return_norms_is_refused(self):
        with self.assertRaisesRegex(ValueError, "sphereface_margin=4.0"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                tfcell.models.build_classifier(_backbone(), C, "cosine", 8, return_norms=True)

    def test_asoftmax_model_saves_and_reloads(self):
        x, y = _data(8)
        model = tfcell.models.build_classifier(_backbone(), C, "cosine", 8, sphereface_margin=4.0)
        model.compile(optimizer="sgd", loss=tfcell.losses.SphereFaceLoss(scale=None))
        revived = self.run_model_saving_test(model, x)
        self.assertEqual(revived.get_layer("head").sphereface_margin, 4.0)
