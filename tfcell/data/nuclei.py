"""Nucleus segmentation data: MoNuSeg/Kumar, TNBC-style folders, instance maps and
sparse annotations.

- MoNuSeg 2018 / Kumar: `images/<TCGA id>.{tif,png,jpg}` with either
  `annotations/<TCGA id>.xml` (polygon per nucleus, rasterised here) or
  `masks/<TCGA id>.png` (binary, 255 = nucleus; ../shared/data/nuclei/monuseg_train).
- TNBC (Naylor et al. 2018): `Slide_<k>/<name>.png` with `GT_<k>/<name>.png`.
- `instances_from_mask` labels a binary mask (`scipy.ndimage.label`) or reads an
  instance map, and gives centroids and boxes.
- `sparsify_annotations` keeps a fraction (30/60/90/100 %) of the objects; the
  dropped ones become "unannotated" (ignored by a loss), not background.

Reference: [Kumar et al., 2017](https://doi.org/10.1109/TMI.2017.2677499);
[Naylor et al., 2018](https://doi.org/10.1109/TMI.2018.2865709).
"""

import os
import pathlib
import xml.etree.ElementTree as ElementTree

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from tfcell.data import image_io, records

__all__ = [
    "NUCLEI_CLASSES",
    "instances_from_mask",
    "load_mask",
    "rasterize_xml",
    "read_image_mask_folders",
    "read_monuseg",
    "read_tnbc",
    "sparsify_annotations",
]

NUCLEI_CLASSES = ("nucleus",)


def _pair_rows(pairs, domain, subject_of, mask_column="mask_path"):
    return [
        {
            "path": os.path.abspath(image),
            "label": 0,
            "class_name": NUCLEI_CLASSES[0],
            "domain": domain,
            "subject": subject_of(image),
            mask_column: os.path.abspath(mask),
        }
        for image, mask in pairs
    ]


def _images_by_stem(folder, skips):
    found = {}
    with os.scandir(folder) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.is_file() and image_io.is_image_file(entry.name):
                found[os.path.splitext(entry.name)[0]] = entry.path
            else:
                skips.add(entry.path, "not an image file")
    return found


def _tcga_patient(path):
    # TCGA-18-5592-01Z-00-DX1 -> the patient barcode TCGA-18-5592.
    stem = os.path.splitext(os.path.basename(path))[0]
    parts = stem.split("-")
    return "-".join(parts[:3]) if stem.startswith("TCGA-") and len(parts) >= 3 else stem


def read_image_mask_folders(
    image_dir, mask_dir, *, domain="nuclei", subject_of=None, skips=None, missing="skip"
):
    """Pairs `image_dir/<stem>.*` with `mask_dir/<stem>.*` (one row per pair).

    Args:
        image_dir, mask_dir: the two folders.
        domain: value of the `domain` column.
        subject_of: function path -> subject id (default: the TCGA patient
            barcode for TCGA names, else the file stem).
        skips: a `SkipLog` to add to (default: a new one).
        missing: "skip" (count an image without mask, or a mask without image)
            or "error".

    Returns:
        A record table with extra column `mask_path`.
    """
    skips = records.SkipLog(f"nuclei:{domain}") if skips is None else skips
    images = _images_by_stem(image_dir, skips)
    masks = _images_by_stem(mask_dir, skips)
    pairs = []
    for stem, path in images.items():
        if stem not in masks:
            if missing == "error":
                raise ValueError(
                    f"Image {path!r} has no mask in {str(mask_dir)!r}. Add the mask "
                    "(same file stem) or pass missing='skip'."
                )
            skips.add(path, "image without mask")
            continue
        pairs.append((path, masks[stem]))
    for stem in sorted(set(masks) - set(images)):
        skips.add(masks[stem], "mask without image")
    rows = _pair_rows(pairs, domain, subject_of or _tcga_patient)
    return records.make_records(rows, NUCLEI_CLASSES, skips)


