"""Affinity loss (Hayat et al., ICCV 2019) and centre-focused affinity loss, CFAL
(Mahbub et al., JBHI 2024), on the affinities of `tfcell.layers.GaussianAffinity`."""

import keras
import numpy as np
from keras import ops

from tfcell.losses import _checks, class_balanced

__all__ = [
    "AffinityLoss",
    "CFALoss",
    "affinity",
    "cfal",
    "cfal_regularizer_factor",
    "prototype_diversity",
]


def affinity(y_true, y_pred, margin=0.1):
    """Per-sample max-margin loss on affinities (Eq. 5 of the CFAL paper).

    ```python
    L_mm_i = sum_{j != y_i} max(0, margin + d[i, j] - d[i, y_i])
    ```

    Args:
        y_true: int ids `(N,)`/`(N, 1)` or one-hot `(N, C)`.
        y_pred: affinities `d`, `(N, C)`, from `GaussianAffinity`.
        margin: lambda, the enforced margin (Table IX: 0.1).

    Returns:
        `L_mm`, shape `(N,)`, in the dtype of `y_pred`.
    """
    y_pred = ops.convert_to_tensor(y_pred)
    out_dtype = y_pred.dtype
    y_pred = class_balanced._to_compute_dtype(y_pred)
    ids, ok = _checked_ids(y_true, y_pred, "affinity")
    return ops.cast(_checks.poison(_max_margin(ids, y_pred, margin)[0], ok), out_dtype)


def cfal(y_true, y_pred, margin=0.1, gamma=1.0, class_weights=None):
    """Per-sample centre-focused affinity loss (Eq. 7 of the CFAL paper).

    ```python
    loss_i = w[y_i] * stop_gradient((1 - d[i, y_i]) ** gamma) * L_mm_i
    ```

    Args:
        y_true: int ids `(N,)`/`(N, 1)` or one-hot `(N, C)`.
        y_pred: affinities `d`, `(N, C)`, from `GaussianAffinity`.
        margin: lambda (Table IX: 0.1).
        gamma: focusing parameter (Table IX: 2.0 IDC, 1.0 CRC).
        class_weights: None (all ones) or C floats.

    Returns:
        Per-sample losses `(N,)` in the dtype of `y_pred`.
    """
    y_pred = ops.convert_to_tensor(y_pred)
    out_dtype = y_pred.dtype
    y_pred = class_balanced._to_compute_dtype(y_pred)
    num_classes = y_pred.shape[-1]
    ids, ok = _checked_ids(y_true, y_pred, "cfal")
    l_mm, d_true = _max_margin(ids, y_pred, margin)
    weights = class_balanced._gather_weights(class_weights, ids, num_classes, y_pred.dtype)
    losses = weights * _focus(d_true, gamma) * l_mm
    return ops.cast(_checks.poison(losses, ok), out_dtype)


