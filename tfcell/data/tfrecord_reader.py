"""Reading the sharded TFRecords of `tfcell.data.tfrecords.write_shards`.

The record format (`FEATURES`), the shard names and the metadata file are
defined here, with the reader: `read_shards` lists the shards in order so
that tf.data's FILE auto-sharding gives each worker whole files, parses and
decodes them into the batches of `tfcell.data.pipeline`. See
`tfcell.data.tfrecords` for the writer and the layout.
"""

import glob
import json
import logging
import os
import re

import tensorflow as tf

from tfcell.data import decode

__all__ = ["FEATURES", "parse_example", "read_metadata", "read_shards", "shard_files"]

logger = logging.getLogger("tfcell.data")

AUTOTUNE = tf.data.AUTOTUNE

_SHARD = re.compile(r"^(?P<prefix>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.tfrecord$")
_PREFIX = re.compile(r"^[\w.+=-]+$")

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
