"""Sharded TFRecords: exact round trip on real files, balanced disjoint shards,
file-level sharding, errors and skips, and the harness's "tfrecord" storage
giving the images of the "memory" storage."""

import hashlib
import json
import os

import keras
import ml_collections
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tfcell.data import augmentation, cache, decode, pipeline, records, synthetic, tfrecords
from tfcell.experiments import settings, tasks

CLASSES = ["neutrophil", "lymphocyte"]


def _real_table(root, per_folder=7):
    """42 real white cells: PBC JPEGs (128 px), BCCD PNGs (~200-260 px, resized
    down) and JTSC PNGs (~120 px), two classes, three domains."""
    rows = []
    for domain, folder in (("pbc", "pbc_128"), ("bccd", "wbc_domains/bccd"), ("jtsc", "wbc_domains/jtsc")):  # fmt: skip
        for label, name in enumerate(CLASSES):
            for i, file in enumerate(sorted(os.listdir(root / folder / name))[:per_folder]):
                rows.append(
                    {"path": str(root / folder / name / file), "label": label, "class_name": name,
                     "domain": domain, "subject": f"{domain}-{i % 3}"}
                )  # fmt: skip
    return records.make_records(rows, CLASSES)


@pytest.fixture
def real_table(shared_data):
    return _real_table(shared_data)


def _png_table(folder, n=12, size=(20, 22)):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        path = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype="uint8")).save(path)
        rows.append({"path": str(path), "label": i % 2, "class_name": "ab"[i % 2],
                     "domain": f"d{i % 2}", "subject": f"s{i % 3}"})  # fmt: skip
    return rows


def _features(directory, prefix="train", **kwargs):
    return list(tfrecords.read_shards(directory, prefix, output="features", **kwargs))


def _file_indices(path):
    return [int(tfrecords.parse_example(r)["index"]) for r in tf.data.TFRecordDataset(str(path))]


@pytest.mark.real_data
def test_round_trip_real_files(real_table, tmp_path):
    meta = tfrecords.write_shards(real_table, tmp_path, "train", num_shards=4)
    assert meta["count"] == len(real_table) == 42 and meta["skipped"] == {}
    assert meta["encoding"] == {"jpeg": 14, "png": 28}  # The original files, not re-encoded.
    names = sorted(f for f in os.listdir(tmp_path) if f.endswith(".tfrecord"))
    assert names == [f"train-{i:05d}-of-00004.tfrecord" for i in range(4)]
    # Balanced, disjoint and complete, as stored on disk.
    per_file = [_file_indices(tmp_path / name) for name in names]
    assert [len(f) for f in per_file] == [f["count"] for f in meta["files"]] == [11, 11, 10, 10]
    assert sorted(sum(per_file, [])) == list(range(42))

    features = _features(tmp_path)
    assert [int(f["index"]) for f in features] == list(range(42))  # Unshuffled: row order.
    for f, path in zip(features, real_table["path"]):
        with open(path, "rb") as handle:
            assert f["image/encoded"].numpy() == handle.read()
    # Native size: exactly the pixels of the project's decode path.
    elements = list(tfrecords.read_shards(tmp_path, "train", output="dict"))
    maps = pipeline.id_maps(real_table)
    for element, (_, row) in zip(elements, real_table.iterrows()):
        expected = decode.decode(row["path"], decode.needs_python_reader(row["path"]), False)
        np.testing.assert_array_equal(element["image"].numpy(), expected.numpy())
        assert int(element["label"]) == row["label"]
        assert int(element["domain"]) == maps["domain"][row["domain"]]
        assert int(element["subject"]) == maps["subject"][row["subject"]]
    # Resized when read: exactly `from_records` (float32 bilinear, pad_small).
    shards = tfrecords.read_shards(tmp_path, "train", 48, batch_size=8, output="dict")
    files = pipeline.from_records(real_table, 48, batch_size=8, shuffle=False, output="dict")
    for a, b in zip(shards, files, strict=True):
        for key in ("image", "label", "domain", "subject"):
            np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())
            assert a[key].dtype == b[key].dtype


@pytest.mark.real_data
def test_shards_resized_when_written_equal_the_decoded_array(real_table, tmp_path):
    meta = tfrecords.write_shards(real_table, tmp_path, "val", num_shards=3, image_size=48)
    assert meta["encoding"] == {"png": 42} and meta["image_size"] == [48, 48]
    images = np.concatenate(
        [x.numpy() for x, _ in tfrecords.read_shards(tmp_path, "val", batch_size=16)]
    )
    np.testing.assert_array_equal(images, cache.decoded_images(real_table, 48))


def test_default_number_of_shards(tmp_path):
    frame = synthetic.white_cells(20, image_size=8, num_classes=2, domains=2)
    assert tfrecords.write_shards(frame, tmp_path / "a")["num_shards"] == 16  # min_shards
    assert tfrecords.write_shards(frame, tmp_path / "b", min_shards=4)["num_shards"] == 4
    # ~shard_bytes each (8 * 8 * 3 bytes an image), never more shards than images.
    assert tfrecords.write_shards(frame, tmp_path / "c", min_shards=1, shard_bytes=8 * 8 * 3 * 5)["num_shards"] == 4  # fmt: skip
    assert tfrecords.write_shards(frame, tmp_path / "d", shard_bytes=1)["num_shards"] == 20


