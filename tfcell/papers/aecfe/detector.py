"""The AE-CFE cell detector: a U-Net cell segmenter in place of Mask R-CNN.

AE-CFE starts from a Mask R-CNN (ResNet-101 FPN, matterport's Keras code)
trained on about 1,500 Matek-19 crops annotated with cell masks (thesis Sec.
3.2), which detects the white cell of every crop (85 % of 77,363 images) and
gives its 256 x 14 x 14 ROI features `h_i` (Sec. 2.10). Keras 3 has no Mask
R-CNN, and every crop of these sets is about one centred cell, so here:

```
segmenter = unet(num_classes=3)                  # bg / cytoplasm / nucleus logits
train on JTSC crops + masks (jtsc_masks)          # Adam 1e-3 (thesis Sec. 3.2.2)
p_cell = 1 - softmax(segmenter(image))[..., 0]    # cell = cytoplasm + nucleus
mask, box = central_cell(p_cell)                  # the component nearest the centre
h_i = roi_features(encoder_map(image), box)       # 14 x 14 ROI-align, as Mask R-CNN
```

The JTSC masks hold three classes (0 background, 128 cytoplasm, 255 nucleus;
`tfcell.papers.aecfe.masks`), so the segmenter learns three and a cell is
cytoplasm + nucleus; "detected" means the predicted cell foreground has a
component near the crop's centre. Crops and masks go through the same
field-of-view crop as every domain (`tfcell.data.physical_scale`, as
`tfcell.papers.boda.data.wbc_records` applies it), so the segmenter sees cells
at the physical scale it is later applied at.

Note:
    - Deliberate differences from the thesis: the detector is trained on JTSC
      (the masks available here), not on Matek-19; a U-Net (`tfcell.models.unet`)
      replaces ResNet-101 FPN + RPN, and the "detection" is the connected
      component nearest the crop centre instead of the RPN's best box.
    - The augmentation is the thesis's set (Sec. 2.4.2) with its geometry
      restricted to what a mask can follow exactly: the 8 flips and quarter
      turns on image and mask together, then, on half the samples (imgaug
      `Sometimes(0.5)`), colour temperature, linear contrast about 127 and
      bilateral blur (p 0.5) on the image only (`tfcell.data.augmentation`,
      their defaults; the thesis gives no ranges). No free rotation or zoom: the
      field of view fixes the scale in micrometres.
    - `h_i` comes from the U-Net's bottleneck (stride `2**depth`; with width 16
      and depth 4 it has the thesis's 256 channels); Mask R-CNN picks an FPN
      level by box size. Any named layer can be chosen (`encoder_layer`).
"""

import math

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from keras import ops
from scipy import ndimage

from tfcell import models, training
from tfcell.data import augmentation, nuclei, splits
from tfcell.evaluation import segmentation

# The data side lives in `masks`; re-exported so `detector.read_jtsc_masks` works.
from tfcell.papers.aecfe.masks import MASK_ENCODING, load_pairs, read_jtsc_masks

__all__ = [
    "MASK_ENCODING",
    "cell_features",
    "cell_probability",
    "central_cell",
    "detect_cells",
    "evaluate_segmenter",
    "held_out_dice",
    "load_pairs",
    "read_jtsc_masks",
    "train_segmenter",
]


def _resize(images, masks, image_size):
    size = (int(image_size), int(image_size))
    images = [tf.image.resize(np.asarray(x, "float32"), size).numpy() for x in images]
    masks = [
        tf.image.resize(np.asarray(m, "uint8")[..., None], size, method="nearest").numpy()[..., 0]
        for m in masks
    ]
    return np.clip(np.stack(images), 0.0, 255.0), np.stack(masks)


def _photometric(seed):
    """The thesis's colour and blur operations on half the samples (image only)."""
    inner = keras.layers.Pipeline(
        [
            augmentation.RandomColorTemperature(seed=seed),
            augmentation.RandomLinearContrast(seed=seed + 1),
            augmentation.RandomBilateralBlur(rate=0.5, seed=seed + 2),
        ]
    )
    return augmentation.RandomApply(inner, rate=0.5, seed=seed + 3)


