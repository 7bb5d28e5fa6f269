"""tf.data pipelines over record tables and in-memory arrays.

`from_records` decodes image files with `tf.io` (JPEG, PNG, BMP, GIF) inside
tf.data; TIFF and other formats tf.io cannot read go through
`tfcell.data.image_io.load_image` in a `tf.numpy_function`. Images are float32
in [0, 255]. Batches are `(image, label)` tuples or dicts
`{"image", "label", "domain", "subject"}` with domain and subject mapped to
integer ids (`id_maps(records)`, also stored on the dataset as
`dataset.id_maps`).

Bad files never crash deep inside tf.data without a name: before building the
pipeline every file is checked (`validate="header"`: exists, non-empty, a known
image signature, and the JPEG/PNG end marker, i.e. not truncated; or
`validate="decode"`: each file decoded once, in parallel) and an `ImageError`
names every bad file and the fix.

Augmentation, deterministic under `seed` in every mode:

- `augmentation.PerImageAugmentation` (the default for training on files):
  stateless ops per image inside the parallel decode map (the fastest path
  measured, `benchmarks/input_pipeline.py`; `fuse_resize=True` folds the
  resize, flips and rotation into one resampling);
- `augmentation.BatchAugmentation`: the same operations vectorised over a
  batch after `batch`, one stateless seed per batch, in a parallel map;
- `augmentation.RandomDihedral`: flips + 90-degree turns as one pixel-index
  gather per batch, the same batched protocol (in `from_arrays` on the uint8
  batch, before the cast to float32);
- Keras preprocessing layers: on whole batches in one sequential `map` after
  `batch`, so the layers' seed streams are consumed in order.
"""

import numpy as np
import tensorflow as tf

from tfcell.data import augmentation, decode
from tfcell.data import records as records_lib
from tfcell.data.decode import ImageError, check_images, validate_files

__all__ = [
    "ImageError",
    "check_images",
    "from_arrays",
    "from_records",
    "id_maps",
    "preload",
    "validate_files",
]

AUTOTUNE = tf.data.AUTOTUNE


def id_maps(records):
    """Sorted unique domain and subject names -> integer ids (stable across runs)."""
    return {
        column: {name: i for i, name in enumerate(sorted(set(records[column].astype(str))))}
        for column in ("domain", "subject")
        if column in records.columns
    }


_table_id_maps = id_maps  # `from_records(id_maps=...)` shadows the name.


def _finish(dataset, batch_size, augment, output, drop_remainder, index_batches, seed=0):
    if index_batches is None:
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    if getattr(augment, "batched", False):
        # Stateless: one seed per batch, drawn in order, so the map can be parallel.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        dataset = tf.data.Dataset.zip(dataset, seeds)
        if output == "dict":
            dataset = dataset.map(lambda b, s: {**b, "image": augment(b["image"], s)}, AUTOTUNE)
        else:
            dataset = dataset.map(lambda b, s: (augment(b[0], s), b[1]), AUTOTUNE)
    elif augment is not None:
        # Sequential on purpose: the augmentation layers' seed streams are then
        # consumed in batch order, so a seed gives identical batches every run.
        if output == "dict":
            dataset = dataset.map(lambda b: {**b, "image": augment(b["image"])})
        else:
            dataset = dataset.map(lambda x, y: (augment(x), y))
    return dataset.prefetch(AUTOTUNE)


def _columns(domain, subject, records_maps, n):
    maps = records_maps
    domain_ids = (
        np.array([maps["domain"][str(d)] for d in domain], "int32")
        if domain is not None
        else np.zeros(n, "int32")
    )
    subject_ids = (
        np.array([maps["subject"][str(s)] for s in subject], "int32")
        if subject is not None
        else np.zeros(n, "int32")
    )
    return domain_ids, subject_ids


