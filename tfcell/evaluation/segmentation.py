"""Nucleus segmentation scores (Dice, AJI), instances from a probability map, and
whole-tile prediction of a segmentation network by overlapping tiles.

- `dice`: binary Dice of the foreground.
- `aggregated_jaccard_index`: AJI of Kumar et al. (2017), an instance-level
  Jaccard index that penalises merged and split nuclei.
- `instances_from_prediction`: threshold + connected components.
- `predict_instances`: probability and instance map of an image of any size.
"""

import numpy as np
from scipy import ndimage

__all__ = [
    "aggregated_jaccard_index",
    "dice",
    "instances_from_prediction",
    "predict_instances",
]


def dice(y_true, y_pred):
    """Binary Dice coefficient of the foreground (`> 0`) of two masks.

    ```python
    dice = 2 * |T & P| / (|T| + |P|)        # 1.0 when both are empty
    ```

    Args:
        y_true, y_pred: masks or instance maps of one shape (0 = background).

    Returns:
        A float in [0, 1].
    """
    true, pred = np.asarray(y_true) > 0, np.asarray(y_pred) > 0
    if true.shape != pred.shape:
        raise ValueError(f"dice: shapes differ, {true.shape} and {pred.shape}.")
    total = int(true.sum()) + int(pred.sum())
    if total == 0:
        return 1.0  # nothing to find and nothing found
    return 2.0 * int(np.logical_and(true, pred).sum()) / total


def _relabel(instance_map):
    """Instance ids 1..K in order of first value (0 stays 0), as int64."""
    values, inverse = np.unique(np.asarray(instance_map), return_inverse=True)
    inverse = inverse.reshape(np.shape(instance_map))
    if values[0] != 0:
        return inverse.astype(np.int64) + 1, len(values)
    return inverse.astype(np.int64), len(values) - 1


def aggregated_jaccard_index(y_true, y_pred):
    """Aggregated Jaccard Index (AJI) of two instance maps (Kumar et al., 2017).

    ```python
    C = U = 0; used = {}
    for each true instance G:
        S = the predicted instance of largest IoU with G (only those touching G)
        if S exists: C += |G & S|; U += |G | S|; used.add(S)
        else:        U += |G|
    U += sum(|S| for each predicted S not in used)
    aji = C / U                              # 1.0 when both maps are empty
    ```

    Args:
        y_true: `(H, W)` instance map, 0 background, one id per nucleus.
        y_pred: `(H, W)` instance map of the prediction (e.g. from
            `instances_from_prediction`).

    Returns:
        A float in [0, 1].

    Note:
        The original AJI: a predicted instance may be the best match of several
        true instances and then enters `C` and `U` once for each (AJI+ of
        Graham et al. 2019 forbids that; not used by Panteli et al.). Ties in
        IoU go to the lower predicted id after relabelling in sorted id order.
        A true nucleus that no prediction touches adds its area to `U` (as in
        the HoVer-Net reference code, `get_fast_aji`).

    Reference:
    - [Kumar et al., 2017](https://doi.org/10.1109/TMI.2017.2677499), Algorithm 1.
    """
    true, num_true = _relabel(y_true)
    pred, num_pred = _relabel(y_pred)
    if true.shape != pred.shape:
        raise ValueError(f"aggregated_jaccard_index: shapes differ, {true.shape} and {pred.shape}.")
    # Contingency table: intersection[i, j] = |true == i & pred == j|, 0 = background.
    intersection = np.bincount(
        true.ravel() * (num_pred + 1) + pred.ravel(), minlength=(num_true + 1) * (num_pred + 1)
    ).reshape(num_true + 1, num_pred + 1)
    true_area = intersection.sum(axis=1)[1:]
    pred_area = intersection.sum(axis=0)[1:]
    overlap = intersection[1:, 1:]
    if num_true == 0 and num_pred == 0:
        return 1.0
    union = true_area[:, None] + pred_area[None, :] - overlap
    iou = np.where(overlap > 0, overlap / np.maximum(union, 1), 0.0)
    matched_c = matched_u = 0
    used = np.zeros(num_pred, bool)
    for i in range(num_true):
        if num_pred and overlap[i].max() > 0:
            j = int(np.argmax(iou[i]))
            matched_c += int(overlap[i, j])
            matched_u += int(union[i, j])
            used[j] = True
        else:
            matched_u += int(true_area[i])
    total_u = matched_u + int(pred_area[~used].sum())
    return matched_c / total_u if total_u else 1.0


def instances_from_prediction(probability_or_mask, threshold=0.5, min_size=10, connectivity=1):
    """Instance map of a probability map or a binary mask (connected components).

    Args:
        probability_or_mask: `(H, W)` foreground probabilities (float) or a
            boolean / integer mask (`> 0` is foreground).
        threshold: floats above it are foreground (0.5).
        min_size: components with fewer pixels are dropped (10; not in the
            paper: a few stray pixels are not a nucleus, and MoNuSeg nuclei
            at 40x cover about 100-600 pixels).
        connectivity: 1 (4-connected, as `tfcell.data.instances_from_mask`)
            or 2 (8-connected).

    Returns:
        An int32 `(H, W)` instance map, 0 background, ids 1..K.
    """
    array = np.asarray(probability_or_mask)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise ValueError(
            f"instances_from_prediction needs a 2-D (H, W) map; received shape {array.shape}."
        )
    foreground = array > threshold if np.issubdtype(array.dtype, np.floating) else array > 0
    structure = ndimage.generate_binary_structure(2, connectivity)
    labels, count = ndimage.label(foreground, structure=structure)
    if count == 0:
        return labels.astype(np.int32)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    keep = sizes >= min_size
    keep[0] = False
    lookup = np.zeros(count + 1, np.int32)
    lookup[keep] = np.arange(1, int(keep.sum()) + 1)
    return lookup[labels]


