"""Tests for tfcell.evaluation.segmentation: Dice, AJI (against loop references on
hand-made instance maps), instances from a prediction and tiled prediction."""

import keras
import numpy as np
import pytest

from tfcell import evaluation, models
from tfcell.data import image_io, nuclei
from tfcell.testing import test_case


def dice_reference(y_true, y_pred):
    inter = total = 0
    for t, p in zip(np.ravel(y_true) > 0, np.ravel(y_pred) > 0):
        inter += int(t and p)
        total += int(t) + int(p)
    return 1.0 if total == 0 else 2.0 * inter / total


def aji_reference(y_true, y_pred):
    """Kumar et al. (2017), Algorithm 1, one instance mask at a time."""
    true_ids = [i for i in np.unique(y_true) if i != 0]
    pred_ids = [j for j in np.unique(y_pred) if j != 0]
    c = u = 0
    used = set()
    for i in true_ids:
        g = y_true == i
        best, best_iou = None, 0.0
        for j in pred_ids:
            s = y_pred == j
            inter = int((g & s).sum())
            if inter and inter / int((g | s).sum()) > best_iou:
                best, best_iou = j, inter / int((g | s).sum())
        if best is None:
            u += int(g.sum())
        else:
            s = y_pred == best
            c += int((g & s).sum())
            u += int((g | s).sum())
            used.add(best)
    u += sum(int((y_pred == j).sum()) for j in pred_ids if j not in used)
    return c / u if u else 1.0


def _two_squares():
    y_true = np.zeros((12, 12), "int32")
    y_true[0:4, 0:4] = 1
    y_true[0:4, 4:8] = 2
    return y_true


def _random_instances(rng, size=24, count=6):
    instance_map = np.zeros((size, size), "int32")
    for k in range(1, count + 1):
        r, c = rng.randint(0, size - 4, 2)
        h, w = rng.randint(2, 7, 2)
        instance_map[r : r + h, c : c + w] = k * 3 + 7  # ids need not be 1..K
    return instance_map


class DiceTest(test_case.TestCase):
    def test_hand_made(self):
        y_true = _two_squares()
        self.assertEqual(evaluation.dice(y_true, y_true), 1.0)
        y_pred = np.zeros_like(y_true)
        y_pred[0:4, 0:2] = 9  # 8 of the 32 true pixels
        self.assertAllClose(evaluation.dice(y_true, y_pred), 2 * 8 / 40)
        self.assertEqual(evaluation.dice(y_true, np.zeros_like(y_true)), 0.0)
        self.assertEqual(evaluation.dice(np.zeros((3, 3)), np.zeros((3, 3))), 1.0)

    def test_reference(self):
        rng = np.random.RandomState(0)
        for _ in range(5):
            a, b = _random_instances(rng), _random_instances(rng)
            self.assertAllClose(evaluation.dice(a, b), dice_reference(a, b), dtype="float64")

    def test_shape_mismatch(self):
        with self.assertRaisesRegex(ValueError, "shapes differ"):
            evaluation.dice(np.zeros((2, 2)), np.zeros((3, 3)))


class AggregatedJaccardIndexTest(test_case.TestCase):
    def test_identical_maps_with_other_ids(self):
        y_true = _two_squares()
        y_pred = np.where(y_true == 1, 5, np.where(y_true == 2, 3, 0))
        self.assertEqual(evaluation.aggregated_jaccard_index(y_true, y_pred), 1.0)

    def test_unmatched_prediction_adds_to_the_union(self):
        y_true = _two_squares()
        y_pred = y_true.copy()
        y_pred[8:10, 8:11] = 7  # a false positive of 6 pixels
        self.assertAllClose(evaluation.aggregated_jaccard_index(y_true, y_pred), 32 / 38)
        self.assertAllClose(aji_reference(y_true, y_pred), 32 / 38)

    def test_merged_prediction_counts_for_both_nuclei(self):
        y_true = _two_squares()
        y_pred = np.zeros_like(y_true)
        y_pred[0:4, 0:8] = 1  # one blob over two nuclei
        # C = 16 + 16, U = 32 + 32: the blob is the best match of both.
        self.assertAllClose(evaluation.aggregated_jaccard_index(y_true, y_pred), 0.5)

    def test_empty_and_disjoint(self):
        y_true = _two_squares()
        empty = np.zeros_like(y_true)
        self.assertEqual(evaluation.aggregated_jaccard_index(y_true, empty), 0.0)
        self.assertEqual(evaluation.aggregated_jaccard_index(empty, y_true), 0.0)
        self.assertEqual(evaluation.aggregated_jaccard_index(empty, empty), 1.0)
        disjoint = np.zeros_like(y_true)
        disjoint[10:12, 10:12] = 1
        self.assertEqual(evaluation.aggregated_jaccard_index(y_true, disjoint), 0.0)
        for value in (
            evaluation.aggregated_jaccard_index(y_true, empty),
            evaluation.aggregated_jaccard_index(empty, empty),
        ):
            self.assertTrue(np.isfinite(value))

    def test_reference_on_random_maps(self):
        rng = np.random.RandomState(1)
        for _ in range(10):
            a, b = _random_instances(rng), _random_instances(rng, count=rng.randint(0, 8))
            self.assertAllClose(
                evaluation.aggregated_jaccard_index(a, b), aji_reference(a, b), dtype="float64"
            )


