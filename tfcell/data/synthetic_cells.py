"""Synthetic peripheral-blood white cells from several hospitals (see
`tfcell.data.synthetic`, the public entry point, which re-exports
`white_cells`)."""

import numpy as np

from tfcell.data._synthetic_base import (  # noqa: F401
    WHITE_CELL_CLASSES,
    _blur_side,
    _class_labels,
    _class_slices,
    _finish,
    _frame,
    _gain,
    _grid,
    _random_bytes,
    _run_chunks,
    _smooth_noise,
)

__all__ = ["white_cells"]


# --- white cells -------------------------------------------------------------

# Per class: cell radius, nucleus colour, cytoplasm colour, granule colour,
# granule density, granule size (px at 64 px), nucleus texture.
_WBC = {
    "radius": np.array([0.56, 0.42, 0.66, 0.58, 0.52], "float32"),
    "nucleus": np.array(
        [
            [0.42, 0.24, 0.56],
            [0.30, 0.17, 0.46],
            [0.52, 0.38, 0.64],
            [0.40, 0.22, 0.52],
            [0.30, 0.14, 0.40],
        ],
        "float32",
    ),
    "cytoplasm": np.array(
        [
            [0.86, 0.76, 0.84],
            [0.70, 0.77, 0.92],
            [0.76, 0.76, 0.86],
            [0.92, 0.72, 0.66],
            [0.80, 0.72, 0.86],
        ],
        "float32",
    ),
    "granule": np.array(
        [[0.72, 0.58, 0.74], [0, 0, 0], [0.68, 0.66, 0.80], [0.96, 0.48, 0.34], [0.26, 0.12, 0.38]],
        "float32",
    ),
    "density": np.array([0.18, 0.0, 0.06, 0.55, 0.55], "float32"),
    "coarse": np.array([False, False, False, True, True]),
}
_LOBES = (5, 1, 1, 3, 1)  # nucleus disks per class (absent ones have radius -1)


def _nucleus_disks(rng, labels, radius):
    """Up to five positive disks (cx, cy, r) and one negative disk per cell (cell units)."""
    n = labels.size
    cx = np.zeros((n, 5), "float32")
    cy = np.zeros((n, 5), "float32")
    r = np.full((n, 5), -1.0, "float32")
    neg = np.zeros((n, 3), "float32")  # cx, cy, r of the monocyte indentation
    phase = rng.uniform(0, 2 * np.pi, n).astype("float32")
    # Neutrophil: 2-5 lobes on an arc (band forms have 2, mature 3-5).
    lobes = rng.integers(2, 6, n)
    step = rng.uniform(0.8, 1.3, n)
    for k in range(5):
        angle = phase + (k - (lobes - 1) / 2) * step
        on = (labels == 0) & (k < lobes)
        cx[on, k] = (0.40 * np.cos(angle))[on]
        cy[on, k] = (0.40 * np.sin(angle))[on]
        r[on, k] = rng.uniform(0.17, 0.24, n)[on]
    # Eosinophil: two large lobes, sometimes three.
    eos = labels == 3
    third = rng.random(n) < 0.2
    for k, sign in enumerate((-1.0, 1.0, 0.0)):
        on = eos & ((k < 2) | third)
        cx[on, k] = (sign * 0.32 * np.cos(phase))[on]
        cy[on, k] = (sign * 0.32 * np.sin(phase) + (k == 2) * 0.3)[on]
        r[on, k] = rng.uniform(0.22, 0.3, n)[on]
    # Lymphocyte: one large round nucleus, slightly eccentric.
    lym = labels == 1
    cx[lym, 0] = rng.uniform(-0.1, 0.1, n)[lym]
    cy[lym, 0] = rng.uniform(-0.1, 0.1, n)[lym]
    r[lym, 0] = rng.uniform(0.72, 0.84, n)[lym]
    # Monocyte: a kidney: a disk minus an offset disk.
    mon = labels == 2
    r[mon, 0] = rng.uniform(0.55, 0.65, n)[mon]
    neg[mon, 0] = (0.6 * np.cos(phase))[mon]
    neg[mon, 1] = (0.6 * np.sin(phase))[mon]
    neg[mon, 2] = rng.uniform(0.3, 0.42, n)[mon]
    # Basophil: a round nucleus hidden under dark granules.
    bas = labels == 4
    r[bas, 0] = rng.uniform(0.45, 0.58, n)[bas]
    return cx, cy, r, neg


