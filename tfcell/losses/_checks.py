"""Batch checks shared by the losses that index by label (private).

A label outside `[0, C)` has no class: `one_hot` gives it an all-zero row (its
loss is silently 0) and a gather of the class weights fails on CPU but returns
zeros on GPU. A NaN image makes every output NaN, and the loss with it. Each
loss therefore checks its batch once:

```python
ok = all(0 <= y < C) and all(isfinite(y_pred))     # one reduction each
eager          -> ValueError naming the range received, C and the batch position
tf.function    -> tf.debugging.Assert in a tf.cond, so the range is only
                  computed when the check fails (InvalidArgumentError, same text)
jit_compile    -> XLA compiles the assertion to a no-op and cannot raise; the
                  batch loss is set to NaN instead (loss: nan from that step)
```

The checks read the labels before they are cast to int32: a NaN float label
fails `0 <= y` (a cast would turn it into INT_MIN on CPU and 0 on GPU).
"""

import numpy as np
import tensorflow as tf
from keras import ops

_FIX_LABELS = (
    "A label outside [0, C) has no class (one_hot gives it a zero row, and a GPU gather "
    "silently returns 0). Check the label pipeline (tfcell.data.pipeline.from_arrays and "
    "from_records validate labels) and the head's num_classes."
)
_FIX_PREDICTIONS = (
    "The batch probably holds NaN or inf images (tfcell.data.pipeline.from_arrays "
    "rejects them), or training diverged (lower the learning rate)."
)


def check_batch(y_true, y_pred, num_classes, name):
    """Checks labels against `[0, num_classes)` and predictions for NaN / inf.

    Args:
        y_true: the loss's labels: ids `(N,)`/`(N, 1)` (any numeric dtype) or
            one-hot `(N, C)` (always valid: their argmax is a class), or None
            (no labels, e.g. `CenterLoss`).
        y_pred: the tensor the loss reads (checked for non-finite values).
        num_classes: C, or None to check non-negativity only.
        name: the loss, as the error names it.

    Returns:
        None when executing eagerly (a bad batch raises ValueError), else a
        scalar bool tensor `ok` for `safe_ids` and `poison`; a bad batch fails
        its `tf.debugging.Assert` (graph) or gives `ok = False` (XLA).
    """
    values = _label_values(y_true, num_classes)
    y_pred = ops.convert_to_tensor(y_pred)
    if tf.executing_eagerly():
        _raise_if_bad(values, y_pred, num_classes, name)
        return None
    labels_ok = _labels_ok(values, num_classes)
    preds_ok = ops.all(ops.isfinite(y_pred))
    ok = preds_ok if labels_ok is None else ops.logical_and(labels_ok, preds_ok)

    def fail():
        asserts = [
            tf.debugging.Assert(
                preds_ok,
                [
                    f"{name}: the predictions (y_pred) of this batch are not finite; "
                    "non-finite values:",
                    ops.sum(ops.cast(ops.logical_not(ops.isfinite(y_pred)), "int32")),
                    _FIX_PREDICTIONS,
                ],
            )
        ]
        if labels_ok is not None:
            asserts.append(
                tf.debugging.Assert(
                    labels_ok,
                    [
                        f"{name}: labels must be class ids in [0, {num_classes}) "
                        f"(C = {num_classes}); received labels from",
                        ops.min(values),
                        "to",
                        ops.max(values),
                        "in this batch (NaN: a missing label).",
                        _FIX_LABELS,
                    ],
                    summarize=4,
                )
            )
        with tf.control_dependencies(asserts):
            return tf.identity(ok)

    # The cond keeps the error's min / max out of the normal path, and the
    # losses depend on its output, so the assertion runs before they are used.
    return tf.cond(ok, lambda: tf.identity(ok), fail)


def safe_ids(ids, ok):
    """Ids with every entry 0 when the batch is bad (gathers stay in range)."""
    if ok is None:
        return ids
    return ops.where(ok, ids, ops.zeros_like(ids))


def poison(per_sample, ok):
    """Per-sample losses, all NaN when the batch is bad (XLA cannot raise)."""
    if ok is None:
        return per_sample
    return ops.where(ok, per_sample, ops.full_like(per_sample, float("nan")))


def _label_values(y_true, num_classes):
    """The labels as a flat tensor, or None when there is nothing to check."""
    if y_true is None:
        return None
    y_true = ops.convert_to_tensor(y_true)
    rank = len(y_true.shape)
    if rank == 2 and y_true.shape[-1] not in (1, None) and y_true.shape[-1] == num_classes:
        return None  # One-hot rows: the argmax is always a class.
    if rank not in (1, 2):
        return None  # to_class_ids raises for these shapes.
    return ops.reshape(y_true, (-1,))


def _labels_ok(values, num_classes):
    if values is None:
        return None
    # Compared in the labels' own dtype: NaN fails both comparisons.
    in_range = ops.greater_equal(values, ops.zeros((), values.dtype))
    if num_classes is not None:
        in_range = ops.logical_and(
            in_range, ops.less(values, ops.convert_to_tensor(num_classes, values.dtype))
        )
    return ops.all(in_range)


def _raise_if_bad(values, y_pred, num_classes, name):
    if values is not None:
        labels = np.asarray(ops.convert_to_numpy(values))
        with np.errstate(invalid="ignore"):
            good = labels >= 0
            if num_classes is not None:
                good &= labels < num_classes
        if not good.all():
            first = int(np.flatnonzero(~good)[0])
            shown = labels.astype("float64")
            missing = int(np.isnan(shown).sum())
            nan_note = f" and {missing} NaN" if missing else ""
            span = shown[~np.isnan(shown)]
            span = f"from {span.min():g} to {span.max():g}" if span.size else "only NaN"
            raise ValueError(
                f"{name}: labels must be class ids in [0, {num_classes}) (C = {num_classes}); "
                f"received labels {span}{nan_note} in this batch, {int((~good).sum())} "
                f"outside the range (first at batch position {first}: {labels[first].item()}). "
                f"{_FIX_LABELS}"
            )
    finite = np.isfinite(ops.convert_to_numpy(ops.cast(y_pred, "float32")))
    if not finite.all():
        first = int(np.flatnonzero(~finite.reshape(len(finite), -1).all(axis=-1))[0])
        raise ValueError(
            f"{name}: the predictions (y_pred) of this batch are not finite: "
            f"{int((~finite).sum())} NaN or inf values (first in batch position {first}). "
            f"{_FIX_PREDICTIONS}"
        )
