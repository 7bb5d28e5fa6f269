"""Centre loss (Wen et al., ECCV 2016), stateless: the centres live in a layer."""

import keras
from keras import ops

from tfcell.losses import _checks

__all__ = ["CenterLoss", "center_loss"]


def center_loss(y_true, y_pred):
    """Per-sample centre loss `0.5 * ||x_i - c_{y_i}||^2`.

    Args:
        y_true: the gathered centres `c_{y_i}`, shape `(N, h)` (the output of
            `tfcell.layers.Centers(features, labels)`).
        y_pred: the features `x_i`, shape `(N, h)`.

    Returns:
        Per-sample values, shape `(N,)`.

    Raises:
        ValueError (eager) or InvalidArgumentError (in a `tf.function`) when
        the features are not finite (e.g. NaN images); under XLA the values
        are NaN instead. The labels index the centres
        in `tfcell.layers.Centers`; this loss never sees them.
    """
    y_pred = ops.convert_to_tensor(y_pred)
    y_true = ops.cast(y_true, y_pred.dtype)
    ok = _checks.check_batch(None, y_pred, None, "center_loss")
    return _checks.poison(0.5 * ops.sum(ops.square(y_pred - y_true), axis=-1), ok)


@keras.saving.register_keras_serializable(package="tfcell")
class CenterLoss(keras.losses.Loss):
    """Centre loss: half the squared distance of each feature to its class centre.

    The centres are state, so they do not live here (a Loss with variables
    would be neither saved with the model nor mirrored by a strategy). They
    live in a `tfcell.layers.Centers` layer, which gathers the centre of each
    sample and, with `update_rule="wen"`, moves the centres by Wen's rule;
    with the default `update_rule="gradient"` the optimizer learns them. This
    loss is the stateless formula on `(gathered centres, features)`, so it
    works in any custom `train_step` (as `HeterogeneityTrainer` uses the
    same design) and returns per-sample values that Keras reduces and scales
    under `MirroredStrategy`.

    ```python
    loss_i = 0.5 * sum((x[i] - c[y[i]]) ** 2)
    # paper: L = CE + lambda_ * sum_i loss_i; Wen et al. update the centres with
    # delta c_j = sum_{i: y_i=j} (c_j - x_i) / (1 + n_j); c_j -= alpha * delta c_j
    ```

    Args:
        reduction, name, dtype: as in `keras.losses.Loss`.

    Call arguments:
        y_true: gathered centres `(N, h)`.
        y_pred: features `(N, h)`.

    Note:
        Wen et al. sum over the batch (`L_C = 0.5 * sum_i ...`); the default
        `"sum_over_batch_size"` reduction averages, so the paper's lambda
        (0.003 to 0.1 on MNIST / faces) corresponds to `lambda * N` here; use
        `reduction="sum"` for the paper's scale.

    Example:
    ```python
    centers = tfcell.layers.Centers(num_classes, update_rule="wen", alpha=0.5)
    # in train_step:
    feats = backbone(x, training=True)
    c = centers(feats, y, training=True)
    loss = ce(y, head(feats)) + 0.01 * tfcell.losses.CenterLoss()(c, feats)
    ```

    Reference:
    - [Wen et al., 2016](https://doi.org/10.1007/978-3-319-46478-7_31), Eqs. 2 and 4
    """

    def __init__(self, reduction="sum_over_batch_size", name="center_loss", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        return center_loss(y_true, y_pred)

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction, "dtype": self.dtype}