def _tile_starts(size, tile, step):
    """Tile origins covering [0, size) with `tile`-wide tiles, the last flush at the end."""
    starts = list(range(0, size - tile, step)) + [size - tile]
    return sorted(set(starts))


def _foreground_probability(outputs, foreground_class):
    """Softmax (C > 1) or sigmoid (C == 1) of logits `(N, h, w, C)`, foreground channel."""
    outputs = np.asarray(outputs, np.float64)
    if outputs.shape[-1] == 1:
        return 1.0 / (1.0 + np.exp(-outputs[..., 0]))
    shifted = outputs - outputs.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp[..., foreground_class] / exp.sum(axis=-1)


def predict_instances(
    model,
    image,
    tile=256,
    overlap=32,
    threshold=0.5,
    min_size=10,
    foreground_class=1,
    batch_size=4,
):
    """Probability and instance map of an image of any size, by overlapping tiles.

    The image is reflect-padded to at least one tile, cut into `tile x tile`
    tiles `tile - overlap` apart (the last row and column of tiles flush with
    the edge), and each tile predicted. Overlapping predictions are averaged
    with weight 1 in a tile's centre and 1e-3 in its outer `overlap // 2`
    pixels, so a pixel takes the prediction of the tile in whose centre it
    lies (centre-cropping), while a tile border on the image edge, covered by
    no other tile, keeps its own prediction.

    Args:
        model: a segmentation model from float RGB `[0, 255]` images to logits
            `(N, tile, tile, C)` (e.g. `tfcell.models.unet`); C = 1 means
            sigmoid logits, C > 1 softmax logits.
        image: `(H, W, 3)` float or uint8 image in [0, 255].
        tile: tile side; the model must accept it (a multiple of
            `2 ** depth` for `unet`).
        overlap: pixels shared by neighbouring tiles (< tile).
        threshold, min_size: as in `instances_from_prediction`.
        foreground_class: channel of the nucleus class for softmax logits (1).
        batch_size: tiles per forward pass.

    Returns:
        `(probability, instances)`: float32 `(H, W)` foreground probability
        and the int32 `(H, W)` instance map of `instances_from_prediction`.

    Note:
        This replaces the overlap-tile strategy of Ronneberger et al. (valid
        convolutions, mirrored context around each output tile): with the
        "same"-padded `unet` the tile borders see zero padding, and the
        down-weighted margins keep those borders out of the result wherever
        a neighbouring tile covers them.
    """
    image = np.asarray(image, np.float32)
    if image.ndim != 3:
        raise ValueError(f"predict_instances needs one (H, W, 3) image; received {image.shape}.")
    if not 0 <= overlap < tile:
        raise ValueError(
            f"predict_instances: overlap must lie in [0, tile); received overlap={overlap}, "
            f"tile={tile}."
        )
    height, width = image.shape[:2]
    pad_h, pad_w = max(tile - height, 0), max(tile - width, 0)
    if pad_h or pad_w:
        # "reflect" needs pad < size: an image smaller than half a tile is
        # reflected, then edge-padded for the rest.
        reflect_h, reflect_w = min(pad_h, height - 1), min(pad_w, width - 1)
        padded = np.pad(image, ((0, reflect_h), (0, reflect_w), (0, 0)), mode="reflect")
        padded = np.pad(
            padded, ((0, pad_h - reflect_h), (0, pad_w - reflect_w), (0, 0)), mode="edge"
        )
    else:
        padded = image
    full_h, full_w = padded.shape[:2]
    step = tile - overlap
    margin = overlap // 2
    window = np.full((tile, tile), 1e-3, np.float64)
    window[margin : tile - margin, margin : tile - margin] = 1.0
    origins = [
        (r, c) for r in _tile_starts(full_h, tile, step) for c in _tile_starts(full_w, tile, step)
    ]
    total = np.zeros((full_h, full_w), np.float64)
    weight = np.zeros((full_h, full_w), np.float64)
    for first in range(0, len(origins), batch_size):
        chunk = origins[first : first + batch_size]
        tiles = np.stack([padded[r : r + tile, c : c + tile] for r, c in chunk])
        outputs = model.predict_on_batch(tiles)
        if np.shape(outputs)[1:3] != (tile, tile):
            raise ValueError(
                f"predict_instances: the model returned {np.shape(outputs)} for tiles of "
                f"{tile} x {tile}; it must keep the input size (e.g. tfcell.models.unet)."
            )
        probability = _foreground_probability(outputs, foreground_class)
        for (r, c), p in zip(chunk, probability):
            total[r : r + tile, c : c + tile] += window * p
            weight[r : r + tile, c : c + tile] += window
    probability = (total / weight)[:height, :width].astype(np.float32)
    return probability, instances_from_prediction(probability, threshold, min_size)