def cfal_regularizer_factor(y_true, y_pred, gamma=1.0, class_weights=None):
    """The factor Eq. 7 of the CFAL paper puts on the diversity regulariser R.

    Eq. 7 weights the whole affinity loss `L_a = L_mm + R` (Eq. 4) of each
    sample, so, averaged over a batch, R is multiplied by the batch mean of
    the per-sample weight (the authors' code computes the same number):

    ```python
    factor = mean_i(w[y_i] * (1 - d[i, y_i]) ** gamma)     # no gradient
    cfal_total = mean_i(cfal_i) + factor * R               # Eq. 7 averaged
    ```

    `GaussianAffinity` adds R with a constant `diversity_weight` because a
    layer has no labels; this function measures the factor on a batch (or a
    validation set) so that `diversity_weight` can be set to it, or logged.
    It starts near `mean_i w[y_i]` (about 1) and falls towards 0 as the
    samples reach their centres (0.1-0.5 in the authors' CRC/IDC runs).

    Args:
        y_true: int ids `(N,)`/`(N, 1)` or one-hot `(N, C)`.
        y_pred: affinities `d`, `(N, C)`, from `GaussianAffinity`.
        gamma: focusing parameter, as in `cfal`.
        class_weights: None (all ones) or C floats, as in `cfal`.

    Returns:
        A float32 scalar (0 for an empty batch).
    """
    y_pred = class_balanced._to_compute_dtype(ops.convert_to_tensor(y_pred))
    num_classes = y_pred.shape[-1]
    ids, ok = _checked_ids(y_true, y_pred, "cfal_regularizer_factor")
    d_true = ops.sum(ops.one_hot(ids, num_classes, dtype=y_pred.dtype) * y_pred, axis=-1)
    weights = class_balanced._gather_weights(class_weights, ids, num_classes, y_pred.dtype)
    per_sample = _checks.poison(weights * _focus(d_true, gamma), ok)
    count = ops.cast(ops.shape(per_sample)[0], y_pred.dtype)
    return ops.stop_gradient(ops.sum(per_sample) / ops.maximum(count, 1.0))


def _focus(d_true, gamma):
    """`stop_gradient((1 - d_y) ** gamma)`; affinities lie in (0, 1], the clip
    guards against inputs slightly outside."""
    return ops.stop_gradient(ops.power(ops.clip(1.0 - d_true, 0.0, 1.0), gamma))


def _checked_ids(y_true, y_pred, name):
    """Class ids `(N,)` and the batch check's `ok` (see `_checks`)."""
    num_classes = y_pred.shape[-1]
    ids = class_balanced.to_class_ids(y_true, num_classes)
    ok = _checks.check_batch(y_true, y_pred, num_classes, name)
    return _checks.safe_ids(ids, ok), ok


def prototype_diversity(centers):
    """Diversity regulariser R over all prototypes (Eq. 6 of the CFAL paper).

    ```python
    w = reshape(centers, (M, h))                  # M = num_classes * num_centers
    G[a, b] = ||w[a] - w[b]||^2
    mu = mean_{a < b} G[a, b]
    R = mean_{a < b} (G[a, b] - mu) ** 2
    ```

    Args:
        centers: `(C, m, h)` (the `GaussianAffinity` weight) or `(M, h)`; the
            shape must be static (it is a layer weight).

    Returns:
        A scalar; 0 when there is a single prototype.
    """
    centers = ops.convert_to_tensor(centers)
    features = centers.shape[-1]
    flat = ops.reshape(centers, (-1, features))
    count = flat.shape[0]
    if count is None:
        raise ValueError(
            "`prototype_diversity` needs a static number of prototypes. Received "
            f"centers of shape {tuple(centers.shape)}; pass the layer's weight."
        )
    if count < 2:
        return ops.zeros((), dtype=flat.dtype)
    diff = ops.expand_dims(flat, 1) - ops.expand_dims(flat, 0)
    gram = ops.sum(ops.square(diff), axis=-1)
    # Strictly upper triangle: each unordered pair once, the zero diagonal out.
    mask = ops.convert_to_tensor(np.triu(np.ones((count, count)), k=1), dtype=flat.dtype)
    pairs = count * (count - 1) / 2.0
    mu = ops.sum(gram * mask) / pairs
    return ops.sum(ops.square(gram - mu) * mask) / pairs


def _max_margin(ids, d, margin):
    """L_mm (N,) and d[i, y_i] (N,) for int ids and affinities d (N, C)."""
    onehot = ops.one_hot(ids, d.shape[-1], dtype=d.dtype)
    d_true = ops.sum(onehot * d, axis=-1)
    hinge = ops.relu(margin + d - ops.expand_dims(d_true, -1))
    return ops.sum(hinge * (1.0 - onehot), axis=-1), d_true