def test_input_context_and_file_auto_sharding_split_by_file(tmp_path):
    frame = synthetic.white_cells(30, image_size=12, num_classes=3, domains=2)
    tfrecords.write_shards(frame, tmp_path, "train", num_shards=4)
    by_file = [_file_indices(tmp_path / f"train-{i:05d}-of-00004.tfrecord") for i in range(4)]
    seen = []
    for i in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=i)
        indices = [int(f["index"]) for f in _features(tmp_path, input_context=context)]
        assert sorted(indices) == sorted(by_file[i] + by_file[i + 2])  # Whole files.
        seen.append(set(indices))
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(30))

    # tf.data's own FILE auto-sharding (what a multi-worker strategy applies)
    # finds the files even with a per-image augmentation in the pipeline.
    counts = []
    for i in range(2):
        dataset = tfrecords.read_shards(
            tmp_path, "train", 12, batch_size=4, shuffle=True, output="dict",
            augment=augmentation.PerImageAugmentation(),
        )  # fmt: skip
        flat = tf.nest.flatten(dataset.element_spec)
        variant = tf.raw_ops.AutoShardDataset(
            input_dataset=dataset._variant_tensor, num_workers=2, index=i,
            auto_shard_policy=int(tf.data.experimental.AutoShardPolicy.FILE),
            output_types=[s.dtype for s in flat], output_shapes=[s.shape for s in flat],
        )  # fmt: skip
        sharded = tf.data.experimental.from_variant(variant, dataset.element_spec)
        counts.append(sum(int(b["label"].shape[0]) for b in sharded))
    assert counts == [len(by_file[0]) + len(by_file[2]), len(by_file[1]) + len(by_file[3])]


def test_shuffle_and_augmentation_are_seeded_and_change_every_epoch(tmp_path):
    frame = synthetic.white_cells(24, image_size=12, num_classes=3, domains=2)
    tfrecords.write_shards(frame, tmp_path, "train", num_shards=4)

    def epochs(seed, augment):
        dataset = tfrecords.read_shards(
            tmp_path, "train", 12, batch_size=24, shuffle=True, seed=seed, augment=augment
        )
        return [next(iter(dataset))[0].numpy() for _ in range(2)]

    plain = epochs(0, None)
    assert not np.array_equal(*plain)  # Reshuffled every epoch, each image once.
    stored = np.stack(frame["image"].to_list()).astype("float32")
    for epoch in plain:
        assert sorted(map(_digest, epoch)) == sorted(map(_digest, stored))
    per_image = augmentation.PerImageAugmentation()
    first, second = epochs(0, per_image)
    np.testing.assert_array_equal(first, epochs(0, per_image)[0])  # Same seed, same images.
    assert not np.array_equal(first, second)
    batched = epochs(0, augmentation.BatchAugmentation())
    assert not np.array_equal(*batched)
    assert not np.array_equal(batched[0], epochs(1, augmentation.BatchAugmentation())[0])


def _digest(image):
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


def test_reuse_keeps_complete_shards_and_rewrites_changed_ones(tmp_path):
    frame = synthetic.white_cells(10, image_size=8, num_classes=2, domains=2)
    first = tfrecords.write_shards(frame, tmp_path, "train", num_shards=2, reuse=True)
    stamp = os.stat(tmp_path / "train-metadata.json").st_mtime_ns
    assert tfrecords.write_shards(frame, tmp_path, "train", num_shards=2, reuse=True) == first
    assert os.stat(tmp_path / "train-metadata.json").st_mtime_ns == stamp
    changed = tfrecords.write_shards(frame.iloc[:6], tmp_path, "train", num_shards=3, reuse=True)
    assert changed["count"] == 6 and changed["fingerprint"] != first["fingerprint"]
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith(".tfrecord")) == [
        f"train-{i:05d}-of-00003.tfrecord" for i in range(3)
    ]  # The old 2-shard files are gone.


