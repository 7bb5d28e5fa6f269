"""The YOLO-style detection loss of the exclusive cross-entropy study (Panteli et
al., ICCV 2021), with plain or exclusive cross-entropy on the background cells."""

import keras
from keras import ops

__all__ = ["DetectionLoss", "detection_loss"]

# Smallest value of `1 - exp(-CE)` fed to the focal power: `x ** 0.1` has an
# infinite slope at 0 (as in tfcell.losses.exclusive).
_TINY = 1e-30


def _annealed(epoch, midpoint, temperature, threshold):
    """ece_loss's sigmoid annealing: `sigmoid((epoch - midpoint) / temperature) * threshold`."""
    return ops.sigmoid((ops.cast(epoch, "float32") - midpoint) / temperature) * threshold


def detection_loss(
    y_true,
    y_pred,
    epoch=0.0,
    lambda_background=10.0,
    lambda_objects=1.0,
    lambda_box=10.0,
    exclusive=False,
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
    """Per-image detection loss on the grid of `tfcell.models.yolo_detector`.

    ```python
    obj, ignore = y_true[..., 4], y_true[..., 5]           # per cell
    bce = BCE(obj, y_pred[..., 4], from_logits=True)
    box = mean(((sigmoid(t_x), sigmoid(t_y), t_w, t_h) - y_true[..., :4]) ** 2)
    bg = (1 - obj) * (1 - ignore)                          # background cells
    if exclusive:                                          # ECE on the background
        p = sigmoid(y_pred[..., 4])
        s = (u <= 0.5 * sigmoid((epoch - 150) / 10)) & (p <= 0.5 * sigmoid((epoch - 50) / 10))
        bg_term = 0.2 * (1 - exp(-bce)) ** 0.1 * bce * s
    else:
        bg_term = bce
    loss = lambda_objects * sum(obj * bce) / max(sum(obj), 1)
         + lambda_box * sum(obj * box) / max(sum(obj), 1)
         + lambda_background * sum(bg * bg_term) / max(sum(bg), 1)
    ```

    Args:
        y_true: `(B, Gh, Gw, 6)` targets of `tfcell.models.encode_boxes`
            (x, y, log w, log h, objectness, ignore), or 5 channels (no
            ignore cells).
        y_pred: `(B, Gh, Gw, 5)` raw outputs (t_x, t_y, t_w, t_h, t_obj).
        epoch: the current epoch (exclusive mode's annealing).
        lambda_background: weight of the background (no-object) term
            (Table 2: 10).
        lambda_objects: weight of the objectness term of object cells
            (Table 2: 1).
        lambda_box: weight of the box term (not in Table 2; 10, see Note).
        exclusive: False: plain cross-entropy on the background cells; True:
            exclusive cross-entropy (unannotated nuclei may lie there).
        exclusivity_threshold, exclusivity_epoch: 0.5, 50 (Table 2, "background
            group annealing epoch").
        sampling_threshold, sampling_epoch: 0.5, 150 (Table 2, "negative
            sampling annealing epoch").
        temperature: 10. focal_alpha: 0.2. focal_gamma: 0.1.
        random_draws: optional uniform [0, 1) draws `(B, Gh, Gw)` for the
            sampling; drawn with `keras.random.uniform(seed=seed)` if None.
        seed: int, `keras.random.SeedGenerator` or None.

    Returns:
        Per-image loss `(B,)` in `y_pred`'s dtype (computed in float32).
    """
    y_pred = ops.convert_to_tensor(y_pred)
    out_dtype = y_pred.dtype
    pred = ops.cast(y_pred, "float32")
    true = ops.cast(ops.convert_to_tensor(y_true), "float32")
    if pred.shape[-1] != 5 or true.shape[-1] not in (5, 6):
        raise ValueError(
            "detection_loss expects y_pred (B, Gh, Gw, 5) raw outputs and y_true "
            "(B, Gh, Gw, 6) (or 5) targets of tfcell.models.encode_boxes; received "
            f"y_pred {pred.shape} and y_true {true.shape}."
        )
    obj = true[..., 4]
    ignore = true[..., 5] if true.shape[-1] == 6 else ops.zeros_like(obj)
    logits = pred[..., 4]
    bce = ops.binary_crossentropy(obj, logits, from_logits=True)
    box_pred = ops.concatenate([ops.sigmoid(pred[..., :2]), pred[..., 2:4]], axis=-1)
    box = ops.mean(ops.square(box_pred - true[..., :4]), axis=-1)
    background = (1.0 - obj) * (1.0 - ignore)

    if exclusive:
        if random_draws is None:
            random_draws = keras.random.uniform(ops.shape(obj), seed=seed)
        u = ops.reshape(ops.cast(random_draws, "float32"), ops.shape(obj))
        probability = ops.sigmoid(ops.stop_gradient(logits))
        sampled = ops.cast(
            u <= _annealed(epoch, sampling_epoch, temperature, sampling_threshold), "float32"
        ) * ops.cast(
            probability <= _annealed(epoch, exclusivity_epoch, temperature, exclusivity_threshold),
            "float32",
        )
        p_wrong = ops.maximum(-ops.expm1(-bce), _TINY)  # 1 - exp(-bce), accurate near 0
        background_term = focal_alpha * ops.power(p_wrong, focal_gamma) * bce * sampled
    else:
        background_term = bce

    axes = (1, 2)
    num_objects = ops.maximum(ops.sum(obj, axis=axes), 1.0)
    num_background = ops.maximum(ops.sum(background, axis=axes), 1.0)
    loss = (
        lambda_objects * ops.sum(obj * bce, axis=axes) / num_objects
        + lambda_box * ops.sum(obj * box, axis=axes) / num_objects
        + lambda_background * ops.sum(background * background_term, axis=axes) / num_background
    )
    return ops.cast(loss, out_dtype)


@keras.saving.register_keras_serializable(package="tfcell")
class DetectionLoss(keras.losses.Loss):
    """YOLO-style detection loss with an optional exclusive background term.

    Every grid cell predicts a box and its objectness. Cells that hold an
    annotated box centre (objects) get binary cross-entropy towards 1 and a
    squared error on the box; the other cells (background) get binary
    cross-entropy towards 0 (`exclusive=False`) or, with `exclusive=True`,
    the exclusive cross-entropy of Panteli et al.: in a sparsely annotated
    image an empty cell may hold an unannotated nucleus, so only randomly
    sampled cells that the model does not already call objects contribute,
    focally re-weighted, with both thresholds annealed by the epoch. Cells
    marked `ignore` in the target (known but unannotated objects) are left
    out of the background term in both modes. Each term is averaged over its
    own cells of the image, then weighted (Table 2: lambda_background = 10,
    lambda_objects = 1); the formula is in `detection_loss`.

    The exclusive mode needs the epoch: it is held in a non-trainable
    `keras.Variable` (`loss.epoch`) that
    `tfcell.training.EpochVariableCallback` sets at each epoch start.

    Args:
        lambda_background: 10 (Table 2). lambda_objects: 1 (Table 2).
        lambda_box: 10 (not in Table 2; see Note).
        exclusive: False (cross-entropy) or True (exclusive cross-entropy).
        exclusivity_threshold: 0.5. exclusivity_epoch: 50.
        sampling_threshold: 0.5. sampling_epoch: 150.
        temperature: 10. focal_alpha: 0.2. focal_gamma: 0.1.
        epoch: the starting epoch (0).
        seed: int or None, seeds the background sampling draws.
        reduction, name, dtype: as in `keras.losses.Loss`.

    Call arguments:
        y_true: `(B, Gh, Gw, 6)` targets of `tfcell.models.encode_boxes`
            (or 5 channels, without ignore cells).
        y_pred: `(B, Gh, Gw, 5)` raw outputs of `tfcell.models.yolo_detector`.

    Returns (with `reduction=None`): per-image values `(B,)`.

    Note:
        The supplement gives the two weights of Table 2 and says that ECE
        replaces the cross-entropy of the "no-objects group" (Table 4,
        citing Lin et al. for the weighting); the rest is our reading:
        - ECE on the objectness as NKI-AI/ece_loss's binary losses do
          (`BECELoss`: every background cell counts as unannotated, the
          exclusivity confidence is the objectness itself). We gate on the
          probability `sigmoid(t_obj)`, not the logit, so the annealed
          threshold 0.5 is the usual decision boundary. Annotated object
          cells always get plain cross-entropy.
        - lambda_background multiplies the exclusive term as it multiplies
          the cross-entropy term (Table 4's "larger lambda_noobj" with ECE).
        - The box term (x, y through a sigmoid, log w, log h; squared error
          averaged over the four) and lambda_box = 10 are not in the
          supplement. Table 2's lambda_noobj = 10, lambda_obj = 1 are the
          weights of the widely copied YOLOv3 tutorial loss (A. Persson,
          Machine-Learning-Collection), whose box weight is 10 with the
          same sigmoid / log-space box terms, so we take 10 as well.
        - Each term is averaged over its own cells per image (not summed
          over the batch as YOLO does) so that `call()` returns per-image
          values; an image without objects has object and box terms 0.
        - The `ignore` channel is our addition: it lets an experiment with
          known unannotated nuclei (`tfcell.data.sparsify_annotations`) keep
          them out of the background, an oracle the paper does not use.

    Example:
    ```python
    loss = tfcell.losses.DetectionLoss(exclusive=True, seed=0)
    model = tfcell.models.yolo_detector(width=16)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=loss)
    model.fit(ds, epochs=300, callbacks=[tfcell.training.EpochVariableCallback(loss)])
    ```

    Reference:
    - [Panteli et al., 2021](https://arxiv.org/abs/2104.10425), supplement
      Sec. 3, Tables 2 and 4; NKI-AI/ece_loss v1.1, `ece_loss/loss.py`.
    - [Redmon et al., 2016](https://arxiv.org/abs/1506.02640), Eq. 3 (YOLO).
    """

    def __init__(
        self,
        lambda_background=10.0,
        lambda_objects=1.0,
        lambda_box=10.0,
        exclusive=False,
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
        name="detection",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        for key, value in (
            ("lambda_background", lambda_background),
            ("lambda_objects", lambda_objects),
            ("lambda_box", lambda_box),
            ("focal_alpha", focal_alpha),
            ("focal_gamma", focal_gamma),
        ):
            if float(value) < 0.0:
                raise ValueError(
                    f"DetectionLoss: `{key}` must be >= 0, received {value!r} (Table 2: "
                    "lambda_background=10, lambda_objects=1; focal 0.2, 0.1)."
                )
        for key, value in (
            ("exclusivity_threshold", exclusivity_threshold),
            ("sampling_threshold", sampling_threshold),
        ):
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(
                    f"DetectionLoss: `{key}` is a probability in [0, 1], received "
                    f"{value!r} (paper: 0.5)."
                )
        if float(temperature) <= 0.0:
            raise ValueError(
                f"DetectionLoss: `temperature` must be > 0, received {temperature!r} (paper: 10)."
            )
        if float(epoch) < 0:
            raise ValueError(f"DetectionLoss: `epoch` must be >= 0, received {epoch!r}.")
        self.lambda_background = float(lambda_background)
        self.lambda_objects = float(lambda_objects)
        self.lambda_box = float(lambda_box)
        self.exclusive = bool(exclusive)
        self.exclusivity_threshold = float(exclusivity_threshold)
        self.exclusivity_epoch = float(exclusivity_epoch)
        self.sampling_threshold = float(sampling_threshold)
        self.sampling_epoch = float(sampling_epoch)
        self.temperature = float(temperature)
        self.focal_alpha = float(focal_alpha)
        self.focal_gamma = float(focal_gamma)
        self.seed = seed
        self.epoch = keras.Variable(
            float(epoch), dtype="float32", trainable=False, name="detection_epoch"
        )
        self._seed_generator = keras.random.SeedGenerator(seed)

    def call(self, y_true, y_pred):
        return detection_loss(
            y_true,
            y_pred,
            self.epoch,
            lambda_background=self.lambda_background,
            lambda_objects=self.lambda_objects,
            lambda_box=self.lambda_box,
            exclusive=self.exclusive,
            exclusivity_threshold=self.exclusivity_threshold,
            exclusivity_epoch=self.exclusivity_epoch,
            sampling_threshold=self.sampling_threshold,
            sampling_epoch=self.sampling_epoch,
            temperature=self.temperature,
            focal_alpha=self.focal_alpha,
            focal_gamma=self.focal_gamma,
            seed=self._seed_generator,
        )

    def get_config(self):
        return {
            "lambda_background": self.lambda_background,
            "lambda_objects": self.lambda_objects,
            "lambda_box": self.lambda_box,
            "exclusive": self.exclusive,
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
