"""The AE-CFE cell detector (a U-Net segmenter in place of Mask R-CNN): the
central cell and its box, the count of crops without one, ROI features against
a hand-computed ROI-align, joint image/mask augmentation, a tiny training run
whose Dice rises, and the real JTSC masks' encoding."""

import keras
import numpy as np
import pytest
from PIL import Image

from tfcell import models
from tfcell.papers.aecfe import detector


def _disk(shape, centre, radius):
    rows, cols = np.indices(shape)
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


def _box_of(mask):
    rows, cols = np.nonzero(mask)
    return (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1)


def _brightness_segmenter():
    """A fixed 1x1 convolution: cell logit = sum(RGB) / 255 - 1.5, background 0."""
    model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(2, 1)])
    kernel = np.zeros((1, 1, 3, 2), "float32")
    kernel[..., 1] = 1.0 / 255.0
    model.layers[0].set_weights([kernel, np.array([0.0, -1.5], "float32")])
    return model


def _cells(count, size, seed):
    """Dark cells (cytoplasm ring 1, nucleus 2) at random places on a light background."""
    rng = np.random.default_rng(seed)
    images = rng.normal(220, 10, (count, size, size, 3))
    masks = np.zeros((count, size, size), "uint8")
    for i in range(count):
        centre = rng.uniform(size * 0.35, size * 0.65, 2)
        radius = rng.uniform(size * 0.18, size * 0.28)
        cell = _disk((size, size), centre, radius)
        nucleus = _disk((size, size), centre, radius * 0.55)
        masks[i][cell], masks[i][nucleus] = 1, 2
        images[i][cell] = rng.normal((170, 120, 170), 10)
        images[i][nucleus] = rng.normal((90, 40, 110), 10)
    return np.clip(images, 0, 255).astype("float32"), masks


def test_central_cell_finds_one_disk_and_its_box():
    disk = _disk((48, 48), (20, 26), 7)
    for given in (disk, disk.astype("float32") * 0.9):  # A mask or probabilities.
        mask, box = detector.central_cell(given)
        np.testing.assert_array_equal(mask, disk)
        assert box == (13, 19, 28, 34) == _box_of(disk)


def test_central_cell_picks_the_disk_nearest_the_centre():
    near = _disk((64, 64), (36, 30), 5)  # Small, 4 px from the centre.
    far = _disk((64, 64), (12, 12), 10)  # Larger, at the corner.
    mask, box = detector.central_cell(near | far)
    np.testing.assert_array_equal(mask, near)
    assert box == _box_of(near)
    # A cell covering the centre wins over a nearer centroid of a smaller blob.
    big = _disk((64, 64), (40, 40), 12)  # Reaches the centre; centroid 12 px away.
    blob = _disk((64, 64), (31, 24), 4)  # Centroid 7.5 px away; 3.5 px short of it.
    assert not (big & blob).any()
    np.testing.assert_array_equal(detector.central_cell(big | blob)[0], big)


def test_central_cell_none_when_empty_tiny_or_off_centre():
    assert detector.central_cell(np.zeros((32, 32))) is None
    assert detector.central_cell(np.full((32, 32), 0.4)) is None  # Below the threshold.
    assert detector.central_cell(_disk((64, 64), (32, 32), 1)) is None  # 5 px < 1 % of 4096.
    corner = _disk((64, 64), (6, 6), 5)  # 24 px from the centre > 0.25 * 64.
    assert detector.central_cell(corner) is None
    assert detector.central_cell(corner, max_distance=None)[1] == _box_of(corner)


def test_detect_cells_counts_the_crops_without_a_cell():
    images = np.zeros((4, 32, 32, 3), "float32")
    images[0][_disk((32, 32), (16, 16), 6)] = 255.0
    images[2][_disk((32, 32), (4, 4), 3)] = 255.0  # Only a blob at the border.
    images[3][_disk((32, 32), (14, 18), 5)] = 255.0
    out = detector.detect_cells(_brightness_segmenter(), images, domains=["a", "a", "b", "b"])
    np.testing.assert_array_equal(out["found"], [True, False, False, True])
    assert out["summary"]["a"] == {"images": 2, "detected": 1, "missed": 1, "fraction": 0.5}
    assert out["summary"]["b"]["detected"] == 1
    assert out["summary"]["all"] == {"images": 4, "detected": 2, "missed": 2, "fraction": 0.5}
    np.testing.assert_array_equal(out["boxes"][1], [-1, -1, -1, -1])
    assert not out["masks"][1].any() and not out["masks"][2].any()
    np.testing.assert_array_equal(out["masks"][3], _disk((32, 32), (14, 18), 5))
    assert tuple(out["boxes"][0]) == (10, 10, 23, 23)