def from_records(
    records,
    image_size,
    batch_size=32,
    shuffle=True,
    augment=None,
    seed=0,
    output="tuple",
    cache=False,
    pad_small=True,
    pad_value=255,
    num_parallel_calls=AUTOTUNE,
    validate="header",
    preload=False,
    drop_remainder=False,
    index_batches=None,
    id_maps=None,
    num_classes=None,
):
    """A batched, prefetched `tf.data.Dataset` over a record table.

    Args:
        records: a record table (`tfcell.data.records`); an in-memory table
            (an `image` column, as `tfcell.data.synthetic` returns) goes through
            `from_arrays`.
        image_size: int or (height, width) the images are resized to.
        batch_size: batch size.
        shuffle: reshuffle the whole table each epoch (seeded).
        augment: for training, preferably
            `tfcell.data.augmentation.PerImageAugmentation` (the fast path:
            stateless per-image ops inside the parallel decode map); or `BatchAugmentation` (vectorised, after `batch`);
            or `RandomDihedral` (exact flips + 90-degree turns, one gather per batch);
            or any callable on float32 image batches in [0, 255] (a Keras
            preprocessing layer or `keras.layers.Pipeline`, run in one
            sequential map after `batch`); or None.
        seed: shuffle seed.
        output: "tuple" -> `(image, label)`; "dict" -> `{"image", "label",
            "domain", "subject"}` with integer ids (`id_maps(records)`).
        cache: False, True (in memory, after decode and resize) or a file path.
        pad_small: pad images smaller than the target before resizing, instead
            of upscaling them: True pads to `image_size`, a (height, width)
            pads to that native size (IDC: `(50, 50)`), False resizes only.
        pad_value: the padding colour (255: white glass).
        num_parallel_calls: parallelism of decoding.
        validate: "header", "decode" or None (see the module docstring).
        preload: decode everything once into memory, then serve batches by
            gathering from one array (fastest for small sets, e.g. IDC).
        drop_remainder: drop the last incomplete batch.
        index_batches: optional dataset of int index vectors (one per batch),
            as `tfcell.data.samplers` builds; replaces shuffle and batch.
        id_maps: optional `{"domain": {name: id}, "subject": {name: id}}`
            fixing the ids across record tables (e.g. a run's maps over every
            table); default `id_maps(records)` of this table alone.
        num_classes: C, the label range `[0, C)` every record must lie in;
            default `len(records.attrs["class_names"])` when the table has it.
            A bad label raises ValueError naming the files
            (`tfcell.data.records.check_labels`), NaN / inf in-memory images
            too (`check_images`).

    Returns:
        A `tf.data.Dataset` with an `id_maps` attribute.
    """
    if output not in ("tuple", "dict"):
        raise ValueError(f"output must be 'tuple' or 'dict'; received {output!r}.")
    if num_classes is None and records.attrs.get("class_names"):
        num_classes = len(records.attrs["class_names"])
    records_lib.check_labels(
        records["label"].to_numpy(),
        num_classes,
        names=records_lib.row_names(records),
        where="from_records",
    )
    size = decode.as_size(image_size)
    maps = dict(id_maps) if id_maps is not None else _table_id_maps(records)
    if "image" in records.columns and (records["path"] == "").all():
        arrays = {"images": np.stack(records["image"].to_list())}
        return from_arrays(
            arrays["images"], records["label"].to_numpy(), batch_size=batch_size,
            shuffle=shuffle, augment=augment, seed=seed, output=output,
            domains=records["domain"].to_numpy(str), subjects=records["subject"].to_numpy(str),
            image_size=size, drop_remainder=drop_remainder, index_batches=index_batches,
            id_maps=maps, num_classes=num_classes,
        )  # fmt: skip
    paths = records["path"].astype(str).to_list()
    if validate:
        validate_files(paths, mode=validate, num_parallel_calls=num_parallel_calls)
    if preload:
        images = preload_images(paths, size, pad_small, pad_value, num_parallel_calls)
        return from_arrays(
            images, records["label"].to_numpy(), batch_size=batch_size, shuffle=shuffle,
            augment=augment, seed=seed, output=output,
            domains=records["domain"].to_numpy(str), subjects=records["subject"].to_numpy(str),
            drop_remainder=drop_remainder, index_batches=index_batches, id_maps=maps,
            num_classes=num_classes,
        )  # fmt: skip
    labels = records["label"].to_numpy("int32")
    domain_ids, subject_ids = _columns(
        records.get("domain"), records.get("subject"), maps, len(paths)
    )
    python_reader = np.array([decode.needs_python_reader(p) for p in paths], bool)
    any_python = bool(python_reader.any())
    table = (np.asarray(paths), python_reader, labels, domain_ids, subject_ids)
    if size is None:
        raise ValueError("from_records needs an image_size to batch images of different sizes.")

    per_image = getattr(augment, "per_image", False)

    fused = per_image and getattr(augment, "fuse_resize", False)

    def load(path, py, label, domain, subject, seed=None):
        image = decode.decode(path, py, any_python)
        if fused:  # resize + flips + rotation in one resampling
            image = decode.pad_to_target(image, size, pad_small, pad_value)
            image = augment.resize_and_augment(image, size, seed)
        else:
            image = decode.fit_size(image, size, pad_small, pad_value)
            if seed is not None:
                image = augment(image, seed)
        return {"image": image, "label": label, "domain": domain, "subject": subject}

    def with_seeds(dataset):
        # One seed per image, drawn in order, so the parallel map stays deterministic.
        if not per_image:
            return dataset
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        return tf.data.Dataset.zip(dataset, seeds).map(lambda t, s: (*t, s))

    if index_batches is not None:
        # Balanced sampling: gather rows per index, decode each, keep the batch.
        tensors = [tf.constant(t) for t in table]
        dataset = index_batches.map(lambda idx: tuple(tf.gather(t, idx) for t in tensors))
        dataset = with_seeds(dataset.unbatch()).map(load, num_parallel_calls=num_parallel_calls)
        dataset = dataset.batch(index_batches.element_spec.shape[0] or batch_size)
        dataset = _to_output(dataset, output)
    else:
        dataset = tf.data.Dataset.from_tensor_slices(table)
        if shuffle and not cache:
            dataset = dataset.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
        if cache and per_image:
            raise ValueError("cache would freeze a per-image augmentation; cache without augment.")
        dataset = with_seeds(dataset).map(load, num_parallel_calls=num_parallel_calls)
        if cache:
            dataset = dataset.cache("" if cache is True else str(cache))
            if shuffle:
                dataset = dataset.shuffle(min(len(paths), 10_000), seed=seed)
        dataset = _to_output(dataset, output)
    batched_augment = None if per_image else augment
    dataset = _finish(
        dataset, batch_size, batched_augment, output, drop_remainder, index_batches, seed
    )
    dataset.id_maps = maps
    return dataset


