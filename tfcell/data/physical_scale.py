"""One physical scale across domains: crop every image to the same field of view.

White-cell sets differ in pixel size (the BoDA poster's table: Matek-19
0.0725 µm/px over a 29 µm field, Acevedo-20 0.1 µm/px over 36 µm, INT-20
0.0868 µm/px over 25 µm), so resizing every crop to one pixel size would show
the same cell at different sizes in each hospital: a nuisance shift no
classifier should have to learn. `to_field_of_view` centre-crops each image
whose pixel size is known (`um_per_px`, as `tfcell.data.wbc` records it) to a
square of `field_um` micrometres, then resizes it to `image_size`; every such
image then has the same µm per pixel (`field_um / image_size`).

Images whose pixel size is unknown (NaN: BCCD and JTSC publish none) are
centre-cropped to a square and resized whole: their scale stays unknown, and
the returned table says which rows those are (`field_um` NaN). Or their pixel
size is first estimated from the cells themselves (`estimate_um_per_px`): the
median nucleus diameter of one cell type (lymphocytes, whose round nucleus
nearly fills the cell and varies least in size) measured in pixels in each
domain, against the same median in a domain of known pixel size. A field larger
than an image is filled (counted in
`attrs["scale"]`) with the median colour of its border (the slide background
around the cell), never with black or white that would look like a stain
difference.
"""

import concurrent.futures
import logging
import math
import os

import numpy as np
import pandas as pd
import tensorflow as tf

from tfcell.data import image_io

__all__ = ["estimate_um_per_px", "nucleus_diameter_px", "to_field_of_view"]

logger = logging.getLogger("tfcell.data")


def _square(image, side):
    """A centred `side` x `side` crop; where the image is smaller, it sits on a
    canvas of its border's median colour (the slide background around it)."""
    h, w = image.shape[:2]
    if side > h or side > w:
        border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
        canvas = np.empty((max(side, h), max(side, w), 3), image.dtype)
        canvas[...] = np.median(border, axis=0).astype(image.dtype)
        top, left = (canvas.shape[0] - h) // 2, (canvas.shape[1] - w) // 2
        canvas[top : top + h, left : left + w] = image
        image = canvas
        h, w = image.shape[:2]
    top, left = (h - side) // 2, (w - side) // 2
    return image[top : top + side, left : left + side]


def _otsu(values):
    """Otsu's threshold of uint8 values (the between-class variance maximum)."""
    hist = np.bincount(values.reshape(-1), minlength=256).astype("float64")
    total = hist.sum()
    if total == 0:
        return 128
    levels = np.arange(256)
    weight0 = np.cumsum(hist)
    weight1 = total - weight0
    mean0 = np.cumsum(hist * levels) / np.maximum(weight0, 1)
    mean1 = (np.sum(hist * levels) - np.cumsum(hist * levels)) / np.maximum(weight1, 1)
    between = weight0 * weight1 * (mean0 - mean1) ** 2
    return int(np.argmax(between))


