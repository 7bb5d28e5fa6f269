"""Embedded synthetic microscopy data: no download, no GPU, deterministic from a seed.

Every generator returns a record table (see `tfcell.data.records`) whose rows
carry their image in memory in an `image` column (`path` is ""), with
`attrs["synthetic"] = True`, `attrs["class_names"]` and `attrs["banner"]`.
`to_arrays(frame)` turns it into the dict of arrays `tfcell.data.from_arrays`
takes; `tfcell.data.from_records` also accepts the frame directly. Consumers
print `SYNTHETIC_BANNER` so that no result on these images passes for a result
on real data.

Rendering is vectorised NumPy over chunks of images small enough to stay in
the CPU caches (thousands of 64 px images per second on two cores): float32
channel-planar buffers, bilinear value noise as two small matrix products, a
3-tap separable blur, noise drawn from raw random bytes, and the chunks spread
over up to `_MAX_THREADS` threads (NumPy releases the GIL in its loops). Each
chunk has its own random generator spawned from `seed`, so the images do not
depend on the number of threads. Hospitals ("domains") and subjects get their
appearance from `style_seed`, not from `seed`, so a training set and a test set
drawn with different seeds share the same hospitals.
"""

import numpy as np

from tfcell.data._synthetic_base import (  # noqa: F401
    _E,
    _H,
    _W,
    SYNTHETIC_BANNER,
    TISSUE_CLASSES,
    WHITE_CELL_CLASSES,
    _blobs,
    _blur_side,
    _class_slices,
    _fill,
    _finish,
    _frame,
    _gain,
    _grid,
    _paint,
    _random_bytes,
    _run_chunks,
    _smooth_noise,
    _soft_disk,
    _to_pixels,
)
from tfcell.data.synthetic_cells import white_cells

__all__ = [
    "SYNTHETIC_BANNER",
    "WHITE_CELL_CLASSES",
    "TISSUE_CLASSES",
    "white_cells",
    "tissue_tiles",
    "nuclei_scenes",
    "idc_like",
    "to_arrays",
]


def to_arrays(frame):
    """Returns `{"images", "label", "domain", "subject", "class_names", "synthetic"}`
    from an in-memory record table (domain and subject stay strings)."""
    if "image" not in frame.columns:
        raise ValueError("to_arrays needs an in-memory table with an `image` column.")
    return {
        "images": np.stack(frame["image"].to_list()) if len(frame) else np.zeros((0, 1, 1, 3)),
        "label": frame["label"].to_numpy("int64"),
        "domain": frame["domain"].to_numpy(str),
        "subject": frame["subject"].to_numpy(str),
        "class_names": list(frame.attrs.get("class_names", [])),
        "synthetic": bool(frame.attrs.get("synthetic", False)),
    }


# --- tissue tiles ------------------------------------------------------------


def _stripes(rng, n, size, freq, warp):
    y, x = _grid(size)
    theta = rng.uniform(0, np.pi, n).astype("float32")
    fx = (np.cos(theta) * freq).astype("float32")[:, None, None]
    fy = (np.sin(theta) * freq).astype("float32")[:, None, None]
    phase = _smooth_noise(rng, n, size, 3)
    phase *= warp
    phase += fx * x
    phase += fy * y
    np.sin(phase, out=phase)
    phase *= 0.5
    phase += 0.5
    return phase


