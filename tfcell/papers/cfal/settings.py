"""The CFAL paper's settings, built with `tfcell.experiments.settings`.

IDC (Sec. IV-A): "patch", the paper's 70/30 random split by patch (it leaks
patients, as the benchmark it follows), and "patient", 70/30 by patient (no
patient on both sides); validation (15 %) is cut from the training part the
same way. Patches under 50 px at slide edges are padded with white to 50x50,
as `tfcell.data.idc.read_idc` documents, then resized (Sec. IV-B: 32 px).

CRC (Sec. IV-A): "standard", NCT-CRC-HE-100K with 15 % stratified validation,
tested on CRC-VAL-HE-7K; "long_tailed" (Fig. 7), a long-tailed draw of the
100K, then 15 % validation. Without real data: synthetic CRC-like tiles with
NCT-CRC-HE-100K's class proportions (Table II), loudly announced.
"""

import numpy as np
import pandas as pd
from sklearn import model_selection

from tfcell.data import idc, kather, paths, synthetic
from tfcell.experiments import settings

__all__ = ["IDC_CLASS_NAMES", "crc_settings", "idc_settings", "uses_synthetic"]

IDC_CLASS_NAMES = ("IDC negative", "IDC positive")
_IDC_SPLITS = {"patch": "patch", "patient": "subject"}


def uses_synthetic(config):
    """True when no real data is given (no root, or root "synthetic") and, for
    IDC, none is found in ../shared/data."""
    return not _data_root(config)


def _data_root(config):
    if config.data.root == "synthetic":
        return ""
    if config.data.root:
        return config.data.root
    if config.dataset == "idc":  # The cpu configs default to ../shared/data/idc.
        shared = paths.shared_data_root()
        if shared is not None and (shared / "idc").is_dir():
            return str(shared / "idc")
    return ""


def _idc_records(config):
    root = _data_root(config)
    if root:
        table = idc.read_idc(root)
        subjects = table["subject"].nunique()
        return table, False, f"IDC patches from {root} ({len(table)} patches, {subjects} patients)"
    patients = max(10, config.synthetic.num_images // 40)  # About 40 patches each.
    table = synthetic.idc_like(patients, image_size=50, seed=config.seed)
    return table, True, f"synthetic IDC-like patches ({len(table)})"


def idc_settings(config, repeat):
    """IDC settings of one repeat: "patch" and/or "patient" (config.data.splits)."""
    seed = config.seed + repeat
    records, synthetic_data, description = _idc_records(config)
    records = settings.subsample(records, config.data.max_images, seed)
    out = []
    for split in config.data.splits:
        if split not in _IDC_SPLITS:
            raise ValueError(f"IDC split must be 'patch' or 'patient'; received {split!r}.")
        out.append(
            settings.holdout(
                split,
                records,
                config.data.test_fraction,
                config.data.val_fraction,
                seed,
                by=_IDC_SPLITS[split],
                class_names=IDC_CLASS_NAMES,
                description=(f"{description}, at {config.data.image_size} px; {split}-level split"),
                synthetic=synthetic_data,
                pad_small=(idc.IDC_PATCH_SIZE, idc.IDC_PATCH_SIZE),
            )
        )
    return out


def _stratified(table, fraction, seed):
    rest, held = model_selection.train_test_split(
        np.arange(len(table)), test_size=fraction, stratify=table["label"], random_state=seed
    )
    return table.iloc[np.sort(rest)], table.iloc[np.sort(held)]


def _long_tail_counts(total, fractions, class_names):
    return [int(round(total * fractions[name])) for name in class_names]


def crc_settings(config, repeat):
    """Kather CRC settings of one repeat: "standard" and/or "long_tailed"."""
    seed = config.seed + repeat
    names = tuple(kather.KATHER_CLASSES)
    root = _data_root(config)
    out = []
    for name in config.data.splits:
        if name not in ("standard", "long_tailed"):
            raise ValueError(f"CRC split must be 'standard' or 'long_tailed'; received {name!r}.")
        if root:
            train, val, test = kather.cfal_protocol(
                root, seed=seed, val_fraction=config.data.val_fraction
            )
            if name == "long_tailed":
                # Fig. 7: drawn from the whole 100K, then 15 % held out for validation.
                full = pd.concat([train, val]).sort_values("path").reset_index(drop=True)
                full.attrs = dict(train.attrs)
                skewed = kather.long_tailed(full, total=config.data.long_tail_total, seed=seed)
                train, val = _stratified(skewed, config.data.val_fraction, seed)
            parts = {
                p: settings.subsample(t, config.data.max_images, seed)
                for p, t in (("train", train), ("val", val), ("test", test))
            }
            description = f"Kather CRC from {root}; {name}"
            synthetic_data = False
        else:
            # The standard setting keeps NCT-CRC-HE-100K's mild imbalance (Table II),
            # so class-balanced weights differ from 1 as they do on the real data.
            total = sum(kather.KATHER_TRAIN_COUNTS.values())
            shares = {c: kather.KATHER_TRAIN_COUNTS[c] / total for c in names}
            n = config.synthetic.num_images
            counts = _long_tail_counts(n, shares, names)
            if name == "long_tailed":
                counts = _long_tail_counts(int(n * 0.58), kather.CFAL_LONG_TAIL_FRACTIONS, names)
            size = config.data.image_size
            table = synthetic.tissue_tiles(n, size, seed, class_counts=counts)
            train, val = _stratified(table, config.data.val_fraction, seed)
            test = synthetic.tissue_tiles(n, size, config.seed + 10_000)  # Another draw.
            parts = {"train": train, "val": val, "test": test}
            description = (
                f"synthetic CRC-like tiles ({len(table)} train+val, {len(test)} test, "
                f"{size} px); {name}"
            )
            synthetic_data = True
        out.append(
            settings.from_parts(
                name, parts, class_names=names, description=description, synthetic=synthetic_data
            )
        )
    return out


def apply_synthetic_scale(config):
    """Switches a CRC config to its `synthetic` section's CPU scale (backbone,
    image size, epochs, repeats) when no real data is given: the paper's VGG19 at
    224 px is pointless, and far too slow, on the embedded tiles."""
    if not uses_synthetic(config):
        return config
    s = config.synthetic
    config.model.backbone = s.backbone
    config.model.weights = ""
    config.data.image_size = s.image_size
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
