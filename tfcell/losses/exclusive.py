"""Exclusive cross-entropy (Panteli et al., ICCV 2021) for sparse annotations."""

import keras
from keras import ops

from tfcell.losses import class_balanced

__all__ = ["ExclusiveCrossentropyLoss", "exclusive_crossentropy"]

# Smallest value of `1 - exp(-CE)` fed to the focal power: `x ** 0.1` has an
# infinite slope at 0 (CE == 0 for a saturated, correct logit).
_TINY = 1e-30


def _annealing(epoch, midpoint, temperature, threshold):
    """`sigmoid((epoch - midpoint) / temperature) * threshold` (ece_loss)."""
    epoch = ops.cast(epoch, "float32")
    return ops.sigmoid((epoch - midpoint) / temperature) * threshold


def _labels_to_ids(y_true, num_classes, logits_rank):
    """Ids of shape `logits.shape[:-1]` from ids, ids with a trailing 1, or one-hot.

    Classification-shaped logits `(N, C)` use the shared
    `class_balanced.to_class_ids`; segmentation logits `(B, H, W, C)` need
    the rank of the logits to tell `(B, H, W)` ids from `(B, H, W, 1)` ones.
    """
    if logits_rank == 2:
        return class_balanced.to_class_ids(y_true, num_classes)
    y_true = ops.convert_to_tensor(y_true)
    rank = len(y_true.shape)
    if rank == logits_rank:
        if y_true.shape[-1] == 1:
            y_true = ops.squeeze(y_true, axis=-1)
        elif y_true.shape[-1] == num_classes:
            y_true = ops.argmax(y_true, axis=-1)
        else:
            raise ValueError(
                f"`y_true` of shape {y_true.shape} does not match logits with "
                f"{num_classes} classes: pass integer ids of shape logits.shape[:-1] "
                "(or with a trailing 1), or one-hot labels of the logits' shape."
            )
    return ops.cast(y_true, "int32")


def exclusive_crossentropy(
    y_true,
    logits,
    epoch,
    annotated_mask=None,
    unannotated_label=0,
    exclusivity_threshold=0.5,
    exclusivity_epoch=50,
    sampling_threshold=0.5,
    sampling_epoch=150,
    temperature=10.0,
    focal_alpha=0.2,
    focal_gamma=0.1,
    random_draws=None,
    seed=None,
):
    """Per-element exclusive cross-entropy (ece_loss v1.1 `ExclusiveCrossEntropyLoss`).

    ```python
    ce = CE(y_true, logits)                       # per element, unreduced
    conf = top1(logits) - top2(logits)            # multi-class confidence
    s = (not annotated) and (u <= sampling_threshold * sigmoid((epoch - 150) / 10))
                        and (conf <= exclusivity_threshold * sigmoid((epoch - 50) / 10))
    loss = ce * annotated + 0.2 * (1 - exp(-ce)) ** 0.1 * ce * s
    ```

    Args:
        y_true: int ids of shape `logits.shape[:-1]` (or with a trailing 1),
            or one-hot of the logits' shape. For unannotated elements the id is
            the class the sampled term pushes towards (ece_loss: 0, background).
        logits: `(N, C)` classification or `(B, H, W, C)` segmentation logits.
        epoch: current epoch (number, tensor or `keras.Variable`).
        annotated_mask: bool/float of shape `y_ids.shape`, true where the
            element is annotated. Default: `y_ids != unannotated_label`
            (ece_loss's `zeroth_label_as_unannotated`).
        unannotated_label: the id that marks unannotated elements when
            `annotated_mask` is None (ece_loss: 0); `None` = all annotated.
        exclusivity_threshold, exclusivity_epoch: confidence threshold 0.5
            annealed around epoch 50 ("background group annealing epoch").
        sampling_threshold, sampling_epoch: random background sampling
            threshold 0.5 annealed around epoch 150 ("negative sampling").
        temperature: annealing temperature (10).
        focal_alpha, focal_gamma: focal re-weighting of the sampled term
            (0.2, 0.1).
        random_draws: optional uniform [0, 1) draws of shape `y_ids.shape`;
            if None they are drawn with `keras.random.uniform(seed=seed)`.
        seed: int, `keras.random.SeedGenerator` or None.

    Returns:
        Per-element loss, shape `logits.shape[:-1]`, in the logits' dtype
        (computed in float32).

    Reference:
    - [Panteli et al., 2021](https://arxiv.org/abs/2104.10425), supplement
      Table 2; NKI-AI/ece_loss v1.1, `ece_loss/loss.py`.
    """
    logits = ops.convert_to_tensor(logits)
    out_dtype = logits.dtype
    num_classes = logits.shape[-1]
    if num_classes is None or num_classes < 2:
        raise ValueError(
            f"`logits` must have a known last axis of >= 2 classes, received shape {logits.shape}."
        )
    x = ops.cast(logits, "float32")
    ids = _labels_to_ids(y_true, num_classes, len(logits.shape))
    ce = ops.sparse_categorical_crossentropy(ids, x, from_logits=True)

    if annotated_mask is None:
        if unannotated_label is None:
            annotated = ops.ones_like(ce)
        else:
            annotated = ops.cast(ops.not_equal(ids, unannotated_label), "float32")
    else:
        annotated = ops.cast(ops.reshape(annotated_mask, ops.shape(ce)), "float32")

    if random_draws is None:
        random_draws = keras.random.uniform(ops.shape(ce), seed=seed)
    u = ops.reshape(ops.cast(random_draws, "float32"), ops.shape(ce))
    top2 = ops.top_k(ops.stop_gradient(x), k=2)[0]
    confidence = top2[..., 0] - top2[..., 1]

    sampling_t = _annealing(epoch, sampling_epoch, temperature, sampling_threshold)
    exclusivity_t = _annealing(epoch, exclusivity_epoch, temperature, exclusivity_threshold)
    sampled = (
        (1.0 - annotated)
        * ops.cast(u <= sampling_t, "float32")
        * ops.cast(confidence <= exclusivity_t, "float32")
    )
    p_wrong = ops.maximum(-ops.expm1(-ce), _TINY)  # 1 - exp(-ce), accurate near 0
    focal = focal_alpha * ops.power(p_wrong, focal_gamma) * ce
    loss = ce * annotated + focal * sampled
    return ops.cast(loss, out_dtype)


