"""Class-balanced angular-margin losses on cosine logits: ArcFace, CosFace and
SphereFace, as benchmarked in the CFAL paper (Mahbub et al., JBHI 2024).

`y_pred` are the cosines of `tfcell.layers.CosineHead`; the loss adds the
margin to the target class, scales, and takes the class-balanced softmax
cross-entropy. Prediction is the margin-free argmax of the cosines.
"""

import math
import warnings

import keras
from keras import ops

from tfcell.losses import _checks, class_balanced

__all__ = [
    "ArcFaceLoss",
    "CosFaceLoss",
    "SphereFaceLoss",
    "arcface",
    "asoftmax_scores",
    "cosface",
    "sphereface",
]

# acos has an infinite derivative at +-1; the authors clip with K.epsilon().
_COS_CLIP = 1.0 - 1e-7
# Table IX's SphereFace margin, the default when `scale` is a number.
_SPHEREFACE_MARGIN = 0.35


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
    cos, ids, onehot, out_dtype, ok = _prepare(y_true, y_pred, "cosface")
    logits = scale * (cos - margin * onehot)
    return _weighted_ce(logits, ids, onehot, class_weights, out_dtype, ok)


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
    cos, ids, onehot, out_dtype, ok = _prepare(y_true, y_pred, "arcface")
    theta = ops.arccos(ops.clip(cos, -_COS_CLIP, _COS_CLIP))
    # insightface's fallback (easy_margin=False): past theta = pi - m,
    # cos(theta + m) would rise again; use cos - m * sin(m) instead.
    target = ops.where(
        theta + margin <= math.pi, ops.cos(theta + margin), cos - margin * math.sin(margin)
    )
    logits = scale * ops.where(onehot > 0, target, cos)
    return _weighted_ce(logits, ids, onehot, class_weights, out_dtype, ok)


def sphereface(y_true, y_pred, margin=_SPHEREFACE_MARGIN, scale=30.0, class_weights=None):
    """Per-sample class-balanced SphereFace (multiplicative angular margin) loss.

    ```python
    theta = acos(clip(cos, -1 + 1e-7, 1 - 1e-7))
    k = floor(margin * theta / pi)
    psi = (-1) ** k * cos(margin * theta) - 2 * k      # Liu et al., Eq. 7
    r = scale if scale is not None else ||x||
    logits = r * where(one_hot(y), psi, cos)
    loss_i = -w[y_i] * log_softmax(logits_i)[y_i]
    ```

    `y_pred` depends on `scale` and `margin`:

    - `scale` a number: cosines `(N, C)` from `CosineHead`.
    - `scale=None, margin=None`: the A-Softmax scores `(N, C)` of
      `CosineHead(num_classes, sphereface_margin=m)`, which applied the
      margin and the norm (`asoftmax_scores`); `loss_i = -w[y_i] * y_pred[i, y_i]`.
    - `scale=None`, `margin` a number: `concat([cos, ||x||], -1)`, `(N, C + 1)`,
      the formula on explicit cosines and norms (no head outputs this any
      more; kept for references and tests).

    Args:
        y_true: int ids `(N,)`/`(N, 1)` or one-hot `(N, C)`.
        y_pred: see above.
        margin: multiplicative angular margin m (Table IX: 0.35; Liu et al.: 4),
            or None with `scale=None` (the head applied it).
        scale: s (Table IX: 30 IDC, 20 CRC), or None for the feature norm.
        class_weights: None or C floats.

    Returns:
        Per-sample losses `(N,)` in the dtype of `y_pred`.
    """
    if scale is None and margin is None:
        scores, ids, onehot, out_dtype, ok = _prepare(y_true, y_pred, "sphereface")
        weights = class_balanced._gather_weights(class_weights, ids, scores.shape[-1], scores.dtype)
        losses = -weights * ops.sum(onehot * scores, axis=-1)
        return ops.cast(_checks.poison(losses, ok), out_dtype)
    if margin is None:
        margin = _SPHEREFACE_MARGIN
    y_pred = ops.convert_to_tensor(y_pred)
    if scale is None:
        width = y_pred.shape[-1]
        cos_part, radius = y_pred[..., : width - 1], y_pred[..., width - 1 :]
    else:
        cos_part, radius = y_pred, None
    cos, ids, onehot, out_dtype, ok = _prepare(y_true, cos_part, "sphereface")
    logits = ops.where(onehot > 0, _psi(cos, margin), cos)
    if radius is None:
        logits = scale * logits
    else:
        logits = ops.cast(radius, cos.dtype) * logits
    return _weighted_ce(logits, ids, onehot, class_weights, out_dtype, ok)


