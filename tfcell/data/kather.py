"""Kather colorectal H&E tissue patches (NCT-CRC-HE-100K, CRC-VAL-HE-7K).

Layout as published on Zenodo (record 1214456): `NCT-CRC-HE-100K/<CLASS>/*.tif`
and `CRC-VAL-HE-7K/<CLASS>/*.tif`, nine class folders, 224x224 patches at
0.5 µm/pixel. `cfal_protocol` gives the CFAL paper's split (train on 100K with
15 % stratified validation, test on 7K) and `long_tailed` its long-tailed
training variant (Fig. 7).

Reference: [Kather et al., 2019](https://doi.org/10.1371/journal.pmed.1002730);
[Mahbub et al., 2024](https://doi.org/10.1109/JBHI.2024.3356437) (CFAL), Sec. IV-A, V-D.
"""

import os
import pathlib

import numpy as np
from sklearn import model_selection

from tfcell.data import image_io, records

__all__ = [
    "CFAL_LONG_TAIL_FRACTIONS",
    "CFAL_LONG_TAIL_TOTAL",
    "KATHER_CLASSES",
    "KATHER_TRAIN_COUNTS",
    "KATHER_TEST_FOLDER",
    "KATHER_TRAIN_FOLDER",
    "KATHER_UM_PER_PX",
    "cfal_protocol",
    "kather_folder",
    "long_tailed",
    "read_kather",
]

KATHER_CLASSES = ("ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM")
KATHER_TRAIN_FOLDER = "NCT-CRC-HE-100K"
KATHER_TEST_FOLDER = "CRC-VAL-HE-7K"
KATHER_UM_PER_PX = 0.5  # Kather et al. 2019: 224x224 px = 112x112 µm.
# NCT-CRC-HE-100K images per class (CFAL paper Table II; Kather et al. 2019).
KATHER_TRAIN_COUNTS = {
    "ADI": 10407,
    "BACK": 10566,
    "DEB": 11512,
    "LYM": 11557,
    "MUC": 8896,
    "MUS": 13536,
    "NORM": 8763,
    "STR": 10446,
    "TUM": 14317,
}

# CFAL Fig. 7: the long-tailed training set has 58,000 images; the text gives only
# ADI 5.2 % and TUM 19.0 %. The seven other shares are read off no table: they are
# an assumption (a linear ramp in the figure's alphabetical order, rescaled so that
# the nine shares sum to 1). Pass your own `fractions` to `long_tailed` to change them.
CFAL_LONG_TAIL_TOTAL = 58_000
CFAL_LONG_TAIL_FRACTIONS = {
    "ADI": 0.052,  # CFAL Fig. 7 caption.
    "BACK": 0.0620,
    "DEB": 0.0774,
    "LYM": 0.0929,
    "MUC": 0.1083,
    "MUS": 0.1237,
    "NORM": 0.1392,
    "STR": 0.1545,
    "TUM": 0.190,  # CFAL Fig. 7 caption.
}


def kather_folder(root, name=KATHER_TRAIN_FOLDER):
    """`root/name` (or `root` itself when it is that folder); a clear error if absent."""
    root = pathlib.Path(root)
    if (root / name).is_dir():
        return root / name
    if root.name == name and root.is_dir():
        return root
    raise FileNotFoundError(
        f"Kather folder {name!r} not found in {str(root)!r}. Download {name}.zip from "
        "https://zenodo.org/record/1214456 (tfcell.data.download.fetch"
        f"('kather_{'100k' if '100K' in name else '7k'}', cache_dir)) and extract it "
        f"so that {str(root / name)!r}/ADI/... exists."
    )


def read_kather(folder, *, domain=None, verify=False, strict=False, dedupe=True):
    """Reads one Kather folder (`NCT-CRC-HE-100K/`, `CRC-VAL-HE-7K/` or any folder
    holding the nine class folders).

    Args:
        folder: the folder with the class folders ADI ... TUM.
        domain: value of the `domain` column (default: the folder's name).
        verify: decode every image and skip (count) the corrupt ones.
        strict: raise on a folder that is not one of the nine classes (default:
            skip and count its files).
        dedupe: skip (count) byte-identical duplicates.

    Returns:
        A record table (`tfcell.data.records`); `subject` is "" (the published
        patches carry no patient id).
    """
    folder = pathlib.Path(folder)
    skips = records.SkipLog(f"kather:{folder.name}")
    found = image_io.scan_class_folders(
        folder,
        {name: name for name in KATHER_CLASSES},
        skips,
        strict=strict,
        verify=verify,
        dedupe=dedupe,
    )
    domain = folder.name if domain is None else domain
    label_of = {name: i for i, name in enumerate(KATHER_CLASSES)}
    rows = [
        {
            "path": os.path.abspath(path),
            "label": label_of[class_name],
            "class_name": class_name,
            "domain": domain,
            "subject": "",
        }
        for path, _, class_name in found
    ]
    return records.make_records(rows, KATHER_CLASSES, skips)