def _to_output(dataset, output):
    if output == "dict":
        return dataset
    return dataset.map(lambda b: (b["image"], b["label"]))


def preload_images(paths, image_size, pad_small=True, pad_value=255, num_parallel_calls=AUTOTUNE):
    """Decodes and resizes every file once, in parallel; returns uint8 (N, H, W, 3).

    Files already of `image_size` (after `pad_small`) keep their decoded pixels
    as they are; others are resized bilinearly in float32 and rounded.
    """
    size = decode.as_size(image_size)
    py = np.array([decode.needs_python_reader(p) for p in paths], bool)
    any_python = bool(py.any())

    def load(path, python_reader):
        image = decode.decode(path, python_reader, any_python)
        return decode.fit_size_uint8(image, size, pad_small, pad_value)

    dataset = tf.data.Dataset.from_tensor_slices((np.asarray(paths, str), py))
    dataset = dataset.map(load, num_parallel_calls=num_parallel_calls).batch(256)
    batches = list(dataset.as_numpy_iterator())
    return np.concatenate(batches) if batches else np.zeros((0, *size, 3), "uint8")


preload = preload_images


class _ThenFloat:
    """A batched pixel permutation (`augmentation.RandomDihedral`) followed by
    the cast to float32 that `from_arrays` otherwise does before augmenting."""

    batched = True

    def __init__(self, augment):
        self.augment = augment

    def __call__(self, images, seed):
        return tf.cast(self.augment(images, seed), tf.float32)