def _bilinear(feature_map, y, x):
    y0, x0 = int(np.floor(y)), int(np.floor(x))
    y1, x1 = min(y0 + 1, feature_map.shape[0] - 1), min(x0 + 1, feature_map.shape[1] - 1)
    dy, dx = y - y0, x - x0
    top = feature_map[y0, x0] * (1 - dx) + feature_map[y0, x1] * dx
    bottom = feature_map[y1, x0] * (1 - dx) + feature_map[y1, x1] * dx
    return top * (1 - dy) + bottom * dy


def test_cell_features_equal_a_hand_roi_align_of_the_encoder_map():
    keras.utils.set_random_seed(0)
    segmenter = models.unet((None, None, 3), num_classes=3, width=2, depth=2)
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    boxes = np.array([[4, 6, 20, 30], [10, 2, 31, 18]])
    maps = detector.cell_features(segmenter, images, boxes, pooling=None)
    vectors = detector.cell_features(segmenter, images, boxes)
    assert maps.shape == (2, 14, 14, 8) and vectors.shape == (2, 8)
    encoder = keras.Model(segmenter.input, segmenter.get_layer("bottleneck_relu2").output)
    feature_map = np.asarray(encoder(images[1:2]))[0]  # (8, 8, 8): stride 4.
    y1, x1, y2, x2 = boxes[1]
    # Pixel box, max exclusive -> normalised (y1, x1, y2 - 1, x2 - 1) / 31 -> map row/column.
    rows = np.linspace(y1 / 31, (y2 - 1) / 31, 14) * 7
    cols = np.linspace(x1 / 31, (x2 - 1) / 31, 14) * 7
    hand = np.array([[_bilinear(feature_map, y, x) for x in cols] for y in rows])
    np.testing.assert_allclose(maps[1], hand, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(vectors[1], hand.mean(axis=(0, 1)), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="not a layer"):
        detector.cell_features(segmenter, images, boxes, encoder_layer="nope")
    with pytest.raises(ValueError, match="one box per image"):
        detector.cell_features(segmenter, images, boxes[:1])


def test_augmentation_moves_image_and_mask_together():
    images, masks = _cells(16, 32, seed=1)
    images[..., 0] = 255.0 * (masks > 0)  # The mask written into the red channel.
    batches = list(detector._dataset(images, masks.astype("float32"), 8, "dihedral", seed=3))
    moved = np.concatenate([np.asarray(m) for _, m in batches])
    for image, mask in batches:
        np.testing.assert_array_equal(np.asarray(image)[..., 0] > 127, np.asarray(mask) > 0)
    # Shuffled and turned: not the input order, but the same masks up to symmetry.
    assert not np.array_equal(moved, masks)
    assert sorted(int(m.sum()) for m in moved) == sorted(int(m.sum()) for m in masks)
    masks = masks.astype("float32")
    first = [next(iter(detector._dataset(images, masks, 8, "thesis", seed=5))) for _ in "ab"]
    np.testing.assert_array_equal(first[0][0], first[1][0])  # Same seed, same batch.
    np.testing.assert_array_equal(first[0][1], first[1][1])


def test_a_tiny_segmenter_learns_cells():
    images, masks = _cells(48, 32, seed=0)
    test_images, test_masks = _cells(16, 32, seed=1)
    # 1e-2, not the thesis's 1e-3: 120 steps of a 4-filter U-Net (about 5 s).
    kwargs = dict(width=4, depth=2, batch_size=4, seed=0, augment="dihedral", learning_rate=1e-2)
    before = detector.train_segmenter(images, masks, epochs=0, **kwargs)
    after = detector.train_segmenter(images, masks, epochs=10, **kwargs)
    assert after.output_shape[-1] == 3
    start = detector.evaluate_segmenter(before, test_images, test_masks)
    end = detector.evaluate_segmenter(after, test_images, test_masks)
    assert end["cell_dice"] > max(0.8, start["cell_dice"] + 0.2), (start, end)
    assert end["detected"] == 1.0 and end["central_dice"] > 0.8
    assert 0.0 <= end["nucleus_dice"] <= 1.0
    history = after.history.history["loss"]
    assert history[-1] < history[0]


def test_train_segmenter_resizes_and_validates():
    images, masks = _cells(4, 40, seed=2)
    model = detector.train_segmenter(
        images, masks > 0, width=2, depth=2, epochs=1, image_size=32, augment=None
    )
    assert model.output_shape[-1] == 2  # A binary mask: cell vs background.
    assert model.predict(np.zeros((1, 32, 32, 3)), verbose=0).shape == (1, 32, 32, 2)
    with pytest.raises(ValueError, match="do not divide"):
        detector.train_segmenter(images[:, :36, :36], masks[:, :36, :36], depth=4, epochs=0)
    with pytest.raises(ValueError, match="as many masks"):
        detector.train_segmenter(images, masks[:2], epochs=0)
    with pytest.raises(ValueError, match="augment"):
        detector.train_segmenter(images, masks, augment="rotate", epochs=0)


def _write_jtsc(root, masks):
    """A JTSC-like layout: wbc_domains/jtsc/<class>/<NNN>.png and jtsc_masks/<NNN>.png."""
    rng = np.random.default_rng(0)
    for stem, (class_name, mask) in masks.items():
        folder = root / "wbc_domains" / "jtsc" / class_name
        folder.mkdir(parents=True, exist_ok=True)
        image = rng.integers(0, 256, (*mask.shape, 3), dtype=np.uint8)
        Image.fromarray(image).save(folder / f"{stem}.png")
    (root / "wbc_domains" / "jtsc_masks").mkdir(parents=True, exist_ok=True)


def test_read_jtsc_masks_decodes_levels_and_counts_unpaired(tmp_path):
    level = np.zeros((40, 36), "uint8")
    level[10:30, 8:28] = 128
    level[15:25, 12:24] = 255
    _write_jtsc(tmp_path, {"001": ("neutrophil", level), "002": ("lymphocyte", level)})
    masks = tmp_path / "wbc_domains" / "jtsc_masks"
    Image.fromarray(level).save(masks / "001.png")
    Image.fromarray(level).save(masks / "009.png")  # No crop for it.
    records = detector.read_jtsc_masks(tmp_path)
    assert len(records) == 1 and records["mask_path"][0].endswith("001.png")
    assert len(records.attrs["skipped"]["no mask"]) == 1
    assert records.attrs["skipped"]["mask without image"][0].endswith("009.png")
    assert records.attrs["mask_pixels"] == {"background": 1040, "cytoplasm": 280, "nucleus": 120}
    images, classes = detector.load_pairs(records, 36, None)  # Square crop, no resize.
    assert images.shape == (1, 36, 36, 3) and classes.dtype == np.uint8
    np.testing.assert_array_equal(classes[0], np.digitize(level[2:38], (64, 192)))
    Image.fromarray(np.where(level == 128, 100, level).astype("uint8")).save(masks / "001.png")
    with pytest.raises(ValueError, match=r"grey levels \[100\]"):
        detector.read_jtsc_masks(tmp_path)


@pytest.mark.real_data
def test_real_jtsc_masks_encoding_and_counts(shared_data):
    records = detector.read_jtsc_masks(shared_data)
    # 300 crops with 300 masks; one crop duplicates another (dropped by the reader),
    # so its mask is left without a crop.
    assert len(records) == 299
    assert {k: len(v) for k, v in records.attrs["skipped"].items()} == {
        "duplicate file": 1,
        "no mask": 0,
        "mask without image": 1,
    }
    pixels = records.attrs["mask_pixels"]
    assert pixels["background"] > pixels["cytoplasm"] > pixels["nucleus"] > 0
    assert records["class_name"].value_counts()["neutrophil"] == 176
    images, masks = detector.load_pairs(records.iloc[:40], 64, None)
    assert images.shape == (40, 64, 64, 3) and set(np.unique(masks)) == {0, 1, 2}
    for mask in masks:  # One cell per crop, about the centre: the detector's target.
        found = detector.central_cell(mask > 0)
        assert found is not None and found[0][32, 32]
        assert (found[0] == (mask > 0)).mean() > 0.99
