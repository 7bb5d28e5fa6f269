"""AE-CFE models: ROI features against hand-computed crops, the autoencoder's
shapes, ranges and `.keras` round trip, and the latent codes for the forest."""

import os
import tempfile

import keras
import numpy as np
from absl.testing import parameterized

from tfcell import testing
from tfcell.models import aecfe

# A 4 x 4 map with the integer values v[y, x] = 4 y + x (channel 0) and
# 10 * v (channel 1). Normalised coordinate t lies on row / column 3 t.
MAP = np.stack([np.arange(16.0).reshape(4, 4), 10.0 * np.arange(16.0).reshape(4, 4)], -1)


def _bilinear(feature_map, y, x):
    """`feature_map[y, x]` interpolated from its four neighbours (one image)."""
    y0, x0 = int(np.floor(y)), int(np.floor(x))
    y1, x1 = min(y0 + 1, feature_map.shape[0] - 1), min(x0 + 1, feature_map.shape[1] - 1)
    dy, dx = y - y0, x - x0
    top = (1 - dx) * feature_map[y0, x0] + dx * feature_map[y0, x1]
    bottom = (1 - dx) * feature_map[y1, x0] + dx * feature_map[y1, x1]
    return (1 - dy) * top + dy * bottom


def _reference_roi(feature_map, box, size):
    """Loop-based crop-and-pool: sample an `size` grid from the box corners, average."""
    height, width = feature_map.shape[:2]
    y1, x1, y2, x2 = box
    values = []
    for i in range(size[0]):
        for j in range(size[1]):
            y = y1 * (height - 1) + i * (y2 - y1) * (height - 1) / max(size[0] - 1, 1)
            x = x1 * (width - 1) + j * (x2 - x1) * (width - 1) / max(size[1] - 1, 1)
            values.append(_bilinear(feature_map, y, x))
    return np.mean(values, axis=0)


class ROIFeaturesTest(testing.TestCase):
    def test_box_on_pixel_centres_is_the_mean_of_its_cells(self):
        # Rows 1-2, columns 1-3: (5 + 6 + 7 + 9 + 10 + 11) / 6 = 8.
        got = aecfe.roi_features(MAP, [[1 / 3, 1 / 3, 2 / 3, 1.0]], output_size=(2, 3))
        self.assertAllClose(got, [[8.0, 80.0]])

    def test_pixel_boxes_follow_mask_rcnn_norm_boxes(self):
        # Pixel box rows [1, 3), columns [1, 4) of a 4 x 4 image = the box above.
        got = aecfe.roi_features(MAP, [[1, 1, 3, 4]], output_size=(2, 3), image_size=(4, 4))
        self.assertAllClose(got, [[8.0, 80.0]])
        # The whole 8 x 8 image on the 4 x 4 map (stride 2) samples every cell.
        got = aecfe.roi_features(MAP, [[0, 0, 8, 8]], output_size=4, image_size=(8, 8))
        self.assertAllClose(got, [[7.5, 75.0]])

    def test_half_pixel_box_interpolates(self):
        # Rows and columns 0 and 1.5: v = 0, 1.5, 6, 7.5 (v is linear), mean 3.75.
        got = aecfe.roi_features(MAP, [[0.0, 0.0, 0.5, 0.5]], output_size=2)
        self.assertAllClose(got, [[3.75, 37.5]])

    def test_random_boxes_match_loop_reference(self):
        rng = np.random.RandomState(0)
        feature_map = rng.normal(size=(2, 5, 6, 3)).astype("float32")
        corners = np.sort(rng.uniform(size=(4, 2, 2)), axis=1)  # (box, y1<y2 / x1<x2)
        boxes = np.stack(
            [corners[:, 0, 0], corners[:, 0, 1], corners[:, 1, 0], corners[:, 1, 1]], -1
        )
        indices = np.array([0, 1, 1, 0])
        got = aecfe.roi_features(feature_map, boxes, indices, output_size=(3, 4))
        want = [
            _reference_roi(feature_map[i].astype("float64"), box, (3, 4))
            for box, i in zip(boxes, indices)
        ]
        self.assertAllClose(got, want, op="reduction")

    def test_unpooled_crops_feed_the_convolutional_autoencoder(self):
        crops = aecfe.roi_features(np.zeros((1, 32, 32, 256)), [[0.1, 0.1, 0.6, 0.7]], pooling=None)
        self.assertEqual(tuple(crops.shape), (1, 14, 14, 256))

    def test_invalid_arguments_raise(self):
        with self.assertRaisesRegex(ValueError, "pooling"):
            aecfe.roi_features(MAP, [[0, 0, 1, 1]], pooling="max")
        with self.assertRaisesRegex(ValueError, "output_size"):
            aecfe.roi_features(MAP, [[0, 0, 1, 1]], output_size=0)
        with self.assertRaisesRegex(ValueError, "image_size"):
            aecfe.roi_features(MAP, [[0, 0, 1, 1]], image_size=(1, 4))