@keras.saving.register_keras_serializable(package="tfcell")
class ExclusiveCrossentropyLoss(keras.losses.Loss):
    """Exclusive cross-entropy for sparse (non-exhaustive) annotations.

    Annotated elements get plain cross-entropy; unannotated elements (not
    "background": the object may simply not have been labelled) contribute
    only when randomly sampled and not confidently predicted, with a focal
    re-weighting. Both thresholds rise with the epoch (sigmoid annealing),
    so the loss needs the epoch: it holds it in a non-trainable
    `keras.Variable` (`loss.epoch`) that
    `tfcell.training.EpochVariableCallback` sets at the start of every
    epoch of `fit`. The compiled train function reads the variable, so no
    retracing is needed. `get_config()["epoch"]` is the variable's current
    value, so a model saved with `compile=True` resumes the annealing where
    it stopped.

    ```python
    ce = CE(y_true, logits)
    conf = top1(logits) - top2(logits)
    s = unannotated & (u <= 0.5 * sigmoid((epoch - 150) / 10)) \\
                    & (conf <= 0.5 * sigmoid((epoch - 50) / 10))
    loss_element = ce * annotated + 0.2 * (1 - exp(-ce)) ** 0.1 * ce * s
    loss_sample = mean over the element axes (H, W) of loss_element
    ```

    Args:
        unannotated_label: id marking unannotated elements in `y_true`
            (ece_loss: 0); also the class the sampled term pushes towards.
            `None`: every element annotated (plain CE).
        exclusivity_threshold: 0.5. exclusivity_epoch: 50.
        sampling_threshold: 0.5. sampling_epoch: 150.
        temperature: 10. focal_alpha: 0.2. focal_gamma: 0.1.
        epoch: the starting epoch (0).
        seed: int or None, seeds the `keras.random.SeedGenerator` of the
            background draws (fresh draws every step, reproducible).
        reduction, name, dtype: as in `keras.losses.Loss`.

    Call arguments:
        y_true: ids `(N,)`, `(B, H, W)` (or with a trailing 1), or one-hot.
        y_pred: logits `(N, C)` or `(B, H, W, C)`.

    Returns (with `reduction=None`): per-sample values `(N,)`/`(B,)`, the mean
    over pixels for segmentation.

    Note:
        - ece_loss returns per-pixel values that the training script averages;
          per-sample means followed by the batch mean give the same number
          for equally sized images, and let `sample_weight` be per image.
        - The confidence uses `stop_gradient` (it only gates); the focal power
          is evaluated on `max(1 - exp(-ce), 1e-30)`, in float32, so a
          saturated correct logit (ce == 0) has a finite gradient; ece_loss
          would give NaN there.
        - The epoch lives in a variable of the loss, not of the model: it is
          saved through the config, not the weights.

    Example:
    ```python
    loss = tfcell.losses.ExclusiveCrossentropyLoss(seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=loss)
    model.fit(ds, epochs=300, callbacks=[tfcell.training.EpochVariableCallback(loss)])
    ```

    Reference:
    - [Panteli et al., 2021](https://arxiv.org/abs/2104.10425); supplement
      Table 2; NKI-AI/ece_loss v1.1 @d9b109a, `ece_loss/loss.py`
    """

    def __init__(
        self,
        unannotated_label=0,
        exclusivity_threshold=0.5,
        exclusivity_epoch=50,
        sampling_threshold=0.5,
        sampling_epoch=150,
        temperature=10.0,
        focal_alpha=0.2,
        focal_gamma=0.1,
        epoch=0,
        seed=None,
        reduction="sum_over_batch_size",
        name="exclusive_crossentropy",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if float(exclusivity_threshold) < 0.0:
            raise ValueError(
                "`exclusivity_threshold` (a gap between logits) must be >= 0, "
                f"received {exclusivity_threshold!r} (paper: 0.5)."
            )
        if not 0.0 <= float(sampling_threshold) <= 1.0:
            raise ValueError(
                "`sampling_threshold` is a probability in [0, 1], "
                f"received {sampling_threshold!r} (paper: 0.5)."
            )
        if float(temperature) <= 0.0:
            raise ValueError(f"`temperature` must be > 0, received {temperature!r} (paper: 10).")
        if float(focal_alpha) < 0.0 or float(focal_gamma) < 0.0:
            raise ValueError(
                f"`focal_alpha` and `focal_gamma` must be >= 0, received "
                f"{focal_alpha!r}, {focal_gamma!r} (paper: 0.2, 0.1)."
            )
        if float(epoch) < 0:
            raise ValueError(f"`epoch` must be >= 0, received {epoch!r}.")
        if unannotated_label is not None and not isinstance(unannotated_label, int):
            raise ValueError(
                f"`unannotated_label` must be an int id or None, received {unannotated_label!r}."
            )
        self.unannotated_label = unannotated_label
        self.exclusivity_threshold = float(exclusivity_threshold)
        self.exclusivity_epoch = float(exclusivity_epoch)
        self.sampling_threshold = float(sampling_threshold)
        self.sampling_epoch = float(sampling_epoch)
        self.temperature = float(temperature)
        self.focal_alpha = float(focal_alpha)
        self.focal_gamma = float(focal_gamma)
        self.seed = seed
        self.epoch = keras.Variable(
            float(epoch), dtype="float32", trainable=False, name="ece_epoch"
        )
        self._seed_generator = keras.random.SeedGenerator(seed)

    def call(self, y_true, y_pred):
        loss = exclusive_crossentropy(
            y_true,
            y_pred,
            self.epoch,
            unannotated_label=self.unannotated_label,
            exclusivity_threshold=self.exclusivity_threshold,
            exclusivity_epoch=self.exclusivity_epoch,
            sampling_threshold=self.sampling_threshold,
            sampling_epoch=self.sampling_epoch,
            temperature=self.temperature,
            focal_alpha=self.focal_alpha,
            focal_gamma=self.focal_gamma,
            seed=self._seed_generator,
        )
        if len(loss.shape) > 1:
            loss = ops.mean(loss, axis=tuple(range(1, len(loss.shape))))
        return loss

    def get_config(self):
        return {
            "unannotated_label": self.unannotated_label,
            "exclusivity_threshold": self.exclusivity_threshold,
            "exclusivity_epoch": self.exclusivity_epoch,
            "sampling_threshold": self.sampling_threshold,
            "sampling_epoch": self.sampling_epoch,
            "temperature": self.temperature,
            "focal_alpha": self.focal_alpha,
            "focal_gamma": self.focal_gamma,
            "epoch": float(keras.ops.convert_to_numpy(self.epoch)),
            "seed": self.seed,
            "reduction": self.reduction,
            "name": self.name,
            "dtype": self.dtype,
        }