def cfal_protocol(root, seed=0, *, val_fraction=0.15, verify=False):
    """The CFAL CRC protocol: train on NCT-CRC-HE-100K (15 % stratified
    validation held out), test on CRC-VAL-HE-7K.

    Args:
        root: folder holding `NCT-CRC-HE-100K/` and `CRC-VAL-HE-7K/`.
        seed: seed of the stratified validation split.
        val_fraction: share of the 100K set held out for validation (paper: 0.15,
            Sec. IV-A "15% of the data from the training set was used for validation").
        verify: decode every image and skip (count) the corrupt ones.

    Returns:
        `(train, val, test)` record tables; `attrs` keep the class names and the
        skip log of the folder they came from.
    """
    full = read_kather(kather_folder(root, KATHER_TRAIN_FOLDER), verify=verify)
    test = read_kather(kather_folder(root, KATHER_TEST_FOLDER), verify=verify)
    train_index, val_index = model_selection.train_test_split(
        np.arange(len(full)),
        test_size=val_fraction,
        stratify=full["label"].to_numpy(),
        random_state=seed,
    )
    train = full.iloc[np.sort(train_index)].reset_index(drop=True)
    val = full.iloc[np.sort(val_index)].reset_index(drop=True)
    for part in (train, val):
        part.attrs = dict(full.attrs)
    return train, val, test


def long_tailed(records_table, fractions=None, *, total=CFAL_LONG_TAIL_TOTAL, seed=0):
    """Subsamples a record table to a long-tailed class distribution (CFAL Fig. 7).

    Args:
        records_table: a record table (e.g. the `train` of `cfal_protocol`).
        fractions: dict class name -> share of `total` (must sum to 1); default
            `CFAL_LONG_TAIL_FRACTIONS` (ADI 5.2 % and TUM 19.0 % from the paper,
            the other seven assumed, see the module constant).
        total: images in the result (paper: 58,000 from the full 100K). None
            takes the largest total that every class can supply.
        seed: seed of the random draw inside each class.

    Returns:
        The subsampled record table (rows in their original order).

    Raises:
        ValueError: if the fractions do not sum to 1, name an unknown class, or a
            class has fewer images than its share of `total` (the message gives the
            largest feasible total).

    Note:
        The paper does not say whether the 58,000 images were drawn before or
        after the 15 % validation split; drawing from the full 100K (then
        splitting) matches "randomly sampling a specific number of images from
        each category".
    """
    fractions = dict(CFAL_LONG_TAIL_FRACTIONS if fractions is None else fractions)
    if abs(sum(fractions.values()) - 1.0) > 1e-3:
        raise ValueError(
            f"fractions must sum to 1; received {fractions} (sum {sum(fractions.values()):.4f})."
        )
    available = records_table.groupby("class_name").size().to_dict()
    unknown = sorted(set(fractions) - set(available))
    if unknown:
        raise ValueError(
            f"fractions name classes {unknown} that the record table lacks "
            f"(it has {sorted(available)})."
        )
    feasible = int(min(available[name] / share for name, share in fractions.items() if share > 0))
    if total is None:
        total = feasible
    wanted = _apportion(fractions, total)
    short = {name: (n, available[name]) for name, n in wanted.items() if n > available[name]}
    if short:
        raise ValueError(
            f"Classes {short} ((wanted, available)) cannot supply total={total} images at "
            f"these fractions; the largest feasible total is {feasible}. Pass total=None "
            "or a smaller total."
        )
    rng = np.random.default_rng(seed)
    keep = []
    for name, count in wanted.items():
        index = records_table.index[records_table["class_name"] == name].to_numpy()
        keep.append(rng.choice(index, size=count, replace=False))
    keep = np.sort(np.concatenate(keep)) if keep else np.array([], dtype=int)
    result = records_table.loc[keep].reset_index(drop=True)
    result.attrs = dict(records_table.attrs)
    result.attrs["long_tailed"] = {"total": int(total), "counts": wanted, "seed": seed}
    return result


def _apportion(fractions, total):
    """Integer counts summing to `total` (largest-remainder rounding)."""
    names = list(fractions)
    exact = np.array([fractions[name] * total for name in names]) / sum(fractions.values())
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: int(total - counts.sum())]:
        counts[i] += 1
    return {name: int(c) for name, c in zip(names, counts, strict=True)}


# Kept for callers written against the first draft.
_dataset_folder = kather_folder
