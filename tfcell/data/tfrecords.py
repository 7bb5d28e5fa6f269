"""Sharded TFRecord files for record tables: images stored encoded, read by tf.data.

`write_shards(records, directory, prefix)` writes a record table
(`tfcell.data.records`) to `{prefix}-{i:05d}-of-{n:05d}.tfrecord` files and
`{prefix}-metadata.json` beside them; `read_shards(directory, prefix, ...)`
serves them as the batches `tfcell.data.pipeline` builds (`(image, label)`
tuples or `{"image", "label", "domain", "subject"}` dicts, float32 images in
[0, 255], int32 ids), so a trainer cannot tell the difference.

One `tf.train.Example` per image:

    image/encoded  bytes  the original file when no resize is asked and it is
                          a JPEG, PNG or BMP; otherwise the decoded (and, with
                          `image_size`, padded and resized) pixels as PNG
    image/format   bytes  "jpeg", "png" or "bmp"
    image/height, image/width   int64, of the stored image
    label          int64  class id; class_name (bytes) beside it
    domain, subject       int64 ids (`tfcell.data.pipeline.id_maps`, or the
                          maps given), domain_name and subject_name (bytes)
    path           bytes  the source file ("" for in-memory images)
    index          int64  the row's position in the written table

Shards are balanced and deterministic: the k-th image written goes to shard
`k % n` (sizes differ by at most one). Reading the files unshuffled with a
round-robin interleave (one element of each file in turn) gives back the
table's order, so predictions come out in row order; `list_files(...,
shuffle=False)` followed by `interleave(TFRecordDataset)` lets tf.data's FILE
auto-sharding (`tf.data.experimental.AutoShardPolicy.FILE`) or an
`input_context` give every worker whole files.

The default number of shards is enough for ~150 MB per shard
(`shard_bytes`, from the file sizes or the resized pixel count), and at least
`min_shards` (16), so that FILE sharding over up to 16 input pipelines has a
file for each; never more shards than images.

A file that is missing, empty or cannot be decoded is skipped, counted in
`{prefix}-metadata.json` ("skipped") and logged (`tfcell.data.records.SkipLog`),
never silently dropped. Shards are written to temporary names and renamed;
the metadata is written last, so a directory with metadata is complete.
"""

import glob
import hashlib
import json
import math
import os
import tempfile

import numpy as np
import tensorflow as tf

from tfcell.data import decode
from tfcell.data import records as records_lib
from tfcell.data.tfrecord_reader import (  # noqa: F401 (re-exported)
    AUTOTUNE,
    FEATURES,
    _check_prefix,
    _metadata_path,
    _shard_glob,
    logger,
    parse_example,
    read_metadata,
    read_shards,
    shard_files,
)

__all__ = ["parse_example", "read_metadata", "read_shards", "shard_files", "write_shards"]

# Bump when the stored bytes of an unchanged input would change.
_FORMAT_VERSION = 1
_RAW = {b"\xff\xd8\xff": "jpeg", b"\x89PNG\r\n\x1a\n": "png", b"BM": "bmp"}


def _class_names(records, class_names):
    names = class_names or records.attrs.get("class_names")
    if names:
        return [str(n) for n in names]
    pairs = dict(zip(records["label"].astype(int), records["class_name"].astype(str)))
    if sorted(pairs) != list(range(len(pairs))):
        raise ValueError(
            "write_shards: the table has no attrs['class_names'] and its labels "
            f"{sorted(pairs)} do not cover 0..C-1; pass class_names=[...]."
        )
    return [pairs[i] for i in range(len(pairs))]


