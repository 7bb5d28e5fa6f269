"""A folder of cell images to AE-CFE latent codes, from a saved run, in one call.

```python
from tfcell.papers.aecfe import predict
out = predict.encode_folder("workdirs/aecfe_wbc", "/data/my_lab/cells")
out["codes"]   # (N, 50) latent codes, NaN rows where no central cell was found
```

reads the run's `config.json` (input contract: image size, field of view,
encoder layer, ROI grid, pooling), brings every image to the run's size (on its
field of view when `um_per_px` is given, else resized whole), detects the
central cell with the run's segmenter (`detector/model.keras`), pools its ROI
features, scales them per cell to [-1, 1] and encodes them with a saved
autoencoder (`autoencoders/r<repeat>/<method>/model.keras`). The codes are what
the run's random forests learn from; any classifier can use them.
"""

import json
import os

import numpy as np
import pandas as pd

from tfcell import models
from tfcell.data import physical_scale
from tfcell.papers.aecfe import detector

__all__ = ["IMAGE_SUFFIXES", "encode_folder", "encode_images", "run_config"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def run_config(workdir):
    """The run's config (a dict) from its `config.json`."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"No config.json in {workdir!r}: pass the --workdir of a finished "
            "reproductions/aecfe_wbc.py run."
        )
    with open(path) as f:
        return json.load(f)


def _model(workdir, *parts):
    path = os.path.join(workdir, *parts, "model.keras")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"No {path}: was the run finished (detector and autoencoders are saved as they "
            "are trained)?"
        )
    return models.load_model(path, compile=False)


def encode_images(workdir, images, method="ae_cfe", repeat=0, batch_size=64):
    """Latent codes of uint8/float images `(N, S, S, 3)` in [0, 255] at the run's
    size S (`config.json` `input_contract.image_size`).

    Returns:
        dict: `found` bool `(N,)`, `boxes` `(N, 4)` (y1, x1, y2, x2; -1 where
        none), `codes` float32 `(N, latent_dim)` (NaN rows where no cell was
        found, unless the run kept misses with `on_miss="whole_crop"`).
    """
    config = run_config(workdir)
    contract, det = config["input_contract"], config["detector"]
    size = int(contract["image_size"])
    images = np.asarray(images, "float32")
    if images.ndim != 4 or images.shape[1:3] != (size, size):
        raise ValueError(
            f"encode_images needs (N, {size}, {size}, 3) images in [0, 255] (the run's size); "
            f"received shape {images.shape}. encode_folder decodes files for you."
        )
    segmenter = _model(workdir, "detector")
    autoencoder = _model(workdir, "autoencoders", f"r{int(repeat)}", method)
    found = detector.detect_cells(
        segmenter, images, threshold=det["threshold"], max_distance=det["max_distance"],
        batch_size=batch_size,
    )  # fmt: skip
    usable, boxes = found["found"].copy(), found["boxes"].copy()
    if det.get("on_miss") == "whole_crop":
        boxes[~usable] = (0, 0, size, size)
        usable[:] = True
    codes = np.full((len(images), int(contract["latent_dim"])), np.nan, "float32")
    rows = np.flatnonzero(usable)
    if len(rows):
        features = detector.cell_features(
            segmenter, images[rows], boxes[rows], encoder_layer=contract["encoder_layer"],
            output_size=int(contract["output_size"]), pooling=contract["pooling"] or None,
            batch_size=batch_size,
        )  # fmt: skip
        scaled = np.asarray(models.minmax_features(features))
        codes[rows] = models.aecfe_encode(autoencoder, scaled, batch_size=batch_size)
    return {"found": found["found"], "boxes": found["boxes"], "codes": codes}


def encode_folder(workdir, folder, method="ae_cfe", repeat=0, um_per_px=None, batch_size=64):
    """Latent codes of every image under `folder` (recursively), in path order.

    Args:
        workdir: the run's `--workdir`.
        folder: a folder of single-cell crops (any layout, e.g. one sub-folder
            per class).
        method: whose autoencoder: "ae_cfe" (default), "ae_rf", "nd_ae_da", "aae_da".
        repeat: which run's autoencoder.
        um_per_px: the images' pixel size in um, to cut the run's field of view
            (`input_contract.field_um`) as the run did; None: resized whole.
        batch_size: prediction batch.

    Returns:
        dict: `paths` (list), and `found`, `boxes`, `codes` as `encode_images`.
    """
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"encode_folder: {folder!r} is not a folder.")
    paths = sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(folder)
        for name in names
        if name.lower().endswith(IMAGE_SUFFIXES)
    )
    if not paths:
        raise FileNotFoundError(
            f"encode_folder: no image ({', '.join(IMAGE_SUFFIXES)}) under {folder!r}."
        )
    contract = run_config(workdir)["input_contract"]
    field = contract.get("field_um") if um_per_px is not None else None
    table = pd.DataFrame(
        {"path": paths, "um_per_px": float("nan") if um_per_px is None else float(um_per_px)}
    )
    decoded = physical_scale.to_field_of_view(table, int(contract["image_size"]), field)
    images = np.stack(decoded["image"].to_list())
    out = encode_images(workdir, images, method=method, repeat=repeat, batch_size=batch_size)
    return {"paths": paths, **out}
