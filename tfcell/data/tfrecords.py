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
import logging
import math
import os
import re
import tempfile

import numpy as np
import tensorflow as tf

from tfcell.data import decode
from tfcell.data import records as records_lib

__all__ = ["parse_example", "read_metadata", "read_shards", "shard_files", "write_shards"]

logger = logging.getLogger("tfcell.data")

AUTOTUNE = tf.data.AUTOTUNE

# Bump when the stored bytes of an unchanged input would change.
_FORMAT_VERSION = 1
_SHARD = re.compile(r"^(?P<prefix>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.tfrecord$")
_PREFIX = re.compile(r"^[\w.+=-]+$")
_RAW = {b"\xff\xd8\xff": "jpeg", b"\x89PNG\r\n\x1a\n": "png", b"BM": "bmp"}

FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/format": tf.io.FixedLenFeature([], tf.string),
    "image/height": tf.io.FixedLenFeature([], tf.int64),
    "image/width": tf.io.FixedLenFeature([], tf.int64),
    "label": tf.io.FixedLenFeature([], tf.int64),
    "class_name": tf.io.FixedLenFeature([], tf.string),
    "domain": tf.io.FixedLenFeature([], tf.int64),
    "domain_name": tf.io.FixedLenFeature([], tf.string),
    "subject": tf.io.FixedLenFeature([], tf.int64),
    "subject_name": tf.io.FixedLenFeature([], tf.string),
    "path": tf.io.FixedLenFeature([], tf.string),
    "index": tf.io.FixedLenFeature([], tf.int64),
}


def _check_prefix(prefix):
    if not isinstance(prefix, str) or not _PREFIX.match(prefix):
        raise ValueError(
            f"prefix must be a plain file-name stem (letters, digits, '_', '.', '+', '=', '-'); "
            f"received {prefix!r}. Glob characters and '/' would break the shard pattern."
        )


def _metadata_path(directory, prefix):
    return os.path.join(os.fspath(directory), f"{prefix}-metadata.json")


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


def read_metadata(directory, prefix="train"):
    """The `{prefix}-metadata.json` of `write_shards` (raises FileNotFoundError
    naming the file and the fix when it is absent)."""
    path = _metadata_path(directory, prefix)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"No shard metadata at {path}: the shards are incomplete (a write was "
            "interrupted) or were not written by tfcell. Write them again with "
            f"tfcell.data.write_shards(records, {os.fspath(directory)!r}, prefix={prefix!r})."
        )
    with open(path) as f:
        return json.load(f)


def _shard_glob(prefix, count=None):
    digits = "[0-9]" * 5
    return f"{prefix}-{digits}-of-{digits if count is None else f'{count:05d}'}.tfrecord"


def _pattern(directory_or_pattern, prefix):
    target = os.fspath(directory_or_pattern)
    if os.path.isdir(target):
        _check_prefix(prefix)
        return target, os.path.join(glob.escape(target), _shard_glob(prefix)), prefix
    return os.path.dirname(target) or ".", target, None


def _tf_pattern(files, metadata):
    """The pattern `list_files` matches: exactly these shards (the file list
    itself when the folder's name holds glob characters)."""
    directory = os.path.dirname(files[0])
    if re.search(r"[*?[]", directory):
        return files
    return os.path.join(directory, _shard_glob(metadata["prefix"], metadata["num_shards"]))