def _dataset(images, masks, batch_size, augment, seed):
    dataset = tf.data.Dataset.from_tensor_slices((images, masks))
    dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if augment:
        dihedral = augmentation.RandomDihedral()
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

        def joint(batch, pair_seed):  # One permutation of image and mask pixels.
            image, mask = batch
            both = dihedral(tf.concat([image, mask[..., None]], axis=-1), pair_seed)
            return both[..., :3], both[..., 3]

        dataset = tf.data.Dataset.zip(dataset, seeds).map(joint, tf.data.AUTOTUNE)
    if augment == "thesis":
        colour = _photometric(seed)
        # Sequential on purpose: the layers' seed streams then repeat run to run.
        dataset = dataset.map(lambda image, mask: (colour(image), mask))
    return dataset.prefetch(tf.data.AUTOTUNE)


def train_segmenter(
    images,
    masks,
    *,
    width=16,
    depth=4,
    epochs=26,
    batch_size=8,
    image_size=None,
    seed=0,
    learning_rate=1e-3,
    augment="thesis",
    num_classes=None,
    verbose=0,
):
    """Trains the U-Net cell segmenter on crops and class masks.

    Args:
        images: `(N, H, W, 3)` crops in [0, 255] (a list when sizes differ and
            `image_size` is set).
        masks: `(N, H, W)` class indices (0 background; JTSC: 1 cytoplasm,
            2 nucleus, `load_pairs`; a binary mask gives a 2-class segmenter).
        width, depth: the U-Net's first-level filters and poolings (CPU: 8-16,
            4; `width * 2**depth` bottleneck channels, 256 as Mask R-CNN's).
        epochs: 26, the thesis's Mask R-CNN schedule (Sec. 3.2.2).
        batch_size: 8 (the thesis gives none).
        image_size: None (the arrays' size, a multiple of `2**depth`) or a side
            to resize to (images bilinear, masks nearest).
        seed: weights, shuffling and augmentation.
        learning_rate: Adam's, 1e-3 (thesis Sec. 3.2.2).
        augment: "thesis" (flips and quarter turns on image and mask, then the
            thesis's colour operations on half the images), "dihedral" (the
            geometry only) or None.
        num_classes: default `max(2, masks.max() + 1)`.
        verbose: `fit`'s verbosity.

    Returns:
        The trained, compiled `keras.Model` (images `(N, H, W, 3)` of any side
        divisible by `2**depth` -> logits `(N, H, W, num_classes)`); its
        `history` holds the losses.
    """
    if augment not in ("thesis", "dihedral", None, False):
        raise ValueError(f'augment must be "thesis", "dihedral" or None; received {augment!r}.')
    if len(images) != len(masks) or not len(images):
        raise ValueError(
            f"train_segmenter needs as many masks as images (> 0); received {len(images)} "
            f"images and {len(masks)} masks."
        )
    if image_size is not None:
        images, masks = _resize(images, masks, image_size)
    images = np.asarray(images, "float32")
    masks = np.asarray(masks, "float32")
    if masks.shape != images.shape[:3]:
        raise ValueError(
            f"masks {masks.shape} must be (N, H, W) of the images {images.shape}; pass "
            "image_size to resize both."
        )
    if num_classes is None:
        num_classes = max(2, int(masks.max()) + 1)
    keras.utils.set_random_seed(seed)
    model = models.unet((None, None, 3), num_classes=num_classes, width=width, depth=depth)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    size = images.shape[1:3]
    if size[0] % 2**depth or size[1] % 2**depth:
        raise ValueError(
            f"Images of {size} px do not divide by 2**depth = {2**depth}; pass image_size."
        )
    dataset = _dataset(images, masks, int(batch_size), augment or None, seed)
    training.fit(model, dataset, epochs=int(epochs), shuffle=False, verbose=verbose)
    return model


def cell_probability(segmenter, images, batch_size=32):
    """Cell (every class but background) probability `(N, H, W)` of crops."""
    logits = segmenter.predict(np.asarray(images, "float32"), batch_size=batch_size, verbose=0)
    return 1.0 - ops.convert_to_numpy(ops.softmax(logits, axis=-1))[..., 0]


