"""White-blood-cell datasets: Matek-19, Acevedo-20 (PBC), INT-20, any folder-per-class
hospital set, the 13-class harmonised label space, and the 5-class real
multi-domain set (PBC, BCCD, JTSC) with physical pixel sizes.

Harmonised label space (AE-CFE thesis Sec. 3, BoDA): 13 classes with the
published correspondences below. A source class without a correspondence is
dropped and counted ("class outside the label space"), never mapped to a near
class.

References:
- [Matek et al., 2019](https://doi.org/10.7937/tcia.2019.36f5o9ld) (Matek-19).
- [Acevedo et al., 2020](https://doi.org/10.17632/snkd93bnjr.1) (Acevedo-20 / PBC).
- Umer et al., 2023 (BoDA for white-cell domain generalisation), dataset table:
  image resolution of each domain.
"""

import os
import pathlib

import pandas as pd

from tfcell.data import image_io, records

__all__ = [
    "ACEVEDO_CLASSES",
    "ACEVEDO_SUBTYPES",
    "ACEVEDO_TO_HARMONISED",
    "HARMONISED_CLASSES",
    "INT20_TO_HARMONISED",
    "MATEK_CLASSES",
    "MATEK_TO_HARMONISED",
    "UM_PER_PX",
    "WBC5_CLASSES",
    "WBC_DOMAIN_FOLDERS",
    "acevedo_subtype",
    "read_acevedo",
    "read_class_folders",
    "read_int20",
    "read_matek",
    "read_wbc_domains",
    "rescale_factor",
]

HARMONISED_CLASSES = (
    "basophil",
    "eosinophil",
    "erythroblast",
    "myeloblast",
    "promyelocyte",
    "myelocyte",
    "metamyelocyte",
    "neutrophil_banded",
    "neutrophil_segmented",
    "monocyte",
    "lymphocyte_typical",
    "lymphocyte_atypical",
    "smudge_cell",
)

WBC5_CLASSES = ("neutrophil", "lymphocyte", "monocyte", "eosinophil", "basophil")

# Acevedo-20 (PBC): the 8 class folders and the file-name prefixes each may hold.
ACEVEDO_CLASSES = (
    "basophil",
    "eosinophil",
    "erythroblast",
    "ig",
    "lymphocyte",
    "monocyte",
    "neutrophil",
    "platelet",
)
ACEVEDO_SUBTYPES = {
    "basophil": ("BA",),
    "eosinophil": ("EO",),
    "erythroblast": ("ERB",),
    "ig": ("IG", "MMY", "MY", "PMY"),
    "lymphocyte": ("LY",),
    "monocyte": ("MO",),
    "neutrophil": ("BNE", "SNE", "NEUTROPHIL"),
    "platelet": ("PLATELET",),
}
# Keyed by the file-name sub-type; IG (no sub-type), NEUTROPHIL (no sub-type)
# and PLATELET have no harmonised class and are dropped.
ACEVEDO_TO_HARMONISED = {
    "BA": "basophil",
    "EO": "eosinophil",
    "ERB": "erythroblast",
    "PMY": "promyelocyte",
    "MY": "myelocyte",
    "MMY": "metamyelocyte",
    "LY": "lymphocyte_typical",
    "MO": "monocyte",
    "BNE": "neutrophil_banded",
    "SNE": "neutrophil_segmented",
    "IG": None,
    "NEUTROPHIL": None,
    "PLATELET": None,
}

MATEK_CLASSES = (
    "BAS",
    "EBO",
    "EOS",
    "KSC",
    "LYA",
    "LYT",
    "MMZ",
    "MOB",
    "MON",
    "MYB",
    "MYO",
    "NGB",
    "NGS",
    "PMB",
    "PMO",
)
MATEK_TO_HARMONISED = {
    "BAS": "basophil",
    "EBO": "erythroblast",
    "EOS": "eosinophil",
    "KSC": "smudge_cell",
    "LYA": "lymphocyte_atypical",
    "LYT": "lymphocyte_typical",
    "MMZ": "metamyelocyte",
    "MOB": "monocyte",
    "MON": "monocyte",
    "MYB": "myelocyte",
    "MYO": "myeloblast",
    "NGB": "neutrophil_banded",
    "NGS": "neutrophil_segmented",
    "PMB": None,
    "PMO": "promyelocyte",
}

