"""Class-balanced angular-margin losses on cosine logits: ArcFace, CosFace and
SphereFace, as benchmarked in the CFAL paper (Mahbub et al., JBHI 2024).

`y_pred` are the cosines of `tfcell.layers.CosineHead`; the loss adds the
margin to the target class, scales, and takes the class-balanced softmax
cross-entropy. Prediction is the margin-free argmax of the cosines.
"""

import math

import keras
from keras import ops

from tfcell.losses import class_balanced

__all__ = [
    "ArcFaceLoss",
    "CosFaceLoss",
    "SphereFaceLoss",
    "arcface",
    "cosface",
    "sphereface",
]

# acos has an infinite derivative at +-1; the authors clip with K.epsilon().
_COS_CLIP = 1.0 - 1e-7


def cosface(y_true, y_pred, margin=0.35, scale=20.0, class_weights=None):
    """Per-sample class-balanced CosFace (large margin cosine) loss.

    ```python
    logits = scale * (cos - margin * one_hot(y))
    loss_i = -w[y_i] * log_softmax(logits_i)[y_i]
    ```

    Args:
        y_true: int ids `(N,)`/`(N, 1)` or one-hot `(N, C)`.
        y_pred: cosines `(N, C)` from `CosineHead`.
        margin: additive cosine margin (Table IX: 0.5 IDC, 0.35 CRC).
        scale: s (Table IX: 10 IDC, 20 CRC).
        class_weights: None or C floats.

    Returns:
        Per-sample losses `(N,)` in the dtype of `y_pred`.
    """
    cos, ids, onehot, out_dtype = _prepare(y_true, y_pred)
    logits = scale * (cos - margin * onehot)
    return _weighted_ce(logits, ids, onehot, class_weights, out_dtype)


def arcface(y_true, y_pred, margin=0.5, scale=30.0, class_weights=None):
    """Per-sample class-balanced ArcFace (additive angular margin) loss.

    ```python
    theta = acos(clip(cos, -1 + 1e-7, 1 - 1e-7))
    target = where(theta + margin <= pi, cos(theta + margin),
                   cos - margin * sin(margin))   # keeps the logit decreasing
    logits = scale * where(one_hot(y), target, cos)
    loss_i = -w[y_i] * log_softmax(logits_i)[y_i]
    ```

    Args:
        y_true: int ids `(N,)`/`(N, 1)` or one-hot `(N, C)`.
        y_pred: cosines `(N, C)` from `CosineHead`.
        margin: additive angular margin in radians (Table IX: 0.5 IDC, 0.1 CRC).
        scale: s (Table IX: 30 IDC, 15 CRC).
        class_weights: None or C floats.

    Returns:
        Per-sample losses `(N,)` in the dtype of `y_pred`.
    """
    cos, ids, onehot, out_dtype = _prepare(y_true, y_pred)
    theta = ops.arccos(ops.clip(cos, -_COS_CLIP, _COS_CLIP))
    # insightface's fallback (easy_margin=False): past theta = pi - m,
    # cos(theta + m) would rise again; use cos - m * sin(m) instead.
    target = ops.where(
        theta + margin <= math.pi, ops.cos(theta + margin), cos - margin * math.sin(margin)
    )
    logits = scale * ops.where(onehot > 0, target, cos)
    return _weighted_ce(logits, ids, onehot, class_weights, out_dtype)