def shard_files(directory_or_pattern, prefix="train"):
    """The sorted shard files of a prefix and their metadata, after checks.

    Args:
        directory_or_pattern: the folder `write_shards` wrote to, or a glob
            pattern of shard files (its metadata is found beside them).
        prefix: the shards' prefix (ignored for a pattern).

    Returns:
        `(files, metadata)`.

    Raises:
        FileNotFoundError: no file matches, or the metadata is missing.
        ValueError: the numbers in the file names disagree with the files found
            or with the metadata.
    """
    directory, pattern, prefix = _pattern(directory_or_pattern, prefix)
    files = sorted(glob.glob(pattern))
    if not files:
        found = sorted(
            os.path.basename(m)[: -len("-metadata.json")]
            for m in glob.glob(os.path.join(glob.escape(directory), "*-metadata.json"))
        )
        raise FileNotFoundError(
            f"No TFRecord shard matches {pattern!r} (prefixes written in {directory}: "
            f"{found or 'none'}). Write them first with tfcell.data.write_shards(records, "
            "directory, prefix=...), then pass that directory and prefix (or a pattern such "
            "as '<dir>/train-*-of-*.tfrecord')."
        )
    parsed = [_SHARD.match(os.path.basename(f)) for f in files]
    if not all(parsed) or len({m.group("prefix") for m in parsed}) != 1:
        raise ValueError(
            f"{pattern!r} matches files that are not shards of one prefix "
            f"('<prefix>-00000-of-00008.tfrecord'): {[os.path.basename(f) for f in files][:5]}."
        )
    prefix = prefix or parsed[0].group("prefix")
    declared = {int(m.group("count")) for m in parsed}
    indices = sorted(int(m.group("index")) for m in parsed)
    total = max(declared)
    if len(declared) != 1 or indices != list(range(total)):
        absent = sorted(set(range(total)) - set(indices))
        raise ValueError(
            f"Shard names of {prefix!r} in {directory} say -of-{total:05d} but "
            f"{len(files)} file(s) were found (declared counts {sorted(declared)}; missing "
            f"shard(s) {[f'{i:05d}' for i in absent[:10]]}). A write was interrupted or files "
            "were lost or copied in part: write the shards again (write_shards)."
        )
    metadata = read_metadata(directory, prefix)
    if metadata.get("num_shards") != total:
        raise ValueError(
            f"{_metadata_path(directory, prefix)} describes {metadata.get('num_shards')} shards "
            f"but the files say -of-{total:05d}: they come from different writes. Write the "
            "shards again (write_shards)."
        )
    return files, metadata


def parse_example(serialized):
    """One serialized `tf.train.Example` of `write_shards` -> its feature dict
    (`FEATURES`: encoded image bytes, ids, names, path, index)."""
    return tf.io.parse_single_example(serialized, FEATURES)


