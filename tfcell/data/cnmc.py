"""C-NMC 2019 (B-ALL vs healthy B cells), read in its TCIA layout, with subject ids.

Training data: `training_data/fold_<k>/{all,hem}/UID_<subject>_<image>_<cell>_{all,hem}.bmp`
(healthy subjects are `UID_H<n>_...`). Preliminary test data:
`validation_data/C-NMC_test_prelim_phase_data/<n>.bmp` with the labels CSV
`C-NMC_test_prelim_phase_data_labels.csv` (columns `Patient_ID` = the original
`UID_...` name, `new_names` = the file, `labels` = 1 for ALL, 0 for hem).

`heterogeneity_folds` draws the 7 subject-level stratified folds of the
heterogeneity-loss paper (Table 1: training + preliminary test data, 101
subjects, 12,528 images).

Reference: [Gupta et al., 2019](https://doi.org/10.7937/tcia.2019.dc64i46r);
[Goswami et al., 2020](https://arxiv.org/abs/2003.03295), Sec. 4.1, Table 1.
"""

import os
import pathlib
import re

import numpy as np
import pandas as pd
from sklearn import model_selection

from tfcell.data import image_io, records

__all__ = [
    "CNMC_CLASSES",
    "HETEROGENEITY_TABLE1",
    "heterogeneity_folds",
    "parse_cnmc_name",
    "read_cnmc",
    "read_cnmc_prelim",
]

# Label 0 = hem (healthy), 1 = all (cancer), as in the challenge's labels CSV.
CNMC_CLASSES = ("hem", "all")

# Goswami et al. 2020, Table 1: images (subjects) per fold.
HETEROGENEITY_TABLE1 = {
    "all": [(1234, 13), (1166, 9), (1269, 9), (1275, 6), (1135, 9), (1197, 6), (1215, 8)],
    "hem": [(529, 9), (546, 7), (516, 6), (624, 4), (618, 6), (603, 4), (601, 5)],
}

_NAME = re.compile(
    r"^UID_(?P<subject>H?\d+)_(?P<image>\d+)_(?P<cell>\d+)_(?P<cls>all|hem)\.bmp$", re.IGNORECASE
)


def parse_cnmc_name(name):
    """Parses `UID_<subject>_<image>_<cell>_{all,hem}.bmp` into a dict, or None."""
    match = _NAME.match(os.path.basename(name))
    if match is None:
        return None
    return {
        "subject": match["subject"].upper(),
        "image_id": int(match["image"]),
        "cell_id": int(match["cell"]),
        "class_name": match["cls"].lower(),
    }


def _find(root, name):
    root = pathlib.Path(root)
    if root.name == name:
        return root
    if (root / name).is_dir():
        return root / name
    for candidate in sorted(root.glob(f"*/{name}")):
        if candidate.is_dir():
            return candidate
    return None


def _read_training(training_dir, skips, verify, domain):
    rows = []
    with os.scandir(training_dir) as entries:
        folds = sorted(entries, key=lambda e: e.name)
    for fold in folds:
        match = re.fullmatch(r"fold_(\d+)", fold.name)
        if not fold.is_dir() or match is None:
            skips.add(fold.path, "not a fold_<k> folder")
            continue
        found = image_io.scan_class_folders(
            fold.path, {"all": "all", "hem": "hem"}, skips, verify=verify, empty="skip"
        )
        for path, folder, class_name in found:
            parsed = parse_cnmc_name(path)
            if parsed is None:
                skips.add(path, "file name not in the C-NMC pattern")
                continue
            if parsed["class_name"] != class_name:
                raise ValueError(
                    f"C-NMC file {path!r} is named '_{parsed['class_name']}' but lies in "
                    f"folder {folder!r}. Move it to the folder of its class, or delete it."
                )
            rows.append(
                {
                    "path": os.path.abspath(path),
                    "label": CNMC_CLASSES.index(class_name),
                    "class_name": class_name,
                    "domain": domain,
                    "subject": parsed["subject"],
                    "image_id": parsed["image_id"],
                    "cell_id": parsed["cell_id"],
                    "source_fold": f"fold_{match.group(1)}",
                    "original_name": os.path.basename(path),
                }
            )
    return rows