def _prepare(y_true, y_pred, name):
    """(cos, ids, onehot, out_dtype, ok): compute-dtype inputs and the batch check."""
    y_pred = ops.convert_to_tensor(y_pred)
    out_dtype = y_pred.dtype
    cos = class_balanced._to_compute_dtype(y_pred)
    ids = class_balanced.to_class_ids(y_true, cos.shape[-1])
    ok = _checks.check_batch(y_true, cos, cos.shape[-1], name)
    ids = _checks.safe_ids(ids, ok)
    onehot = ops.one_hot(ids, cos.shape[-1], dtype=cos.dtype)
    return cos, ids, onehot, out_dtype, ok


def _weighted_ce(logits, ids, onehot, class_weights, out_dtype, ok):
    ce = -ops.sum(onehot * ops.log_softmax(logits, axis=-1), axis=-1)
    weights = class_balanced._gather_weights(class_weights, ids, logits.shape[-1], ce.dtype)
    return ops.cast(_checks.poison(weights * ce, ok), out_dtype)


def _psi(cos, margin):
    """Liu et al.'s monotonic `psi(theta)` (Eq. 7) for any real m > 0."""
    theta = ops.arccos(ops.clip(cos, -_COS_CLIP, _COS_CLIP))
    k = ops.floor(margin * theta / math.pi)
    sign = 1.0 - 2.0 * (k - 2.0 * ops.floor(k / 2.0))  # (-1) ** k for k >= 0
    return sign * ops.cos(margin * theta) - 2.0 * k