def test_unreadable_images_are_counted_and_logged_skips(tmp_path, caplog):
    rows = _png_table(tmp_path, n=8)
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not a png" * 10)
    (tmp_path / "empty.jpg").write_bytes(b"")
    whole = (tmp_path / "img0.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(whole[: len(whole) // 2])
    for name in ("corrupt.png", "empty.jpg", "truncated.png", "missing.png"):
        rows.append({"path": str(tmp_path / name), "label": 0, "class_name": "a",
                     "domain": "d0", "subject": "s0"})  # fmt: skip
    table = records.make_records(rows, ["a", "b"])
    with caplog.at_level("WARNING", logger="tfcell.data"):
        meta = tfrecords.write_shards(table, tmp_path / "out", "train", num_shards=3)
    assert meta["count"] == 8 and [f["count"] for f in meta["files"]] == [3, 3, 2]
    assert meta["skip_counts"] == {
        "empty file": 1, "missing": 1, "cannot be decoded (corrupt or unsupported image)": 2
    }  # fmt: skip
    assert "skipped 2 file(s): cannot be decoded" in caplog.text
    on_disk = json.loads((tmp_path / "out" / "train-metadata.json").read_text())
    assert on_disk["skipped"]["missing"] == [str(tmp_path / "missing.png")]
    assert sorted(int(f["index"]) for f in _features(tmp_path / "out")) == list(range(8))


def test_clear_errors(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"No TFRecord shard matches .*nothing-.*write_shards"
    ):
        tfrecords.read_shards(tmp_path, "nothing")
    with pytest.raises(FileNotFoundError, match="q-\\*.tfrecord"):
        tfrecords.read_shards(str(tmp_path / "q-*.tfrecord"))
    table = records.make_records(_png_table(tmp_path, n=8), ["a", "b"])
    tfrecords.write_shards(table, tmp_path / "out", "train", num_shards=4)
    os.remove(tmp_path / "out" / "train-00002-of-00004.tfrecord")
    with pytest.raises(ValueError, match=r"-of-00004 but 3 file\(s\).*00002"):
        tfrecords.read_shards(tmp_path / "out", "train")
    tfrecords.write_shards(table, tmp_path / "out2", "train", num_shards=2)
    os.remove(tmp_path / "out2" / "train-metadata.json")
    with pytest.raises(FileNotFoundError, match="train-metadata.json.*incomplete"):
        tfrecords.read_shards(tmp_path / "out2", "train")
    tfrecords.write_shards(table, tmp_path / "out3", "train", num_shards=2)
    with pytest.raises(ValueError, match="native-size images; pass image_size"):
        tfrecords.read_shards(tmp_path / "out3", "train", batch_size=4)
    with pytest.raises(ValueError, match="prefix must be a plain"):
        tfrecords.write_shards(table, tmp_path, "train/*")


def _setting(kind, request):
    if kind == "synthetic":
        frame = synthetic.white_cells(60, image_size=20, num_classes=3, domains=2, subjects_per_domain=2)  # fmt: skip
        return settings.holdout("toy", frame, 0.25, 0.25, 0, synthetic=True)
    frame = _real_table(request.getfixturevalue("shared_data"), per_folder=5)
    return settings.holdout("real", frame, 0.25, 0.25, 0)


def _multiset(dataset):
    rows = []
    for batch in dataset:
        for image, *ids in zip(
            *(batch[k].numpy() for k in ("image", "label", "domain", "subject"))
        ):
            rows.append((_digest(image), *map(int, ids)))
    return sorted(rows)


@pytest.mark.parametrize("kind", ["synthetic", pytest.param("real", marks=pytest.mark.real_data)])
def test_setting_data_tfrecord_storage_equals_memory(kind, request, tmp_path):
    setting = _setting(kind, request)
    memory = tasks.SettingData(setting, 16, tmp_path / "cache")
    config = ml_collections.ConfigDict({"data": {"image_size": 16, "storage": "tfrecord"}})
    shards = tasks.ClassificationTask().prepare(setting, config, str(tmp_path / "cache"))
    assert shards.storage == "tfrecord" and shards.images is None
    train = [d.dataset("train", 8, "dict", training=True, seed=1) for d in (memory, shards)]
    assert _multiset(train[0]) == _multiset(train[1])
    for part in ("val", "test"):  # Unshuffled parts: the same batches in the same order.
        a, b = (list(d.dataset(part, 8, "dict")) for d in (memory, shards))
        for x, y in zip(a, b, strict=True):
            for key in x:
                np.testing.assert_array_equal(x[key].numpy(), y[key].numpy())
    pixels = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Flatten()])
    np.testing.assert_array_equal(
        memory.predict(pixels, "test", 8), shards.predict(pixels, "test", 8)
    )
    written = tmp_path / "cache" / "tfrecords" / setting.name
    assert {"train-metadata.json", "val-metadata.json", "test-metadata.json"} <= set(
        os.listdir(written)
    )
    stamp = os.stat(written / "train-metadata.json").st_mtime_ns
    again = tasks.SettingData(setting, 16, tmp_path / "cache", storage="tfrecord")
    assert _multiset(again.dataset("train", 8, "dict", training=True)) == _multiset(train[0])
    assert os.stat(written / "train-metadata.json").st_mtime_ns == stamp  # Reused.
    with pytest.raises(ValueError, match="sampler='domain_balanced'.*storage='tfrecord'"):
        shards.dataset("train", 8, training=True, sampler="domain_balanced")


def test_setting_data_storage_errors(tmp_path):
    frame = synthetic.white_cells(24, image_size=8, num_classes=2, domains=2)
    setting = settings.holdout("toy", frame, 0.25, 0.25, 0, synthetic=True)
    with pytest.raises(ValueError, match="storage must be one of"):
        tasks.SettingData(setting, 8, tmp_path, storage="disk")
    with pytest.raises(ValueError, match="cache_dir=None"):
        tasks.SettingData(setting, 8, storage="tfrecord")
    assert tasks.SettingData(setting, 8, in_memory=False).storage == "files"