class InstancesFromPredictionTest(test_case.TestCase):
    def test_threshold_components_and_min_size(self):
        probability = np.zeros((10, 10), "float32")
        probability[0:3, 0:3] = 0.9
        probability[6:9, 6:9] = 0.7
        probability[0, 8] = 0.99  # one stray pixel
        probability[5, 0:3] = 0.5  # not above the threshold
        instances = evaluation.instances_from_prediction(probability, min_size=4)
        self.assertEqual(instances.dtype, np.int32)
        self.assertEqual(sorted(np.unique(instances).tolist()), [0, 1, 2])
        self.assertEqual(int((instances == 1).sum()), 9)
        self.assertEqual(instances[0, 8], 0)
        above = evaluation.instances_from_prediction(probability, 0.8, min_size=1)
        self.assertEqual(above.max(), 2)  # the 0.9 square and the stray pixel

    def test_masks_and_empty(self):
        mask = np.zeros((6, 6), bool)
        mask[1:3, 1:3] = True
        mask[4:6, 4:6] = True
        self.assertEqual(evaluation.instances_from_prediction(mask, min_size=1).max(), 2)
        self.assertEqual(evaluation.instances_from_prediction(mask.astype("uint8") * 255).max(), 0)
        empty = evaluation.instances_from_prediction(np.zeros((4, 4), "float32"))
        self.assertEqual(empty.max(), 0)
        self.assertEqual(empty.shape, (4, 4))


def _pixelwise_model():
    """Logits of a 1x1 convolution: tiling cannot change a pixelwise model's output."""
    image = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(2, 1)
    model = keras.Model(image, conv(image))
    conv.set_weights(
        [np.array([[[[0.02, -0.02], [-0.01, 0.03], [0.0, -0.01]]]], "float32"), np.zeros(2)]
    )
    return model


def _pixelwise_probability(image):
    z = image.astype("float64") @ np.array([[0.02, -0.02], [-0.01, 0.03], [0.0, -0.01]])
    return 1.0 / (1.0 + np.exp(-(z[..., 1] - z[..., 0])))


class PredictInstancesTest(test_case.TestCase):
    def test_tiles_reassemble_a_pixelwise_prediction(self):
        rng = np.random.RandomState(0)
        model = _pixelwise_model()
        for shape in ((70, 50, 3), (20, 12, 3), (32, 32, 3)):
            image = rng.uniform(0, 255, shape).astype("float32")
            probability, instances = evaluation.predict_instances(
                model, image, tile=32, overlap=8, min_size=1
            )
            self.assertEqual(probability.shape, shape[:2])
            self.assertEqual(instances.shape, shape[:2])
            self.assertAllClose(probability, _pixelwise_probability(image), atol=1e-5)
            np.testing.assert_array_equal(
                instances, evaluation.instances_from_prediction(probability, min_size=1)
            )

    def test_unet_on_an_odd_sized_image(self):
        image = np.random.RandomState(1).uniform(0, 255, (45, 70, 3)).astype("float32")
        model = models.unet(num_classes=2, width=2, depth=2)
        probability, instances = evaluation.predict_instances(model, image, tile=32, overlap=8)
        self.assertEqual(probability.shape, (45, 70))
        self.assertAllFinite(probability)
        self.assertTrue(np.all((probability >= 0) & (probability <= 1)))
        sigmoid_model = models.unet(num_classes=1, width=2, depth=2)
        probability, _ = evaluation.predict_instances(sigmoid_model, image, tile=32, overlap=0)
        self.assertEqual(probability.shape, (45, 70))

    def test_rejects_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "overlap"):
            evaluation.predict_instances(_pixelwise_model(), np.zeros((8, 8, 3)), 8, 8)
        with self.assertRaisesRegex(ValueError, "one \\(H, W, 3\\) image"):
            evaluation.predict_instances(_pixelwise_model(), np.zeros((1, 8, 8, 3)), 8, 0)


@pytest.mark.real_data
def test_real_monuseg_instances(shared_data):
    root = shared_data / "nuclei" / "monuseg_train"
    frame = nuclei.read_monuseg(root)
    stems = {p.stem for p in (root / "annotations").glob("*.xml")}
    row = next(r for _, r in frame.iterrows() if r["path"].rsplit("/", 1)[-1][:-4] in stems)
    mask = nuclei.load_mask(row["mask_path"])
    xml = root / "annotations" / (row["path"].rsplit("/", 1)[-1][:-4] + ".xml")
    truth = nuclei.rasterize_xml(xml, mask.shape)
    assert evaluation.aggregated_jaccard_index(truth, truth) == 1.0
    # Connected components of the binary mask merge touching nuclei: AJI < 1.
    components = evaluation.instances_from_prediction(mask > 0, min_size=1)
    aji = evaluation.aggregated_jaccard_index(truth, components)
    assert 0.5 < aji < 1.0
    assert evaluation.dice(truth, mask) > 0.9  # masks and rasterised polygons differ at edges
    image = np.asarray(image_io.load_image(row["path"]), "float32")[:300, :300]
    probability, instances = evaluation.predict_instances(
        models.unet(num_classes=2, width=2, depth=2), image, tile=128, overlap=16
    )
    assert probability.shape == (300, 300) and instances.shape == (300, 300)
    # The detector's grid target of the real nuclei of a 256 x 256 crop.
    target = models.encode_instances(truth[:256, :256])
    count = len(np.unique(truth[:256, :256])) - 1
    assert 0.5 * count < target[..., 4].sum() <= count
