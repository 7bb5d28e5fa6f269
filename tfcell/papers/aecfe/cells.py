"""The detector stage of an AE-CFE run: one segmenter, every cell, its features.

```
segmenter    = train_segmenter(80 % of the masked crops)      # once per run
dice         = evaluate_segmenter(the other 20 %)             # held-out Dice
found, boxes = detect_cells(segmenter, every image)           # misses counted per domain
h_i          = cell_features(segmenter, image_i, box_i)       # ROI-align on the encoder
r_i          = crop_and_resize(image_i, box_i, r) / 255        # the image decoder's target
```

Cached in `<workdir>/detector/` (`model.keras`, `cells.npz`, `summary.json`)
and reused when the same command resumes. A crop without a central cell is
counted per domain and, with `config.detector.on_miss="drop"` (the thesis:
65,693 cells of 77,363 images), left out of every table; `"whole_crop"` keeps
it with the whole image as its box (counted too).
"""

import dataclasses
import hashlib
import json
import logging
import os
import time

import numpy as np
import tensorflow as tf
from sklearn import model_selection

from tfcell import models
from tfcell.papers.aecfe import data as data_lib
from tfcell.papers.aecfe import detector

__all__ = ["Cells", "crops_of", "detector_config", "resnet_features", "run_cells"]

logger = logging.getLogger("tfcell.papers.aecfe")

_POLICIES = ("drop", "whole_crop")


@dataclasses.dataclass
class Cells:
    """Every image's detection, ROI features and cell crop.

    Attributes:
        found: bool `(N,)`, a central cell was detected.
        usable: bool `(N,)`, the row takes part in the tables (`found`, or every
            row with `on_miss="whole_crop"`).
        boxes: int `(N, 4)` pixel boxes (y1, x1, y2, x2), max exclusive.
        features: float32 `(N, C)` or `(N, 14, 14, C)` ROI features `h_i`
            (zeros where not usable).
        crops: uint8 `(N, r, r, 3)` box crops (the image decoder's targets).
        summary: the detector's held-out Dice and per-domain detection counts.
    """

    found: np.ndarray
    usable: np.ndarray
    boxes: np.ndarray
    features: np.ndarray
    crops: np.ndarray
    summary: dict

    @property
    def vectors(self):
        """`(N, C)` pooled features: R-CNN-RF's input (maps averaged over the grid)."""
        f = self.features
        return f if f.ndim == 2 else f.mean(axis=(1, 2))


def detector_config(config):
    """The config values the detector stage depends on (its cache key)."""
    keys = ("masks", "mask_domain", "width", "depth", "epochs", "batch_size", "learning_rate",
            "augment", "test_fraction", "encoder_layer", "output_size", "pooling", "on_miss",
            "threshold", "max_distance")  # fmt: skip
    out = {k: config.detector.get(k) for k in keys}
    out.update(image_size=int(config.data.image_size),
               reconstruction_size=int(config.model.reconstruction_size), seed=int(config.seed))  # fmt: skip
    return out


def _fingerprint(config, hashes):
    blob = json.dumps(detector_config(config), sort_keys=True) + "".join(hashes)
    return hashlib.sha1(blob.encode()).hexdigest()


def crops_of(images, boxes, size, batch=512):
    """uint8 `(N, size, size, 3)` bilinear crops of pixel boxes (max exclusive),
    normalised as `tfcell.models.roi_features` normalises them."""
    images = np.asarray(images)
    height, width = images.shape[1:3]
    scale = np.array([height - 1, width - 1, height - 1, width - 1], "float32")
    norm = (np.asarray(boxes, "float32") - np.array([0, 0, 1, 1], "float32")) / scale
    out = np.zeros((len(images), size, size, 3), "uint8")
    for start in range(0, len(images), batch):
        part = slice(start, start + batch)
        crops = tf.image.crop_and_resize(
            tf.cast(images[part], tf.float32), norm[part], tf.range(len(norm[part])), (size, size)
        )
        out[part] = np.asarray(tf.cast(tf.round(tf.clip_by_value(crops, 0, 255)), tf.uint8))
    return out


