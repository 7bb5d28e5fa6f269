"""The exclusive cross-entropy paper's data: nucleus tiles with instance maps.

    monuseg    ../shared/data/nuclei/monuseg_train or `config.data.root` in the
               MoNuSeg layout (`images/` + `annotations/*.xml` and/or `masks/`):
               an XML's polygons give true instances; where a tile has no XML
               its instances are the connected components of its binary mask
               (touching nuclei merge: counted in the report).
    tnbc       `tfcell.data.nuclei.read_tnbc`'s layout (`Slide_<k>/`, `GT_<k>/`).
    synthetic  `tfcell.data.synthetic.nuclei_scenes` (smoke).

Tiles are split by patient (the TCGA barcode) into train / validation / test
(`split_tiles`); `config.data.test_root` adds a further test set in either
layout (e.g. the official MoNuSeg test set), evaluated like the held-out tiles.
"""

import dataclasses
import os

import numpy as np
import pandas as pd

__all__ = ["Tile", "load_tiles", "shared_root", "split_tiles", "tile_table"]


def shared_root():
    """`../shared/data` next to the repository."""
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.normpath(os.path.join(here, "..", "..", "..", "..", "shared", "data"))


@dataclasses.dataclass
class Tile:
    """One tile: the image, its full instance map and where the instances came from."""

    name: str
    patient: str
    image: np.ndarray  # uint8 (H, W, 3)
    instances: np.ndarray  # int32 (H, W), 0 background, 1..K nuclei (all of them)
    true_instances: bool  # From polygons (True) or from a binary mask's components.


def _layout_table(root):
    """A record table of the MoNuSeg or TNBC layout under `root`, with an
    `annotation_path` column where a tile has an XML."""
    from tfcell.data import nuclei

    if any(name.startswith("Slide_") for name in os.listdir(root)):
        table = nuclei.read_tnbc(root)
    else:
        table = nuclei.read_monuseg(root)
    table = table.copy()
    attrs = dict(table.attrs)
    if "annotation_path" not in table:
        xml_dir = next(
            (os.path.join(root, n) for n in ("annotations", "Annotations")
             if os.path.isdir(os.path.join(root, n))),
            None,
        )  # fmt: skip
        stems = [os.path.splitext(os.path.basename(p))[0] for p in table["path"]]
        table["annotation_path"] = [
            os.path.join(xml_dir, s + ".xml")
            if xml_dir and os.path.isfile(os.path.join(xml_dir, s + ".xml"))
            else ""
            for s in stems
        ]
    table.attrs = attrs
    return table


def tile_table(config, root=None):
    """The tiles of `config.data.source` (or of the folder `root`) as a table with
    `name`, `patient`, `path`, `mask_path` and `annotation_path` (or an in-memory
    `image` and `mask` for synthetic scenes), `label` 0 (one class: nucleus)."""
    if root is None and config.data.source == "synthetic":
        from tfcell.data import synthetic

        s = config.synthetic
        table = synthetic.nuclei_scenes(
            s.num_images, image_size=s.image_size, seed=config.seed,
            nuclei_per_image=tuple(s.nuclei_per_image),
        )  # fmt: skip
        table = table.copy()
        table["name"] = [f"scene{i:03d}" for i in range(len(table))]
        table["patient"] = [f"p{i % s.patients:02d}" for i in range(len(table))]
        table.attrs["synthetic"] = True
        return table
    if root is None:
        if config.data.source != "monuseg":
            raise ValueError(
                "config.data.source must be 'monuseg' or 'synthetic'; received "
                f"{config.data.source!r}."
            )
        root = config.data.root or os.path.join(shared_root(), "nuclei", "monuseg_train")
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"No nucleus tiles at {root!r}: pass --config.data.root=<folder with images/ and "
            "annotations/ or masks/ (MoNuSeg) or Slide_*/GT_* (TNBC)>, or put ../shared/data "
            "beside the repository."
        )
    table = _layout_table(root)
    table["name"] = [os.path.splitext(os.path.basename(p))[0] for p in table["path"]]
    table["patient"] = table["subject"].astype(str)
    return table


def load_tiles(table):
    """Decodes every tile of `table`: image and full instance map (`Tile`s)."""
    from PIL import Image

    from tfcell.data import nuclei

    tiles = []
    for _, row in table.iterrows():
        if "image" in row and isinstance(row["image"], np.ndarray):
            image = np.asarray(row["image"], "uint8")
            instances = np.asarray(row["mask"], "int32")
            tiles.append(Tile(row["name"], row["patient"], image, instances, True))
            continue
        with Image.open(row["path"]) as im:
            image = np.asarray(im.convert("RGB"), "uint8")
        xml = row.get("annotation_path", "") or ""
        if xml:
            instances = nuclei.rasterize_xml(xml, image.shape[:2])
            true = True
        else:
            instances = nuclei.instances_from_mask(nuclei.load_mask(row["mask_path"]))[
                "instance_map"
            ]
            true = False
        if instances.shape != image.shape[:2]:
            raise ValueError(
                f"Tile {row['path']!r}: mask {instances.shape} and image {image.shape[:2]} "
                "differ in size; fix the mask or remove the tile."
            )
        tiles.append(Tile(row["name"], row["patient"], image, instances.astype("int32"), true))
    return tiles


def split_tiles(table, val_fraction, test_fraction, seed):
    """`{"train", "val", "test"}` row positions, whole patients on one side
    (`tfcell.data.splits.patient_split` on the `patient` column)."""
    from tfcell.data import splits

    frame = pd.DataFrame(
        {"subject": table["patient"].astype(str).to_numpy(), "label": 0}, index=table.index
    )
    rest, test = splits.patient_split(frame, test_size=test_fraction, seed=seed)
    train, val = splits.patient_split(rest, test_size=val_fraction / (1 - test_fraction), seed=seed)
    position = {index: i for i, index in enumerate(table.index)}
    parts = {
        name: np.array(sorted(position[i] for i in part.index), "int64")
        for name, part in (("train", train), ("val", val), ("test", test))
    }
    patients = table["patient"].astype(str).to_numpy()
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        shared = set(patients[parts[a]]) & set(patients[parts[b]])
        if shared:
            raise AssertionError(f"patients {sorted(shared)} are in both {a} and {b}")
    return parts
