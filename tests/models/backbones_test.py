"""Tests for tfcell.models: backbones, classifier heads, saving."""

import os
from unittest import mock

import keras
import numpy as np
from absl.testing import absltest

import tfcell
from tfcell.models import backbones
from tfcell.testing import test_case


class BackbonesTest(test_case.TestCase):
    def test_alexnet_shapes(self):
        model = backbones.alexnet((32, 32, 3))
        out = model(np.zeros((2, 32, 32, 3), "float32"))
        self.assertEqual(tuple(out.shape), (2, 4 * 4 * 64))

    def test_alexnet_is_the_same_in_training_and_inference(self):
        # No BatchNorm, no dropout: nothing to re-estimate (issue 8).
        x = np.random.RandomState(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
        model = backbones.alexnet((32, 32, 3), widths=(4, 4, 8))
        self.assertAllClose(model(x, training=True), model(x, training=False))

    def test_cct_has_about_400k_parameters(self):
        # Table XIV / Sec. V-D3: 2 conv + 2 transformer layers, projection 128, ~400 k.
        model = backbones.cct((32, 32, 3))
        self.assertBetween(model.count_params(), 350_000, 450_000)
        self.assertEqual(tuple(model.output.shape), (None, 128))

    def test_cct_rejects_mismatched_mlp(self):
        with self.assertRaisesRegex(ValueError, "projection_dim"):
            backbones.cct(mlp_units=(64, 64))

    def test_small_cnn(self):
        model = backbones.small_cnn((16, 16, 3), widths=(4, 8))
        self.assertEqual(tuple(model.output.shape), (None, 8))

    def test_small_cnn_norms(self):
        group = backbones.small_cnn((16, 16, 3), widths=(4, 16), norm="group")
        batch = backbones.small_cnn((16, 16, 3), widths=(4, 16))  # the default

        def of_type(model, kind):
            return [layer for layer in model.layers if isinstance(layer, kind)]

        gn = of_type(group, keras.layers.GroupNormalization)
        self.assertEqual([layer.groups for layer in gn], [4, 8])  # capped at the width
        self.assertEqual(of_type(group, keras.layers.BatchNormalization), [])
        bn = of_type(batch, keras.layers.BatchNormalization)
        self.assertEqual([layer.name for layer in bn], ["bn0", "bn1"])
        # The old BatchNorm model keeps its momentum and its parameter count.
        self.assertEqual(batch.get_layer("bn0").momentum, 0.9)
        self.assertEqual(group.count_params() + 2 * (4 + 16), batch.count_params())

    def test_small_cnn_group_norm_is_the_same_in_training_and_inference(self):
        x = np.random.RandomState(0).uniform(0, 255, (6, 16, 16, 3)).astype("float32")
        model = backbones.small_cnn((16, 16, 3), widths=(4, 8), norm="group")
        self.assertAllClose(model(x, training=True), model(x, training=False), atol=1e-6)
        # Per-image normalisation: an image's features do not depend on the batch.
        self.assertAllClose(model(x[:1], training=True), model(x, training=True)[:1], atol=1e-5)
        batch = backbones.small_cnn((16, 16, 3), widths=(4, 8))
        gap = keras.ops.convert_to_numpy(batch(x, training=True) - batch(x, training=False))
        self.assertGreater(np.abs(gap).max(), 1e-3)

    def test_small_cnn_rejects_bad_norm_and_groups(self):
        with self.assertRaisesRegex(ValueError, "norm must be one of"):
            backbones.small_cnn((16, 16, 3), norm="layer")
        with self.assertRaisesRegex(ValueError, "divide every width"):
            backbones.small_cnn((16, 16, 3), widths=(12, 16), norm="group", groups=8)
        with self.assertRaisesRegex(ValueError, "divide every width"):
            backbones.small_cnn((16, 16, 3), norm="group", groups=0)
        # BatchNorm ignores groups.
        backbones.small_cnn((16, 16, 3), widths=(12,), norm="batch", groups=8)

    def test_vgg19_offline_falls_back_to_random_init_with_warning(self):
        cached = os.path.join(os.path.expanduser("~"), ".keras", "models", backbones._VGG19_NOTOP)
        if os.path.exists(cached):
            self.skipTest("ImageNet weights are cached on this machine.")
        with mock.patch.object(backbones, "_online", return_value=False):
            with self.assertLogs("tfcell.models", level="WARNING") as logs:
                model = backbones.vgg19((32, 32, 3), weights="imagenet")
        self.assertIn("RANDOM INITIALISATION", "".join(logs.output))
        self.assertEqual(tuple(model.output.shape), (None, 512))

    def test_vgg19_missing_file(self):
        with self.assertRaisesRegex(ValueError, "no such file"):
            backbones.vgg19((32, 32, 3), weights="/nonexistent/weights.h5")

    def test_resnet50_offline_falls_back_and_missing_file_fails(self):
        cached = os.path.join(os.path.expanduser("~"), ".keras", "models", backbones._RESNET50_NOTOP)
        if os.path.exists(cached):
            self.skipTest("ImageNet weights are cached on this machine.")
        with mock.patch.object(backbones, "_online", return_value=False):
            with self.assertLogs("tfcell.models", level="WARNING") as logs:
                model = backbones.resnet50((32, 32, 3), weights="imagenet")
        self.assertIn("RANDOM INITIALISATION", "".join(logs.output))
        self.assertIn("resnet50", "".join(logs.output))
        self.assertEqual(tuple(model.output.shape), (None, 2048))
        with self.assertRaisesRegex(ValueError, "resnet50.*no such file"):
            backbones.resnet50((32, 32, 3), weights="/nonexistent/weights.h5")

    def test_caffe_preprocess(self):
        x = np.zeros((1, 2, 2, 3), "float32")
        x[..., 0] = 10.0  # R
        out = keras.ops.convert_to_numpy(backbones.CaffePreprocess()(x))
        np.testing.assert_allclose(out[0, 0, 0], [-103.939, -116.779, 10.0 - 123.68], rtol=1e-5)


class ClassifierTest(test_case.TestCase):
    def _data(self, n=8, size=16):
        rng = np.random.RandomState(0)
        return rng.uniform(0, 255, (n, size, size, 3)).astype("float32"), rng.randint(0, 3, n)

    def test_heads_output_shapes(self):
        x, _ = self._data()
        cases = [
            ("softmax", {}, 3),
            ("affinity", {"sigma": 130.0}, 3),
            ("cosine", {}, 3),
        ]
        for head, kwargs, width in cases:
            model = tfcell.models.build_classifier(
                backbones.small_cnn((16, 16, 3), widths=(4,)), 3, head, 8, **kwargs
            )
            self.assertEqual(model.predict(x, verbose=0).shape, (8, width), head)

    def test_unknown_head(self):
        with self.assertRaisesRegex(ValueError, "head must be one of"):
            tfcell.models.build_classifier(backbones.small_cnn((16, 16, 3)), 3, "svm")

    def test_feature_extractor_shares_weights(self):
        x, _ = self._data()
        model = tfcell.models.build_classifier(
            backbones.small_cnn((16, 16, 3), widths=(4,)), 3, "affinity", 8, sigma=10.0
        )
        features = tfcell.models.feature_extractor(model)
        self.assertEqual(features.predict(x, verbose=0).shape, (8, 8))
        self.assertIs(features.get_layer("embedding"), model.get_layer("embedding"))

    def test_saved_models_reload_and_predict_the_same(self):
        x, y = self._data()
        for make in (
            lambda: backbones.alexnet((16, 16, 3), widths=(4, 4, 4)),
            lambda: backbones.cct((16, 16, 3), projection_dim=16, mlp_units=(16,)),
            lambda: backbones.small_cnn((16, 16, 3), widths=(4,)),
            lambda: backbones.small_cnn((16, 16, 3), widths=(4,), norm="group"),
        ):
            model = tfcell.models.build_classifier(make(), 3, "affinity", 4, sigma=130.0)
            model.compile(optimizer="adam", loss=tfcell.losses.CFALoss(0.1, 1.0, [1.0, 1.0, 1.0]))
            model.fit(x, y, epochs=1, verbose=0)
            self.run_model_saving_test(model, x)


if __name__ == "__main__":
    absltest.main()