# INT-20 folders with a harmonised class; every other INT-20 folder is dropped.
INT20_TO_HARMONISED = {
    "01-NORMO": "erythroblast",
    "05-MONO": "monocyte",
    "08-LYMPH-neo": "lymphocyte_atypical",
    "09-BASO": "basophil",
    "10-EOS": "eosinophil",
    "11-STAB": "neutrophil_banded",
    "12-LYMPH-reaktiv": "lymphocyte_atypical",
    "13-MYBL": "myeloblast",
    "14-LYMPH-typ": "lymphocyte_typical",
    "15-SEG": "neutrophil_segmented",
    "17-Kernschatten": "smudge_cell",
    "18-PMYEL": "promyelocyte",
    "19-MYEL": "myelocyte",
    "20-Meta": "metamyelocyte",
}

# Physical pixel size (µm per pixel) of each domain's images as stored.
# Matek-19, Acevedo-20 and INT-20: BoDA dataset table (400 px = 29.0 µm,
# 360 px = 36.0 µm, 288 px = 25.0 µm). pbc_128 (../shared/data): the 360x363 PBC
# images centre-cropped to 320 px and resized to 128 px, so 0.1 * 320 / 128.
# BCCD and JTSC: no published pixel size (BCCD: 640x480 smear-camera images;
# JTSC: Zheng et al. 2018 give 120x120 crops without a scale): None; rescale
# them by cell size if a common scale is needed.
UM_PER_PX = {
    "matek": 29.0 / 400.0,
    "acevedo": 36.0 / 360.0,
    "pbc": 36.0 / 360.0,
    "pbc_native": 36.0 / 360.0,
    "pbc_128": (36.0 / 360.0) * 320.0 / 128.0,
    "int20": 25.0 / 288.0,
    "bccd": None,
    "jtsc": None,
}

# Where the 5-class domains sit inside ../shared/data.
WBC_DOMAIN_FOLDERS = {
    "pbc": ("pbc_128", "pbc_128"),
    "pbc_native": ("pbc_native_sample", "pbc_native"),
    "bccd": ("wbc_domains/bccd", "bccd"),
    "jtsc": ("wbc_domains/jtsc", "jtsc"),
}


def rescale_factor(um_per_px, target_um_per_px):
    """Factor by which to resize an image so that its pixels are `target_um_per_px`.

    `new_size = round(old_size * rescale_factor(um_per_px, target_um_per_px))`.
    Returns None when the source pixel size is unknown (None or NaN).
    """
    if target_um_per_px is None or target_um_per_px <= 0:
        raise ValueError(f"target_um_per_px must be positive; received {target_um_per_px!r}.")
    if um_per_px is None or um_per_px != um_per_px:
        return None
    return float(um_per_px) / float(target_um_per_px)


def acevedo_subtype(path):
    """The sub-type prefix of an Acevedo/PBC file name (`SNE_12345.jpg` -> "SNE")."""
    stem = os.path.splitext(os.path.basename(str(path)))[0]
    head = stem.split("_")[0]
    if head.upper() == head and head.isalpha():
        return head
    # Names such as "PLATELET12345.jpg" or "BNE12345.jpg" (no underscore).
    return "".join(ch for ch in stem if ch.isalpha()).upper()


def _rows(found, class_names, domain, um_per_px, extra=None):
    label_of = {name: i for i, name in enumerate(class_names)}
    rows = []
    for path, folder, class_name in found:
        row = {
            "path": os.path.abspath(path),
            "label": label_of[class_name],
            "class_name": class_name,
            "domain": domain,
            "subject": "",
            "source_class": folder,
            "um_per_px": float("nan") if um_per_px is None else float(um_per_px),
        }
        if extra:
            row.update(extra(path, folder))
        rows.append(row)
    return rows