def _styles(style_seed, domains, subjects_per_domain):
    """Hospital and subject appearance, fixed by `style_seed`."""
    rng = np.random.default_rng(style_seed)
    tint = 1.0 + rng.uniform(-0.14, 0.14, (domains, 3)).astype("float32")
    tint[0] = 1.0  # the first hospital keeps the reference stain
    scale = (
        np.linspace(0.82, 1.18, domains).astype("float32") if domains > 1 else np.ones(1, "float32")
    )
    scale = rng.permutation(scale)
    blur = rng.choice([0.0, 0.6, 1.0], domains).astype("float32")
    light = rng.uniform(-0.12, 0.12, (domains, 2)).astype("float32")
    noise = rng.uniform(0.01, 0.035, domains).astype("float32")
    background = rng.uniform(0.86, 0.97, (domains, 3)).astype("float32")
    sub_tint = 1.0 + rng.normal(0, 0.035, (domains, subjects_per_domain, 3)).astype("float32")
    sub_scale = 1.0 + rng.normal(0, 0.05, (domains, subjects_per_domain)).astype("float32")
    return tint, scale, blur, light, noise, background, sub_tint, sub_scale


def white_cells(
    num_images,
    image_size=64,
    num_classes=5,
    domains=3,
    subjects_per_domain=8,
    imbalance=1.0,
    seed=0,
    style_seed=1234,
):
    """Peripheral-blood white-cell-like crops from several synthetic hospitals.

    Classes (first `num_classes` of `WHITE_CELL_CLASSES`) differ in morphology:
    neutrophils have 2-5 nuclear lobes and fine granules, lymphocytes a large
    round nucleus and a thin blue rim, monocytes a large kidney-shaped nucleus
    and grey-blue cytoplasm, eosinophils two lobes and coarse orange granules,
    basophils dark granules over the nucleus. Each hospital has its own stain
    tint, pixel scale, blur, illumination gradient and noise; each subject its
    own small tint and size offset.

    Args:
        num_images: number of crops.
        image_size: side in pixels.
        num_classes: 2..5.
        domains: number of hospitals, named "hospital_0", ...
        subjects_per_domain: subjects per hospital ("h0_s3", ...).
        imbalance: ratio of the most to the least frequent class (1 = balanced);
            class shares fall geometrically, and hospital d rolls the profile by
            d places, so each hospital has a different majority class (the
            imbalanced domain-generalisation setting).
        seed: seed of the images.
        style_seed: seed of the hospitals' and subjects' appearance.

    Returns:
        A record table with an `image` column (uint8 (S,S,3)); `attrs["synthetic"]`.
    """
    if not 2 <= num_classes <= len(WHITE_CELL_CLASSES):
        raise ValueError(f"num_classes must lie in [2, 5]; received {num_classes}.")
    if imbalance < 1:
        raise ValueError(f"imbalance is the max/min class ratio, >= 1; received {imbalance}.")
    rng = np.random.default_rng(seed)
    styles = _styles(style_seed, domains, subjects_per_domain)
    domain = rng.integers(0, domains, num_images)
    subject = rng.integers(0, subjects_per_domain, num_images)
    profile = imbalance ** (-np.arange(num_classes) / max(num_classes - 1, 1))
    labels = np.empty(num_images, "int64")
    for d in range(domains):
        sel = domain == d
        labels[sel] = _class_labels(rng, int(sel.sum()), np.roll(profile, d))
    images = np.empty((num_images, image_size, image_size, 3), "uint8")

    def render(chunk_rng, rows):
        order = np.argsort(labels[rows], kind="stable")
        _render_cells(
            chunk_rng, labels[rows][order], domain[rows][order], subject[rows][order],
            image_size, styles, images[rows], order,
        )  # fmt: skip

    _run_chunks(rng, num_images, image_size, render)
    names = WHITE_CELL_CLASSES[:num_classes]
    return _frame(
        images,
        labels,
        names,
        [f"hospital_{d}" for d in domain],
        [f"h{d}_s{s}" for d, s in zip(domain, subject)],
        "white_cells",
    )


def _disk_margin(u, v, cx, cy, r):
    """r - distance to (cx, cy) on (m,S,S) coordinates; cx, cy, r of shape (m,)."""
    du = u - cx[:, None, None]
    du *= du
    dv = v - cy[:, None, None]
    dv *= dv
    du += dv
    np.sqrt(du, out=du)
    return np.subtract(r[:, None, None], du, out=du)


