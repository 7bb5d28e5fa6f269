"""Data for the CFAL experiments: real IDC / Kather CRC splits or the embedded
synthetic stand-in, as in-memory arrays or record tables, and `tf.data` input.

A "setting" is one train/val/test split the whole loss comparison runs on:
IDC "patch" (the paper's 70/30 random split by patch) and "patient" (70/30 by
patient, no patient on both sides); CRC "standard" (100K with 15 % validation,
tested on 7K) and "long_tailed" (Fig. 7).
"""

import dataclasses
import logging

import numpy as np
import pandas as pd
import tensorflow as tf
from sklearn import model_selection

__all__ = [
    "Setting",
    "Split",
    "apply_synthetic_scale",
    "uses_synthetic",
    "crc_settings",
    "idc_settings",
    "make_dataset",
    "print_banner",
]

logger = logging.getLogger("tfcell.experiments")

SYNTHETIC_BANNER = (
    "#" * 78 + "\n"
    "#  SYNTHETIC DATA: no real dataset was found or given, so this run uses the\n"
    "#  embedded synthetic images. Its numbers say the code runs end to end; they\n"
    "#  say NOTHING about the paper's claims. Pass --config.data.root=<folder in the\n"
    "#  publisher's layout> (or --config.data.download=True when online).\n" + "#" * 78
)


@dataclasses.dataclass
class Split:
    """Images as uint8 arrays `x` (N, H, W, 3) with labels `y`, or a record table."""

    y: np.ndarray
    x: np.ndarray = None
    records: object = None
    subjects: np.ndarray = None  # Patient ids where the data has them.

    def __len__(self):
        return len(self.y)


@dataclasses.dataclass
class Setting:
    name: str
    train: Split
    val: Split
    test: Split
    class_names: tuple
    synthetic: bool
    description: str

    @property
    def num_classes(self):
        return len(self.class_names)

    def class_counts(self):
        return np.bincount(self.train.y, minlength=self.num_classes)


def print_banner():
    from tfcell.data import synthetic

    print(SYNTHETIC_BANNER + "\n" + synthetic.SYNTHETIC_BANNER, flush=True)
    logger.warning("synthetic data in use")


def _resize(image, size):
    from PIL import Image

    if image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))


def load_arrays(records_table, image_size):
    """Decodes every image of a record table into a uint8 array `(N, S, S, 3)`."""
    from tfcell.data import image_io

    x = np.stack(
        [_resize(image_io.load_image(p, channels=3), image_size) for p in records_table["path"]]
    )
    return Split(y=records_table["label"].to_numpy("int64"), x=x)


def _subsample(indices, labels, limit, rng):
    """At most `limit` indices, stratified (every class keeps its share)."""
    if not limit or len(indices) <= limit:
        return indices
    keep, _ = model_selection.train_test_split(
        indices, train_size=limit, stratify=labels[indices], random_state=rng
    )
    return np.sort(keep)


def _split_by_groups(indices, groups, fraction, seed):
    """(rest, held) with about `fraction` of the indices held out, whole groups only."""
    splitter = model_selection.GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    rest, held = next(splitter.split(indices, groups=groups[indices]))
    return indices[rest], indices[held]


def _split_stratified(indices, labels, fraction, seed):
    rest, held = model_selection.train_test_split(
        indices, test_size=fraction, stratify=labels[indices], random_state=seed
    )
    return np.sort(rest), np.sort(held)


def _take(x, y, idx, subjects=None):
    return Split(y=y[idx], x=x[idx], subjects=None if subjects is None else subjects[idx])


# --------------------------------------------------------------------------- IDC


def _idc_records(root):
    from tfcell.data import idc

    return idc.read_idc(root)


