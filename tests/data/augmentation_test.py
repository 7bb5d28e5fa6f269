"""Augmentation: determinism under a seed inside tf.data, shapes, each op's effect, TTA."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcell.data import augmentation as aug
from tfcell.data import pipeline, synthetic
from tfcell.testing import test_case


@pytest.fixture(scope="module")
def tiles():
    return synthetic.tissue_tiles(32, image_size=32, seed=0)


def _run(frame, augment, size=32):
    ds = pipeline.from_records(frame, size, batch_size=8, augment=augment, seed=1)
    return np.concatenate([x.numpy() for x, _ in ds])


@pytest.mark.parametrize(
    "make,shape",
    [
        (lambda s: aug.heterogeneity_augmentation(crop_size=24, seed=s), (24, 24)),
        (lambda s: aug.exclusive_ce_augmentation(seed=s), (32, 32)),
        (lambda s: aug.aecfe_detector_augmentation(seed=s), (32, 32)),
    ],
    ids=["heterogeneity", "exclusive_ce", "aecfe_detector"],
)
def test_sets_deterministic_under_seed(tiles, make, shape):
    plain = _run(tiles, None)
    a, b, c = _run(tiles, make(7)), _run(tiles, make(7)), _run(tiles, make(8))
    assert a.shape == (32, *shape, 3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.min() >= 0 and a.max() <= 255.001
    if shape == (32, 32):
        assert not np.array_equal(a, plain)


def _batch():
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, (16, 8, 8, 3)).astype("float32")


def test_rot90_and_transpose_are_exact():
    x = _batch()
    out = aug.RandomRot90(rate=1.0, seed=0)(x).numpy()
    for i in range(len(x)):
        assert any(np.array_equal(out[i], np.rot90(x[i], k)) for k in (1, 2, 3))
    out = aug.RandomTranspose(rate=1.0, seed=0)(x).numpy()
    np.testing.assert_array_equal(out, x.transpose(0, 2, 1, 3))
    np.testing.assert_array_equal(aug.RandomTranspose(rate=0.0, seed=0)(x).numpy(), x)


def test_rate_applies_to_about_half():
    x = np.tile(_batch(), (16, 1, 1, 1))
    out = aug.RandomTranspose(rate=0.5, seed=0)(x).numpy()
    changed = np.mean([not np.array_equal(o, i) for o, i in zip(out, x)])
    assert 0.3 < changed < 0.7


def test_noise_blur_stain_colour_ops():
    x = _batch()
    noisy = aug.RandomGaussianNoise(5.0, rate=1.0, seed=0)(np.full_like(x, 128.0)).numpy()
    assert abs(noisy.std() - 5.0) < 0.5
    flat = np.full_like(x, 100.0)
    np.testing.assert_allclose(
        aug.RandomKernelBlur(rate=1.0, seed=0)(flat).numpy(), flat, atol=1e-3
    )
    assert aug.RandomKernelBlur(rate=1.0, seed=0)(x).numpy().std() < x.std()
    stain = aug.RandomStainPerturbation(sigma1=0.0, sigma2=0.0, rate=1.0, seed=0)(x).numpy()
    np.testing.assert_allclose(stain, x, atol=0.05)  # identity perturbation round-trips
    assert not np.allclose(aug.RandomStainPerturbation(rate=1.0, seed=0)(x).numpy(), x)
    contrast = aug.RandomLinearContrast((2.0, 2.0), seed=0)(np.full_like(x, 137.0)).numpy()
    np.testing.assert_allclose(contrast, 147.0, atol=1e-4)  # 127 + 2 * (137 - 127)
    warm = aug.RandomColorTemperature((3000, 3000), seed=0)(np.full_like(x, 200.0)).numpy()
    assert warm[..., 0].mean() > warm[..., 2].mean()
    edges = np.zeros((1, 8, 8, 3), "float32")
    edges[:, :, 4:] = 255.0
    smoothed = aug.RandomBilateralBlur(sigma_color_range=(10, 10), seed=0)(edges).numpy()
    np.testing.assert_allclose(smoothed, edges, atol=1.0)  # an edge survives bilateral blur


@pytest.mark.parametrize(
    "layer",
    [
        aug.RandomRot90(rate=0.5, seed=1),
        aug.RandomTranspose(seed=2),
        aug.RandomGaussianNoise(stddev=3.0, seed=3),
        aug.RandomKernelBlur((3, 5), seed=4),
        aug.RandomStainPerturbation(0.1, 0.02, seed=5),
        aug.RandomColorTemperature((5000, 6000)),
        aug.RandomLinearContrast((0.9, 1.1)),
        aug.RandomBilateralBlur(diameter=3),
        aug.RandomApply(keras.layers.RandomFlip("horizontal"), rate=0.3, seed=6),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_serialization(layer):
    test_case.TestCase("run_serialization_test").run_serialization_test(layer)


def test_training_false_is_identity():
    x = _batch()
    np.testing.assert_array_equal(aug.RandomRot90(rate=1.0)(x, training=False), x)


def test_five_crop_shapes_and_corners():
    x = np.arange(2 * 10 * 12 * 3, dtype="float32").reshape(2, 10, 12, 3)
    crops = keras.ops.convert_to_numpy(aug.five_crop(x, 6))
    assert crops.shape == (2, 5, 6, 6, 3)
    np.testing.assert_array_equal(crops[:, 0], x[:, :6, :6])
    np.testing.assert_array_equal(crops[:, 3], x[:, 4:, 6:])
    np.testing.assert_array_equal(crops[:, 4], x[:, 2:8, 3:9])
    with pytest.raises(ValueError, match="exceeds"):
        aug.five_crop(x, 11)


def test_five_crop_predict_averages():
    x = np.random.default_rng(0).uniform(0, 1, (3, 10, 10, 3)).astype("float32")
    model = keras.Sequential([keras.Input((6, 6, 3)), keras.layers.GlobalAveragePooling2D()])
    out = aug.five_crop_predict(model, x, 6)
    crops = keras.ops.convert_to_numpy(aug.five_crop(x, 6))
    np.testing.assert_allclose(out, crops.mean(axis=(2, 3)).mean(axis=1), atol=1e-5)
    assert out.shape == (3, 3)


def test_per_image_augmentation_parallel_and_deterministic(tmp_path):
    from PIL import Image

    from tfcell.data import records

    frame = synthetic.white_cells(24, image_size=32, seed=0)
    rows = []
    for i, (image, row) in enumerate(zip(frame["image"], frame.itertuples())):
        Image.fromarray(image).save(tmp_path / f"{i}.png")
        rows.append(
            {
                "path": str(tmp_path / f"{i}.png"),
                "label": row.label,
                "class_name": row.class_name,
                "domain": row.domain,
                "subject": row.subject,
            }
        )
    table = records.make_records(rows, frame.attrs["class_names"])

    def run(seed, augment=None, size=32):
        augment = augment or aug.PerImageAugmentation()
        ds = pipeline.from_records(table, size, batch_size=8, augment=augment, seed=seed)
        return np.concatenate([x.numpy() for x, _ in ds])

    a, b, c = run(1), run(1), run(2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and a.shape == (24, 32, 32, 3)
    assert a.dtype == np.float32 and a.min() >= 0 and a.max() <= 255
    for augment in (aug.PerImageAugmentation(fuse_resize=True), aug.BatchAugmentation()):
        x, y = run(1, augment, size=20), run(1, augment, size=20)
        np.testing.assert_array_equal(x, y)
        assert x.shape == (24, 20, 20, 3) and not np.array_equal(x, run(2, augment, size=20))


def _batches(augment, seed, n=4):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (8 * n, 24, 24, 3)).astype("float32")
    ds = pipeline.from_arrays(images, np.zeros(8 * n), 8, shuffle=False, augment=augment, seed=seed)
    return images, np.stack([x.numpy() for x, _ in ds])


def test_batch_augmentation_deterministic_shapes_and_range():
    augment = aug.BatchAugmentation(rotation=30.0, brightness=0.1, contrast=0.2)
    images, a = _batches(augment, seed=3)
    _, b = _batches(augment, seed=3)
    _, c = _batches(augment, seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == (4, 8, 24, 24, 3) and a.dtype == np.float32
    assert a.min() >= 0 and a.max() <= 255
    assert not np.allclose(a[0], a[1])  # batches get different draws, not one pattern
    assert not np.allclose(a.reshape(images.shape), images)


def test_batch_augmentation_flips_about_half_exactly():
    images = np.random.default_rng(1).uniform(0, 255, (256, 6, 6, 3)).astype("float32")
    flip = aug.BatchAugmentation(rotation=0.0, brightness=0.0, contrast=0.0)
    out = flip(images, np.array([5, 6], "int64")).numpy()
    kinds = []
    for o, x in zip(out, images):
        match = [np.allclose(o, v, atol=1e-3) for v in (x, x[:, ::-1], x[::-1], x[::-1, ::-1])]
        assert sum(match) == 1
        kinds.append(match.index(True))
    counts = np.bincount(kinds, minlength=4) / len(kinds)
    assert np.all((counts > 0.15) & (counts < 0.35)), counts  # each of 4 cases ~1/4


def test_fused_resize_matches_resize_without_geometry():
    import tensorflow as tf

    image = np.random.default_rng(2).integers(0, 256, (37, 41, 3), "uint8")
    plain = aug.PerImageAugmentation(flips=False, rotation=0.0, brightness=0.0, contrast=0.0)
    out = plain.resize_and_augment(tf.constant(image), (16, 16), tf.constant([1, 2], tf.int64))
    ref = tf.image.resize(tf.cast(image, tf.float32), (16, 16))
    np.testing.assert_allclose(out.numpy(), ref.numpy(), atol=0.05)
    colour = aug.PerImageAugmentation(False, 0.0, 0.0, 0.5, fuse_resize=True)
    flat = colour(tf.fill((8, 8, 3), 100.0), tf.constant([1, 2], tf.int64)).numpy()
    np.testing.assert_allclose(flat, 100.0, atol=1e-3)  # contrast keeps the mean


def _dihedral_reference(image):
    """The 8 symmetries of a square, by NumPy: 4 turns of the image and of its mirror."""
    return [np.rot90(image, k) for k in range(4)] + [
        np.rot90(np.flip(image, axis=1), k) for k in range(4)
    ]


def _which(out, image, candidates):
    matches = [np.array_equal(out, c) for c in candidates(image)]
    assert sum(matches) == 1, "not exactly one dihedral transform of its input"
    return matches.index(True)


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_dihedral_outputs_are_exact_transforms_and_all_occur(dtype):
    import tensorflow as tf

    # Distinct pixel values, so that no two transforms of an image coincide.
    base = np.arange(6 * 6 * 3).reshape(6, 6, 3) % 251
    images = np.stack([np.roll(base, i, axis=0) for i in range(400)]).astype(dtype)
    out = aug.RandomDihedral()(images, tf.constant([3, 4], tf.int64))
    assert out.dtype.name == dtype and out.shape == images.shape
    kinds = [_which(o, x, _dihedral_reference) for o, x in zip(out.numpy(), images)]
    counts = np.bincount(kinds, minlength=8) / len(kinds)
    assert np.all((counts > 0.07) & (counts < 0.18)), counts  # each ~1/8


def test_dihedral_flips_only_and_rotations_only():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    square = rng.integers(0, 256, (200, 5, 5, 3), "uint8")
    seed = tf.constant([1, 2], tf.int64)
    turns = aug.RandomDihedral(flips=False)(square, seed).numpy()
    kinds = [
        _which(o, x, lambda i: [np.rot90(i, k) for k in range(4)]) for o, x in zip(turns, square)
    ]
    assert set(kinds) == {0, 1, 2, 3}

    def axis_flips(image):
        return [image, image[::-1], image[:, ::-1], image[::-1, ::-1]]

    wide = rng.integers(0, 256, (200, 4, 7, 2), "uint8")  # flips keep non-square shapes
    flipped = aug.RandomDihedral(rotations=False)(wide, seed).numpy()
    assert flipped.shape == wide.shape
    assert {_which(o, x, axis_flips) for o, x in zip(flipped, wide)} == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="square"):
        aug.RandomDihedral()(wide, seed)
    with pytest.raises(ValueError, match="both False"):
        aug.RandomDihedral(flips=False, rotations=False)


def test_dihedral_seeded_and_in_from_arrays():
    images = np.random.default_rng(0).integers(0, 256, (40, 8, 8, 3), "uint8")
    labels = np.arange(40) % 2

    def run(seed, output="tuple", **kwargs):
        ds = pipeline.from_arrays(
            images, labels, 8, augment=aug.RandomDihedral(), seed=seed, output=output, **kwargs
        )
        if output == "dict":
            return [(b["image"].numpy(), b["label"].numpy()) for b in ds]
        return [(x.numpy(), y.numpy()) for x, y in ds]

    a, b, c = run(5), run(5), run(6)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not all(np.array_equal(xa, xc) for (xa, _), (xc, _) in zip(a, c))
    unshuffled = run(5, "dict", shuffle=False)
    out = np.concatenate([x for x, _ in unshuffled])
    assert out.dtype == np.float32 and out.shape == (40, 8, 8, 3)
    kinds = [_which(o, x, _dihedral_reference) for o, x in zip(out, images.astype("float32"))]
    assert len(set(kinds)) > 4  # per-image draws, not one per batch
    # A resize inside from_arrays: the transform runs on the resized float batch.
    resized = run(5, image_size=6)
    assert resized[0][0].shape == (8, 6, 6, 3) and resized[0][0].dtype == np.float32


def test_dihedral_in_from_records(tmp_path):
    from PIL import Image

    from tfcell.data import records

    rng = np.random.default_rng(1)
    rows = []
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (10, 10, 3), "uint8")).save(tmp_path / f"{i}.png")
        rows.append(
            {
                "path": str(tmp_path / f"{i}.png"),
                "label": i % 2,
                "class_name": "ab"[i % 2],
                "domain": f"d{i % 2}",
                "subject": f"s{i % 3}",
            }
        )
    table = records.make_records(rows, ["a", "b"])

    def run(seed, output):
        ds = pipeline.from_records(
            table, 10, batch_size=4, shuffle=False, augment=aug.RandomDihedral(), seed=seed,
            output=output,
        )  # fmt: skip
        return np.concatenate([b["image"] if output == "dict" else b[0] for b in ds])

    plain = np.concatenate([x for x, _ in pipeline.from_records(table, 10, 4, shuffle=False)])
    for output in ("tuple", "dict"):
        out = run(3, output)
        np.testing.assert_array_equal(out, run(3, output))
        assert out.dtype == np.float32
        for o, x in zip(out, plain):
            _which(o, x, _dihedral_reference)


def test_grayscale_probability_on_both_paths():
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 255, (64, 8, 8, 3)).astype("float32"))
    kwargs = dict(flips=False, rotation=0.0, brightness=0.0, contrast=0.0)
    seed = tf.constant([1, 2], tf.int64)
    always = aug.BatchAugmentation(grayscale=1.0, **kwargs)(images, seed).numpy()
    np.testing.assert_allclose(always[..., 0], always[..., 2], atol=1e-4)
    never = aug.BatchAugmentation(grayscale=0.0, **kwargs)(images, seed).numpy()
    np.testing.assert_allclose(never, images.numpy(), atol=1e-4)
    some = aug.BatchAugmentation(grayscale=0.5, **kwargs)(images, seed).numpy()
    grey = np.all(np.abs(some[..., 0] - some[..., 2]) < 1e-3, axis=(1, 2))
    assert 10 < grey.sum() < 54  # About half the images, never all or none.
    one = aug.PerImageAugmentation(grayscale=1.0, **kwargs)(images[0], seed).numpy()
    np.testing.assert_allclose(one[..., 0], one[..., 1], atol=1e-4)
    with pytest.raises(ValueError, match="grayscale"):
        aug.PerImageAugmentation(grayscale=2.0)