def _render_cells(rng, labels, domain, subject, size, styles, out, order):
    """Renders cells whose `labels` are sorted (classes are contiguous row ranges)."""
    tint, scale, blur, light, noise, background, sub_tint, sub_scale = styles
    n = labels.size
    y, x = _grid(size)
    radius = _WBC["radius"][labels] * scale[domain] * sub_scale[domain, subject]
    radius = (radius * rng.uniform(0.92, 1.08, n)).astype("float32")
    theta = rng.uniform(0, 2 * np.pi, n).astype("float32")
    aspect = rng.uniform(0.88, 1.12, n).astype("float32")
    shift = rng.uniform(-0.08, 0.08, (n, 2)).astype("float32")
    # Cell-centred, rotated, elliptical coordinates in units of the cell radius:
    # u = (cos t (x - sx) + sin t (y - sy)) a / r, v = (-sin t (x - sx) + cos t (y - sy)) / (a r),
    # each one pass over the pixels from a row term and a column term.
    cos, sin = np.cos(theta), np.sin(theta)
    su, sv = aspect / radius, 1.0 / (aspect * radius)
    ux, uy, vx, vy = cos * su, sin * su, -sin * sv, cos * sv
    u0 = -(ux * shift[:, 1] + uy * shift[:, 0])
    v0 = -(vx * shift[:, 1] + vy * shift[:, 0])
    u = ux[:, None, None] * x + (uy[:, None, None] * y + u0[:, None, None])
    v = vx[:, None, None] * x + (vy[:, None, None] * y + v0[:, None, None])
    sharp = (size * radius / 2.0).astype("float32")[:, None, None]  # 1 / (one pixel in cell units)
    cell = np.multiply(u, u)
    cell += v * v
    np.sqrt(cell, out=cell)
    np.subtract(1.0, cell, out=cell)
    cell *= sharp
    cell += 0.5
    np.clip(cell, 0.0, 1.0, out=cell)
    # Nucleus: the union of the class's disks (max of signed margins), minus the
    # monocyte indentation, inside the cell.
    cx, cy, r, neg = _nucleus_disks(rng, labels, radius)
    nucleus = np.empty_like(cell)
    slices = _class_slices(labels, len(_LOBES))
    for c, rows in slices.items():
        margin = _disk_margin(u[rows], v[rows], cx[rows, 0], cy[rows, 0], r[rows, 0])
        for k in range(1, _LOBES[c]):
            lobe = _disk_margin(u[rows], v[rows], cx[rows, k], cy[rows, k], r[rows, k])
            np.maximum(margin, lobe, out=margin)
        if c == 2:  # monocyte: outside the indentation disk
            inside = _disk_margin(u[rows], v[rows], neg[rows, 0], neg[rows, 1], neg[rows, 2])
            np.minimum(margin, np.negative(inside, out=inside), out=margin)
        nucleus[rows] = margin
    nucleus *= sharp
    nucleus += 0.5
    np.clip(nucleus, 0.0, 1.0, out=nucleus)
    nucleus *= cell
    # Granules: fine (1 px) or coarse (2 px) random speckle over the cytoplasm
    # (basophils: over the nucleus too).
    density = _WBC["density"][labels] * rng.uniform(0.7, 1.3, n)
    threshold = np.round(density * 256.0)[:, None, None]
    weights = np.empty((n, 4, size, size), "float32")  # glass, cytoplasm, nucleus, granules
    granules = weights[:, 3]
    granules[...] = 0.0
    half = (size + 1) // 2
    for c, rows in slices.items():
        if _WBC["density"][c] == 0:
            continue
        m = rows.stop - rows.start
        if _WBC["coarse"][c]:
            grain = _random_bytes(rng, (m, half, half))
            grain = np.repeat(np.repeat(grain, 2, 1), 2, 2)[:, :size, :size]
        else:
            grain = _random_bytes(rng, (m, size, size))
        over = np.multiply(grain < threshold[rows], cell[rows], out=granules[rows])
        if c != 4:
            over *= 1.0 - nucleus[rows]
        over *= 0.85
    # Layers, bottom to top: glass (with the hospital's illumination gradient),
    # cytoplasm, nucleus (with texture), granules. Their visible weights are
    # single-channel products; the RGB image is one small matrix product per image
    # of the layers' colours (tint and scale folded in) with the weights.
    keep = np.subtract(1.0, granules, out=weights[:, 0])
    w_nucleus = np.multiply(nucleus, keep, out=weights[:, 2])
    rest = np.subtract(keep, w_nucleus, out=weights[:, 0])  # (1 - nucleus) (1 - granules)
    w_cytoplasm = np.multiply(cell, rest, out=weights[:, 1])
    w_glass = np.subtract(rest, w_cytoplasm, out=weights[:, 0])
    w_glass *= light[domain, 0, None, None] * x + (light[domain, 1, None, None] * y + 1.0)
    texture = _smooth_noise(rng, n, size, max(size // 8, 2))
    texture *= 0.3
    texture += 0.85
    w_nucleus *= texture
    colours = np.stack(
        [
            background[domain],
            _WBC["cytoplasm"][labels] * rng.uniform(0.94, 1.06, (n, 3)),
            _WBC["nucleus"][labels],
            _WBC["granule"][labels],
        ],
        axis=2,
    )  # (n, 3 channels, 4 layers)
    side = _blur_side(blur[domain])
    colours *= _gain(tint[domain] * sub_tint[domain, subject], side)[:, :, None]
    colours = colours.astype("float32").transpose(0, 2, 1)  # (n, 4 layers, 3 channels)
    image = np.matmul(weights.reshape(n, 4, size * size).transpose(0, 2, 1), colours)
    _finish(rng, image.reshape(n, size, size, 3), side, noise[domain], out, order)
