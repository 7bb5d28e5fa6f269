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
the returned table says which rows those are (`field_um` NaN). A field larger
than an image is filled by repeating its border pixels (counted in
`attrs["scale"]`), never by black or white padding that would look like a
stain difference.
"""

import concurrent.futures
import math
import os

import numpy as np
import pandas as pd
import tensorflow as tf

from tfcell.data import image_io

__all__ = ["to_field_of_view"]


def _square(image, side):
    """A centred `side` x `side` crop; border pixels repeated where too small."""
    h, w = image.shape[:2]
    if side > h or side > w:
        pad_h, pad_w = max(side - h, 0), max(side - w, 0)
        image = np.pad(
            image,
            ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)),
            mode="edge",
        )
        h, w = image.shape[:2]
    top, left = (h - side) // 2, (w - side) // 2
    return image[top : top + side, left : left + side]


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