def nucleus_diameter_px(image):
    """Equivalent diameter in pixels of the dark (stained) nucleus nearest the
    centre of a white-cell crop, or NaN when none is found.

    The nucleus is the darkest structure in every Romanowsky stain here (purple
    in PBC and BCCD, dark red in JTSC), so the darkest channel of each pixel is
    thresholded with Otsu's method; the connected component covering (or
    nearest to) the centre is the nucleus; its diameter is that of the disk of
    the same area.
    """
    from scipy import ndimage

    image = np.asarray(image)
    darkest = image.min(axis=-1).astype("uint8")
    mask = darkest <= _otsu(darkest)
    labels, count = ndimage.label(mask)
    if count == 0:
        return math.nan
    h, w = mask.shape
    centre = labels[h // 2, w // 2]
    if centre == 0:
        centres = ndimage.center_of_mass(mask, labels, range(1, count + 1))
        dist = [math.hypot(cy - h / 2, cx - w / 2) for cy, cx in centres]
        centre = int(np.argmin(dist)) + 1
    area = float((labels == centre).sum())
    return 2.0 * math.sqrt(area / math.pi)


def estimate_um_per_px(records, reference_domain, cell_class="lymphocyte", max_images=200, seed=0):
    """Pixel sizes of the domains that have none, from their cells' nuclei.

    For `cell_class` (default lymphocytes) the median nucleus diameter in
    pixels (`nucleus_diameter_px`, up to `max_images` per domain, native
    resolution) is measured in every domain; a domain without a pixel size
    gets `um_per_px = reference um_per_px * reference median / its median`:
    its lymphocyte nuclei are taken to be as large in micrometres as the
    reference domain's. An estimate, not a calibration; it removes the gross
    scale differences (a cell-tight crop against a wide field) that a
    classifier would otherwise read as cell size.

    Args:
        records: a record table with `path`, `domain`, `class_name`, `um_per_px`.
        reference_domain: a domain with a known (finite) `um_per_px`.
        cell_class: the cell type measured.
        max_images: images measured per domain (a seeded draw).
        seed: the draw's seed.

    Returns:
        `{domain: {"um_per_px", "median_nucleus_px", "images"}}` for every
        domain without a pixel size, plus the reference; `um_per_px` is NaN
        (logged) for a domain with no `cell_class` image.

    Raises:
        ValueError: no known pixel size, or no `cell_class` image, in the
            reference domain.
    """
    domains = records["domain"].astype(str)
    scale = records.loc[domains == reference_domain, "um_per_px"].astype(float)
    if scale.empty or not np.isfinite(scale).all():
        raise ValueError(
            f"estimate_um_per_px: the reference domain {reference_domain!r} needs a known "
            "um_per_px for every image (it is the yardstick)."
        )
    unknown = sorted(set(domains[~np.isfinite(records["um_per_px"].astype(float))]))
    rng = np.random.default_rng(seed)
    out = {}
    for domain in [reference_domain, *unknown]:
        rows = records[(domains == domain) & (records["class_name"] == cell_class)]
        if rows.empty:
            if domain == reference_domain:
                raise ValueError(
                    f"estimate_um_per_px: the reference domain {domain!r} has no "
                    f"{cell_class!r} image to measure; pass another cell_class."
                )
            logger.warning(
                "estimate_um_per_px: domain %r has no %r image; its pixel size stays unknown",
                domain, cell_class,
            )  # fmt: skip
            out[domain] = {"median_nucleus_px": math.nan, "images": 0}
            continue
        take = rng.permutation(len(rows))[:max_images]
        sizes = [
            nucleus_diameter_px(image_io.load_image(p, channels=3))
            for p in rows["path"].astype(str).to_numpy()[take]
        ]  # fmt: skip
        median = float(np.nanmedian(sizes))
        out[domain] = {"median_nucleus_px": median, "images": len(take)}
    reference = out[reference_domain]
    reference["um_per_px"] = float(scale.median())
    for domain in unknown:
        out[domain]["um_per_px"] = (
            reference["um_per_px"] * reference["median_nucleus_px"] / out[domain]["median_nucleus_px"]
        )  # NaN where nothing was measured.
    return out


def _load(path, side, size):
    image = np.asarray(image_io.load_image(path, channels=3), "uint8")
    if side is None:
        side = min(image.shape[:2])
    padded = side > min(image.shape[:2])
    crop = _square(image, side)
    if crop.shape[:2] == (size, size):
        return crop, padded
    # Bilinear without antialiasing, as the file pipeline (`tf.image.resize`).
    resized = tf.image.resize(tf.convert_to_tensor(crop, tf.float32), (size, size))
    image = np.asarray(tf.cast(tf.round(tf.clip_by_value(resized, 0.0, 255.0)), tf.uint8))
    return image, padded


def to_field_of_view(records, image_size, field_um, num_workers=None):
    """Decodes a record table onto one physical field of view, in memory.

    Args:
        records: a record table with `path` and `um_per_px` columns
            (`tfcell.data.wbc` readers; NaN = unknown pixel size).
        image_size: int, the square side of the output images.
        field_um: float, the side of the field of view in µm (e.g. 25.0, INT-20's
            field, the smallest of the BoDA poster's three), or None to resize
            every image whole (no physical normalisation).
        num_workers: decoding threads (default: the CPU count).

    Returns:
        An in-memory record table (the harness's `image` column, `path` emptied,
        `source_path` keeping it) in the same row order, with `field_um` (the
        field each row shows, NaN when its scale is unknown) and
        `attrs["scale"]`: `{"field_um", "um_per_px_out", "known", "unknown",
        "padded"}` counts.

    Raises:
        ValueError: a missing column or a non-positive field.
    """
    missing = [c for c in ("path", "um_per_px") if c not in records.columns]
    if missing:
        raise ValueError(
            f"to_field_of_view needs the columns {missing}; read the data with a "
            "tfcell.data.wbc reader (which records each image's pixel size)."
        )
    if field_um is not None and not field_um > 0:
        raise ValueError(f"field_um must be positive or None; received {field_um!r}.")
    size = int(image_size)
    scales = records["um_per_px"].to_numpy("float64")
    known = np.isfinite(scales) & (field_um is not None)
    sides = [
        int(round(field_um / s)) if k else None for s, k in zip(scales, known)
    ]  # fmt: skip
    paths = records["path"].astype(str).to_list()
    workers = num_workers or os.cpu_count() or 1
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        loaded = list(pool.map(lambda args: _load(args[0], args[1], size), zip(paths, sides)))
    images = [image for image, _ in loaded]
    padded = sum(int(flag) for _, flag in loaded)
    out = records.copy()
    out["source_path"] = records["path"].astype(str)
    out["path"] = ""
    out["image"] = pd.Series(images, index=out.index, dtype=object)
    out["field_um"] = np.where(known, float(field_um) if field_um else math.nan, math.nan)
    out.attrs = dict(records.attrs)
    out.attrs["scale"] = {
        "field_um": None if field_um is None else float(field_um),
        "um_per_px_out": None if field_um is None else float(field_um) / size,
        "known": int(known.sum()),
        "unknown": int((~known).sum()),
        "padded": padded,
    }
    return out