def read_cnmc_prelim(image_dir, labels_csv, *, missing_images="skip", verify=False, domain="cnmc"):
    """Reads the preliminary-test folder with its labels CSV.

    Args:
        image_dir: `C-NMC_test_prelim_phase_data/` (files `<n>.bmp`).
        labels_csv: the CSV with columns `Patient_ID`, `new_names`, `labels`.
        missing_images: "skip" (count a CSV row whose image is absent) or "error".
        verify: decode every image and skip (count) the corrupt ones.
        domain: value of the `domain` column.

    Returns:
        A record table (`source_fold` = "prelim"); images without a CSV row are
        skipped and counted.

    Raises:
        ValueError: for a CSV without the expected columns, a label that
            disagrees with the original name, or a missing image with
            `missing_images="error"`; the message names the row and the fix.
    """
    if missing_images not in ("skip", "error"):
        raise ValueError(f'missing_images must be "skip" or "error"; received {missing_images!r}.')
    skips = records.SkipLog("cnmc:prelim")
    rows = _read_prelim(pathlib.Path(image_dir), labels_csv, skips, missing_images, verify, domain)
    return records.make_records(rows, CNMC_CLASSES, skips)


def _read_prelim(image_dir, labels_csv, skips, missing_images, verify, domain):
    table = pd.read_csv(labels_csv)
    table.columns = [c.strip() for c in table.columns]
    needed = {"Patient_ID", "new_names", "labels"}
    if not needed <= set(table.columns):
        raise ValueError(
            f"Labels CSV {str(labels_csv)!r} has columns {list(table.columns)}; expected "
            f"{sorted(needed)} (the C-NMC preliminary-test labels file)."
        )
    files = {}
    with os.scandir(image_dir) as entries:
        for entry in entries:
            if entry.is_file():
                files[entry.name] = entry.path
    used = set()
    rows = []
    for line, row in enumerate(table.itertuples(index=False), start=2):
        new_name = str(row.new_names).strip()
        original = str(row.Patient_ID).strip()
        path = files.get(new_name)
        if path is None:
            if missing_images == "error":
                raise ValueError(
                    f"Labels CSV {str(labels_csv)!r} line {line} names image {new_name!r}, "
                    f"which is not in {str(image_dir)!r}. Restore the image, remove the row, "
                    "or pass missing_images='skip'."
                )
            skips.add(os.path.join(str(image_dir), new_name), "labels CSV row without image")
            continue
        used.add(new_name)
        label = int(row.labels)
        if label not in (0, 1):
            raise ValueError(
                f"Labels CSV {str(labels_csv)!r} line {line}: label {row.labels!r} is not 0 "
                "(hem) or 1 (all). Fix the CSV."
            )
        parsed = parse_cnmc_name(original)
        if parsed is None:
            raise ValueError(
                f"Labels CSV {str(labels_csv)!r} line {line}: Patient_ID {original!r} is not "
                "a C-NMC name UID_<subject>_<image>_<cell>_{all,hem}.bmp, so its subject is "
                "unknown. Fix the CSV."
            )
        if CNMC_CLASSES.index(parsed["class_name"]) != label:
            raise ValueError(
                f"Labels CSV {str(labels_csv)!r} line {line}: label {label} disagrees with "
                f"the original name {original!r}. Fix the CSV."
            )
        if not image_io.is_image_file(path):
            skips.add(path, "not an image file")
            continue
        if verify and not image_io.verify_image(path):
            skips.add(path, "corrupt or truncated image")
            continue
        rows.append(
            {
                "path": os.path.abspath(path),
                "label": label,
                "class_name": CNMC_CLASSES[label],
                "domain": domain,
                "subject": parsed["subject"],
                "image_id": parsed["image_id"],
                "cell_id": parsed["cell_id"],
                "source_fold": "prelim",
                "original_name": original,
            }
        )
    for name in sorted(set(files) - used):
        reason = (
            "image without a labels CSV row"
            if image_io.is_image_file(name)
            else "not an image file"
        )
        skips.add(files[name], reason)
    return rows