def read_class_folders(
    root,
    class_map,
    class_names=None,
    *,
    domain=None,
    um_per_px=None,
    strict=False,
    empty="error",
    verify=False,
    dedupe=True,
):
    """Reads any "folder per class" set (a hospital's own data) through a class map.

    Args:
        root: folder with one sub-folder per source class.
        class_map: dict source folder -> class name in `class_names`, or None to
            drop the folder's images (counted). Folders absent from the map are
            counted as unknown (or raise with `strict=True`).
        class_names: the ordered label space (default: the sorted mapped names).
        domain: value of the `domain` column (default: the folder's name).
        um_per_px: the images' pixel size in µm, or None when unknown.
        strict, empty, verify, dedupe: as in `tfcell.data.image_io.scan_class_folders`.

    Returns:
        A record table with extra columns `source_class` and `um_per_px`.

    Raises:
        ValueError: if the class map targets a name outside `class_names`.
    """
    root = pathlib.Path(root)
    if class_names is None:
        class_names = sorted({v for v in class_map.values() if v is not None})
    class_names = tuple(class_names)
    bad = sorted({v for v in class_map.values() if v is not None} - set(class_names))
    if bad:
        raise ValueError(
            f"class_map maps folders to {bad}, which are not in class_names {class_names}. "
            "Map them to a listed class or to None (drop)."
        )
    domain = root.name if domain is None else domain
    skips = records.SkipLog(f"wbc:{domain}")
    found = image_io.scan_class_folders(
        root, class_map, skips, strict=strict, empty=empty, verify=verify, dedupe=dedupe
    )
    return records.make_records(_rows(found, class_names, domain, um_per_px), class_names, skips)


def read_matek(root, *, label_space="harmonised", verify=False, dedupe=True, domain="matek"):
    """Reads Matek-19 (`AML-Cytomorphology_LMU/<ABBR>/*.tiff`, 15 abbreviations).

    Args:
        root: `AML-Cytomorphology_LMU/` or the folder holding it.
        label_space: "harmonised" (13 classes; PMB dropped and counted) or
            "native" (the 15 abbreviations).
        verify, dedupe: as in `scan_class_folders`.
        domain: value of the `domain` column.

    Returns:
        A record table (`source_class` = the abbreviation, `um_per_px` = 29/400).
    """
    root = pathlib.Path(root)
    if (root / "AML-Cytomorphology_LMU").is_dir():
        root = root / "AML-Cytomorphology_LMU"
    if label_space == "harmonised":
        class_map, class_names = MATEK_TO_HARMONISED, HARMONISED_CLASSES
    elif label_space == "native":
        class_map, class_names = {c: c for c in MATEK_CLASSES}, MATEK_CLASSES
    else:
        raise ValueError(f'label_space must be "harmonised" or "native"; received {label_space!r}.')
    return read_class_folders(
        root,
        class_map,
        class_names,
        domain=domain,
        um_per_px=UM_PER_PX["matek"],
        empty="skip",
        verify=verify,
        dedupe=dedupe,
    )


def read_int20(root, *, verify=False, dedupe=True, domain="int20"):
    """Reads INT-20 (folders such as `01-NORMO`, `15-SEG`) into the harmonised space.

    Folder names are matched case-insensitively; folders without a published
    correspondence are dropped and counted.
    """
    root = pathlib.Path(root)
    lower = {k.lower(): v for k, v in INT20_TO_HARMONISED.items()}
    class_map = {}
    with os.scandir(root) as entries:
        for entry in entries:
            if entry.is_dir() and not entry.name.startswith("."):
                class_map[entry.name] = lower.get(entry.name.lower())
    return read_class_folders(
        root,
        class_map,
        HARMONISED_CLASSES,
        domain=domain,
        um_per_px=UM_PER_PX["int20"],
        empty="skip",
        verify=verify,
        dedupe=dedupe,
    )