def _fingerprint(records, images, settings):
    """SHA-256 of what the shards hold: settings, every row, each file's size and
    modification time (or the pixels of in-memory images)."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    columns = [records[c].astype(str).to_list() for c in records_lib.COLUMNS]
    for i, row in enumerate(zip(*columns)):
        digest.update("\0".join(row).encode())
        if images is not None:
            image = np.ascontiguousarray(images[i])
            digest.update(repr((image.shape, image.dtype.str)).encode())
            digest.update(image.data)
        else:
            try:
                stat = os.stat(row[0])
                digest.update(f"\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            except OSError:
                digest.update(b"\0missing\n")
    return digest.hexdigest()


def _feature(value):
    if isinstance(value, bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def _encoded_files(paths, size, pad_small, pad_value, skips, num_parallel_calls):
    """Yields (row, encoded bytes, format, height, width) for every readable file,
    in row order; the others are added to `skips`."""
    rows, raw, kinds = [], [], []
    for i, path in enumerate(paths):
        try:
            nbytes = os.path.getsize(path)
        except OSError:
            skips.add(path, "missing")
            continue
        if nbytes == 0:
            skips.add(path, "empty file")
            continue
        with open(path, "rb") as handle:
            head = handle.read(8)
        kind = next((k for magic, k in _RAW.items() if head.startswith(magic)), None)
        rows.append(i)
        raw.append(size is None and kind is not None)
        kinds.append(kind if size is None and kind is not None else "png")
    if not rows:
        return
    python_reader = np.array([decode.needs_python_reader(paths[i]) for i in rows], bool)
    any_python = bool(python_reader.any())

    def encode(position, path, python, keep):
        def original():
            data = tf.io.read_file(path)
            image = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
            return data, tf.shape(image)[:2]

        def reencoded():
            image = decode.decode(path, python, any_python)
            image = decode.fit_size_uint8(image, size, pad_small, pad_value)
            return tf.io.encode_png(image), tf.shape(image)[:2]

        data, shape = tf.cond(keep, original, reencoded)
        return position, data, shape

    table = (np.arange(len(rows)), np.asarray([paths[i] for i in rows]), python_reader, raw)
    dataset = tf.data.Dataset.from_tensor_slices(table)
    dataset = dataset.map(encode, num_parallel_calls, deterministic=True).ignore_errors()
    expected = 0
    for position, data, shape in dataset.as_numpy_iterator():
        for missed in range(expected, int(position)):
            skips.add(paths[rows[missed]], "cannot be decoded (corrupt or unsupported image)")
        expected = int(position) + 1
        yield rows[position], data, kinds[position], int(shape[0]), int(shape[1])
    for missed in range(expected, len(rows)):
        skips.add(paths[rows[missed]], "cannot be decoded (corrupt or unsupported image)")


def _encoded_arrays(images, size, pad_small, pad_value, num_parallel_calls):
    """Yields (row, PNG bytes, "png", height, width) for in-memory uint8 images."""

    def rgb(image):
        image = np.asarray(image)
        if image.dtype != np.uint8:
            raise ValueError(
                f"write_shards: in-memory images must be uint8; received {image.dtype}. "
                "Convert them first, e.g. np.clip(np.round(x), 0, 255).astype('uint8')."
            )
        if image.ndim == 2:
            image = image[..., None]
        if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
            raise ValueError(
                f"write_shards: in-memory images must be (H, W), (H, W, 1), (H, W, 3) or "
                f"(H, W, 4); received shape {image.shape}."
            )
        return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]

    def encode(position, image):
        image = decode.fit_size_uint8(image, size, pad_small, pad_value)
        return position, tf.io.encode_png(image), tf.shape(image)[:2]

    dataset = tf.data.Dataset.from_generator(
        lambda: ((i, rgb(image)) for i, image in enumerate(images)),
        output_signature=(
            tf.TensorSpec([], tf.int64),
            tf.TensorSpec([None, None, 3], tf.uint8),
        ),
    )
    dataset = dataset.map(encode, num_parallel_calls, deterministic=True)
    for position, data, shape in dataset.as_numpy_iterator():
        yield int(position), data, "png", int(shape[0]), int(shape[1])


def _estimated_bytes(records, images, size):
    if size is not None:
        return len(records) * size[0] * size[1] * 3
    if images is not None:
        return sum(int(np.asarray(image).size) for image in images)
    total = 0
    for path in records["path"].astype(str):
        try:
            total += os.path.getsize(path)
        except OSError:
            pass
    return total


def write_shards(
    records,
    directory,
    prefix="train",
    num_shards=None,
    image_size=None,
    *,
    images=None,
    class_names=None,
    id_maps=None,
    pad_small=True,
    pad_value=255,
    min_shards=16,
    shard_bytes=150_000_000,
    reuse=False,
    num_parallel_calls=AUTOTUNE,
):
    """Writes a record table to sharded TFRecord files and a metadata JSON.

    Args:
        records: a record table (`tfcell.data.records`: columns path, label,
            class_name, domain, subject), or an in-memory table (an `image`
            column and empty paths, as `tfcell.data.synthetic` returns).
        directory: the output folder (created if needed).
        prefix: file-name stem: `{prefix}-00000-of-00016.tfrecord`, ...,
            `{prefix}-metadata.json`. Existing shards of this prefix are
            replaced.
        num_shards: the number of files; default: ~`shard_bytes` per file, at
            least `min_shards`, at most one per image.
        image_size: None stores each JPEG / PNG / BMP file as it is (other
            formats re-encoded as PNG at their size); an int or (height,
            width) pads (`pad_small`) and resizes each image once, as
            `tfcell.data.cache.decoded_images` does, and stores it as PNG
            (lossless: the read pixels equal the decoded array's).
        images: optional uint8 array (N, H, W, C) aligned with the rows, for
            tables whose `path` is "".
        class_names: the label space; default `records.attrs["class_names"]`.
        id_maps: `{"domain": {name: id}, "subject": {name: id}}`; default
            `tfcell.data.pipeline.id_maps(records)`.
        pad_small, pad_value: as in `tfcell.data.pipeline.from_records`.
        min_shards: the least default number of shards (one file per worker
            for FILE auto-sharding over up to this many input pipelines).
        shard_bytes: the aimed size of one shard in bytes (default 150 MB).
        reuse: return the existing metadata, writing nothing, when
            `{prefix}-metadata.json` describes these very rows (same files,
            sizes and modification times, or pixels), settings and shards.
        num_parallel_calls: parallelism of decoding and encoding.

    Returns:
        The metadata dict (also in `{prefix}-metadata.json`): `files` (name and
        count of each shard), `count`, `class_names`, `id_maps`, `image_size`,
        `encoding` (images per stored format), `skipped` (reason -> files).

    Example:

    ```python
    frame = tfcell.data.read_acevedo("../shared/data/pbc_128", label_space="five")
    tfcell.data.write_shards(frame, "/tmp/pbc_shards", prefix="train")
    dataset = tfcell.data.read_shards("/tmp/pbc_shards", "train", image_size=128,
                                      batch_size=64, shuffle=True)
    ```
    """
    _check_prefix(prefix)
    missing = [c for c in records_lib.COLUMNS if c not in records.columns]
    if missing:
        raise ValueError(
            f"write_shards: the table lacks columns {missing}; a record table has "
            f"{records_lib.COLUMNS} (tfcell.data.records)."
        )
    names = _class_names(records, class_names)
    records_lib.check_labels(
        records["label"].to_numpy(), len(names), records_lib.row_names(records), "write_shards"
    )
    paths = records["path"].astype(str).to_list()
    if images is None and "image" in records.columns and all(p == "" for p in paths):
        images = records["image"].to_list()
    if images is not None and len(images) != len(records):
        raise ValueError(
            f"write_shards: images has {len(images)} entries but the table {len(records)} rows."
        )
    if images is None and "" in paths:
        raise ValueError(
            f"write_shards: row {paths.index('')} has no path and no image; pass images=... "
            "aligned with the rows for in-memory data."
        )
    size = decode.as_size(image_size)
    if id_maps is None:
        id_maps = {
            c: {n: i for i, n in enumerate(sorted(set(records[c].astype(str))))}
            for c in ("domain", "subject")
        }
    id_maps = {c: {str(k): int(v) for k, v in id_maps[c].items()} for c in ("domain", "subject")}
    for column in ("domain", "subject"):
        unknown = sorted(set(records[column].astype(str)) - set(id_maps[column]))
        if unknown:
            raise ValueError(
                f"write_shards: {len(unknown)} {column} name(s) are not in id_maps, e.g. "
                f"{unknown[:3]}; build the maps over every record table of the run."
            )
    pad = list(pad_small) if isinstance(pad_small, (tuple, list)) else bool(pad_small)
    settings = {
        "format_version": _FORMAT_VERSION, "image_size": None if size is None else list(size),
        "pad_small": pad, "pad_value": int(pad_value), "class_names": names,
        "id_maps": id_maps, "num_shards": num_shards, "min_shards": int(min_shards),
        "shard_bytes": int(shard_bytes),
    }  # fmt: skip
    fingerprint = _fingerprint(records, images, settings)
    directory = os.fspath(directory)
    if reuse:
        existing = _reusable(directory, prefix, fingerprint)
        if existing is not None:
            logger.info(
                "tfrecords: reusing %d images in %s/%s-*", existing["count"], directory, prefix
            )
            return existing
    if num_shards is None:
        wanted = math.ceil(_estimated_bytes(records, images, size) / float(shard_bytes))
        num_shards = max(1, min(len(records), max(int(min_shards), wanted)))
    num_shards = int(num_shards)
    if not 1 <= num_shards <= 99_999:
        raise ValueError(f"num_shards must lie in [1, 99999]; received {num_shards}.")

    os.makedirs(directory, exist_ok=True)
    meta_path = _metadata_path(directory, prefix)
    if os.path.exists(meta_path):
        os.remove(meta_path)  # From here on the directory is incomplete.
    for old in glob.glob(os.path.join(glob.escape(directory), _shard_glob(prefix))):
        os.remove(old)
    files = [f"{prefix}-{i:05d}-of-{num_shards:05d}.tfrecord" for i in range(num_shards)]
    temporary = []
    for name in files:
        handle, path = tempfile.mkstemp(prefix=f".tmp-{name}-", dir=directory)
        os.close(handle)
        temporary.append(path)
    skips = records_lib.SkipLog(f"write_shards:{prefix}")
    counts, encoding = [0] * num_shards, {}
    labels = records["label"].to_numpy("int64")
    text = {c: records[c].astype(str).to_list() for c in ("class_name", "domain", "subject")}
    if images is not None:
        stream = _encoded_arrays(images, size, pad_small, pad_value, num_parallel_calls)
    else:
        stream = _encoded_files(paths, size, pad_small, pad_value, skips, num_parallel_calls)
    writers = [tf.io.TFRecordWriter(path) for path in temporary]
    try:
        for written, (row, data, kind, height, width) in enumerate(stream):
            example = tf.train.Example(
                features=tf.train.Features(
                    feature={
                        "image/encoded": _feature(data),
                        "image/format": _feature(kind.encode()),
                        "image/height": _feature(height),
                        "image/width": _feature(width),
                        "label": _feature(labels[row]),
                        "class_name": _feature(text["class_name"][row].encode()),
                        "domain": _feature(id_maps["domain"][text["domain"][row]]),
                        "domain_name": _feature(text["domain"][row].encode()),
                        "subject": _feature(id_maps["subject"][text["subject"][row]]),
                        "subject_name": _feature(text["subject"][row].encode()),
                        "path": _feature(paths[row].encode()),
                        "index": _feature(row),
                    }  # fmt: skip
                )
            )
            writers[written % num_shards].write(example.SerializeToString())
            counts[written % num_shards] += 1
            encoding[kind] = encoding.get(kind, 0) + 1
    except BaseException:
        for writer, path in zip(writers, temporary):
            writer.close()
            os.remove(path)
        raise
    for writer, path, name in zip(writers, temporary, files):
        writer.close()
        os.replace(path, os.path.join(directory, name))
    skips.log()
    metadata = {
        **settings, "prefix": prefix, "num_shards": num_shards, "fingerprint": fingerprint,
        "files": [{"file": name, "count": c} for name, c in zip(files, counts)],
        "count": int(sum(counts)), "num_records": len(records), "encoding": encoding,
        "skipped": skips.as_dict(), "skip_counts": skips.counts(),
    }  # fmt: skip
    handle, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=directory)
    with os.fdopen(handle, "w") as f:
        json.dump(metadata, f, indent=1)
    os.replace(tmp, meta_path)
    logger.info(
        "tfrecords: wrote %d images (%d skipped) to %d shards %s/%s-*",
        metadata["count"], skips.total(), num_shards, directory, prefix,
    )  # fmt: skip
    return metadata


def _reusable(directory, prefix, fingerprint):
    try:
        metadata = read_metadata(directory, prefix)
        shard_files(directory, prefix)
    except (FileNotFoundError, ValueError):
        return None
    return metadata if metadata.get("fingerprint") == fingerprint else None