@keras.saving.register_keras_serializable(package="tfcell")
class AffinityLoss(keras.losses.Loss):
    """Max-margin affinity loss of Hayat et al. (vanilla or class-balanced).

    `y_pred` are the affinities of `tfcell.layers.GaussianAffinity`; the
    diversity regulariser R (Eq. 6) is added by that layer with `add_loss`, so
    the total loss is `mean_i(loss_i) + R` as in Eq. 4.

    ```python
    L_mm_i = sum_{j != y_i} max(0, margin + d[i, j] - d[i, y_i])
    loss_i = w[y_i] * L_mm_i          # w = 1 when class_weights is None
    ```

    Args:
        margin: lambda (CFAL paper Table IX: 0.1).
        class_weights: None for the vanilla affinity loss (Hayat et al.);
            C floats for the class-balanced affinity loss of the CFAL
            ablation (Tables XI, XII).
        reduction, name, dtype: as in `keras.losses.Loss`.

    Note:
        The authors' code (koshian2/affinity-loss, reused by the CFAL
        authors) returns R as an extra output column and adds it to every
        sample's loss; tfcell adds it once per batch with the layer's
        `add_loss` (the same total with the default mean reduction). With
        class weights, R is therefore not multiplied by `w[y_i]`.

    Example:
    ```python
    x = keras.Input((64,))
    d = tfcell.layers.GaussianAffinity(num_classes=8, sigma=130.0)(x)
    model = keras.Model(x, d)
    model.compile(optimizer="adam", loss=tfcell.losses.AffinityLoss(margin=0.1))
    ```

    Reference:
    - [Hayat et al., 2019](https://arxiv.org/abs/1901.07711), Eq. 5-7.
    - [Mahbub et al., 2024](https://doi.org/10.1109/JBHI.2023.3336372), Eq. 4-6.
    """

    def __init__(
        self,
        margin=0.1,
        class_weights=None,
        reduction="sum_over_batch_size",
        name="affinity_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.margin = class_balanced._validate_float(margin, "margin", minimum=0.0)
        self.class_weights = class_balanced._validate_class_weights(class_weights)
        self._dtype_arg = class_balanced._dtype_config(dtype)

    def call(self, y_true, y_pred):
        y_pred = class_balanced._to_compute_dtype(ops.convert_to_tensor(y_pred))
        num_classes = y_pred.shape[-1]
        ids, ok = _checked_ids(y_true, y_pred, self.name)
        weights = class_balanced._gather_weights(self.class_weights, ids, num_classes, y_pred.dtype)
        return _checks.poison(weights * _max_margin(ids, y_pred, self.margin)[0], ok)

    def get_config(self):
        return {
            "margin": self.margin,
            "class_weights": self.class_weights,
            **class_balanced._loss_config(self),
        }


@keras.saving.register_keras_serializable(package="tfcell")
class CFALoss(keras.losses.Loss):
    """Centre-focused affinity loss, CFAL (Mahbub et al., JBHI 2024, Eq. 7).

    The affinity (max-margin) loss of each sample is weighted by the
    class-balanced weight of its class (global, minority classes count more)
    and by `(1 - d[i, y_i]) ** gamma` (local: samples far from their class
    centre count more). `y_pred` are the affinities of
    `tfcell.layers.GaussianAffinity`, which also adds the diversity
    regulariser R with `add_loss`.

    ```python
    L_mm_i = sum_{j != y_i} max(0, margin + d[i, j] - d[i, y_i])
    loss_i = w[y_i] * stop_gradient((1 - d[i, y_i]) ** gamma) * L_mm_i
    total = mean_i(loss_i) + diversity_weight * R     # R from GaussianAffinity
    # Eq. 7: diversity_weight = mean_i(w[y_i] * (1 - d[i, y_i]) ** gamma), see Note
    ```

    Args:
        margin: lambda (Table IX: 0.1 for IDC and CRC).
        gamma: focusing parameter (Table IX: 2.0 IDC, 1.0 CRC).
        class_weights: C floats, `class_balanced_weights(counts, beta)` with
            beta 0.999 (IDC) or 0.9999 (CRC), Table IX; None gives weights 1
            (the focal term alone).
        reduction, name, dtype: as in `keras.losses.Loss`.

    Note:
        - Eq. 7 writes the weight as `1 / E_n` with `E_n = (1 - beta) /
          (1 - beta ** n)` (Eq. 1); that expression is already Cui's inverse
          effective number, and the authors' code multiplies by it (normalised
          to sum C), as tfcell does.
        - The authors' code (Taslim-M/CFAL-max-margin-keras, loss/cfal_loss.py)
          multiplies `weights` of shape (N,) by `(1 - d_y)` of shape (N, 1);
          the broadcast makes an (N, N) matrix whose mean is a batch-level
          scalar, so every sample ends up weighted by the batch average
          rather than by its own class weight and distance. tfcell keeps the
          per-sample product the paper writes.
        - The authors' code reads the batch size from the static shape
          (`onehot.shape[0]`), so it cannot run under `model.fit` with an
          unknown or ragged last batch; tfcell uses no batch size at all.
        - The authors' code stops the gradient through the weight
          `w[y_i] * (1 - d[i, y_i]) ** gamma`; tfcell keeps that: the focal
          term only re-weights samples, it is not itself minimised.
        - Eq. 7 weights the whole `L_a = L_mm + R` (Eq. 4) of each sample, and
          the authors' code multiplies R by each sample's weight, so averaged
          over a batch R carries the factor
          `mean_i(w[y_i] * (1 - d[i, y_i]) ** gamma)` (no gradient; 0.1-0.5
          once training settles). In tfcell R lives in `GaussianAffinity`
          (`add_loss`), which has no labels, while the factor needs them, and
          this loss cannot see R; so R is added with the layer's constant
          `diversity_weight` (default 1, which makes it 2-10 times stronger
          than in the paper). `regularizer_factor(y_true, y_pred)` returns
          the paper's factor for a batch: set the layer's `diversity_weight`
          to its value on the training data to follow the paper's strength
          (tested against a NumPy loop in tests/losses/affinity_test.py).

    Example:
    ```python
    w = tfcell.losses.class_balanced_weights(counts, beta=0.9999)
    x = keras.Input((64,))
    d = tfcell.layers.GaussianAffinity(num_classes=9, sigma=130.0)(x)
    model = keras.Model(x, d)
    model.compile(optimizer="adam",
                  loss=tfcell.losses.CFALoss(margin=0.1, gamma=1.0, class_weights=w))
    ```

    Reference:
    - [Mahbub et al., 2024](https://doi.org/10.1109/JBHI.2023.3336372), Eq. 1-7,
      Table IX.
    """

    def __init__(
        self,
        margin=0.1,
        gamma=1.0,
        class_weights=None,
        reduction="sum_over_batch_size",
        name="cfal_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.margin = class_balanced._validate_float(margin, "margin", minimum=0.0)
        self.gamma = class_balanced._validate_float(gamma, "gamma", minimum=0.0)
        self.class_weights = class_balanced._validate_class_weights(class_weights)
        self._dtype_arg = class_balanced._dtype_config(dtype)

    def regularizer_factor(self, y_true, y_pred):
        """Eq. 7's weight on R for this batch: `mean_i(w[y_i] (1 - d[i, y_i]) ** gamma)`.

        See `cfal_regularizer_factor` and the Note on R above.
        """
        return cfal_regularizer_factor(y_true, y_pred, self.gamma, self.class_weights)

    def call(self, y_true, y_pred):
        return cfal(
            y_true,
            y_pred,
            margin=self.margin,
            gamma=self.gamma,
            class_weights=self.class_weights,
        )

    def get_config(self):
        return {
            "margin": self.margin,
            "gamma": self.gamma,
            "class_weights": self.class_weights,
            **class_balanced._loss_config(self),
        }
