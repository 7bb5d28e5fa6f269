"""MedMNIST `.npz` files (bloodmnist, pathmnist, breastmnist, ...) as arrays or record tables.

Each file holds `{train,val,test}_{images,labels}`; images are uint8 `(N, H, W)`
(grey) or `(N, H, W, 3)`, labels `(N, 1)`. Grey images are expanded to 3 channels.

Reference: [Yang et al., 2023](https://doi.org/10.1038/s41597-022-01721-8) (MedMNIST v2).
"""

import os
import pathlib

import numpy as np

from tfcell.data import kather, records, wbc

__all__ = ["MEDMNIST_CLASSES", "load_medmnist", "read_medmnist"]

# Label names from the MedMNIST INFO table.
MEDMNIST_CLASSES = {
    # BloodMNIST is Acevedo-20 (PBC) and PathMNIST is Kather's NCT-CRC-HE-100K,
    # so their label spaces are those readers' class lists.
    "bloodmnist": wbc.ACEVEDO_CLASSES,
    "pathmnist": kather.KATHER_CLASSES,
    "breastmnist": ("malignant", "normal_benign"),
}

_SPLITS = ("train", "val", "test")


def _resolve(path_or_name, cache_dir):
    path = pathlib.Path(path_or_name)
    if path.suffix == ".npz":
        if not path.is_file():
            raise FileNotFoundError(
                f"MedMNIST file {str(path)!r} does not exist. Download it with "
                f"tfcell.data.download.fetch({path.stem!r}, cache_dir) or from "
                "https://zenodo.org/records/10519652."
            )
        return path
    name = str(path_or_name)
    candidate = pathlib.Path(cache_dir or ".") / f"{name}.npz"
    if candidate.is_file():
        return candidate
    raise FileNotFoundError(
        f"MedMNIST {name!r} not found at {str(candidate)!r}. Download it with "
        f"tfcell.data.download.fetch({name!r}, {str(cache_dir or '.')!r}) or put "
        f"{name}.npz there (https://zenodo.org/records/10519652)."
    )


def load_medmnist(path_or_name, split="train", *, cache_dir=None):
    """Loads one split as arrays.

    Args:
        path_or_name: a `.npz` path, or a name ("bloodmnist") looked up in `cache_dir`.
        split: "train", "val" or "test".
        cache_dir: folder holding `<name>.npz` when a name is given.

    Returns:
        `(images, labels)`: uint8 `(N, H, W, 3)` and int64 `(N,)`.

    Raises:
        ValueError: for an unknown split or a file without the split's keys.
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}; received {split!r}.")
    path = _resolve(path_or_name, cache_dir)
    with np.load(path) as data:
        keys = (f"{split}_images", f"{split}_labels")
        missing = [k for k in keys if k not in data.files]
        if missing:
            raise ValueError(
                f"MedMNIST file {str(path)!r} lacks keys {missing} (it has {data.files}); "
                "it is not a MedMNIST .npz or is damaged: re-download it."
            )
        images = np.asarray(data[keys[0]])
        labels = np.asarray(data[keys[1]])
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    if images.dtype != np.uint8:
        images = np.clip(images, 0, 255).astype(np.uint8)
    if labels.ndim == 2 and labels.shape[1] > 1:
        raise ValueError(
            f"MedMNIST file {str(path)!r} has multi-label labels {labels.shape}; tfcell "
            "readers support the multi-class sets (bloodmnist, pathmnist, breastmnist)."
        )
    labels = labels.reshape(-1).astype(np.int64)
    if len(labels) != len(images):
        raise ValueError(
            f"MedMNIST file {str(path)!r}: {len(images)} images but {len(labels)} labels in "
            f"split {split!r}; re-download it."
        )
    return images, labels


def read_medmnist(path_or_name, split="train", *, cache_dir=None, class_names=None):
    """Loads one split as a record table with in-memory images.

    Returns:
        A record table with `path` "" and an extra column `image` (a uint8
        `(H, W, 3)` view per row); `domain` is the dataset name; `subject` "".
    """
    images, labels = load_medmnist(path_or_name, split, cache_dir=cache_dir)
    name = os.path.splitext(os.path.basename(str(path_or_name)))[0]
    if class_names is None:
        count = int(labels.max()) + 1 if len(labels) else 0
        class_names = MEDMNIST_CLASSES.get(name, tuple(str(i) for i in range(count)))
    class_names = tuple(class_names)
    rows = [
        {
            "path": "",
            "label": int(label),
            "class_name": class_names[int(label)],
            "domain": name,
            "subject": "",
            "split": split,
            "index": i,
            "image": images[i],
        }
        for i, label in enumerate(labels)
    ]
    return records.make_records(rows, class_names, records.SkipLog(f"medmnist:{name}"))