def read_monuseg(root, *, domain="monuseg"):
    """Reads MoNuSeg/Kumar: `images/` with `masks/` (binary PNG) or `annotations/` (XML).

    Returns:
        A record table with `mask_path` (binary mask) or `annotation_path` (XML,
        rasterise with `rasterize_xml`); `subject` is the TCGA patient barcode.
    """
    root = pathlib.Path(root)
    image_dir = root / "images" if (root / "images").is_dir() else root / "Tissue Images"
    if not image_dir.is_dir():
        raise FileNotFoundError(
            f"No images/ folder in {str(root)!r}. Download MoNuSeg 2018 "
            "(https://monuseg.grand-challenge.org) and pass the folder that holds "
            "images/ and masks/ (or annotations/)."
        )
    if (root / "masks").is_dir():
        return read_image_mask_folders(image_dir, root / "masks", domain=domain)
    for name in ("annotations", "Annotations"):
        if (root / name).is_dir():
            skips = records.SkipLog(f"nuclei:{domain}")
            images = _images_by_stem(image_dir, skips)
            pairs = []
            for stem, path in images.items():
                xml = root / name / f"{stem}.xml"
                if xml.is_file():
                    pairs.append((path, str(xml)))
                else:
                    skips.add(path, "image without annotation XML")
            rows = _pair_rows(pairs, domain, _tcga_patient, mask_column="annotation_path")
            return records.make_records(rows, NUCLEI_CLASSES, skips)
    raise FileNotFoundError(
        f"{str(root)!r} has images/ but neither masks/ nor annotations/. Put the binary "
        "masks in masks/ or the MoNuSeg XML files in annotations/."
    )


def read_tnbc(root, *, domain="tnbc"):
    """Reads TNBC-style folders: `Slide_<k>/` images with `GT_<k>/` masks.

    `subject` is the slide number `<k>` (one patient per slide in TNBC).
    """
    root = pathlib.Path(root)
    skips = records.SkipLog(f"nuclei:{domain}")
    frames = []
    slides = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("Slide_"))
    if not slides:
        raise FileNotFoundError(
            f"No Slide_<k>/ folders in {str(root)!r} (TNBC layout: Slide_<k>/ images with "
            "GT_<k>/ masks)."
        )
    for slide in slides:
        key = slide.name[len("Slide_") :]
        gt = root / f"GT_{key}"
        if not gt.is_dir():
            for path in sorted(slide.iterdir()):
                skips.add(str(path), "image without mask")
            continue
        frames.append(
            read_image_mask_folders(
                slide, gt, domain=domain, subject_of=lambda _p, k=key: k, skips=skips
            )
        )
    rows = [row for frame in frames for row in frame.to_dict("records")]
    return records.make_records(rows, NUCLEI_CLASSES, skips)


def load_mask(path):
    """Loads a mask image as a 2-D array: binary (`> 0`) or, for 16/32-bit or
    multi-valued label images, the label values themselves (int32)."""
    try:
        with Image.open(str(path)) as image:
            image.load()
            if image.mode in ("RGB", "RGBA", "P", "LA"):
                image = image.convert("L")
            array = np.asarray(image)
    except (OSError, ValueError) as error:
        raise image_io.ImageReadError(
            f"Cannot read mask {str(path)!r} ({error}). Re-download or delete it."
        ) from error
    return array.astype(np.int32)


