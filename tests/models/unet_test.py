"""Tests for tfcell.models.unet: shapes, levels, saving and a few training steps."""

import os
import tempfile

import keras
import numpy as np

from tfcell import models
from tfcell.data import synthetic
from tfcell.testing import test_case


def _scenes(n=4, size=32):
    frame = synthetic.nuclei_scenes(n, image_size=size, seed=0, nuclei_per_image=(3, 6))
    images = np.stack(frame["image"].to_list()).astype("float32")
    masks = (np.stack(frame["mask"].to_list()) > 0).astype("int32")
    return images, masks


class UNetTest(test_case.TestCase):
    def test_output_shape_equals_input_shape(self):
        model = models.unet(num_classes=2, width=4, depth=4)
        for size in (32, 48):
            out = model(np.zeros((2, size, size, 3), "float32"))
            self.assertEqual(tuple(out.shape), (2, size, size, 2))
            self.assertEqual(out.dtype, "float32")
        fixed = models.unet((64, 32, 3), num_classes=1, width=4, depth=2)
        self.assertEqual(tuple(fixed.output.shape), (None, 64, 32, 1))

    def test_levels_follow_ronneberger(self):
        model = models.unet((32, 32, 3), num_classes=2, width=4, depth=4, batch_norm=True)
        pools = [layer for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
        ups = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2DTranspose)]
        convs = [
            layer
            for layer in model.layers
            if isinstance(layer, keras.layers.Conv2D) and layer.kernel_size == (3, 3)
        ]
        self.assertLen(pools, 4)
        self.assertLen(ups, 4)
        self.assertLen(convs, 2 * (4 + 1 + 4))  # two 3x3 convs per level
        self.assertEqual(model.get_layer("bottleneck_conv2").filters, 4 * 16)
        self.assertEqual([u.filters for u in ups], [32, 16, 8, 4])  # halves the channels
        self.assertEqual(ups[0].kernel_size, (2, 2))
        self.assertEqual(ups[0].strides, (2, 2))
        self.assertLen(
            [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)],
            len(convs),
        )
        plain = models.unet((32, 32, 3), width=4, depth=4)
        self.assertFalse(
            any(isinstance(layer, keras.layers.BatchNormalization) for layer in plain.layers)
        )

    def test_rescales_inside(self):
        model = models.unet(width=4, depth=2)
        self.assertEqual(model.get_layer("rescale").scale, 1.0 / 255.0)

    def test_rejects_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "multiple of 2\\*\\*depth = 16"):
            models.unet((40, 40, 3), width=4)
        with self.assertRaisesRegex(ValueError, "width"):
            models.unet(width=0)
        with self.assertRaisesRegex(ValueError, "dropout"):
            models.unet(width=4, dropout=1.0)

    def test_save_and_load_give_identical_predictions(self):
        images, _ = _scenes(2)
        model = models.unet(num_classes=2, width=4, depth=2, batch_norm=True)
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        path = os.path.join(folder.name, "unet.keras")
        expected = model.predict(images, verbose=0)
        model.save(path)
        revived = keras.saving.load_model(path, safe_mode=True)
        np.testing.assert_array_equal(revived.predict(images, verbose=0), expected)

    def test_a_few_steps_reduce_the_loss(self):
        images, masks = _scenes(4)
        model = models.unet(num_classes=2, width=8, depth=2, dropout=0.0)
        model.compile(
            optimizer=keras.optimizers.Adam(1e-2),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        history = model.fit(images, masks, batch_size=4, epochs=8, verbose=0, shuffle=False)
        losses = history.history["loss"]
        self.assertAllFinite(losses)
        self.assertLess(losses[-1], 0.7 * losses[0])