def central_cell(probability_or_mask, threshold=0.5, min_size=None, max_distance=0.25):
    """The connected component nearest the crop centre: `(mask, box)` or None.

    ```
    components = instances_from_prediction(p > threshold, min_size)  # 4-connected
    distance(c) = min over pixels of c of |pixel - centre|   # 0 if c covers it
    pick the smallest distance (ties: the nearer centroid)
    None if nothing is left or distance > max_distance * min(H, W)
    ```

    Args:
        probability_or_mask: `(H, W)` cell probabilities (float) or a mask
            (`> 0` is cell).
        threshold: probabilities above it are cell.
        min_size: smallest component in pixels (default 1 % of the crop; the
            smallest JTSC cell covers 12 %).
        max_distance: how far from the centre (a fraction of the shorter side)
            the chosen component may lie; None for anywhere. A crop is about
            its central cell, so a lone red cell at the border is "not found".

    Returns:
        `(mask, box)`: a bool `(H, W)` mask and `(y1, x1, y2, x2)` ints in
        pixels, max exclusive; or None when no component qualifies (callers
        count these, `detect_cells`).
    """
    array = np.asarray(probability_or_mask)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    height, width = array.shape[:2]
    if min_size is None:
        min_size = max(1, int(0.01 * height * width))
    labels = segmentation.instances_from_prediction(array, threshold, min_size)
    found = nuclei.instances_from_mask(labels)
    if not len(found["ids"]):
        return None
    labels, ids = found["instance_map"], found["ids"]
    centre = np.array([(height - 1) / 2.0, (width - 1) / 2.0])
    rows, cols = np.indices((height, width))
    squared = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2
    nearest = np.asarray(ndimage.minimum(squared, labels, ids)).reshape(-1)
    centroid = ((found["centroids"] - centre) ** 2).sum(axis=1)
    pick = int(np.lexsort((centroid, nearest))[0])
    if max_distance is not None and math.sqrt(nearest[pick]) > max_distance * min(height, width):
        return None
    box = tuple(int(v) for v in found["boxes"][pick])
    return labels == ids[pick], box


def detect_cells(segmenter, images, domains=None, batch_size=32, **central_kwargs):
    """The central cell of every crop, and the detected fraction per domain.

    Args:
        segmenter: a `train_segmenter` model.
        images: `(N, H, W, 3)` crops in [0, 255] on one scale.
        domains: `(N,)` domain names for the summary (default: all "all").
        batch_size: prediction batch.
        **central_kwargs: `central_cell`'s threshold, min_size, max_distance.

    Returns:
        dict with `found` bool `(N,)`, `masks` bool `(N, H, W)` (all False where
        not found), `boxes` int `(N, 4)` (y1, x1, y2, x2, max exclusive; -1 where
        not found) and `summary`: `{domain: {"images", "detected", "missed",
        "fraction"}}` plus "all" (the thesis: 85 % detected over three sets).

    Note:
        "Detected" says a cell-like component lies near the crop's centre, not
        that it is the right cell: only the JTSC crops have masks to check that
        (`evaluate_segmenter`'s `central_dice`).
    """
    probability = cell_probability(segmenter, images, batch_size)
    count = len(probability)
    found = np.zeros(count, bool)
    masks = np.zeros(probability.shape, bool)
    boxes = np.full((count, 4), -1, np.int64)
    for i, p in enumerate(probability):
        result = central_cell(p, **central_kwargs)
        if result is not None:
            found[i] = True
            masks[i], boxes[i] = result
    domains = np.full(count, "all") if domains is None else np.asarray(domains).astype(str)
    if len(domains) != count:
        raise ValueError(f"domains has {len(domains)} entries for {count} images.")
    frame = pd.DataFrame({"domain": domains, "found": found})
    summary = {}
    for name, part in [*frame.groupby("domain", sort=True), ("all", frame)]:
        detected = int(part["found"].sum())
        summary[str(name)] = {
            "images": len(part),
            "detected": detected,
            "missed": len(part) - detected,
            "fraction": detected / len(part),
        }
    return {"found": found, "masks": masks, "boxes": boxes, "summary": summary}