def sphereface(y_true, y_pred, margin=0.35, scale=30.0, class_weights=None):
    """Per-sample class-balanced SphereFace (multiplicative angular margin) loss.

    ```python
    theta = acos(clip(cos, -1 + 1e-7, 1 - 1e-7))
    k = floor(margin * theta / pi)
    psi = (-1) ** k * cos(margin * theta) - 2 * k      # Liu et al., Eq. 7
    r = scale if scale is not None else norm            # norm = ||x||, last column
    logits = r * where(one_hot(y), psi, cos)
    loss_i = -w[y_i] * log_softmax(logits_i)[y_i]
    ```

    Args:
        y_true: int ids `(N,)`/`(N, 1)` or one-hot `(N, C)`.
        y_pred: cosines `(N, C)` from `CosineHead` when `scale` is a number;
            `(N, C + 1)` from `CosineHead(return_norms=True)` (last column
            `||x||`) when `scale` is None.
        margin: multiplicative angular margin m (Table IX: 0.35; Liu et al.: 4).
        scale: s (Table IX: 30 IDC, 20 CRC), or None for the feature norm.
        class_weights: None or C floats.

    Returns:
        Per-sample losses `(N,)` in the dtype of `y_pred`.
    """
    y_pred = ops.convert_to_tensor(y_pred)
    if scale is None:
        width = y_pred.shape[-1]
        cos_part, radius = y_pred[..., : width - 1], y_pred[..., width - 1 :]
    else:
        cos_part, radius = y_pred, None
    cos, ids, onehot, out_dtype = _prepare(y_true, cos_part)
    theta = ops.arccos(ops.clip(cos, -_COS_CLIP, _COS_CLIP))
    k = ops.floor(margin * theta / math.pi)
    sign = 1.0 - 2.0 * (k - 2.0 * ops.floor(k / 2.0))  # (-1) ** k for k >= 0
    psi = sign * ops.cos(margin * theta) - 2.0 * k
    logits = ops.where(onehot > 0, psi, cos)
    if radius is None:
        logits = scale * logits
    else:
        logits = ops.cast(radius, cos.dtype) * logits
    return _weighted_ce(logits, ids, onehot, class_weights, out_dtype)


def _prepare(y_true, y_pred):
    y_pred = ops.convert_to_tensor(y_pred)
    out_dtype = y_pred.dtype
    cos = class_balanced._to_compute_dtype(y_pred)
    ids = class_balanced.to_class_ids(y_true, cos.shape[-1])
    onehot = ops.one_hot(ids, cos.shape[-1], dtype=cos.dtype)
    return cos, ids, onehot, out_dtype


def _weighted_ce(logits, ids, onehot, class_weights, out_dtype):
    ce = -ops.sum(onehot * ops.log_softmax(logits, axis=-1), axis=-1)
    weights = class_balanced._gather_weights(class_weights, ids, logits.shape[-1], ce.dtype)
    return ops.cast(weights * ce, out_dtype)


def _set_args(loss, margin, scale, class_weights, dtype, scale_may_be_none=False):
    """Validates and stores the arguments shared by the three losses."""
    loss.margin = class_balanced._validate_float(margin, "margin", minimum=0.0)
    if scale is None and scale_may_be_none:
        loss.scale = None
    else:
        loss.scale = class_balanced._validate_float(scale, "scale", minimum=0.0, strictly=True)
    loss.class_weights = class_balanced._validate_class_weights(class_weights)
    loss._dtype_arg = class_balanced._dtype_config(dtype)


def _config(loss):
    return {
        "margin": loss.margin,
        "scale": loss.scale,
        "class_weights": loss.class_weights,
        **class_balanced._loss_config(loss),
    }


