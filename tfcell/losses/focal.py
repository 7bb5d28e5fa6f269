"""Class-balanced focal loss (Lin et al., 2017, with Cui et al.'s class weights)."""

import keras
from keras import ops

from tfcell.losses import _checks, class_balanced

__all__ = ["ClassBalancedFocalLoss", "class_balanced_focal"]

_VARIANTS = ("softmax", "sigmoid")


def class_balanced_focal(
    y_true, y_pred, gamma=2.0, class_weights=None, from_logits=False, variant="softmax"
):
    """Per-sample class-balanced focal loss, softmax or one-vs-all sigmoid.

    ```python
    # variant="softmax" (the CFAL paper's focal baseline, Sec. III-A)
    p = softmax(y_pred_i)                      # or y_pred_i if probabilities
    loss_i = -w[y_i] * (1 - p[y_i]) ** gamma * log(p[y_i])
    # variant="sigmoid" (Cui's focal_loss, one sigmoid per class)
    t = one_hot(y_i, C); p = sigmoid(y_pred_i)
    p_t = where(t == 1, p, 1 - p)
    loss_i = w[y_i] * sum_c (1 - p_t[c]) ** gamma * BCE(t[c], y_pred_i[c])
    ```

    Args:
        y_true: int ids `(N,)`/`(N, 1)` or one-hot `(N, C)`.
        y_pred: logits or probabilities (softmax rows for "softmax",
            independent sigmoids for "sigmoid"), `(N, C)`.
        gamma: focusing parameter >= 0 (Lin et al.: 2.0).
        class_weights: None or C floats.
        from_logits: whether `y_pred` holds logits.
        variant: "softmax" or "sigmoid".

    Returns:
        Per-sample losses `(N,)` in the dtype of `y_pred`.
    """
    y_pred = ops.convert_to_tensor(y_pred)
    out_dtype = y_pred.dtype
    y_pred = class_balanced._to_compute_dtype(y_pred)
    num_classes = y_pred.shape[-1]
    ids = class_balanced.to_class_ids(y_true, num_classes)
    ok = _checks.check_batch(y_true, y_pred, num_classes, "class_balanced_focal")
    ids = _checks.safe_ids(ids, ok)
    onehot = ops.one_hot(ids, num_classes, dtype=y_pred.dtype)
    eps = keras.config.epsilon()
    if variant == "softmax":
        if from_logits:
            log_p = ops.sum(onehot * ops.log_softmax(y_pred, axis=-1), axis=-1)
        else:
            probs = ops.clip(y_pred, eps, 1.0 - eps)
            probs = probs / ops.sum(probs, axis=-1, keepdims=True)
            log_p = ops.log(ops.sum(onehot * probs, axis=-1))
        # The clip keeps pow's gradient finite for gamma < 1 when p_y -> 1.
        modulator = ops.power(ops.clip(1.0 - ops.exp(log_p), eps, 1.0), gamma)
        per_sample = -modulator * log_p
    elif variant == "sigmoid":
        if from_logits:
            bce = ops.binary_crossentropy(onehot, y_pred, from_logits=True)
            # Cui's stable modulator: exp(-g*t*z - g*log(1 + exp(-z))) = (1 - p_t)**g,
            # with softplus(-z) for log(1 + exp(-z)) so very negative logits stay finite.
            modulator = ops.exp(-gamma * onehot * y_pred - gamma * ops.softplus(-y_pred))
        else:
            probs = ops.clip(y_pred, eps, 1.0 - eps)
            bce = -(onehot * ops.log(probs) + (1.0 - onehot) * ops.log(1.0 - probs))
            p_t = onehot * probs + (1.0 - onehot) * (1.0 - probs)
            modulator = ops.power(1.0 - p_t, gamma)
        per_sample = ops.sum(modulator * bce, axis=-1)
    else:
        raise ValueError(f"`variant` must be one of {_VARIANTS}. Received variant={variant!r}.")
    weights = class_balanced._gather_weights(class_weights, ids, num_classes, y_pred.dtype)
    return ops.cast(_checks.poison(weights * per_sample, ok), out_dtype)


@keras.saving.register_keras_serializable(package="tfcell")
class ClassBalancedFocalLoss(keras.losses.Loss):
    """Focal loss with class-balanced weights in place of the scalar alpha.

    The CFAL paper's focal baseline replaces Lin et al.'s binary alpha by the
    class-balanced weights of Cui et al. (Sec. III-A). `variant="softmax"`
    is the multi-class softmax focal loss; `variant="sigmoid"` is Cui's
    one-vs-all sigmoid focal loss (`focal_loss` in their code).

    ```python
    loss_i = -w[y_i] * (1 - p_{i, y_i}) ** gamma * log p_{i, y_i}          # softmax
    loss_i = w[y_i] * sum_c (1 - p_t[i, c]) ** gamma * BCE[i, c]            # sigmoid
    ```

    Args:
        gamma: focusing parameter >= 0. Lin et al. use 2.0; the CFAL paper
            does not list its focal gamma in Table IX.
        class_weights: None or C floats, usually
            `class_balanced_weights(counts, beta)` (beta 0.999 IDC, 0.9999 CRC,
            Table IX).
        from_logits: whether `y_pred` holds logits (default False).
        variant: "softmax" (default) or "sigmoid".
        reduction, name, dtype: as in `keras.losses.Loss`.

    Note:
        Cui's sigmoid code divides the summed loss by `sum(labels)` = N; the
        default reduction ("sum_over_batch_size") gives the same mean. The
        probabilities are clipped to `[eps, 1 - eps]` (Keras' epsilon) and the
        softmax modulator base to `[eps, 1]`, so that gradients stay finite
        for saturated predictions; this changes values by less than eps.

    Example:
    ```python
    w = tfcell.losses.class_balanced_weights(counts, beta=0.9999)
    model.compile(loss=tfcell.losses.ClassBalancedFocalLoss(gamma=2.0, class_weights=w))
    ```

    Reference:
    - [Lin et al., 2017](https://arxiv.org/abs/1708.02002), Eq. 5.
    - [Cui et al., 2019](https://arxiv.org/abs/1901.05555), Sec. 4 and
      richardaecn/class-balanced-loss, `focal_loss`.
    - [Mahbub et al., 2024](https://doi.org/10.1109/JBHI.2023.3336372), Sec. III-A.
    """

    def __init__(
        self,
        gamma=2.0,
        class_weights=None,
        from_logits=False,
        variant="softmax",
        reduction="sum_over_batch_size",
        name="class_balanced_focal",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.gamma = class_balanced._validate_float(gamma, "gamma", minimum=0.0)
        self.class_weights = class_balanced._validate_class_weights(class_weights)
        self.from_logits = class_balanced._validate_bool(from_logits, "from_logits")
        if variant not in _VARIANTS:
            raise ValueError(
                f"`variant` must be one of {_VARIANTS}. Received variant={variant!r}. "
                "Use 'softmax' for a softmax head, 'sigmoid' for one sigmoid per class."
            )
        self.variant = variant
        self._dtype_arg = class_balanced._dtype_config(dtype)

    def call(self, y_true, y_pred):
        return class_balanced_focal(
            y_true,
            y_pred,
            gamma=self.gamma,
            class_weights=self.class_weights,
            from_logits=self.from_logits,
            variant=self.variant,
        )

    def get_config(self):
        return {
            "gamma": self.gamma,
            "class_weights": self.class_weights,
            "from_logits": self.from_logits,
            "variant": self.variant,
            **class_balanced._loss_config(self),
        }