def _train(config, records, images):
    """`(segmenter, summary)`: trained on 80 % of the masked crops, Dice on 20 %."""
    d = config.detector
    pairs, masks, labels, where = data_lib.detector_pairs(config, records, images)
    index = np.arange(len(pairs))
    try:
        train, test = model_selection.train_test_split(
            index, test_size=d.test_fraction, random_state=config.seed, stratify=labels
        )
    except ValueError:  # A class with one crop (JTSC: one basophil).
        train, test = model_selection.train_test_split(
            index, test_size=d.test_fraction, random_state=config.seed
        )
    start = time.perf_counter()
    segmenter = detector.train_segmenter(
        pairs[train], masks[train], width=int(d.width), depth=int(d.depth),
        epochs=int(d.epochs), batch_size=int(d.batch_size), seed=int(config.seed),
        learning_rate=float(d.learning_rate), augment=d.augment or None,
        num_classes=3, verbose=config.training.verbose,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    dice = detector.evaluate_segmenter(segmenter, pairs[test], masks[test], threshold=d.threshold)
    summary = {
        "masks": where,
        "train_crops": int(len(train)),
        "test_crops": int(len(test)),
        "dice": dice,
        "train_time_s": seconds,
        "epochs": int(d.epochs),
        "loss": [float(v) for v in segmenter.history.history.get("loss", [])],
    }
    return segmenter, summary


def _write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


_MEMORY = {}


def run_cells(config, records, images, hashes, workdir=None):
    """The run's `Cells` (see the module docstring); cached on disk and in memory.

    Args:
        config: the run's config (`config.detector`, `config.data.image_size`,
            `config.model.reconstruction_size`).
        records: the run's table (`data.run_table`).
        images: its uint8 images `(N, S, S, 3)`.
        hashes: `data.image_hashes(images)` (the cache key).
        workdir: the run's folder, or None for memory only.
    """
    d = config.detector
    if d.on_miss not in _POLICIES:
        raise ValueError(
            f"config.detector.on_miss must be one of {_POLICIES}; received {d.on_miss!r}."
        )
    key = _fingerprint(config, hashes)
    folder = os.path.join(workdir, "detector") if workdir else None
    if (folder, key) in _MEMORY:
        return _MEMORY[(folder, key)]
    cells_path = os.path.join(folder, "cells.npz") if folder else None
    summary_path = os.path.join(folder, "summary.json") if folder else None
    if cells_path and os.path.exists(cells_path) and os.path.exists(summary_path):
        with np.load(cells_path) as f:
            if str(f["key"]) == key:
                with open(summary_path) as s:
                    summary = json.load(s)
                cells = Cells(
                    f["found"], f["usable"], f["boxes"], f["features"], f["crops"], summary
                )
                _MEMORY.clear()
                _MEMORY[(folder, key)] = cells
                return cells
    model_path = os.path.join(folder, "model.keras") if folder else None
    training_path = os.path.join(folder, "training.json") if folder else None
    if model_path and os.path.exists(model_path) and os.path.exists(training_path):
        segmenter = models.load_model(model_path, compile=False)
        with open(training_path) as f:
            summary = json.load(f)
        print(f"Detector: reusing {model_path}", flush=True)
    else:
        print("Detector: training the U-Net cell segmenter ...", flush=True)
        segmenter, summary = _train(config, records, images)
        if folder:
            os.makedirs(folder, exist_ok=True)
            tmp = os.path.join(folder, "model.tmp.keras")
            segmenter.save(tmp)
            os.replace(tmp, model_path)
            _write_json(training_path, summary)
    domains = records["domain"].astype(str).to_numpy()
    found = detector.detect_cells(
        segmenter, images, domains, threshold=d.threshold, max_distance=d.max_distance
    )
    usable = found["found"].copy()
    boxes = found["boxes"].copy()
    if d.on_miss == "whole_crop":
        height, width = images.shape[1:3]
        boxes[~usable] = (0, 0, height, width)
        usable[:] = True
    rows = np.flatnonzero(usable)
    if not len(rows):
        raise RuntimeError(
            f"The detector found no central cell in any of {len(images)} images "
            f"({found['summary']}); check its held-out Dice ({summary.get('dice')}) or pass "
            "--config.detector.on_miss=whole_crop."
        )
    values = detector.cell_features(
        segmenter, images[rows], boxes[rows], encoder_layer=d.encoder_layer,
        output_size=int(d.output_size), pooling=d.pooling or None,
    )  # fmt: skip
    features = np.zeros((len(images), *values.shape[1:]), "float32")
    features[rows] = values
    size = int(config.model.reconstruction_size)
    crops = np.zeros((len(images), size, size, 3), "uint8")
    crops[rows] = crops_of(images[rows], boxes[rows], size)
    summary = {
        **summary,
        "detection": found["summary"],
        "on_miss": d.on_miss,
        "feature_shape": list(features.shape[1:]),
        "encoder_layer": d.encoder_layer,
    }
    for domain, counts in found["summary"].items():
        if counts["missed"]:
            print(f"Detector: no central cell in {counts['missed']} of {counts['images']} "
                  f"{domain} images ({d.on_miss})", flush=True)  # fmt: skip
    cells = Cells(found["found"], usable, boxes, features, crops, summary)
    if folder:
        tmp = os.path.join(folder, "cells.tmp.npz")
        np.savez(tmp, key=key, found=cells.found, usable=usable, boxes=boxes,
                 features=features, crops=crops)  # fmt: skip
        os.replace(tmp, cells_path)
        _write_json(summary_path, summary)
    _MEMORY.clear()
    _MEMORY[(folder, key)] = cells
    return cells


def resnet_features(config, images, hashes, workdir=None, batch_size=32):
    """ResNet-RF's features: ImageNet ResNet-50 pooled features of every image
    (resized to `config.model.resnet_image_size`), cached in
    `<workdir>/detector/resnet.npz`. Needs `config.model.resnet_weights`."""
    weights = config.model.resnet_weights
    if not weights or not os.path.isfile(weights):
        raise FileNotFoundError(
            f"ResNet-RF needs ImageNet weights from a local file; config.model.resnet_weights="
            f"{weights!r} is not a file."
        )
    key = hashlib.sha1(("".join(hashes) + weights).encode()).hexdigest()
    path = os.path.join(workdir, "detector", "resnet.npz") if workdir else None
    if path and os.path.exists(path):
        with np.load(path) as f:
            if str(f["key"]) == key:
                return f["features"]
    size = int(config.model.resnet_image_size)
    model = models.resnet50((size, size, 3), weights=weights)
    dataset = (
        tf.data.Dataset.from_tensor_slices(images)
        .batch(batch_size)
        .map(lambda x: tf.image.resize(tf.cast(x, tf.float32), (size, size)))
    )
    features = np.asarray(model.predict(dataset, verbose=0), "float32")
    if path:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.savez(path, key=key, features=features)
    return features
