"""Invasive ductal carcinoma (IDC) 50x50 H&E patches, read in their published layout.

`IDC_regular_ps50_idx5/<patient>/<0|1>/<patient>_idx5_x<X>_y<Y>_class<k>.png`
(Janowczyk & Madabhushi 2016; Cruz-Roa et al. 2014). The root may also be the
folder that directly holds the patient folders. Some patches at slide edges are
smaller than 50x50: `small_patches` keeps them for padding (their size is in
the `height` and `width` columns) or skips them, counted either way.

Padding happens when the images are decoded, with `pad_small=(50, 50)`
(`(IDC_PATCH_SIZE, IDC_PATCH_SIZE)`): `tfcell.data.decoded_images(frame, size,
pad_small=(50, 50))` or `from_records(..., pad_small=(50, 50))` pad an edge patch
with white (255) at the bottom and right to 50x50, never stretch it, then resize
to `size`. The default `pad_small=True` pads to the *target* size instead: at
224 px it would put every 50x50 patch in a white 224 canvas, at 32 px it would
stretch the edge patches; pass `(50, 50)` for IDC.

Reference: [Janowczyk & Madabhushi, 2016](https://doi.org/10.4103/2153-3539.186902).
"""

import os
import pathlib
import re

from tfcell.data import image_io, records

__all__ = ["IDC_CLASSES", "IDC_FOLDER", "IDC_PATCH_SIZE", "parse_idc_name", "read_idc"]

IDC_CLASSES = ("non_idc", "idc")
IDC_FOLDER = "IDC_regular_ps50_idx5"
IDC_PATCH_SIZE = 50

_NAME = re.compile(r"^(?P<patient>\d+)_idx5_x(?P<x>\d+)_y(?P<y>\d+)_class(?P<label>[01])\.png$")


def parse_idc_name(name):
    """Parses `<patient>_idx5_x<X>_y<Y>_class<k>.png` into a dict, or None."""
    match = _NAME.match(os.path.basename(name))
    if match is None:
        return None
    return {
        "patient": match["patient"],
        "x": int(match["x"]),
        "y": int(match["y"]),
        "label": int(match["label"]),
    }


def _patients_root(root):
    root = pathlib.Path(root)
    if (root / IDC_FOLDER).is_dir():
        return root / IDC_FOLDER
    if root.is_dir():
        return root
    raise FileNotFoundError(
        f"IDC folder {str(root)!r} does not exist. Download IDC_regular_ps50_idx5 "
        "(Janowczyk & Madabhushi 2016, http://andrewjanowczyk.com/use-case-6-invasive-"
        "ductal-carcinoma-idc-segmentation/) and pass the folder that holds it or its "
        "patient folders."
    )


def read_idc(root, *, small_patches="pad", verify=False, domain="idc"):
    """Reads the IDC patches with patient ids, patch coordinates and sizes.

    Args:
        root: `IDC_regular_ps50_idx5/`, its parent, or any folder whose
            sub-folders are patient ids holding `0/` and `1/`.
        small_patches: "pad" (default; keep them, the count is in
            `attrs["small_patches"]`; decode with `pad_small=(50, 50)`, e.g.
            `tfcell.data.decoded_images(frame, size, pad_small=(50, 50))`, which
            pads them with white at the bottom and right to 50x50, then resizes
            to `size`), "skip" (count them in the skip log) or "error".
        verify: decode every image and skip (count) the corrupt ones.
        domain: value of the `domain` column.

    Returns:
        A record table with extra columns `x`, `y`, `height`, `width`;
        `subject` is the patient id.

    Raises:
        ValueError: if a file's class or patient in its name disagrees with its
            folders (naming the file), or for a small patch with
            `small_patches="error"`.
    """
    if small_patches not in ("pad", "skip", "error"):
        raise ValueError(
            f'small_patches must be "pad", "skip" or "error"; received {small_patches!r}.'
        )
    root = _patients_root(root)
    skips = records.SkipLog("idc")
    rows = []
    small = 0
    with os.scandir(root) as entries:
        patients = sorted(entries, key=lambda e: e.name)
    for patient in patients:
        if not patient.is_dir():
            skips.add(patient.path, "not a patient folder")
            continue
        with os.scandir(patient.path) as entries:
            class_dirs = sorted(entries, key=lambda e: e.name)
        for class_dir in class_dirs:
            if not class_dir.is_dir() or class_dir.name not in ("0", "1"):
                skips.add(class_dir.path, "not a class folder (0 or 1)")
                continue
            folder_label = int(class_dir.name)
            with os.scandir(class_dir.path) as entries:
                files = sorted(entries, key=lambda e: e.name)
            for file in files:
                if not file.is_file() or not image_io.is_image_file(file.name):
                    skips.add(file.path, "not an image file")
                    continue
                parsed = parse_idc_name(file.name)
                if parsed is None:
                    skips.add(file.path, "file name not in the IDC pattern")
                    continue
                if parsed["label"] != folder_label:
                    raise ValueError(
                        f"IDC file {file.path!r} says class{parsed['label']} in its name "
                        f"but lies in folder {class_dir.name!r}: the dataset copy is "
                        "inconsistent. Move the file to the folder of its class, or delete it."
                    )
                if parsed["patient"] != patient.name:
                    raise ValueError(
                        f"IDC file {file.path!r} names patient {parsed['patient']!r} but "
                        f"lies in patient folder {patient.name!r}. Move it to its patient's "
                        "folder, or delete it (patient-level splits rely on this)."
                    )
                if file.stat().st_size == 0:
                    skips.add(file.path, "empty file (0 bytes)")
                    continue
                try:
                    height, width = image_io.image_size(file.path)
                except image_io.ImageReadError:
                    skips.add(file.path, "corrupt or truncated image")
                    continue
                if verify and not image_io.verify_image(file.path):
                    skips.add(file.path, "corrupt or truncated image")
                    continue
                if height < IDC_PATCH_SIZE or width < IDC_PATCH_SIZE:
                    if small_patches == "error":
                        raise ValueError(
                            f"IDC patch {file.path!r} is {height}x{width}, smaller than "
                            f"{IDC_PATCH_SIZE}x{IDC_PATCH_SIZE}. Pass small_patches='pad' "
                            "(pad in the pipeline) or 'skip'."
                        )
                    if small_patches == "skip":
                        skips.add(file.path, "patch smaller than 50x50")
                        continue
                    small += 1
                rows.append(
                    {
                        "path": os.path.abspath(file.path),
                        "label": parsed["label"],
                        "class_name": IDC_CLASSES[parsed["label"]],
                        "domain": domain,
                        "subject": parsed["patient"],
                        "x": parsed["x"],
                        "y": parsed["y"],
                        "height": height,
                        "width": width,
                    }
                )
    frame = records.make_records(rows, IDC_CLASSES, skips)
    frame.attrs["small_patches"] = small
    if small:
        records.logger.warning(
            "idc: %d patch(es) smaller than %dx%d kept; decode with pad_small=(50, 50) to pad them.",
            small,
            IDC_PATCH_SIZE,
            IDC_PATCH_SIZE,
        )
    return frame