class MinMaxFeaturesTest(testing.TestCase):
    def test_each_sample_spans_minus_one_to_one(self):
        features = np.array([[[1.0, 3.0], [2.0, 5.0]], [[4.0, 4.0], [4.0, 4.0]]])
        got = keras.ops.convert_to_numpy(aecfe.minmax_features(features))
        self.assertAllClose(got[0], [[-1.0, 0.0], [-0.5, 1.0]])
        self.assertAllClose(got[1], -np.ones((2, 2)))  # constant: -1, not NaN


class AutoencoderTest(testing.TestCase):
    def test_paper_architecture_shapes_and_ranges(self):
        model = aecfe.aecfe_autoencoder()
        x = np.random.RandomState(0).uniform(-1, 1, (2, 14, 14, 256)).astype("float32")
        out = model(x)
        self.assertEqual(tuple(out["latent"].shape), (2, 50))
        self.assertEqual(tuple(out["features"].shape), (2, 14, 14, 256))
        self.assertEqual(tuple(out["image"].shape), (2, 128, 128, 3))
        for name, low in (("latent", -1.0), ("features", -1.0), ("image", 0.0)):
            values = keras.ops.convert_to_numpy(out[name])
            self.assertTrue(np.all((values >= low) & (values <= 1.0)), name)
        encoder = model.get_layer("encoder")
        convs = [layer for layer in encoder.layers if isinstance(layer, keras.layers.Conv2D)]
        self.assertEqual([c.filters for c in convs], [200, 150, 100, 70, 60, 50])
        norms = [layer.groups for layer in encoder.layers if "group_norm" in layer.name]
        self.assertEqual(norms, [40, 30, 10, 10, 20])

    @parameterized.named_parameters(("16", 16, 2), ("64", 64, 4))
    def test_dense_variant_shapes(self, image_size, upsamplings):
        model = aecfe.aecfe_autoencoder(feature_shape=(32,), latent_dim=10, image_size=image_size)
        out = model(np.zeros((3, 32), "float32"))
        self.assertEqual(tuple(out["latent"].shape), (3, 10))
        self.assertEqual(tuple(out["features"].shape), (3, 32))
        self.assertEqual(tuple(out["image"].shape), (3, image_size, image_size, 3))
        decoder = model.get_layer("image_decoder")
        strided = [layer for layer in decoder.layers if getattr(layer, "strides", (1, 1)) == (2, 2)]
        self.assertLen(strided, upsamplings)

    def test_invalid_arguments_raise(self):
        with self.assertRaisesRegex(ValueError, "14 x 14"):
            aecfe.aecfe_autoencoder(feature_shape=(7, 7, 256))
        with self.assertRaisesRegex(ValueError, "128"):
            aecfe.aecfe_autoencoder(image_size=64)
        with self.assertRaisesRegex(ValueError, "4 \\* 2\\*\\*k"):
            aecfe.aecfe_autoencoder(feature_shape=(8,), image_size=48)
        with self.assertRaisesRegex(ValueError, "latent_dim"):
            aecfe.aecfe_autoencoder(latent_dim=0)
        with self.assertRaisesRegex(ValueError, "feature_shape"):
            aecfe.aecfe_autoencoder(feature_shape=(4, 4))

    def test_keras_round_trip_gives_identical_outputs(self):
        model = aecfe.aecfe_autoencoder(feature_shape=(16,), latent_dim=8, image_size=16)
        x = np.random.RandomState(1).uniform(-1, 1, (4, 16)).astype("float32")
        path = os.path.join(tempfile.mkdtemp(), "aecfe.keras")
        model.save(path)
        revived = keras.saving.load_model(path, safe_mode=True)
        want, got = model.predict(x, verbose=0), revived.predict(x, verbose=0)
        self.assertEqual(set(got), {"latent", "features", "image"})
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])

    def test_encode_runs_the_encoder_only(self):
        model = aecfe.aecfe_autoencoder(feature_shape=(16,), latent_dim=8, image_size=16)
        x = np.random.RandomState(2).uniform(-1, 1, (5, 16)).astype("float32")
        codes = aecfe.aecfe_encode(model, x)
        self.assertEqual(codes.shape, (5, 8))
        self.assertAllClose(codes, model.predict(x, verbose=0)["latent"])
        self.assertAllClose(aecfe.aecfe_encode(model.get_layer("encoder"), x), codes)