def _idc_synthetic(config, seed):
    """IDC-like patches with fake patients (`tfcell.data.synthetic.idc_like`)."""
    from tfcell.data import synthetic

    patients = max(10, config.synthetic.num_images // 40)  # About 40 patches each.
    out = synthetic.to_arrays(
        synthetic.idc_like(patients, image_size=config.data.image_size, seed=seed)
    )
    return out["images"], out["label"], out["subject"]


def idc_settings(config, repeat):
    """IDC splits for one repeat: "patch" and/or "patient" (config.data.splits)."""
    seed = config.seed + repeat
    root = "" if config.data.root == "synthetic" else config.data.root
    if not root and config.data.root != "synthetic":
        from tfcell.data import paths

        shared = paths.shared_data_root()
        root = str(shared / "idc") if shared is not None and (shared / "idc").is_dir() else ""
    synthetic = not root
    if synthetic:
        x, y, subjects = _idc_synthetic(config, config.seed)
        x = np.asarray(x, "uint8")
        description = f"synthetic IDC-like images ({len(y)} at {x.shape[1]} px)"
    else:
        table = _idc_records(root)
        arrays = _cached_arrays(root, table, config.data.image_size)
        x, y, subjects = arrays.x, arrays.y, table["subject"].to_numpy()
        description = (
            f"IDC patches from {root} ({len(y)} patches, {len(set(subjects))} patients, "
            f"resized to {config.data.image_size} px)"
        )
    rng = np.random.RandomState(seed)
    everything = _subsample(np.arange(len(y)), y, config.data.max_images, rng)
    settings = []
    for split in config.data.splits:
        if split == "patch":  # Sec. IV-A: 70 % / 30 % random, by patch.
            rest, test = _split_stratified(everything, y, config.data.test_fraction, seed)
            train, val = _split_stratified(rest, y, config.data.val_fraction, seed)
        elif split == "patient":  # No patient on both sides of any split.
            rest, test = _split_by_groups(everything, subjects, config.data.test_fraction, seed)
            train, val = _split_by_groups(rest, subjects, config.data.val_fraction, seed)
        else:
            raise ValueError(f"IDC split must be 'patch' or 'patient'; received {split!r}.")
        settings.append(
            Setting(
                split,
                _take(x, y, train, subjects),
                _take(x, y, val, subjects),
                _take(x, y, test, subjects),
                ("IDC negative", "IDC positive"),
                synthetic,
                f"{description}; {split}-level split",
            )
        )
    return settings


_ARRAY_CACHE = {}


def _cached_arrays(root, table, size):
    key = (root, size, len(table))
    if key not in _ARRAY_CACHE:
        logger.info("decoding %d images from %s", len(table), root)
        _ARRAY_CACHE[key] = load_arrays(table, size)
    return _ARRAY_CACHE[key]


# --------------------------------------------------------------------------- CRC


def _crc_synthetic(config, seed, class_counts=None):
    from tfcell.data import synthetic

    n = config.synthetic.num_images
    out = synthetic.to_arrays(
        synthetic.tissue_tiles(n, config.data.image_size, seed, class_counts=class_counts)
    )
    return np.asarray(out["images"], "uint8"), out["label"]


def _long_tail_counts(total, fractions, class_names):
    return [int(round(total * fractions[name])) for name in class_names]


def crc_settings(config, repeat):
    """Kather CRC settings for one repeat: "standard" and/or "long_tailed"."""
    from tfcell.data import kather

    seed = config.seed + repeat
    names = tuple(kather.KATHER_CLASSES)
    settings = []
    if config.data.root and config.data.root != "synthetic":
        train, val, test = kather.cfal_protocol(
            config.data.root, seed=seed, val_fraction=config.data.val_fraction
        )
        for name in config.data.splits:
            parts = (train, val)
            if name == "long_tailed":
                # Fig. 7: drawn from the whole 100K, then 15 % held out for validation.
                full = pd.concat([train, val]).sort_values("path").reset_index(drop=True)
                full.attrs = dict(train.attrs)
                skewed = kather.long_tailed(full, total=config.data.long_tail_total, seed=seed)
                parts = model_selection.train_test_split(
                    skewed,
                    test_size=config.data.val_fraction,
                    stratify=skewed["label"],
                    random_state=seed,
                )
            elif name != "standard":
                raise ValueError(
                    f"CRC split must be 'standard' or 'long_tailed'; received {name!r}."
                )
            parts = [
                _record_split(_cap(t, config.data.max_images, seed), config) for t in (*parts, test)
            ]
            settings.append(
                Setting(name, *parts, names, False, f"Kather CRC from {config.data.root}; {name}")
            )
        return settings
    # Synthetic stand-in: 9 CRC-like classes, test set drawn with another seed.
    test_x, test_y = _crc_synthetic(config, config.seed + 10_000)
    for name in config.data.splits:
        # The standard setting keeps NCT-CRC-HE-100K's mild imbalance (Table II),
        # so class-balanced weights differ from 1 as they do on the real data.
        counts = _long_tail_counts(
            config.synthetic.num_images,
            {
                c: kather.KATHER_TRAIN_COUNTS[c] / sum(kather.KATHER_TRAIN_COUNTS.values())
                for c in names
            },
            names,
        )
        if name == "long_tailed":
            counts = _long_tail_counts(
                int(config.synthetic.num_images * 0.58), kather.CFAL_LONG_TAIL_FRACTIONS, names
            )
        x, y = _crc_synthetic(config, seed, class_counts=counts)
        idx = np.arange(len(y))
        train, val = _split_stratified(idx, y, config.data.val_fraction, seed)
        settings.append(
            Setting(
                name,
                _take(x, y, train),
                _take(x, y, val),
                Split(y=test_y, x=test_x),
                names,
                True,
                f"synthetic CRC-like tiles ({len(y)} train+val, {len(test_y)} test, "
                f"{config.data.image_size} px); {name}",
            )
        )
    return settings


def _cap(table, limit, seed):
    """At most `limit` rows, stratified by label (0 = all)."""
    if not limit or len(table) <= limit:
        return table
    keep, _ = model_selection.train_test_split(
        table, train_size=limit, stratify=table["label"], random_state=seed
    )
    return keep.sort_index()


def uses_synthetic(config):
    """True when a CRC run has no real data (no root, or root "synthetic")."""
    return not config.data.root or config.data.root == "synthetic"


def apply_synthetic_scale(config):
    """Switches a config to its `synthetic` section's CPU scale (backbone, image
    size, epochs, repeats): the paper's VGG19 at 224 px is pointless, and far
    too slow, on the embedded tiles."""
    s = config.synthetic
    config.model.backbone = s.backbone
    config.model.weights = ""
    config.data.image_size = s.image_size
    config.data.in_memory = True
    config.training.epochs = s.epochs
    config.num_repeats = s.num_repeats
    config.optimizer.learning_rate = max(config.optimizer.learning_rate, 1e-3)
    print(
        f"No --config.data.root: synthetic CRC-like tiles with backbone {s.backbone} at "
        f"{s.image_size} px, {s.epochs} epochs, {s.num_repeats} repeats (the `synthetic` "
        "section of the config), instead of the paper's VGG19 at 224 px.",
        flush=True,
    )
    return config


def _record_split(table, config):
    table = table.reset_index(drop=True)
    if config.data.in_memory:
        split = load_arrays(table, config.data.image_size)
        return split
    return Split(y=table["label"].to_numpy("int64"), records=table)


# --------------------------------------------------------------------------- input


def make_dataset(split, batch_size, image_size, training=False, seed=0, augment=False):
    """`tf.data.Dataset` of `(float32 image in [0, 255], int64 label)` batches."""
    if split.x is not None:
        ds = tf.data.Dataset.from_tensor_slices((split.x, split.y))
    else:
        from tfcell.data import image_io

        paths = split.records["path"].to_numpy().astype(str)

        def _load(path):
            image = image_io.load_image(path.decode(), channels=3)
            return _resize(image, image_size)

        ds = tf.data.Dataset.from_tensor_slices((paths, split.y)).map(
            lambda p, y: (
                tf.ensure_shape(
                    tf.numpy_function(_load, [p], tf.uint8), (image_size, image_size, 3)
                ),
                y,
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    if training:
        ds = ds.shuffle(min(len(split), 10_000), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)

    def _prepare(x, y):
        x = tf.cast(x, tf.float32)
        if training and augment:  # Flips only: histology has no canonical orientation.
            x = tf.image.random_flip_left_right(x)
            x = tf.image.random_flip_up_down(x)
        return x, y

    return ds.map(_prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
