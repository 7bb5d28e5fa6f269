"""Decoded-image cache: equals preload_images, memory and disk hits, key changes,
IDC-style padding of small patches, in-memory (synthetic) tables."""

import logging
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tfcell.data import cache, idc, pipeline, records, synthetic


def _table(paths, labels=None):
    labels = labels or [i % 2 for i in range(len(paths))]
    rows = [
        {"path": str(p), "label": y, "class_name": "ab"[y], "domain": "d", "subject": f"s{i}"}
        for i, (p, y) in enumerate(zip(paths, labels))
    ]
    return records.make_records(rows, ["a", "b"])


@pytest.fixture(autouse=True)
def empty_memory():
    cache.clear_memory_cache()
    yield
    cache.clear_memory_cache()


@pytest.fixture()
def files(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i, (ext, shape) in enumerate(
        [("png", (20, 22)), ("jpg", (24, 24)), ("png", (12, 14)), ("bmp", (30, 16))]
    ):
        path = tmp_path / f"img{i}.{ext}"
        Image.fromarray(rng.integers(0, 255, (*shape, 3), dtype="uint8")).save(path)
        paths.append(path)
    return paths


@pytest.fixture()
def count_decodes(monkeypatch):
    calls = []
    preload = pipeline.preload_images

    def counting(paths, *args, **kwargs):
        calls.append(len(paths))
        return preload(paths, *args, **kwargs)

    monkeypatch.setattr(pipeline, "preload_images", counting)
    return calls


def test_equals_preload_images(files):
    table = _table(files)
    for pad_small in (True, False, (16, 16)):
        images = cache.decoded_images(table, (16, 18), pad_small=pad_small)
        expected = pipeline.preload_images([str(p) for p in files], (16, 18), pad_small, 255)
        assert images.dtype == np.uint8 and images.shape == (4, 16, 18, 3)
        np.testing.assert_array_equal(images, expected)
    # An int size means square; row order follows the table.
    reverse = _table(files[::-1])
    np.testing.assert_array_equal(
        cache.decoded_images(reverse, 16), cache.decoded_images(table, 16)[::-1]
    )


def test_second_call_hits_memory(files, count_decodes, caplog):
    table = _table(files)
    with caplog.at_level(logging.INFO, logger="tfcell.data"):
        first = cache.decoded_images(table, 16)
    assert "decoded 4 files to 16x16" in caplog.text
    second = cache.decoded_images(table.copy(), 16)
    assert second is first and count_decodes == [4]
    assert not first.flags.writeable  # shared: a caller cannot corrupt the cache
    cache.decoded_images(table, 16, pad_value=0)  # another key
    cache.decoded_images(table, 8)
    assert count_decodes == [4, 4, 4]
    cache.clear_memory_cache()
    cache.decoded_images(table, 16)
    assert count_decodes == [4, 4, 4, 4]


def test_disk_round_trip(files, tmp_path, count_decodes, caplog):
    table = _table(files)
    folder = tmp_path / "cache"
    first = cache.decoded_images(table, 16, cache_dir=folder)
    stored = list(folder.iterdir())
    assert len(stored) == 1 and stored[0].suffix == ".npy"  # no temporary file left
    cache.clear_memory_cache()  # as a new process would start
    with caplog.at_level(logging.INFO, logger="tfcell.data"):
        again = cache.decoded_images(table, 16, cache_dir=str(folder))
    assert count_decodes == [4] and "loaded 4 at 16x16" in caplog.text
    np.testing.assert_array_equal(again, first)
    # A damaged entry is ignored and rewritten, not trusted.
    stored[0].write_bytes(b"not an array")
    cache.clear_memory_cache()
    np.testing.assert_array_equal(cache.decoded_images(table, 16, cache_dir=folder), first)
    assert count_decodes == [4, 4]
    np.load(stored[0])  # rewritten whole
    # Decoded earlier without cache_dir: a later call with one writes the file.
    later = tmp_path / "later"
    cache.decoded_images(table, 16, cache_dir=later)
    assert count_decodes == [4, 4] and len(list(later.glob("*.npy"))) == 1


def test_touching_or_rewriting_a_file_changes_the_key(files, tmp_path, count_decodes):
    table = _table(files)
    folder = tmp_path / "cache"
    before = cache.decoded_images(table, 16, cache_dir=folder)
    stat = os.stat(files[0])
    os.utime(files[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    cache.decoded_images(table, 16, cache_dir=folder)
    assert count_decodes == [4, 4] and len(list(folder.iterdir())) == 2
    # Rewritten with new pixels: a new file size and mtime, a new key.
    Image.fromarray(np.zeros((20, 22, 3), "uint8")).save(files[0])
    after = cache.decoded_images(table, 16, cache_dir=folder)
    assert count_decodes == [4, 4, 4]
    assert after[0].max() == 0 and before[0].max() > 0
    np.testing.assert_array_equal(after[1:], before[1:])


def test_small_idc_patch_is_padded_white_not_stretched(tmp_path):
    # An IDC edge patch: 50 wide, 40 high (the slide ended below it).
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 200, (40, 50, 3), dtype="uint8")
    Image.fromarray(pixels).save(tmp_path / "small.png")
    full = rng.integers(0, 200, (50, 50, 3), dtype="uint8")
    Image.fromarray(full).save(tmp_path / "full.png")
    table = _table([tmp_path / "small.png", tmp_path / "full.png"])
    pad = (idc.IDC_PATCH_SIZE, idc.IDC_PATCH_SIZE)
    native = cache.decoded_images(table, 50, pad_small=pad)
    np.testing.assert_array_equal(native[0, :40], pixels)  # untouched, not stretched
    assert (native[0, 40:] == 255).all()  # white glass below
    np.testing.assert_array_equal(native[1], full)  # a full patch is left as it is
    # At another size the padded 50x50 patch is resized: same as padding by hand.
    padded = np.full((50, 50, 3), 255, "uint8")
    padded[:40] = pixels
    Image.fromarray(padded).save(tmp_path / "padded.png")
    resized = cache.decoded_images(table, 32, pad_small=pad)
    by_hand = cache.decoded_images(_table([tmp_path / "padded.png"]), 32, pad_small=False)
    np.testing.assert_array_equal(resized[0], by_hand[0])
    # pad_small=False stretches the 40 rows over the whole height instead.
    stretched = cache.decoded_images(table, 50, pad_small=False)
    assert not (stretched[0, 40:] == 255).all()


def test_bad_arguments_and_bad_files(files, tmp_path):
    table = _table(files)
    with pytest.raises(ValueError, match="image_size"):
        cache.decoded_images(table, None)
    with pytest.raises(ValueError, match="pad_small"):
        cache.decoded_images(table, 16, pad_small=(50,))
    with pytest.raises(ValueError, match="pad_value"):
        cache.decoded_images(table, 16, pad_value=300)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(pipeline.ImageError, match="empty.png"):
        cache.decoded_images(_table([*files, tmp_path / "empty.png"]), 16)
    with pytest.raises(pipeline.ImageError, match="gone.png"):
        cache.decoded_images(_table([*files, tmp_path / "gone.png"]), 16)


def test_synthetic_table(tmp_path):
    frame = synthetic.white_cells(12, image_size=24, seed=0)
    source = np.stack(frame["image"].to_list())
    images = cache.decoded_images(frame, 16, cache_dir=tmp_path)
    assert images.shape == (12, 16, 16, 3) and images.dtype == np.uint8
    # Smaller target: a plain resize, rounded as the file pipeline rounds.
    reference = tf.round(tf.image.resize(tf.cast(source, tf.float32), (16, 16)))
    np.testing.assert_array_equal(images, tf.cast(reference, tf.uint8).numpy())
    np.testing.assert_array_equal(cache.decoded_images(frame, 24), source)  # same size
    # The key is the content: other pixels, another entry.
    other = synthetic.white_cells(12, image_size=24, seed=1)
    assert not np.array_equal(cache.decoded_images(other, 16, cache_dir=tmp_path), images)
    assert len(list(tmp_path.glob("*.npy"))) == 2
    # Larger target with pad_small=True pads white, as for files.
    padded = cache.decoded_images(frame, 32)
    np.testing.assert_array_equal(padded[:, :24, :24], source)
    assert (padded[:, 24:] == 255).all() and (padded[:, :, 24:] == 255).all()


def test_feeds_from_arrays(files):
    table = _table(files)
    images = cache.decoded_images(table, 16)
    dataset = pipeline.from_arrays(images, table["label"].to_numpy(), batch_size=4, shuffle=False)
    batch, labels = next(iter(dataset))
    np.testing.assert_array_equal(batch.numpy(), images.astype("float32"))
    assert labels.numpy().tolist() == [0, 1, 0, 1]


@pytest.mark.real_data
def test_real_idc_patches(shared_data, tmp_path, count_decodes):
    frame = idc.read_idc(shared_data / "idc")
    small = frame[(frame["height"] < 50) | (frame["width"] < 50)].head(5)
    rows = [*frame.iloc[::150].head(45).to_dict("records"), *small.to_dict("records")]
    subset = records.make_records(rows, idc.IDC_CLASSES)
    pad = (idc.IDC_PATCH_SIZE, idc.IDC_PATCH_SIZE)
    images = cache.decoded_images(subset, 32, pad_small=pad, cache_dir=tmp_path)
    expected = pipeline.preload_images(subset["path"].to_list(), (32, 32), pad, 255)
    np.testing.assert_array_equal(images, expected)
    # At the native 50 px: every patch as stored, the edge patches padded white.
    native = cache.decoded_images(subset, 50, pad_small=pad)
    for row, (height, width) in enumerate(zip(subset["height"], subset["width"])):
        pixels = np.asarray(Image.open(subset["path"].iloc[row]).convert("RGB"))
        np.testing.assert_array_equal(native[row, :height, :width], pixels)
        assert (native[row, height:] == 255).all() and (native[row, :, width:] == 255).all()
    cache.clear_memory_cache()
    again = cache.decoded_images(subset, 32, pad_small=pad, cache_dir=tmp_path)
    np.testing.assert_array_equal(again, images)
    assert count_decodes == [50, 50, 50]  # 32 px, the reference, 50 px; then from disk