def asoftmax_scores(cos, norms, margin):
    """A-Softmax log-likelihood of every class, as `CosineHead(sphereface_margin=m)` outputs.

    `scores[i, j]` is the A-Softmax log-probability of class j for sample i if
    j were its label: the margin `psi` on column j, the plain cosine on the
    others, every logit times the feature norm `||x_i||` (Liu et al.):

    ```python
    psi = psi_m(acos(clip(cos, -1 + 1e-7, 1 - 1e-7)))     # as in `sphereface`
    logits_j = ||x|| * where(k == j, psi[j], cos[k])      # over k, for each j
    scores[:, j] = log_softmax(logits_j)[j]               # <= 0
    ```

    So `SphereFaceLoss(scale=None)` is `-w[y_i] * scores[i, y_i]`, the same
    value and gradient as `sphereface(y, concat([cos, ||x||]), m, None)`. The
    argmax over j is the argmax of the cosines (psi falls with theta, so a
    larger cosine has both a larger psi and smaller competitors). With a
    margin the rows of `exp(scores)` do not sum to 1: use
    `tfcell.evaluation.calibration` for probabilities. The cost is one
    `(N, C, C)` log-sum-exp.

    Args:
        cos: cosines `(N, C)`.
        norms: feature norms `||x||`, `(N, 1)` or `(N,)`.
        margin: the multiplicative angular margin m (Liu et al.: 4).

    Returns:
        `(N, C)` scores in the dtype of `cos`.
    """
    cos = ops.convert_to_tensor(cos)
    norms = ops.reshape(ops.cast(norms, cos.dtype), (-1, 1, 1))
    num_classes = cos.shape[-1]
    psi = _psi(cos, margin)
    # logits[i, j, k]: sample i, candidate label j, class k.
    eye = ops.expand_dims(ops.eye(num_classes, dtype="bool"), 0)
    logits = norms * ops.where(eye, ops.expand_dims(psi, -1), ops.expand_dims(cos, 1))
    target = norms[:, :, 0] * psi
    return target - ops.logsumexp(logits, axis=-1)


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
    `cos(m * theta)` (Eq. 7 of SphereFace, written for any real m > 0). The
    radius is a fixed scale s, as in the CFAL paper's Table IX, on the
    cosines of `CosineHead(num_classes)`; or, with `scale=None`, the
    un-normalised feature norm `||x||` of original A-Softmax, on the scores
    of `CosineHead(num_classes, sphereface_margin=m)`, which applies the
    margin itself (see the Note).

    ```python
    theta = acos(clip(cos, -1 + 1e-7, 1 - 1e-7))
    k = floor(margin * theta / pi)
    psi = (-1) ** k * cos(margin * theta) - 2 * k
    logits = scale * where(one_hot(y), psi, cos)
    loss_i = w[y_i] * CE(logits_i, y_i)
    # scale=None: y_pred = CosineHead(C, sphereface_margin=m) scores, where
    # scores[i, j] = log_softmax(||x_i|| * where(k == j, psi, cos))[j]
    loss_i = -w[y_i] * y_pred[i, y_i]         # the same value with r = ||x||
    ```

    Args:
        margin: multiplicative angular margin m. Default (None) 0.35, CFAL
            paper Table IX (IDC and CRC); Liu et al. use m = 4. None when
            `scale` is None: the head holds the margin then (a number with
            `scale=None` is the deprecated `(N, C + 1)` input, with a warning).
        scale: s (Table IX: 30 IDC, 20 CRC), or None for A-Softmax's `||x||`.
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
        - `scale=None` is Liu et al.'s A-Softmax with lambda = 0 (the target
          logit `||x|| * psi`). The loss needs `||x||` and the C cosines, C + 1
          numbers per sample, but a head whose `predict` gives `(N, C)` class
          scores has C: no `(N, C)` output lets a loss recover both (the C
          per-class losses are, up to reparametrisation, the only `(N, C)`
          output the loss factors through). So for A-Softmax the head
          computes those per-class log-likelihoods with its
          `sphereface_margin` (`tfcell.losses.asoftmax_scores`) and this loss
          picks the label's one: the same value and gradients as before,
          `predict` still gives `(N, C)` scores whose argmax is the cosines'.
          The head used to append `||x||` as an extra column, which broke
          `argmax(predict)` and Keras' "accuracy".
        - Liu et al. train with `(lambda * cos + psi) / (1 + lambda)` and
          anneal lambda from about 1000 down to 5; that schedule is training
          state, which a stateless loss does not hold, so it is not included.
        - Unlike the integer-m original, `k` is also defined for real m; for
          m < 1 it is always 0.

    Example:
    ```python
    x = keras.Input((64,))
    cos = tfcell.layers.CosineHead(num_classes=9)(x)
    model = keras.Model(x, cos)
    model.compile(optimizer="adam", loss=tfcell.losses.SphereFaceLoss(1.35, scale=30.0),
                  metrics=["accuracy"])
    # A-Softmax (Liu et al.): the margin goes to the head, the radius is ||x||.
    scores = tfcell.layers.CosineHead(num_classes=9, sphereface_margin=4.0)(x)
    model = keras.Model(x, scores)
    model.compile(optimizer="adam", loss=tfcell.losses.SphereFaceLoss(scale=None),
                  metrics=["accuracy"])
    ```

    Reference:
    - [Liu et al., 2017](https://arxiv.org/abs/1704.08063), Eq. 6-7.
    - [Mahbub et al., 2024](https://doi.org/10.1109/JBHI.2023.3336372), Table IX.
    """

    def __init__(
        self,
        margin=None,
        scale=30.0,
        class_weights=None,
        reduction="sum_over_batch_size",
        name="sphereface_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if scale is None and margin is not None:
            warnings.warn(
                f"SphereFaceLoss(margin={margin!r}, scale=None) is deprecated: it reads the "
                "(N, C + 1) output of the deprecated CosineHead(return_norms=True). Use "
                f"CosineHead(num_classes, sphereface_margin={margin!r}) and "
                "SphereFaceLoss(scale=None): predict then gives (N, C) scores (an (N, C) "
                "output cannot carry both the feature norm and the cosines, so the head "
                "applies the margin).",
                DeprecationWarning,
                stacklevel=2,
            )
        if margin is None and scale is not None:
            margin = _SPHEREFACE_MARGIN
        if margin is None:
            self.margin = None
            self.scale = None
            self.class_weights = class_balanced._validate_class_weights(class_weights)
            self._dtype_arg = class_balanced._dtype_config(dtype)
            return
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
