"""Detection scores: precision, recall and F1 at an IoU threshold, with one-to-one
greedy matching of predicted to true boxes by score.

Boxes are `(y_min, x_min, y_max, x_max)` in pixels (max exclusive), as
`tfcell.data.instances_from_mask` and `tfcell.models.detect` give them.
"""

import numpy as np

__all__ = ["box_iou", "detection_scores", "match_detections", "precision_recall_f1"]


def box_iou(boxes_a, boxes_b):
    """Pairwise IoU of `(K, 4)` and `(M, 4)` boxes, as a float64 `(K, M)` array."""
    a = np.asarray(boxes_a, np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, np.float64).reshape(-1, 4)
    top = np.maximum(a[:, None, 0], b[None, :, 0])
    left = np.maximum(a[:, None, 1], b[None, :, 1])
    bottom = np.minimum(a[:, None, 2], b[None, :, 2])
    right = np.minimum(a[:, None, 3], b[None, :, 3])
    intersection = np.clip(bottom - top, 0, None) * np.clip(right - left, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - intersection
    return np.where(union > 0, intersection / np.where(union > 0, union, 1.0), 0.0)


def match_detections(pred_boxes, pred_scores, true_boxes, iou_threshold=0.5):
    """One-to-one greedy matching of predictions to true boxes.

    ```python
    for each prediction, highest score first (ties: input order):
        t = the unmatched true box of largest IoU with it
        if IoU >= iou_threshold: match it to t (a true positive)
    ```

    Args:
        pred_boxes: `(K, 4)` predicted boxes. pred_scores: `(K,)` scores.
        true_boxes: `(M, 4)` true boxes.
        iou_threshold: the least IoU of a match (supplement Table 2: 0.5).

    Returns:
        An int64 array `(K,)`: for each prediction the index of its true box,
        or -1 (a false positive).
    """
    pred_boxes = np.asarray(pred_boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(pred_scores, np.float64).reshape(-1)
    if len(scores) != len(pred_boxes):
        raise ValueError(
            f"match_detections: {len(pred_boxes)} boxes but {len(scores)} scores; pass one "
            "score per predicted box."
        )
    iou = box_iou(pred_boxes, true_boxes)
    matches = np.full(len(pred_boxes), -1, np.int64)
    taken = np.zeros(iou.shape[1], bool)
    for k in np.argsort(-scores, kind="stable"):
        if not iou.shape[1]:
            break
        candidates = np.where(taken, -1.0, iou[k])
        best = int(np.argmax(candidates))
        if candidates[best] >= iou_threshold:
            matches[k] = best
            taken[best] = True
    return matches


def precision_recall_f1(tp, fp, fn):
    """Precision, recall and F1 from counts, with no NaN on empty inputs.

    ```python
    precision = tp / (tp + fp)     # 1.0 when nothing was predicted
    recall = tp / (tp + fn)        # 1.0 when there was nothing to find
    f1 = 2 * tp / (2 * tp + fp + fn)   # 1.0 when both are empty
    ```

    Returns:
        `{"precision", "recall", "f1", "tp", "fp", "fn"}`.
    """
    tp, fp, fn = int(tp), int(fp), int(fn)
    return {
        "precision": tp / (tp + fp) if tp + fp else 1.0,
        "recall": tp / (tp + fn) if tp + fn else 1.0,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0,
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }


def detection_scores(pred_boxes, pred_scores, true_boxes, iou_threshold=0.5):
    """Precision, recall and F1 of one image's detections at an IoU threshold.

    Predictions are matched to true boxes one to one, greedily by score
    (`match_detections`); matched predictions are true positives, the others
    false positives, unmatched true boxes false negatives. Over many images,
    add the counts and call `precision_recall_f1` (micro average).

    Args:
        pred_boxes: `(K, 4)` predicted boxes (after NMS). pred_scores: `(K,)`.
        true_boxes: `(M, 4)` true boxes.
        iou_threshold: 0.5 (supplement Table 2, "detection iou threshold").

    Returns:
        `{"precision", "recall", "f1", "tp", "fp", "fn"}`.

    Note:
        The supplement says a true box is detected when a remaining box has
        IoU "above the threshold"; we count IoU >= 0.5 (the PASCAL VOC rule)
        and allow each true box one detection.
    """
    matches = match_detections(pred_boxes, pred_scores, true_boxes, iou_threshold)
    tp = int((matches >= 0).sum())
    num_true = len(np.asarray(true_boxes).reshape(-1, 4))
    return precision_recall_f1(tp, len(matches) - tp, num_true - tp)
