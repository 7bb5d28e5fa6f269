"""Pipelines: shapes, dict output and id maps, padding, preload, bad files named."""

import pathlib

import numpy as np
import pytest
from PIL import Image

from tfcell.data import decode, pipeline, records


def _table(paths, labels):
    rows = [
        {
            "path": str(p),
            "label": y,
            "class_name": "ab"[y],
            "domain": f"d{i % 2}",
            "subject": f"s{i % 3}",
        }
        for i, (p, y) in enumerate(zip(paths, labels))
    ]
    return records.make_records(rows, ["a", "b"])


@pytest.fixture()
def image_dir(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i, (ext, size) in enumerate(
        [("png", 20), ("jpg", 24), ("bmp", 16), ("png", 12), ("jpeg", 30)]
    ):
        path = tmp_path / f"img{i}.{ext}"
        Image.fromarray(rng.integers(0, 255, (size, size + 2, 3), dtype="uint8")).save(path)
        paths.append(path)
    Image.fromarray(rng.integers(0, 255, (20, 20), dtype="uint8")).save(tmp_path / "grey.png")
    paths.append(tmp_path / "grey.png")
    return paths


def test_from_records_tuple_and_dict(image_dir):
    table = _table(image_dir, [0, 1, 0, 1, 0, 1])
    images, labels = next(iter(pipeline.from_records(table, 16, batch_size=6, shuffle=False)))
    assert images.shape == (6, 16, 16, 3) and images.dtype.name == "float32"
    assert labels.numpy().tolist() == [0, 1, 0, 1, 0, 1]
    assert 0 <= images.numpy().min() and images.numpy().max() <= 255
    ds = pipeline.from_records(table, (8, 10), batch_size=4, output="dict", seed=0)
    batch = next(iter(ds))
    assert set(batch) == {"image", "label", "domain", "subject"}
    assert batch["image"].shape == (4, 8, 10, 3)
    assert ds.id_maps == {"domain": {"d0": 0, "d1": 1}, "subject": {"s0": 0, "s1": 1, "s2": 2}}
    assert sum(int(b["label"].shape[0]) for b in ds) == 6  # nothing dropped


def test_shuffle_is_seeded(image_dir):
    table = _table(image_dir, [0, 1, 0, 1, 0, 1])

    def order(seed):
        ds = pipeline.from_records(table, 8, batch_size=6, seed=seed, output="dict")
        return next(iter(ds))["image"].numpy()

    np.testing.assert_array_equal(order(3), order(3))


def test_pad_small_pads_instead_of_upscaling(tmp_path):
    Image.fromarray(np.zeros((40, 30, 3), "uint8")).save(tmp_path / "edge.png")
    table = _table([tmp_path / "edge.png"], [0])
    padded = next(iter(pipeline.from_records(table, 50, batch_size=1)))[0].numpy()[0]
    assert (
        padded[:40, :30].max() == 0 and padded[45:, :].min() == 255 and padded[:, 35:].min() == 255
    )
    stretched = next(iter(pipeline.from_records(table, 50, batch_size=1, pad_small=False)))[0]
    assert stretched.numpy().max() == 0
    native = next(iter(pipeline.from_records(table, 100, batch_size=1, pad_small=(50, 50))))[0]
    assert native.shape == (1, 100, 100, 3) and native.numpy()[0, 95:, 95:].min() == 255


def test_preload_equals_streaming(image_dir):
    table = _table(image_dir, [0, 1, 0, 1, 0, 1])
    streamed = next(iter(pipeline.from_records(table, 16, batch_size=6, shuffle=False)))[0]
    loaded = next(
        iter(pipeline.from_records(table, 16, batch_size=6, shuffle=False, preload=True))
    )[0]
    np.testing.assert_allclose(loaded.numpy(), np.round(streamed.numpy()), atol=1.0)


def _preload_by_resize(paths, size, pad_small):
    """The float32 resize round trip preload_images did for every file before
    it kept already-fitting images as decoded; the reference it must equal."""
    import tensorflow as tf

    out = []
    for path in paths:
        image = decode.decode(str(path), False, any_python=False)
        image = decode.pad_to_target(image, size, pad_small, 255)
        image = tf.image.resize(tf.cast(image, tf.float32), size)
        out.append(tf.cast(tf.round(tf.clip_by_value(image, 0, 255)), tf.uint8).numpy())
    return np.stack(out)


def test_preload_keeps_fitting_images_as_decoded(tmp_path):
    rng = np.random.default_rng(3)
    files = []
    for i, (ext, shape) in enumerate(
        [("png", (16, 16)), ("jpg", (16, 16)), ("png", (12, 16)), ("jpg", (20, 24))]
    ):
        files.append(tmp_path / f"{i}.{ext}")
        Image.fromarray(rng.integers(0, 256, (*shape, 3), "uint8")).save(files[-1])
    loaded = pipeline.preload_images(files, 16)
    assert loaded.dtype == np.uint8 and loaded.shape == (4, 16, 16, 3)
    np.testing.assert_array_equal(loaded[0], np.asarray(Image.open(files[0])))
    np.testing.assert_array_equal(loaded, _preload_by_resize(files, (16, 16), True))
    np.testing.assert_array_equal(
        pipeline.preload_images(files, 16, pad_small=False),
        _preload_by_resize(files, (16, 16), False),
    )
    streamed = decode.fit_size(decode.decode(str(files[1]), False, False), (16, 16), True, 255)
    np.testing.assert_array_equal(streamed.numpy(), loaded[1].astype("float32"))


@pytest.mark.real_data
def test_preload_real_files_equal_resize_round_trip(shared_data):
    root = pathlib.Path(shared_data)
    pbc = sorted((root / "pbc_128").glob("*/*.jpg"))[::50][:40]
    idc = sorted((root / "idc").glob("**/*.png"))[::200][:40]
    for files, size, pad in ((pbc, (128, 128), True), (idc, (50, 50), (50, 50))):
        assert files, "no files found"
        np.testing.assert_array_equal(
            pipeline.preload_images(files, size, pad), _preload_by_resize(files, size, pad)
        )


@pytest.mark.parametrize("mode", ["header", "decode"])
@pytest.mark.parametrize(
    "content,reason",
    [
        (b"this is not an image", "not an image"),
        (b"", "empty"),
        ("truncated", "truncated"),
    ],
)
def test_bad_file_is_named(image_dir, tmp_path, mode, content, reason):
    bad = tmp_path / "broken_cell.jpg"
    if content == "truncated":
        good = (tmp_path / "img1.jpg").read_bytes()
        content = good[: len(good) // 2]
    bad.write_bytes(content)
    table = _table([*image_dir[:2], bad], [0, 1, 0])
    with pytest.raises(pipeline.ImageError, match="broken_cell.jpg") as error:
        pipeline.from_records(table, 16, validate=mode)
    assert reason in str(error.value) or mode == "decode"
    assert "Remove or replace" in str(error.value)


def test_missing_file_is_named(image_dir, tmp_path):
    table = _table([*image_dir[:1], tmp_path / "gone.png"], [0, 1])
    with pytest.raises(pipeline.ImageError, match=r"gone.png: missing"):
        pipeline.from_records(table, 16)


def test_from_arrays_dict_and_resize():
    images = np.random.default_rng(0).integers(0, 255, (10, 12, 12, 3), dtype="uint8")
    labels = np.arange(10) % 2
    ds = pipeline.from_arrays(
        images,
        labels,
        batch_size=4,
        output="dict",
        domains=["x", "y"] * 5,
        image_size=8,
        shuffle=False,
    )
    batches = list(ds)
    assert [int(b["label"].shape[0]) for b in batches] == [4, 4, 2]
    assert batches[0]["image"].shape == (4, 8, 8, 3)
    assert batches[0]["domain"].numpy().tolist() == [0, 1, 0, 1]
    assert ds.id_maps["domain"] == {"x": 0, "y": 1}


@pytest.mark.real_data
def test_pbc_native_sample(shared_data):
    root = pathlib.Path(shared_data) / "pbc_native_sample"
    names = sorted(p.name for p in root.iterdir() if p.is_dir())
    rows = [
        {
            "path": str(f),
            "label": names.index(f.parent.name),
            "class_name": f.parent.name,
            "domain": "pbc",
            "subject": "",
        }
        for f in sorted(root.glob("*/*.jpg"))
    ]
    table = records.make_records(rows, names)
    assert len(table) == 400
    ds = pipeline.from_records(table, 224, batch_size=50, output="dict", validate="decode")
    batches = list(ds)
    seen = np.concatenate([b["label"].numpy() for b in batches])
    assert np.bincount(seen).tolist() == [50] * 8
    assert batches[0]["image"].shape[1:] == (224, 224, 3)


def test_kather_tiff_layout_through_pipeline(tmp_path):
    """Kather ships .tif, which tf.io cannot decode: the pipeline must fall back
    to PIL (tfcell.data.image_io) and keep the labels of the CFAL protocol."""
    from tfcell.data import kather

    rng = np.random.default_rng(0)
    for split in ("NCT-CRC-HE-100K", "CRC-VAL-HE-7K"):
        for index, name in enumerate(kather.KATHER_CLASSES):
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            for i in range(8):
                # Each class gets its own constant red value, so labels can be checked.
                image = np.full((224, 224, 3), 20 * index, np.uint8)
                image[..., 1] = rng.integers(0, 255)
                Image.fromarray(image).save(folder / f"{name}-{i}.tif")
    train, val, test = kather.cfal_protocol(tmp_path, seed=0)
    assert (len(train), len(val), len(test)) == (61, 11, 72)
    dataset = pipeline.from_records(test, image_size=32, batch_size=72, shuffle=False)
    images, labels = next(iter(dataset))
    assert images.shape == (72, 32, 32, 3)
    np.testing.assert_allclose(images.numpy()[:, 0, 0, 0], 20.0 * labels.numpy(), atol=1.0)
