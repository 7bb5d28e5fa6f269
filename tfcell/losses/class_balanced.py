"""Class-balanced weights (Cui et al., CVPR 2019) and class-balanced cross-entropy.

The weights here are the `w[y]` of every loss in the CFAL family (affinity,
CFAL, focal, ArcFace, CosFace, SphereFace); the private helpers at the bottom
are shared by those modules.
"""

import math

import keras
import numpy as np
from keras import ops

from tfcell.losses import _checks

__all__ = [
    "ClassBalancedCrossentropyLoss",
    "class_balanced_crossentropy",
    "class_balanced_weights",
    "to_class_ids",
]


def class_balanced_weights(counts, beta):
    """Class weights from the effective number of samples (Cui et al., 2019).

    ```python
    w[c] = (1 - beta) / (1 - beta ** counts[c])   # 0 where counts[c] == 0
    w = w / sum(w) * C
    ```

    Args:
        counts: number of training samples of each class, length C. A class
            with no sample gets weight 0 (it cannot occur as a label).
        beta: in `[0, 1)`. CFAL paper, Table IX: 0.999 (IDC), 0.9999 (CRC).
            `beta = 0` gives equal weights; `beta -> 1` approaches inverse
            class frequency.

    Returns:
        A list of C Python floats that sums to C, ready for the
        `class_weights` argument of the tfcell losses.

    Reference:
    - [Cui et al., 2019](https://arxiv.org/abs/1901.05555), Eq. 4 and
      richardaecn/class-balanced-loss (`weights / sum(weights) * no_of_classes`).
    """
    counts = np.asarray(counts, dtype="float64")
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(
            "`counts` must be a non-empty 1-D sequence with one count per class. "
            f"Received shape {counts.shape}. Pass e.g. `np.bincount(labels, minlength=C)`."
        )
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise ValueError(f"`counts` must be finite and non-negative. Received {counts.tolist()}.")
    if not np.any(counts > 0):
        raise ValueError(
            "`counts` must contain at least one class with a positive count. "
            f"Received {counts.tolist()}."
        )
    if isinstance(beta, bool) or not isinstance(beta, (int, float, np.floating)):
        raise ValueError(f"`beta` must be a float in [0, 1). Received beta={beta!r}.")
    beta = float(beta)
    if not 0.0 <= beta < 1.0:
        raise ValueError(
            f"`beta` must be in [0, 1). Received beta={beta}. The paper uses 0.9-0.9999 "
            "(Table III); beta=1 would divide by zero."
        )
    safe = np.where(counts > 0, counts, 1.0)
    weights = np.where(counts > 0, (1.0 - beta) / (1.0 - np.power(beta, safe)), 0.0)
    weights = weights / weights.sum() * counts.size
    return [float(w) for w in weights]


def to_class_ids(y_true, num_classes):
    """Integer class ids `(N,)` int32 from `(N,)`/`(N, 1)` ids or one-hot `(N, C)`.

    A rank-2 `y_true` whose last dimension is 1 is read as ids (so a one-hot
    matrix with a single class is not supported, which no classifier needs).
    Only the static last dimension is read; the batch size may be unknown.

    Args:
        y_true: labels, ids (any numeric dtype) or one-hot (or soft) rows,
            of which the argmax is taken.
        num_classes: C, the width a one-hot `y_true` must have.

    Returns:
        An int32 tensor of shape `(N,)`.
    """
    y_true = ops.convert_to_tensor(y_true)
    rank = len(y_true.shape)
    if rank == 1:
        return ops.cast(y_true, "int32")
    if rank == 2 and y_true.shape[-1] == 1:
        return ops.cast(ops.squeeze(y_true, axis=-1), "int32")
    if rank == 2 and y_true.shape[-1] == num_classes:
        return ops.cast(ops.argmax(y_true, axis=-1), "int32")
    raise ValueError(
        "`y_true` must be integer class ids of shape (N,) or (N, 1), or one-hot "
        f"of shape (N, {num_classes}). Received shape {tuple(y_true.shape)}. "
        "Check the label pipeline and the number of classes of the head."
    )


def class_balanced_crossentropy(y_true, y_pred, class_weights=None, from_logits=False):
    """Per-sample class-balanced categorical cross-entropy, `w[y_i] * CE_i`.

    ```python
    CE_i = -log softmax(y_pred_i)[y_i]       # from_logits=True
    CE_i = -log clip(y_pred_i[y_i], eps, 1)  # probabilities
    loss_i = w[y_i] * CE_i                   # w = 1 when class_weights is None
    ```

    Args:
        y_true: int ids `(N,)`/`(N, 1)` or one-hot `(N, C)`.
        y_pred: probabilities or logits, `(N, C)`.
        class_weights: None or C floats (`class_balanced_weights`).
        from_logits: whether `y_pred` holds logits.

    Returns:
        Per-sample losses, shape `(N,)`, in the dtype of `y_pred`.

    Raises:
        ValueError (eager) or InvalidArgumentError (in a `tf.function`): a
        label outside `[0, C)` or a non-finite `y_pred`; under XLA the batch
        loss is NaN instead (see docs/losses.md, "Bad labels").
    """
    y_pred = ops.convert_to_tensor(y_pred)
    out_dtype = y_pred.dtype
    y_pred = _to_compute_dtype(y_pred)
    num_classes = y_pred.shape[-1]
    ids = to_class_ids(y_true, num_classes)
    ok = _checks.check_batch(y_true, y_pred, num_classes, "class_balanced_crossentropy")
    ids = _checks.safe_ids(ids, ok)
    ce = ops.sparse_categorical_crossentropy(ids, y_pred, from_logits=from_logits)
    losses = _gather_weights(class_weights, ids, num_classes, ce.dtype) * ce
    return ops.cast(_checks.poison(losses, ok), out_dtype)