def rasterize_xml(xml_path, shape):
    """Rasterises MoNuSeg/Kumar XML polygons into an instance map.

    Args:
        xml_path: the annotation file (`<Region><Vertices><Vertex X= Y=/>`).
        shape: `(height, width)` of the image.

    Returns:
        An int32 `(height, width)` map: 0 background, 1..K one id per region
        (later regions overwrite earlier ones where they overlap).
    """
    try:
        tree = ElementTree.parse(str(xml_path))
    except (OSError, ElementTree.ParseError) as error:
        raise ValueError(
            f"Cannot parse annotation {str(xml_path)!r} ({error}). Re-download it."
        ) from error
    height, width = shape
    canvas = Image.new("I", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    instance = 0
    for region in tree.iter("Region"):
        points = [
            (float(v.attrib["X"]), float(v.attrib["Y"]))
            for v in region.iter("Vertex")
            if "X" in v.attrib and "Y" in v.attrib
        ]
        if len(points) < 3:
            continue
        instance += 1
        draw.polygon(points, fill=instance, outline=instance)
    return np.asarray(canvas, dtype=np.int32)


def instances_from_mask(mask, *, connectivity=1):
    """Instance map, centroids and boxes from a binary mask or an instance map.

    A mask with only the values {0, 1} or {0, 255} (or boolean) is labelled into
    connected components with `scipy.ndimage.label`; any other integer map is
    taken as an instance map (0 = background) and relabelled to 1..K.

    Args:
        mask: 2-D array.
        connectivity: 1 (4-connected) or 2 (8-connected) for binary masks.

    Returns:
        dict with `instance_map` (int32, 0 background, 1..K), `ids` (1..K),
        `centroids` (K, 2) float (row, col), `boxes` (K, 4) int
        (row_min, col_min, row_max, col_max), max exclusive, and `areas` (K,).
    """
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W); received shape {mask.shape}.")
    values = np.unique(mask)
    if mask.dtype == bool or set(values.tolist()) <= {0, 1} or set(values.tolist()) <= {0, 255}:
        structure = ndimage.generate_binary_structure(2, connectivity)
        instance_map, count = ndimage.label(mask > 0, structure=structure)
    else:
        ids = values[values != 0]
        lookup = np.zeros(int(values.max()) + 1, dtype=np.int32)
        lookup[ids.astype(np.int64)] = np.arange(1, len(ids) + 1)
        instance_map = lookup[mask.astype(np.int64)]
        count = len(ids)
    instance_map = instance_map.astype(np.int32)
    ids = np.arange(1, count + 1)
    if count == 0:
        return {
            "instance_map": instance_map,
            "ids": ids,
            "centroids": np.zeros((0, 2), np.float64),
            "boxes": np.zeros((0, 4), np.int64),
            "areas": np.zeros((0,), np.int64),
        }
    centroids = np.array(ndimage.center_of_mass(np.ones_like(instance_map), instance_map, ids))
    slices = ndimage.find_objects(instance_map, max_label=count)
    boxes = np.array([[s[0].start, s[1].start, s[0].stop, s[1].stop] for s in slices])
    areas = np.bincount(instance_map.ravel(), minlength=count + 1)[1:]
    return {
        "instance_map": instance_map,
        "ids": ids,
        "centroids": centroids.reshape(count, 2),
        "boxes": boxes.astype(np.int64),
        "areas": areas.astype(np.int64),
    }


def sparsify_annotations(instance_map, fraction, seed=0):
    """Keeps a random `fraction` of the annotated objects (sparse-annotation setting).

    Args:
        instance_map: int map, 0 background, >0 object ids.
        fraction: share of objects kept, in (0, 1] (papers: 0.3, 0.6, 0.9, 1.0);
            the number kept is `round(fraction * K)`, at least 1 when K > 0.
        seed: seed of the choice.

    Returns:
        `(kept_map, annotated)`: `kept_map` holds only the kept objects (ids
        unchanged, dropped objects set to 0); `annotated` is a bool map, False on
        the pixels of dropped objects: they are unannotated (unknown), not
        background, and a loss must ignore them.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must lie in (0, 1]; received {fraction!r}.")
    instance_map = np.asarray(instance_map)
    ids = np.unique(instance_map)
    ids = ids[ids != 0]
    keep_count = int(round(fraction * len(ids)))
    if len(ids) and keep_count == 0:
        keep_count = 1
    rng = np.random.default_rng(seed)
    kept = rng.choice(ids, size=keep_count, replace=False) if len(ids) else ids
    dropped = np.isin(instance_map, np.setdiff1d(ids, kept)) & (instance_map != 0)
    kept_map = np.where(dropped, 0, instance_map).astype(instance_map.dtype)
    return kept_map, ~dropped