def cell_features(
    segmenter,
    images,
    boxes,
    encoder_layer="bottleneck_relu2",
    output_size=14,
    pooling="avg",
    batch_size=32,
):
    """ROI features `h_i` of one box per crop from the segmenter's encoder.

    ```
    F = segmenter up to encoder_layer (images)          # (N, H/2**depth, W/2**depth, C)
    h_i = roi_features(F, boxes, box_indices=arange(N), output_size,
                       image_size=(H, W), pooling)      # 14 x 14 ROI-align
    ```

    Args:
        segmenter: a `train_segmenter` model (`tfcell.models.unet` layer names).
        images: `(N, H, W, 3)` crops in [0, 255].
        boxes: `(N, 4)` pixel boxes (y1, x1, y2, x2), max exclusive (as
            `central_cell` gives), box i on image i.
        encoder_layer: the feature map; default the U-Net bottleneck (the
            deepest encoder map, stride `2**depth`, `width * 2**depth`
            channels); e.g. "down2_relu2" for stride 4 like Mask R-CNN's P2.
        output_size: the ROI-align grid, 14 as Mask R-CNN's mask branch.
        pooling: "avg" for `(N, C)` vectors (the dense AE-CFE autoencoder), or
            None for the `(N, 14, 14, C)` maps (its convolutional variant,
            `aecfe_autoencoder(feature_shape=(14, 14, C))`, as the thesis).
        batch_size: prediction batch.

    Returns:
        float32 `(N, C)` or `(N, output_size, output_size, C)`.
    """
    names = [layer.name for layer in segmenter.layers]
    if encoder_layer not in names:
        raise ValueError(
            f"encoder_layer {encoder_layer!r} is not a layer of {segmenter.name}; choose "
            f"one of {[n for n in names if n.endswith('relu2')]}."
        )
    encoder = keras.Model(segmenter.input, segmenter.get_layer(encoder_layer).output)
    images = np.asarray(images, "float32")
    boxes = np.asarray(boxes, "float32").reshape(-1, 4)
    if len(boxes) != len(images):
        raise ValueError(f"cell_features needs one box per image; received {len(boxes)} boxes "
                         f"for {len(images)} images (drop the images without a cell first).")  # fmt: skip
    feature_map = encoder.predict(images, batch_size=batch_size, verbose=0)
    features = models.roi_features(
        feature_map,
        boxes,
        box_indices=np.arange(len(images)),
        output_size=output_size,
        image_size=images.shape[1:3],
        pooling=pooling,
    )
    return np.asarray(features)


def evaluate_segmenter(segmenter, images, masks, batch_size=32, threshold=0.5):
    """Dice of held-out crops: mean over crops of the cell (and nucleus) Dice.

    Returns:
        dict: `cell_dice` (predicted cell probability > threshold vs. mask > 0),
        `central_dice` (the `central_cell` component vs. mask > 0; 0 where none
        is found), `nucleus_dice` (argmax == 2 vs. mask == 2; 3-class only),
        `detected` (fraction with a central cell) and `images`.
    """
    logits = segmenter.predict(np.asarray(images, "float32"), batch_size=batch_size, verbose=0)
    probability = ops.convert_to_numpy(ops.softmax(logits, axis=-1))
    masks = np.asarray(masks)
    cell, central, detected, nucleus = [], [], [], []
    for p, m in zip(probability, masks):
        cell_p = 1.0 - p[..., 0]
        cell.append(segmentation.dice(m > 0, cell_p > threshold))
        found = central_cell(cell_p, threshold)
        detected.append(found is not None)
        central.append(0.0 if found is None else segmentation.dice(m > 0, found[0]))
        if p.shape[-1] == 3:
            nucleus.append(segmentation.dice(m == 2, p.argmax(-1) == 2))
    out = {
        "cell_dice": float(np.mean(cell)),
        "central_dice": float(np.mean(central)),
        "detected": float(np.mean(detected)),
        "images": len(masks),
    }
    if nucleus:
        out["nucleus_dice"] = float(np.mean(nucleus))
    return out


def held_out_dice(records, image_size, field_um=None, test_fraction=0.2, seed=0, **train_kwargs):
    """Trains on part of the masked crops and scores the rest (split by crop).

    The split is `tfcell.data.splits.train_test_by_domain` (seeded, stratified
    by class; each crop is one cell, so by image), the AE-CFE protocol's 80/20.

    Args:
        records: `read_jtsc_masks` rows (`um_per_px` set for a physical scale).
        image_size, field_um: as `load_pairs`.
        test_fraction: the held-out share, 0.2.
        seed: the split and the training.
        **train_kwargs: `train_segmenter`'s (width, epochs, batch_size, ...).

    Returns:
        `(segmenter, metrics, split)`: `evaluate_segmenter` on the held-out
        crops, and the `Split` of record tables.
    """
    split = splits.train_test_by_domain(records, test_size=test_fraction, seed=seed)
    train_images, train_masks = load_pairs(split.train, image_size, field_um)
    test_images, test_masks = load_pairs(split.test, image_size, field_um)
    segmenter = train_segmenter(train_images, train_masks, seed=seed, **train_kwargs)
    return segmenter, evaluate_segmenter(segmenter, test_images, test_masks), split