def read_cnmc(root, *, include_prelim=True, missing_images="skip", verify=False, domain="cnmc"):
    """Reads C-NMC 2019 training data (and, if present, the preliminary test set).

    Args:
        root: the dataset folder (e.g. `C-NMC_Leukemia/`) holding
            `training_data/` and optionally `validation_data/`; or `training_data/`.
        include_prelim: also read `C-NMC_test_prelim_phase_data/` with its labels
            CSV when found (the heterogeneity paper's 101 subjects use both).
        missing_images: for labels CSV rows without an image: "skip" or "error".
        verify: decode every image and skip (count) the corrupt ones.
        domain: value of the `domain` column.

    Returns:
        A record table with `subject` (e.g. "11", "H10"), `image_id`, `cell_id`,
        `source_fold` ("fold_0".."fold_2" or "prelim") and `original_name`.
    """
    root = pathlib.Path(root)
    training = _find(root, "training_data")
    if training is None and any(root.glob("fold_*")):
        training = root
    if training is None:
        raise FileNotFoundError(
            f"No C-NMC training_data/ folder under {str(root)!r}. Download C-NMC 2019 from "
            "TCIA (https://doi.org/10.7937/tcia.2019.dc64i46r) and pass the folder that "
            "holds training_data/."
        )
    skips = records.SkipLog("cnmc")
    rows = _read_training(training, skips, verify, domain)
    if include_prelim:
        search = training.parent
        image_dir = _find(search, "C-NMC_test_prelim_phase_data")
        if image_dir is not None:
            csvs = sorted(image_dir.parent.glob("*labels*.csv")) or sorted(
                image_dir.glob("*labels*.csv")
            )
            if not csvs:
                raise FileNotFoundError(
                    f"Found {str(image_dir)!r} but no labels CSV beside it. Put "
                    "C-NMC_test_prelim_phase_data_labels.csv next to it, or pass "
                    "include_prelim=False."
                )
            rows += _read_prelim(image_dir, csvs[0], skips, missing_images, verify, domain)
    return records.make_records(rows, CNMC_CLASSES, skips)


def heterogeneity_folds(records_table, n_folds=7, seed=0):
    """The subject-level stratified folds of the heterogeneity-loss paper.

    Every subject falls in exactly one validation fold, and the ratio of ALL to
    hem cells is kept across folds (scikit-learn `StratifiedGroupKFold` with the
    subject as group).

    Args:
        records_table: a C-NMC record table (paper: training + preliminary test
            data, 101 subjects, 12,528 images).
        n_folds: number of folds (paper: 7, Table 1).
        seed: shuffling seed.

    Returns:
        A list of `n_folds` `(train, val)` record tables.

    Raises:
        ValueError: if there are fewer subjects than folds.
        AssertionError: if a subject ended up on both sides (never expected).

    Note:
        The paper publishes fold sizes (`HETEROGENEITY_TABLE1`) but not the subject
        lists, so the folds match its sizes only approximately.
    """
    subjects = records_table["subject"].to_numpy()
    if len(np.unique(subjects)) < n_folds:
        raise ValueError(
            f"{len(np.unique(subjects))} subjects cannot make {n_folds} subject-level folds."
        )
    splitter = model_selection.StratifiedGroupKFold(
        n_splits=n_folds, shuffle=True, random_state=seed
    )
    folds = []
    for train_index, val_index in splitter.split(
        np.zeros(len(records_table)), records_table["label"].to_numpy(), groups=subjects
    ):
        train = records_table.iloc[train_index].reset_index(drop=True)
        val = records_table.iloc[val_index].reset_index(drop=True)
        shared = set(train["subject"]) & set(val["subject"])
        assert not shared, f"Subjects {sorted(shared)} are in both train and validation."
        for part in (train, val):
            part.attrs = dict(records_table.attrs)
        folds.append((train, val))
    return folds