def from_arrays(
    images,
    labels,
    batch_size=32,
    shuffle=True,
    augment=None,
    seed=0,
    output="tuple",
    domains=None,
    subjects=None,
    image_size=None,
    drop_remainder=False,
    index_batches=None,
    id_maps=None,
    num_classes=None,
):
    """A batched dataset over in-memory images (uint8 or float, (N, H, W, C)).

    Images stay in one constant; each batch is a `tf.gather` of shuffled indices
    (then an optional resize to `image_size` and `augment`), so small data sets
    (IDC patches, synthetic data) run at memory speed. `domains` and `subjects`
    (strings or ints) become integer ids; the maps are on `dataset.id_maps`.
    Accepts a `tfcell.data.synthetic` dict (`images=arrays`) through `**`.
    `id_maps` (`{"domain": {name: id}, "subject": {name: id}}`) fixes the ids
    across datasets, e.g. the maps of a whole run, so that a validation part
    numbers its subjects as the training part does; without it the ids are
    sorted unique values of this call's `domains` / `subjects`.

    Labels must be integer class ids in `[0, num_classes)` (`>= 0` when
    `num_classes` is None) and float images finite; otherwise a ValueError
    names the array indices and the fix, before any batch is built (a GPU
    gather of a bad label returns zeros instead of failing).
    """
    if isinstance(images, dict):  # from_arrays(to_arrays(frame)) convenience
        arrays = images
        images, labels = arrays["images"], arrays["label"]
        domains, subjects = arrays.get("domain"), arrays.get("subject")
    if getattr(augment, "per_image", False):
        # In memory the batch is the unit: run the same operations vectorised.
        augment = augmentation.BatchAugmentation(**vars(augment))
    images = np.asarray(images)
    labels = np.asarray(labels)
    n = len(images)
    if len(labels) != n:
        raise ValueError(f"images and labels differ in length: {n} vs {len(labels)}.")
    records_lib.check_labels(labels, num_classes, where="from_arrays")
    labels = labels.astype("int32")
    check_images(images, where="from_arrays")
    if output not in ("tuple", "dict"):
        raise ValueError(f"output must be 'tuple' or 'dict'; received {output!r}.")
    maps = {}
    ids = []
    for name, values in (("domain", domains), ("subject", subjects)):
        values = np.zeros(n, "int32") if values is None else np.asarray(values).astype(str)
        if id_maps is not None and name in id_maps:
            maps[name] = dict(id_maps[name])
            unknown = sorted(set(values.tolist()) - set(maps[name]))
            if unknown:
                raise ValueError(
                    f"from_arrays: {len(unknown)} {name} name(s) are not in id_maps, e.g. "
                    f"{unknown[:3]}; build the maps over every record table of the run."
                )
        else:
            maps[name] = {v: i for i, v in enumerate(sorted(set(values.tolist())))}
        ids.append(np.array([maps[name][v] for v in values.tolist()], "int32"))
    image_table = tf.constant(images)
    tables = [tf.constant(labels), tf.constant(ids[0]), tf.constant(ids[1])]
    size = decode.as_size(image_size)
    resize = size is not None and tuple(images.shape[1:3]) != size
    if isinstance(augment, augmentation.RandomDihedral) and not resize:
        # A pixel permutation: run it on the table's dtype (uint8: a quarter of
        # the bytes of float32), then cast; the values are the same either way.
        augment = _ThenFloat(augment)

    def gather(idx):
        batch = tf.gather(image_table, idx)
        if not isinstance(augment, _ThenFloat):
            batch = tf.cast(batch, tf.float32)
        if resize:
            batch = tf.image.resize(batch, size)
        label, domain, subject = (tf.gather(t, idx) for t in tables)
        if output == "dict":
            return {"image": batch, "label": label, "domain": domain, "subject": subject}
        return batch, label

    if index_batches is None:
        index = tf.data.Dataset.range(n)
        if shuffle:
            index = index.shuffle(max(n, 1), seed=seed, reshuffle_each_iteration=True)
        index = index.batch(batch_size, drop_remainder=drop_remainder)
    else:
        index = index_batches
    dataset = index.map(gather, num_parallel_calls=AUTOTUNE)
    dataset = _finish(dataset, batch_size, augment, output, drop_remainder, True, seed)
    dataset.id_maps = maps
    return dataset