@keras.saving.register_keras_serializable(package="tfcell")
class ArcFaceLoss(keras.losses.Loss):
    """Class-balanced ArcFace loss (additive angular margin) on `CosineHead` cosines.

    ```python
    theta = acos(clip(cos, -1 + 1e-7, 1 - 1e-7))
    target = cos(theta + margin) if theta + margin <= pi else cos - margin * sin(margin)
    logits = scale * where(one_hot(y), target, cos)
    loss_i = w[y_i] * CE(logits_i, y_i)
    ```

    Args:
        margin: angular margin in radians (CFAL paper Table IX: 0.5 IDC,
            0.1 CRC).
        scale: s (Table IX: 30 IDC, 15 CRC).
        class_weights: None or C floats (`class_balanced_weights`); the CFAL
            paper uses class-balanced weights for every baseline (Sec. III-A).
        reduction, name, dtype: as in `keras.losses.Loss`.

    Note:
        - The authors' ArcFace (Taslim-M/CFAL-max-margin-keras, loss/ArcFace.py)
          uses `cos(theta + m)` for every theta. When `theta + m > pi` that
          logit increases with theta, i.e. a worse sample gets a better
          target logit. tfcell applies ArcFace's reference fallback
          (insightface, `easy_margin=False`): `cos - m * sin(m)` there. The
          two agree wherever `cos > cos(pi - m)` (for m = 0.5, cos > -0.878).
        - The margin is applied in the loss, not in the head (the authors put
          it in a layer fed with the labels), so `predict` gives margin-free
          cosines: prediction is `argmax(cos)`.
        - The authors' layer ends in a softmax and their loss clips the
          probabilities; tfcell takes a log-softmax of the scaled logits
          (same value without the clipping).

    Example:
    ```python
    x = keras.Input((64,))
    cos = tfcell.layers.CosineHead(num_classes=2)(x)
    model = keras.Model(x, cos)
    model.compile(optimizer="adam", loss=tfcell.losses.ArcFaceLoss(margin=0.5, scale=30.0))
    ```

    Reference:
    - [Deng et al., 2019](https://arxiv.org/abs/1801.07698), Eq. 3.
    - [Mahbub et al., 2024](https://doi.org/10.1109/JBHI.2023.3336372), Table IX.
    """

    def __init__(
        self,
        margin=0.5,
        scale=30.0,
        class_weights=None,
        reduction="sum_over_batch_size",
        name="arcface_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        _set_args(self, margin, scale, class_weights, dtype)
        if self.margin >= math.pi:
            raise ValueError(
                f"`margin` is an angle in radians and must be < pi. Received "
                f"margin={margin}. The paper uses 0.1-0.9 (Table III)."
            )

    def call(self, y_true, y_pred):
        return arcface(y_true, y_pred, self.margin, self.scale, self.class_weights)

    def get_config(self):
        return _config(self)


@keras.saving.register_keras_serializable(package="tfcell")
class CosFaceLoss(keras.losses.Loss):
    """Class-balanced CosFace loss (large margin cosine) on `CosineHead` cosines.

    ```python
    logits = scale * (cos - margin * one_hot(y))
    loss_i = w[y_i] * CE(logits_i, y_i)
    ```

    Args:
        margin: additive cosine margin (CFAL paper Table IX: 0.5 IDC, 0.35 CRC).
        scale: s (Table IX: 10 IDC, 20 CRC).
        class_weights: None or C floats (`class_balanced_weights`).
        reduction, name, dtype: as in `keras.losses.Loss`.

    Note:
        The margin is applied in the loss rather than in the head (the authors'
        loss/CosFace.py puts it in a layer fed with the labels); the value is
        the same, and `predict` gives margin-free cosines.

    Example:
    ```python
    model.compile(optimizer="adam", loss=tfcell.losses.CosFaceLoss(margin=0.35, scale=20.0))
    ```

    Reference:
    - [Wang et al., 2018](https://arxiv.org/abs/1801.09414), Eq. 4.
    - [Mahbub et al., 2024](https://doi.org/10.1109/JBHI.2023.3336372), Table IX.
    """

    def __init__(
        self,
        margin=0.35,
        scale=20.0,
        class_weights=None,
        reduction="sum_over_batch_size",
        name="cosface_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        _set_args(self, margin, scale, class_weights, dtype)

    def call(self, y_true, y_pred):
        return cosface(y_true, y_pred, self.margin, self.scale, self.class_weights)

    def get_config(self):
        return _config(self)


@keras.saving.register_keras_serializable(package="tfcell")
class SphereFaceLoss(keras.losses.Loss):
    """Class-balanced SphereFace loss (multiplicative angular margin, A-Softmax).

    The target logit uses Liu et al.'s monotonic extension `psi` of
    `cos(m * theta)` (Eq. 7 of SphereFace, written for any real m > 0); the
    radius is a fixed scale s, as in the CFAL paper's Table IX, or, with
    `scale=None`, the un-normalised feature norm `||x||` of original
    A-Softmax (then the head must be `CosineHead(return_norms=True)`).

    ```python
    theta = acos(clip(cos, -1 + 1e-7, 1 - 1e-7))
    k = floor(margin * theta / pi)
    psi = (-1) ** k * cos(margin * theta) - 2 * k
    r = scale if scale is not None else ||x||   # ||x||: last column of y_pred
    logits = r * where(one_hot(y), psi, cos)
    loss_i = w[y_i] * CE(logits_i, y_i)
    ```

    Args:
        margin: multiplicative angular margin m. Default 0.35, CFAL paper
            Table IX (IDC and CRC); Liu et al. use m = 4.
        scale: s (Table IX: 30 IDC, 20 CRC), or None to use `||x||`.
        class_weights: None or C floats (`class_balanced_weights`).
        reduction, name, dtype: as in `keras.losses.Loss`.

    Note:
        - Which SphereFace the CFAL paper ran is not in its code release. Its
          ArcFace and CosFace files are the 4uiiurz1/keras-arcface layers, whose
          SphereFace is `s * cos(m * theta)` on normalised features; Table IX
          reports s and m for it. tfcell's default follows that reading (with
          `scale` given and m <= 1, `psi = cos(m * theta)` exactly, k = 0).
          With m < 1, as Table IX's 0.35, the "margin" raises the target
          logit, i.e. it loosens the decision boundary instead of tightening
          it; this may explain why SphereFace did not beat cross-entropy in
          the paper (Tables IV, V). Worse, it admits a zero-loss collapse: a
          feature orthogonal to every class weight gets target logit
          `s * cos(m * pi / 2)` against 0 for the others, so the loss vanishes
          whatever its class (measured on IDC with s = 30, m = 0.35: loss 0.0
          from the first epoch, accuracy equal to the minority share). The CFAL
          configs therefore use m = 1.35 (4uiiurz1's default; Table IX's 0.35
          read as the excess over 1). Use `margin=4.0` for Liu et al.'s margin.
        - `SphereFaceLoss(margin=4.0, scale=None)` is Liu et al.'s A-Softmax
          with lambda = 0 (the target logit `||x|| * psi`). Liu et al. train
          with `(lambda * cos + psi) / (1 + lambda)` and anneal lambda from
          about 1000 down to 5; that schedule is training state, which a
          stateless loss does not hold, so it is not included.
        - Unlike the integer-m original, `k` is also defined for real m; for
          m < 1 it is always 0.

    Example:
    ```python
    x = keras.Input((64,))
    out = tfcell.layers.CosineHead(num_classes=9, return_norms=True)(x)
    model = keras.Model(x, out)
    model.compile(optimizer="adam", loss=tfcell.losses.SphereFaceLoss(margin=4.0, scale=None))
    # predict: argmax(tfcell.layers.class_scores(model.predict(x), 9), -1)
    ```

    Reference:
    - [Liu et al., 2017](https://arxiv.org/abs/1704.08063), Eq. 6-7.
    - [Mahbub et al., 2024](https://doi.org/10.1109/JBHI.2023.3336372), Table IX.
    """

    def __init__(
        self,
        margin=0.35,
        scale=30.0,
        class_weights=None,
        reduction="sum_over_batch_size",
        name="sphereface_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        _set_args(self, margin, scale, class_weights, dtype, scale_may_be_none=True)
        if self.margin == 0.0:
            raise ValueError(
                "`margin` of SphereFace multiplies the angle and must be > 0. Received "
                "margin=0.0. Use 4.0 (Liu et al.) or 0.35 (CFAL paper, Table IX)."
            )

    def call(self, y_true, y_pred):
        return sphereface(y_true, y_pred, self.margin, self.scale, self.class_weights)

    def get_config(self):
        return _config(self)
