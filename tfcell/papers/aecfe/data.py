"""The AE-CFE white-cell study's data: every cell of a run, its 80/20 split and
the detector's training masks.

    cpu     ../shared/data: PBC (pbc_128), BCCD and JTSC, the 5 classes they share,
            on one field of view (`tfcell.papers.boda.data.wbc_records`, reused).
    paper   Matek-19, INT-20 and Acevedo-20 under `--config.data.root`, the 13
            harmonised classes (`tfcell.data.wbc`).
    smoke   synthetic white cells from three hospitals (`synthetic.white_cells`),
            with cell / nucleus masks from a threshold (`threshold_masks`).

The thesis's protocol (Sec. 3.4): every domain is split 80 / 20 once per run
(seeded, stratified by class); a random forest learns on one domain's 80 % and
is tested on the 20 % of every domain. `split_rows` splits groups of identical
images (hashes of the decoded pixels), so no image can be on both sides even
where a set holds a copy of one, and `check_disjoint` asserts it for every
training / test pair the run uses.
"""

import dataclasses
import hashlib

import numpy as np
import pandas as pd

from tfcell.data import paths, physical_scale
from tfcell.papers.aecfe import masks as masks_lib
from tfcell.papers.boda import data as boda_data

__all__ = [
    "EXTRA_PREFIX",
    "RunTable",
    "load_table",
    "check_disjoint",
    "detector_pairs",
    "image_hashes",
    "images_of",
    "run_table",
    "split_rows",
    "threshold_masks",
]

# `tfcell.papers.boda.data.extra_domains` names a user's folder-per-class set so.
EXTRA_PREFIX = "extra_"


@dataclasses.dataclass
class RunTable:
    """Every image of a run: the record table, its uint8 images and their hashes."""

    records: pd.DataFrame
    images: np.ndarray
    hashes: np.ndarray
    synthetic: bool
    description: str


def load_table(config):
    """The run's `RunTable` (`run_table`, the images stacked and hashed)."""
    records, synthetic, description = run_table(config)
    images = images_of(records)
    return RunTable(records, images, image_hashes(images), bool(synthetic), description)


def run_table(config):
    """`(records, synthetic, description)`: every image of the run on one scale,
    in memory (`image` column, uint8), with the run's class order checked
    against `config.input_contract` (`boda.data.check_contract`)."""
    records, synthetic, description = boda_data.wbc_records(config)
    boda_data.check_contract(records, config)
    attrs = dict(records.attrs)
    records = records.reset_index(drop=True)
    records.attrs = attrs
    return records, synthetic, description


def images_of(records):
    """The `image` column as one uint8 array `(N, S, S, 3)`."""
    return np.stack([np.asarray(x, "uint8") for x in records["image"]])


def image_hashes(images):
    """A content hash of every decoded image (identical pixels, identical hash)."""
    return np.array([hashlib.sha1(np.ascontiguousarray(x).tobytes()).hexdigest() for x in images])


def split_rows(records, hashes, test_fraction, seed):
    """The per-domain 80/20 split: `(train rows, test rows)`, sorted positions.

    ```
    groups = rows with identical pixels (hashes); each group's first row gives
             its domain and class
    for every (domain, class) stratum, in a seeded order:
        round(test_fraction * number of groups) groups -> test, the rest -> train
    ```

    A stratum of one group (JTSC's single basophil) stays in training. Every
    copy of an image follows its group, so no image is on both sides.
    """
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1); received {test_fraction!r}.")
    frame = pd.DataFrame(
        {
            "hash": np.asarray(hashes),
            "domain": records["domain"].astype(str).to_numpy(),
            "label": records["label"].to_numpy(),
        }
    )
    first = frame.drop_duplicates("hash")
    rng = np.random.default_rng(seed)
    test_hashes = []
    for _, stratum in first.groupby(["domain", "label"], sort=True):
        order = rng.permutation(stratum["hash"].to_numpy())
        test_hashes.extend(order[: int(round(float(test_fraction) * len(order)))])
    is_test = frame["hash"].isin(set(test_hashes)).to_numpy()
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def check_disjoint(train_rows, test_parts, hashes, where):
    """Asserts that no training image (by row and by pixels) is in a test part.

    Args:
        train_rows: row positions a model learns from.
        test_parts: `{part name: row positions}` it is tested on.
        hashes: `image_hashes` of the whole table.
        where: what is checked (for the message).

    Raises:
        AssertionError: naming the part and the number of shared images.
    """
    train_rows = np.asarray(train_rows, "int64")
    train_hashes = set(np.asarray(hashes)[train_rows])
    for part, rows in test_parts.items():
        rows = np.asarray(rows, "int64")
        shared_rows = np.intersect1d(train_rows, rows)
        shared_pixels = sum(h in train_hashes for h in np.asarray(hashes)[rows])
        if len(shared_rows) or shared_pixels:
            raise AssertionError(
                f"{where}: {len(shared_rows)} row(s) and {shared_pixels} image(s) of {part} "
                "are also training images; the AE-CFE tables must never train and test on "
                "the same images."
            )


