"""The JTSC white-cell crops with their nucleus/cytoplasm masks: the AE-CFE
detector's training data.

The masks (`wbc_domains/jtsc_masks/<NNN>.png`, Zheng et al. 2018's
segmentation_WBC) are grey images with three levels, 0 background, 128
cytoplasm and 255 nucleus, one cell per crop and one mask for each of the 300
crops (`MASK_ENCODING`). `load_pairs` brings crops and masks onto one field of
view with `tfcell.data.physical_scale`, the scale every domain is read at
(`tfcell.papers.boda.data.wbc_records`).
"""

import pathlib

import numpy as np

from tfcell.data import nuclei, paths, physical_scale, wbc

__all__ = ["MASK_ENCODING", "load_pairs", "read_jtsc_masks"]

# Grey level of each class in the JTSC mask files -> class index the segmenter
# predicts (Zheng et al. 2018's segmentation_WBC masks, ../shared/data README).
MASK_ENCODING = {0: ("background", 0), 128: ("cytoplasm", 1), 255: ("nucleus", 2)}
# Decoding a resampled mask: the level nearest each grey value (midpoints).
_LEVEL_EDGES = (64, 192)
_MASK_FOLDER = "wbc_domains/jtsc_masks"


def read_jtsc_masks(root=None):
    """The JTSC crops with their nucleus/cytoplasm masks, as one record table.

    Args:
        root: the shared data folder holding `wbc_domains/` (default:
            `tfcell.data.paths.shared_data_root()`).

    Returns:
        The `tfcell.data.wbc.read_wbc_domains(root, ("jtsc",))` table (duplicate
        crops dropped and counted there) with a `mask_path` column. Crops
        without a mask are dropped and counted in `attrs["skipped"]["no mask"]`,
        masks without a crop in `attrs["skipped"]["mask without image"]`;
        `attrs["mask_encoding"]` is `MASK_ENCODING` and `attrs["mask_pixels"]`
        the pixels of each class over all masks.

    Raises:
        FileNotFoundError: no shared data folder or no mask folder.
        ValueError: a mask with a grey level outside 0 / 128 / 255.
    """
    if root is None:
        root = paths.shared_data_root()
        if root is None:
            raise FileNotFoundError(
                "No shared data folder found: set TFCELL_SHARED_DATA to the folder that "
                f"holds {_MASK_FOLDER}/ and wbc_domains/jtsc/."
            )
    folder = pathlib.Path(root) / _MASK_FOLDER
    if not folder.is_dir():
        raise FileNotFoundError(f"No JTSC mask folder {folder}; expected <root>/{_MASK_FOLDER}.")
    records = wbc.read_wbc_domains(root, domains=("jtsc",))
    masks = {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() == ".png"}
    stems = records["path"].map(lambda p: pathlib.Path(p).stem)
    has_mask = stems.isin(list(masks)).to_numpy()
    skipped = {k: list(v) for k, v in records.attrs.get("skipped", {}).items()}
    skipped["no mask"] = records.loc[~has_mask, "path"].tolist()
    paired = set(stems)
    skipped["mask without image"] = [str(p) for s, p in masks.items() if s not in paired]
    out = records.loc[has_mask].reset_index(drop=True)
    out["mask_path"] = [str(masks[s]) for s in stems[has_mask]]
    pixels = np.zeros(len(MASK_ENCODING), np.int64)
    for path in out["mask_path"]:
        pixels += np.bincount(_mask_classes(nuclei.load_mask(path), path).ravel(), minlength=3)
    out.attrs = {
        **records.attrs,
        "skipped": skipped,
        "mask_encoding": dict(MASK_ENCODING),
        "mask_pixels": {name: int(n) for (name, _), n in zip(MASK_ENCODING.values(), pixels)},
    }
    return out


def _mask_classes(levels, where):
    """Class indices of a native mask; any grey level outside the encoding raises."""
    values = set(np.unique(levels).tolist())
    if not values <= set(MASK_ENCODING):
        raise ValueError(
            f"Mask {where} holds grey levels {sorted(values - set(MASK_ENCODING))} outside "
            f"the JTSC encoding {MASK_ENCODING}; decode other mask sets before training."
        )
    return np.digitize(levels, _LEVEL_EDGES).astype(np.uint8)


def load_pairs(records, image_size, field_um=None):
    """Decodes crops and masks onto one field of view: `(images, masks)`.

    Both go through `tfcell.data.physical_scale.to_field_of_view` (centre
    crop of `field_um / um_per_px` pixels, padded with the border colour, then
    a bilinear resize), so they stay aligned; each resampled mask pixel takes
    the nearest grey level (0 / 128 / 255). Set `records["um_per_px"]` (JTSC
    publishes none: e.g. the estimate in `wbc_records(...).attrs
    ["scale_estimates"]`) for a physical scale; else each crop is resized whole.

    Returns:
        uint8 images `(N, S, S, 3)` and uint8 class masks `(N, S, S)` in
        {0 background, 1 cytoplasm, 2 nucleus}.

    Note:
        The cell outline (mask > 0) resamples exactly as a binary mask would;
        where a nucleus touches the background directly, the blend of 255 and
        0 leaves a band under one output pixel wide labelled cytoplasm.
    """
    images = physical_scale.to_field_of_view(records, image_size, field_um)
    grey = physical_scale.to_field_of_view(
        records.assign(path=records["mask_path"]), image_size, field_um
    )
    masks = np.digitize(np.stack(grey["image"].to_list())[..., 0], _LEVEL_EDGES)
    return np.stack(images["image"].to_list()), masks.astype(np.uint8)