def read_acevedo(
    root,
    *,
    label_space="harmonised",
    verify=False,
    dedupe=True,
    domain="acevedo",
    um_per_px=UM_PER_PX["acevedo"],
):
    """Reads Acevedo-20 / PBC (8 class folders, sub-types in file-name prefixes).

    Args:
        root: the folder with `basophil/ ... platelet/` (e.g. `PBC_dataset_normal_DIB/`
            or ../shared/data/pbc_128).
        label_space: "harmonised" (13 classes by sub-type; IG and NEUTROPHIL without
            sub-type and platelets dropped, counted), "native" (the 8 folders) or
            "five" (neutrophil, lymphocyte, monocyte, eosinophil, basophil; the
            other folders dropped, counted).
        verify, dedupe: as in `scan_class_folders`.
        domain: value of the `domain` column.
        um_per_px: pixel size (default: native 360x363 images, 0.1 µm; use
            `UM_PER_PX["pbc_128"]` for ../shared/data/pbc_128).

    Returns:
        A record table with extra columns `subtype`, `source_class`, `um_per_px`.

    Raises:
        ValueError: if a file's sub-type prefix belongs to another folder (e.g. an
            `SNE_` file in `eosinophil/`), naming the file.
    """
    if label_space == "harmonised":
        class_names = HARMONISED_CLASSES
    elif label_space == "native":
        class_names = ACEVEDO_CLASSES
    elif label_space == "five":
        class_names = WBC5_CLASSES
    else:
        raise ValueError(
            f'label_space must be "harmonised", "native" or "five"; received {label_space!r}.'
        )
    root = pathlib.Path(root)
    skips = records.SkipLog(f"acevedo:{domain}")
    folder_map = {c: c for c in ACEVEDO_CLASSES}
    if label_space == "five":
        folder_map = {c: (c if c in WBC5_CLASSES else None) for c in ACEVEDO_CLASSES}
    found = image_io.scan_class_folders(root, folder_map, skips, verify=verify, dedupe=dedupe)
    label_of = {name: i for i, name in enumerate(class_names)}
    rows = []
    for path, folder, class_name in found:
        subtype = acevedo_subtype(path)
        if subtype not in ACEVEDO_SUBTYPES[folder]:
            known = [f for f, prefixes in ACEVEDO_SUBTYPES.items() if subtype in prefixes]
            if known:
                raise ValueError(
                    f"PBC file {path!r} has sub-type prefix {subtype!r}, which belongs in "
                    f"folder {known[0]!r}, not {folder!r}. Move it to its folder, or delete it."
                )
            skips.add(path, "unknown PBC file-name prefix")
            continue
        if label_space == "harmonised":
            class_name = ACEVEDO_TO_HARMONISED.get(subtype)
            if class_name is None:
                skips.add(path, "class outside the label space")
                continue
        rows.append(
            {
                "path": os.path.abspath(path),
                "label": label_of[class_name],
                "class_name": class_name,
                "domain": domain,
                "subject": "",
                "subtype": subtype,
                "source_class": folder,
                "um_per_px": float("nan") if um_per_px is None else float(um_per_px),
            }
        )
    return records.make_records(rows, class_names, skips)


def read_wbc_domains(root=None, domains=("pbc", "bccd", "jtsc"), *, verify=False, dedupe=True):
    """The real 5-class, 3-domain white-cell set of ../shared/data.

    Classes `WBC5_CLASSES` (neutrophil, lymphocyte, monocyte, eosinophil,
    basophil); domains PBC (`pbc_128/`, other PBC folders dropped and counted),
    BCCD (`wbc_domains/bccd/`) and JTSC (`wbc_domains/jtsc/`), each with its
    natural class imbalance (imbalanced domain generalisation).

    Args:
        root: the shared data folder (default: `tfcell.data.paths.shared_data_root()`).
        domains: which of "pbc", "pbc_native", "bccd", "jtsc" to read.
        verify, dedupe: as in `scan_class_folders`.

    Returns:
        One record table; `domain` is the domain key, `um_per_px` its pixel size
        (NaN where unknown: BCCD, JTSC), `source_class` the folder.
    """
    if root is None:
        from tfcell.data import paths

        root = paths.shared_data_root()
        if root is None:
            raise FileNotFoundError(
                "No shared data folder found: set TFCELL_SHARED_DATA to the folder that "
                "holds pbc_128/ and wbc_domains/."
            )
    root = pathlib.Path(root)
    unknown = sorted(set(domains) - set(WBC_DOMAIN_FOLDERS))
    if unknown:
        raise ValueError(f"Unknown domains {unknown}; choose from {sorted(WBC_DOMAIN_FOLDERS)}.")
    frames = []
    skips = records.SkipLog("wbc_domains")
    for domain in domains:
        folder, scale_key = WBC_DOMAIN_FOLDERS[domain]
        if domain.startswith("pbc"):
            frame = read_acevedo(
                root / folder,
                label_space="five",
                domain=domain,
                um_per_px=UM_PER_PX[scale_key],
                verify=verify,
                dedupe=dedupe,
            )
        else:
            frame = read_class_folders(
                root / folder,
                {c: c for c in WBC5_CLASSES},
                WBC5_CLASSES,
                domain=domain,
                um_per_px=UM_PER_PX[scale_key],
                verify=verify,
                dedupe=dedupe,
            )
        for reason, paths_ in frame.attrs["skipped"].items():
            for path in paths_:
                skips.add(path, reason)
        frames.append(frame)
    merged = pd.concat(frames, ignore_index=True)
    if "subtype" in merged:
        merged["subtype"] = merged["subtype"].fillna("")
    merged.attrs = {}
    merged.attrs["class_names"] = list(WBC5_CLASSES)
    merged.attrs["skipped"] = skips.as_dict()
    return merged