def threshold_masks(images, cell_margin=30.0, nucleus_margin=70.0):
    """Cell / nucleus masks of synthetic white cells by thresholds (smoke masks).

    ```
    background = a + b x + c y per channel, least squares on the border pixels
                 (the synthetic hospitals light the glass with a gradient)
    cell       = |pixel - background| (Euclidean, RGB) > cell_margin
    nucleus    = cell and grey level < grey(background) - nucleus_margin
    mask       = 0 background, 1 cytoplasm, 2 nucleus   (the JTSC encoding)
    ```

    Good enough for the synthetic cells (light glass, darker cell, dark
    nucleus); real crops use the JTSC masks.
    """
    images = np.asarray(images, "float32")
    size_y, size_x = images.shape[1:3]
    rows, cols = np.mgrid[0:size_y, 0:size_x]
    border = np.zeros((size_y, size_x), bool)
    border[[0, -1], :] = border[:, [0, -1]] = True
    design = np.stack([np.ones(border.sum()), cols[border], rows[border]], axis=1)
    grid = np.stack([np.ones(rows.size), cols.ravel(), rows.ravel()], axis=1)
    out = np.zeros(images.shape[:3], "uint8")
    for i, image in enumerate(images):
        coef, *_ = np.linalg.lstsq(design, image[border], rcond=None)
        background = (grid @ coef).reshape(size_y, size_x, -1)
        cell = np.sqrt(((image - background) ** 2).sum(-1)) > cell_margin
        nucleus = cell & (image.mean(-1) < background.mean(-1) - nucleus_margin)
        out[i][cell] = 1
        out[i][nucleus] = 2
    return out


def _jtsc_scale(config, records):
    """JTSC's pixel size on the run's field of view (NaN: resized whole)."""
    estimates = records.attrs.get("scale_estimates") or {}
    if "jtsc" in estimates:
        return float(estimates["jtsc"]["um_per_px"])
    if config.data.field_um is None or not config.data.get("scale_reference"):
        return float("nan")
    reference = config.data.scale_reference
    ref = records[records["domain"].astype(str) == reference]
    if ref.empty or "source_path" not in ref:
        return float("nan")
    # Measure JTSC's lymphocyte nuclei against the reference domain's (named in
    # the run's label space by config.data.scale_cell_class).
    ref = ref.assign(
        path=ref["source_path"],
        class_name=np.where(ref["class_name"] == config.data.scale_cell_class, "lymphocyte", "-"),
    )
    jtsc = masks_lib.read_jtsc_masks(paths.shared_data_root()).assign(um_per_px=np.nan)
    table = pd.concat([ref[["path", "domain", "class_name", "um_per_px"]],
                       jtsc[["path", "domain", "class_name", "um_per_px"]]], ignore_index=True)  # fmt: skip
    found = physical_scale.estimate_um_per_px(table, reference, "lymphocyte", seed=config.seed)
    return float(found.get("jtsc", {}).get("um_per_px", float("nan")))


def detector_pairs(config, records, images):
    """`(images, masks, labels, description)`: what the cell segmenter learns from
    (labels only stratify its held-out split).

    `config.detector.masks`:
        "jtsc"       ../shared/data's 299 JTSC crops with nucleus/cytoplasm masks
                     (`masks.read_jtsc_masks`), on the run's field of view (JTSC's
                     pixel size as estimated for the run) and image size.
        "threshold"  `threshold_masks` of the run's images of the domain
                     `config.detector.mask_domain` (synthetic smoke runs).
    """
    source = config.detector.masks
    size = int(config.data.image_size)
    if source == "threshold":
        domain = config.detector.mask_domain
        rows = np.flatnonzero(records["domain"].astype(str).to_numpy() == domain)
        if not len(rows):
            raise ValueError(
                f"config.detector.mask_domain={domain!r} is not a domain of the run "
                f"({sorted(set(records['domain'].astype(str)))})."
            )
        chosen = images[rows]
        labels = records["label"].to_numpy()[rows]
        return (
            chosen,
            threshold_masks(chosen),
            labels,
            f"{len(rows)} {domain} images, threshold masks",
        )
    if source != "jtsc":
        raise ValueError(
            f'config.detector.masks must be "jtsc" or "threshold"; received {source!r}.'
        )
    root = paths.shared_data_root()
    if root is None:
        raise FileNotFoundError(
            "config.detector.masks='jtsc' needs ../shared/data/wbc_domains/jtsc_masks (set "
            "TFCELL_SHARED_DATA); or use --config.detector.masks=threshold."
        )
    table = masks_lib.read_jtsc_masks(root)
    scale = _jtsc_scale(config, records)
    table = table.assign(um_per_px=scale)
    field = config.data.field_um if np.isfinite(scale) else None
    crops, classes = masks_lib.load_pairs(table, size, field)
    where = f"{len(table)} JTSC crops with masks"
    where += f" at {scale:.3f} um/px (estimated)" if np.isfinite(scale) else " (resized whole)"
    return crops, classes, table["label"].to_numpy(), where