def read_shards(
    directory_or_pattern,
    prefix="train",
    image_size=None,
    batch_size=None,
    *,
    output="tuple",
    shuffle=False,
    shuffle_files=None,
    seed=0,
    shuffle_buffer=10_000,
    augment=None,
    pad_small=True,
    pad_value=255,
    input_context=None,
    drop_remainder=False,
    num_parallel_calls=AUTOTUNE,
):
    """A `tf.data.Dataset` over the shards of `write_shards`, as `pipeline` builds.

    Files are listed sorted (`tf.data.Dataset.list_files(pattern,
    shuffle=False)`), read with `interleave(tf.data.TFRecordDataset)` and
    decoded with `tf.io.decode_image(expand_animations=False)`, then padded and
    resized as `tfcell.data.pipeline.from_records` does
    (`tfcell.data.decode.fit_size`; a no-op when the shards were written at
    `image_size`). Unshuffled, the elements come in the written table's order.

    Args:
        directory_or_pattern: the folder `write_shards` wrote, or a glob
            pattern of its shard files.
        prefix: the shards' prefix.
        image_size: int or (height, width); default the size the shards were
            written at (None: native sizes, allowed only without `batch_size`).
        batch_size: batch size, or None for single elements.
        output: "tuple" -> `(image, label)`; "dict" -> `{"image", "label",
            "domain", "subject"}` (int32 ids from the metadata's id maps);
            "features" -> the undecoded `parse_example` dicts (for tools).
        shuffle: shuffle the file order and the records (a `shuffle_buffer` of
            serialized records; the whole set when it is smaller), seeded,
            reshuffled every epoch.
        shuffle_files: shuffle the file order (default: `shuffle`).
        seed: the shuffle and augmentation seed.
        shuffle_buffer: records held by the shuffle (encoded, before decoding).
        augment: as in `pipeline.from_records` (per-image `PerImageAugmentation`
            in the decode map, batched ones or Keras layers after `batch`).
        pad_small, pad_value: as in `pipeline.from_records`.
        input_context: a `tf.distribute.InputContext`
            (`strategy.distribute_datasets_from_function`): this pipeline reads
            the files `input_pipeline_id::num_input_pipelines`.
        drop_remainder: drop the last incomplete batch.
        num_parallel_calls: parallelism of reading and decoding.

    Returns:
        A `tf.data.Dataset` with `id_maps` and `metadata` attributes.

    Example:

    ```python
    train = tfcell.data.read_shards("/tmp/pbc_shards", "train", 128, batch_size=64,
                                    shuffle=True, output="dict")
    ```
    """
    if output not in ("tuple", "dict", "features"):
        raise ValueError(f"output must be 'tuple', 'dict' or 'features'; received {output!r}.")
    files, metadata = shard_files(directory_or_pattern, prefix)
    size = decode.as_size(image_size if image_size is not None else metadata.get("image_size"))
    if size is None and batch_size is not None and output != "features":
        raise ValueError(
            "read_shards: the shards hold native-size images; pass image_size to batch them."
        )
    shuffle_files = shuffle if shuffle_files is None else shuffle_files
    dataset = tf.data.Dataset.list_files(_tf_pattern(files, metadata), shuffle=False)
    num_files = len(files)
    if input_context is not None:
        dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        num_files = len(files[input_context.input_pipeline_id :: input_context.num_input_pipelines])
    if shuffle_files and num_files > 1:
        dataset = dataset.shuffle(num_files, seed=seed, reshuffle_each_iteration=True)
    # One element of each file in turn: the written order when not shuffled.
    dataset = dataset.interleave(
        tf.data.TFRecordDataset, cycle_length=max(num_files, 1), block_length=1,
        num_parallel_calls=num_parallel_calls, deterministic=True,
    )  # fmt: skip
    if shuffle:
        buffer = max(1, min(int(shuffle_buffer), int(metadata["count"])))
        dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if output == "features":
        dataset = dataset.map(parse_example, num_parallel_calls=num_parallel_calls)
        if batch_size is not None:
            dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
        return _annotate(dataset.prefetch(AUTOTUNE), metadata)
    per_image = getattr(augment, "per_image", False)
    fused = per_image and getattr(augment, "fuse_resize", False)
    seeded = per_image or getattr(augment, "batched", False)
    if augment is not None and not per_image and batch_size is None:
        raise ValueError("read_shards: a batched augment needs a batch_size.")

    def load(serialized, draw=None):
        features = parse_example(serialized)
        image = tf.io.decode_image(
            features["image/encoded"], channels=3, dtype=tf.uint8, expand_animations=False
        )
        image.set_shape([None, None, 3])
        element_seed = None
        if draw is not None:
            element_seed = tf.random.experimental.stateless_fold_in(draw, features["index"])
        if fused:
            image = decode.pad_to_target(image, size, pad_small, pad_value)
            image = augment.resize_and_augment(image, size, element_seed)
        else:
            image = decode.fit_size(image, size, pad_small, pad_value)
            if per_image:
                image = augment(image, element_seed)
        element = {
            "image": image,
            "label": tf.cast(features["label"], tf.int32),
            "domain": tf.cast(features["domain"], tf.int32),
            "subject": tf.cast(features["subject"], tf.int32),
        }
        return element if element_seed is None else (element, element_seed)

    if seeded:
        # One draw per element in stream order (a sequential map after the
        # shuffle, so the k-th element of every epoch gets the k-th draw, and
        # the shuffle gives it another image each epoch); deterministic under
        # the seeds. Not `Dataset.random` in a zip, as `pipeline` does: a second
        # source dataset stops FILE auto-sharding.
        dataset = dataset.map(
            lambda record: (record, tf.random.uniform([2], 0, 2**62, tf.int64, seed=seed))
        )
    dataset = dataset.map(load, num_parallel_calls=num_parallel_calls)
    if batch_size is not None:
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    if seeded:
        # The batch's seed (batched augmentations) is its first image's seed.
        if getattr(augment, "batched", False):
            dataset = dataset.map(
                lambda b, s: {**b, "image": augment(b["image"], s[0])}, num_parallel_calls
            )
        else:
            dataset = dataset.map(lambda b, s: b)
    elif augment is not None:
        # Sequential on purpose: the layers' seed streams are consumed in batch order.
        dataset = dataset.map(lambda b: {**b, "image": augment(b["image"])})
    if output == "tuple":
        dataset = dataset.map(lambda b: (b["image"], b["label"]))
    return _annotate(dataset.prefetch(AUTOTUNE), metadata)


def _annotate(dataset, metadata):
    dataset.id_maps = metadata["id_maps"]
    dataset.metadata = metadata
    return dataset