def _tissue_class(rng, name, image):
    """Renders tiles of one CRC-like class into the planar float view `image` (n,3,S,S)."""
    n, size = image.shape[0], image.shape[-1]
    sparse = size * size / 4096.0  # object counts scale with the tile area
    if name == "ADI":  # large empty fat cells with thin pink membranes
        field = _smooth_noise(rng, n, size, max(size // 24, 2))
        membrane = np.abs(np.sin(7 * np.pi * field, out=field), out=field)
        membrane *= -0.8 / 0.18
        membrane += 0.8
        np.clip(membrane, 0, 0.8, out=membrane)
        return _paint(_fill(image, _W), membrane, _E)
    if name == "BACK":  # empty or dusty glass
        grey = rng.uniform(0.7, 0.95, (n, 1, 1, 1)).astype("float32")
        dust = _smooth_noise(rng, n, size, 2)
        dust *= 0.05
        return np.add(grey, dust[:, None], out=image)
    if name == "DEB":  # mottled pink with scattered dark fragments and blood
        mottle = _smooth_noise(rng, n, size, max(size // 10, 2))
        _paint(_fill(image, _W), 0.4 + 0.6 * mottle, _E * 0.95)
        _paint(image, _blobs(rng, n, size, rng.integers(15, 40, n) * sparse, 0.7), _H)
        return _paint(
            image, np.where(mottle > 0.8, np.float32(0.7), np.float32(0)), [0.8, 0.25, 0.3]
        )
    if name == "LYM":  # dense small round dark nuclei
        _fill(image, _W + 0.35 * (_E - _W))
        return _paint(
            image, _blobs(rng, n, size, rng.integers(140, 220, n) * sparse, 1.1), _H * 0.8
        )
    if name == "MUC":  # pale blue-lilac wisps
        wisps = _smooth_noise(rng, n, size, max(size // 12, 2))
        wisps *= 0.5
        wisps += 0.3
        return _paint(_fill(image, _W), wisps, [0.72, 0.72, 0.9])
    if name == "MUS":  # dense pink fibres, elongated nuclei along them
        fibres = _stripes(rng, n, size, rng.uniform(14, 22, n), 2.0)
        _paint(_fill(image, _W), 0.55 + 0.45 * fibres, _E * 0.9)
        nuclei = _blobs(rng, n, size, rng.integers(6, 14, n) * sparse, 1.0)
        nuclei *= fibres > 0.7
        return _paint(image, nuclei, _H)
    if name == "NORM":  # glands: a ring of nuclei around a white lumen
        y, x = _grid(size)
        cy, cx = rng.uniform(-0.3, 0.3, (2, n, 1, 1)).astype("float32")
        radius = rng.uniform(0.35, 0.6, (n, 1, 1)).astype("float32")
        dy, dx = y - cy, x - cx
        d = np.sqrt(dy * dy + dx * dx)
        _fill(image, _W + 0.55 * (_E - _W))
        ring = np.clip(1 - np.abs(d - radius) / 0.1, 0, 1)
        beads = np.arctan2(dy, dx)
        beads *= rng.integers(10, 18, (n, 1, 1)).astype("float32")
        np.sin(beads, out=beads)
        beads *= 0.4
        beads += 0.6
        ring *= beads
        _paint(image, ring, _H)
        return _paint(image, _soft_disk(d, radius - 0.12, 0.05), _W)
    if name == "STR":  # pale wavy fibres, sparse nuclei
        fibres = _stripes(rng, n, size, rng.uniform(6, 11, n), 4.0)
        fibres *= 0.35
        fibres += 0.25
        _paint(_fill(image, _W), fibres, _E)
        return _paint(image, _blobs(rng, n, size, rng.integers(3, 8, n) * sparse, 0.9), _H)
    if name == "TUM":  # crowded large irregular nuclei
        field = _smooth_noise(rng, n, size, max(size // 6, 2))
        field -= 0.5
        field *= 0.9 / 0.08
        nuclei = np.clip(field, 0, 0.9, out=field)
        _fill(image, _W + 0.6 * (_E - _W))
        return _paint(image, nuclei, _H * rng.uniform(0.85, 1.1, (n, 3)))
    raise ValueError(f"Unknown tissue class {name!r}; expected one of {TISSUE_CLASSES}.")


def _render_tissue(rng, labels, names, size, out, tint=None):
    """Renders one chunk of tiles of classes `labels` into `out` (uint8 (n,S,S,3))."""
    n = labels.size
    order = np.argsort(labels, kind="stable")
    labels = labels[order]
    image = np.empty((n, 3, size, size), "float32")
    for c, rows in _class_slices(labels, len(names)).items():
        _tissue_class(rng, names[c], image[rows])
    if tint is None:
        tint = 1.0 + rng.uniform(-0.06, 0.06, (n, 3)).astype("float32")
    else:
        tint = np.asarray(tint, "float32")[order]
    side = _blur_side(rng.choice(np.array([0.0, 0.5], "float32"), n))
    image = _to_pixels(image, _gain(tint, side))
    _finish(rng, image, side, np.full(n, 0.02, "float32"), out, order)


def tissue_tiles(num_images, image_size=64, seed=0, class_counts=None):
    """H&E-like texture tiles of the 9 Kather CRC classes (ADI ... TUM).

    Args:
        num_images: number of tiles (balanced); ignored when `class_counts` is given.
        image_size: side in pixels.
        seed: seed of the images.
        class_counts: optional 9 per-class counts (e.g. the long-tailed CFAL
            variant), in the order of `TISSUE_CLASSES`.

    Returns:
        A record table with an `image` column; domain "synthetic_crc".
    """
    rng = np.random.default_rng(seed)
    if class_counts is not None:
        if len(class_counts) != len(TISSUE_CLASSES):
            raise ValueError(f"class_counts needs 9 counts; received {len(class_counts)}.")
        labels = np.repeat(np.arange(9), np.asarray(class_counts, int))
    else:
        labels = np.arange(num_images) % 9
    labels = rng.permutation(labels).astype("int64")
    images = np.empty((labels.size, image_size, image_size, 3), "uint8")

    def render(chunk_rng, rows):
        _render_tissue(chunk_rng, labels[rows], TISSUE_CLASSES, image_size, images[rows])

    _run_chunks(rng, labels.size, image_size, render)
    return _frame(
        images,
        labels,
        TISSUE_CLASSES,
        ["synthetic_crc"] * labels.size,
        [""] * labels.size,
        "tissue_tiles",
    )


def idc_like(num_patients=20, patches_per_patient=(20, 60), image_size=50, seed=0):
    """Two-class IDC-like patches (0: benign tissue, 1: invasive carcinoma) with
    patient ids; each patient has its own stain tint and share of positives."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(patches_per_patient[0], patches_per_patient[1] + 1, num_patients)
    patient = np.repeat(np.arange(num_patients), counts)
    positive_share = rng.beta(1.2, 2.5, num_patients)
    labels = (rng.random(patient.size) < positive_share[patient]).astype("int64")
    # Benign patches show ADI, STR, NORM or MUS texture; carcinoma shows TUM or TUM-like LYM mix.
    texture = np.where(
        labels == 1, rng.choice([8, 8, 8, 3], patient.size), rng.choice([0, 7, 6, 5], patient.size)
    )
    patient_tint = 1.0 + rng.uniform(-0.1, 0.1, (num_patients, 3)).astype("float32")
    images = np.empty((patient.size, image_size, image_size, 3), "uint8")

    def render(chunk_rng, rows):
        _render_tissue(
            chunk_rng, texture[rows], TISSUE_CLASSES, image_size, images[rows],
            patient_tint[patient[rows]],
        )  # fmt: skip

    _run_chunks(rng, patient.size, image_size, render)
    return _frame(
        images,
        labels,
        ("0", "1"),
        ["synthetic_idc"] * patient.size,
        [f"p{p:03d}" for p in patient],
        "idc_like",
    )


# --- nuclei scenes -----------------------------------------------------------


def _nuclei_masks(rng, n, size, nuclei_per_image):
    """Instance maps (n,S,S) int32 of random elliptical nuclei (later ones overlap
    earlier ones; visible parts under 4 px are dropped; ids renumbered 1..K) and K."""
    k = rng.integers(nuclei_per_image[0], nuclei_per_image[1] + 1, n)
    total = int(k.sum())
    masks = np.zeros((n, size, size), "int32")
    if total == 0:
        return masks, np.zeros(n, "int64")
    first = np.cumsum(k) - k
    ident = (np.arange(total) - np.repeat(first, k) + 1).astype("int32")  # 1..k per image
    cy, cx = rng.uniform(0, size, (2, total)).astype("float32")
    a = (rng.uniform(3.0, 7.0, total) * size / 128.0 + 1.5).astype("float32")
    b = a * rng.uniform(0.55, 1.0, total).astype("float32")
    t = rng.uniform(0, np.pi, total).astype("float32")
    # Each ellipse is evaluated in a (W,W) window around its centre, not over the image.
    reach = int(np.ceil(a.max())) + 1
    width = 2 * reach + 1
    offsets = np.arange(-reach, reach + 1)
    y0, x0 = np.round(cy).astype(int), np.round(cx).astype(int)
    dy = ((y0 - cy)[:, None] + offsets).astype("float32")  # pixel minus centre, (N,W)
    dx = ((x0 - cx)[:, None] + offsets).astype("float32")
    cos, sin = np.cos(t)[:, None], np.sin(t)[:, None]
    along = (cos / a[:, None] * dx)[:, None, :] + (sin / a[:, None] * dy)[:, :, None]
    across = (cos / b[:, None] * dy)[:, :, None] - (sin / b[:, None] * dx)[:, None, :]
    along *= along
    across *= across
    along += across
    rows_ok = ((y0[:, None] + offsets) >= 0) & ((y0[:, None] + offsets) < size)
    cols_ok = ((x0[:, None] + offsets) >= 0) & ((x0[:, None] + offsets) < size)
    inside = (along <= 1.0) & rows_ok[:, :, None] & cols_ok[:, None, :]
    index = np.flatnonzero(inside)
    which, rest = np.divmod(index, width * width)
    corner = (np.repeat(np.arange(n), k) * size + y0 - reach) * size + x0 - reach
    cells = corner[which] + (rest // width) * size + rest % width
    flat = masks.reshape(-1)
    np.maximum.at(flat, cells, ident[which])  # the latest nucleus wins
    won = flat[cells] == ident[which]
    # Drop nuclei with fewer than 4 visible pixels and renumber the rest 1..K.
    keep = np.bincount(which[won], minlength=total) >= 4
    kept = np.concatenate([[0], np.cumsum(keep)])
    new_id = ((kept[1:] - np.repeat(kept[first], k)) * keep).astype("int32")
    flat[...] = 0
    flat[cells[won]] = new_id[which[won]]
    return masks, np.diff(kept[np.append(first, total)]).astype("int64")


def nuclei_scenes(num_images, image_size=128, seed=0, nuclei_per_image=(5, 25)):
    """H&E-like scenes with elliptical nuclei and their instance masks.

    Returns:
        A record table with `image` (uint8 (S,S,3)), `mask` (int32 (S,S) instance
        map, 0 = background, 1..K = nuclei) and `num_instances` columns; one class
        "nucleus".
    """
    rng = np.random.default_rng(seed)
    images = np.empty((num_images, image_size, image_size, 3), "uint8")
    masks = np.empty((num_images, image_size, image_size), "int32")
    counts = np.zeros(num_images, "int64")

    def render(chunk_rng, rows):
        n = rows.stop - rows.start
        masks[rows], counts[rows] = _nuclei_masks(chunk_rng, n, image_size, nuclei_per_image)
        # Layers: glass, eosin stroma (alpha 0.45..0.75), haematoxylin nuclei.
        weights = np.empty((n, 3, image_size, image_size), "float32")
        shade = _random_bytes(chunk_rng, (n, image_size, image_size))
        nuclei = np.multiply(shade, np.float32(0.25 / 255.0), out=weights[:, 2])
        nuclei += 0.75
        nuclei *= masks[rows] > 0
        stroma = _smooth_noise(chunk_rng, n, image_size, 6)
        stroma *= 0.3
        stroma += 0.45
        clear = np.subtract(1.0, nuclei, out=weights[:, 0])
        np.multiply(stroma, clear, out=weights[:, 1])
        clear -= weights[:, 1]
        tint = 1.0 + chunk_rng.uniform(-0.06, 0.06, (n, 3)).astype("float32")
        side = _blur_side(np.full(n, 0.6, "float32"))
        colours = np.stack([_W, _E, _H])[None] * _gain(tint, side)[:, None, :]  # (n, 3, 3)
        pixels = np.matmul(weights.reshape(n, 3, -1).transpose(0, 2, 1), colours)
        pixels = pixels.reshape(n, image_size, image_size, 3)
        _finish(chunk_rng, pixels, side, np.full(n, 0.02, "float32"), images[rows])

    _run_chunks(rng, num_images, image_size, render)
    return _frame(
        images,
        np.zeros(num_images, "int64"),
        ("nucleus",),
        ["synthetic_nuclei"] * num_images,
        [""] * num_images,
        "nuclei_scenes",
        extra={"mask": list(masks), "num_instances": counts},
    )