@keras.saving.register_keras_serializable(package="tfcell")
class ClassBalancedCrossentropyLoss(keras.losses.Loss):
    """Class-balanced softmax cross-entropy (Cui et al., 2019).

    Each sample's cross-entropy is multiplied by the weight of its class. The
    default reduction averages over the N samples of the batch, not over the
    sum of their weights, as Cui's TensorFlow code does.

    ```python
    loss_i = w[y_i] * CE(y_pred_i, y_i)
    loss = mean_i(loss_i)   # reduction "sum_over_batch_size"
    ```

    Args:
        class_weights: None (plain cross-entropy) or C floats, usually
            `class_balanced_weights(counts, beta)`.
        from_logits: whether `y_pred` holds logits (default False:
            probabilities, as after a softmax layer).
        reduction, name, dtype: as in `keras.losses.Loss`.

    Example:
    ```python
    w = tfcell.losses.class_balanced_weights(counts, beta=0.999)
    model.compile(loss=tfcell.losses.ClassBalancedCrossentropyLoss(w, from_logits=True))
    ```

    Reference:
    - [Cui et al., 2019](https://arxiv.org/abs/1901.05555), Eq. 6 and
      richardaecn/class-balanced-loss, src/cifar_main.py.
    """

    def __init__(
        self,
        class_weights=None,
        from_logits=False,
        reduction="sum_over_batch_size",
        name="class_balanced_crossentropy",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.class_weights = _validate_class_weights(class_weights)
        self.from_logits = _validate_bool(from_logits, "from_logits")
        self._dtype_arg = _dtype_config(dtype)

    def call(self, y_true, y_pred):
        return class_balanced_crossentropy(
            y_true, y_pred, class_weights=self.class_weights, from_logits=self.from_logits
        )

    def get_config(self):
        return {
            "class_weights": self.class_weights,
            "from_logits": self.from_logits,
            **_loss_config(self),
        }


# Helpers shared by the CFAL-family loss modules (affinity, focal, margin).


def _validate_class_weights(class_weights):
    """None, or a list of C finite non-negative floats (at least one positive)."""
    if class_weights is None:
        return None
    try:
        values = np.asarray(class_weights, dtype="float64")
    except (TypeError, ValueError) as error:
        raise ValueError(
            "`class_weights` must be None or a sequence of C floats. "
            f"Received {class_weights!r}. Use `tfcell.losses.class_balanced_weights`."
        ) from error
    if values.ndim != 1 or values.size == 0:
        raise ValueError(
            "`class_weights` must be None or a 1-D sequence with one weight per class. "
            f"Received shape {values.shape}. Use `tfcell.losses.class_balanced_weights`."
        )
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError(
            f"`class_weights` must be finite and non-negative. Received {values.tolist()}."
        )
    return [float(v) for v in values]


def _validate_float(value, name, minimum=None, strictly=False, maximum=None):
    """A finite Python float within bounds, else a ValueError saying so."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"`{name}` must be a number. Received {name}={value!r}.")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be finite. Received {name}={value}.")
    if minimum is not None and (value <= minimum if strictly else value < minimum):
        bound = ">" if strictly else ">="
        raise ValueError(f"`{name}` must be {bound} {minimum}. Received {name}={value}.")
    if maximum is not None and value > maximum:
        raise ValueError(f"`{name}` must be <= {maximum}. Received {name}={value}.")
    return value


def _validate_bool(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"`{name}` must be True or False. Received {name}={value!r}.")
    return bool(value)


def _dtype_config(dtype):
    """The `dtype` argument as it can be written to a config."""
    if dtype is None or isinstance(dtype, str):
        return dtype
    return getattr(dtype, "name", str(dtype))


def _loss_config(loss):
    """The `reduction`, `name` and `dtype` config entries of a CFAL-family loss."""
    return {"reduction": loss.reduction, "name": loss.name, "dtype": loss._dtype_arg}


def _to_compute_dtype(x):
    """float16/bfloat16 inputs are computed in float32 (acos, exp and log need it)."""
    if x.dtype in ("float16", "bfloat16") or not keras.backend.is_float_dtype(x.dtype):
        return ops.cast(x, "float32")
    return x


def _gather_weights(class_weights, ids, num_classes, dtype):
    """Per-sample weights `w[y_i]`, shape (N,); ones when `class_weights` is None."""
    if class_weights is None:
        return ops.ones_like(ids, dtype=dtype)
    if num_classes is not None and len(class_weights) != num_classes:
        raise ValueError(
            f"`class_weights` has {len(class_weights)} entries but the predictions have "
            f"{num_classes} classes. Pass one weight per class."
        )
    table = ops.convert_to_tensor(np.asarray(class_weights), dtype=dtype)
    return ops.take(table, ids, axis=0)
