"""Centers: a table of class (or subject) centres, learned or updated by Wen's rule."""

import keras
from keras import ops

from tfcell.losses import _checks

__all__ = ["Centers"]

_UPDATE_RULES = ("gradient", "wen")


@keras.saving.register_keras_serializable(package="tfcell")
class Centers(keras.layers.Layer):
    """A table of `num_centers` centres in feature space; returns the centre of each id.

    Holds the state that centre-type losses need (Wen et al.'s class centres,
    Goswami et al.'s class and subject centres) so that the losses themselves
    stay stateless: `CenterLoss()(centers(features, ids), features)`, or
    `tfcell.losses.heterogeneity_terms(..., layer.centers, ...)`.

    Two ways to move the centres:

    - `update_rule="gradient"` (default): the centres are a trainable weight,
      learned by the optimizer together with the network (the usual PyTorch
      centre-loss practice, and what Eq. 5 of Goswami et al. needs).
    - `update_rule="wen"`: the centres are a non-trainable weight moved by Wen
      et al.'s rule (Eq. 4 of the paper) on every training call, from the
      features of the batch (gradients stopped):

      ```python
      for j in range(num_centers):
          idx = [i for i in range(N) if ids[i] == j]
          delta[j] = sum(centers[j] - x[i] for i in idx) / (1 + len(idx))
          centers[j] -= alpha * delta[j]
      ```

    Args:
        num_centers: int, number of centres (classes or subjects).
        update_rule: `"gradient"` or `"wen"`.
        alpha: float in (0, 1], Wen's centre learning rate (paper: 0.5); used
            only with `update_rule="wen"`.
        center_initializer: initializer of the centres. Default
            `"random_normal"` (not zeros: with every centre at the same point,
            the inter-subject term `1 / (1 + d^2)` has a zero gradient).

    Call arguments:
        features: float tensor `(N, features)`.
        ids: int tensor `(N,)` or `(N, 1)`, the centre of each sample.
        training: bool; the Wen update runs only when true.

    Returns:
        The gathered centres, `(N, features)`, in the compute dtype.

    Example:
    ```python
    centers = tfcell.layers.Centers(num_centers=10)
    c = centers(features, labels)  # (N, h)
    per_sample = tfcell.losses.center_loss(c, features)
    ```

    Reference:
    - [Wen et al., 2016](https://doi.org/10.1007/978-3-319-46478-7_31), Eq. 4
    """

    def __init__(
        self,
        num_centers,
        update_rule="gradient",
        alpha=0.5,
        center_initializer="random_normal",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(num_centers, int) or num_centers < 1:
            raise ValueError(
                f"`num_centers` must be a positive int, received {num_centers!r}. "
                "Pass the number of classes (or subjects)."
            )
        if update_rule not in _UPDATE_RULES:
            raise ValueError(
                f"`update_rule` must be one of {_UPDATE_RULES}, received {update_rule!r}."
            )
        if not 0.0 < float(alpha) <= 1.0:
            raise ValueError(f"`alpha` must be in (0, 1], received {alpha!r} (Wen et al. use 0.5).")
        self.num_centers = num_centers
        self.update_rule = update_rule
        self.alpha = float(alpha)
        self.center_initializer = keras.initializers.get(center_initializer)

    def build(self, features_shape, ids_shape=None):
        feature_dim = features_shape[-1]
        if feature_dim is None:
            raise ValueError(
                f"The last axis of `features` must be known, received shape {features_shape}."
            )
        wen = self.update_rule == "wen"
        self.centers = self.add_weight(
            name="centers",
            shape=(self.num_centers, feature_dim),
            initializer=self.center_initializer,
            trainable=not wen,
            # Each replica applies Wen's rule to its own batch; the copies are
            # then averaged (replica-local updates, mean-synchronised).
            aggregation="mean" if wen else "none",
        )
        self.built = True

    def call(self, features, ids, training=None):
        # Ids outside [0, num_centers): an error naming the range (eager and
        # graph), never a silent zero row (a GPU gather returns 0 out of range).
        ok = _checks.check_batch(ids, features, self.num_centers, self.name)
        ids = _checks.safe_ids(ops.reshape(ops.cast(ids, "int32"), (-1,)), ok)
        gathered = ops.take(self.centers, ids, axis=0)
        if training and self.update_rule == "wen":
            self._wen_update(features, ids)
            gathered = ops.stop_gradient(gathered)
        return ops.cast(gathered, features.dtype)

    def _wen_update(self, features, ids):
        centers = ops.convert_to_tensor(self.centers)
        x = ops.stop_gradient(ops.cast(features, centers.dtype))
        one_hot = ops.one_hot(ids, self.num_centers, dtype=centers.dtype)  # (N, K)
        counts = ops.sum(one_hot, axis=0)[:, None]  # (K, 1)
        sums = ops.matmul(ops.transpose(one_hot), x)  # (K, h)
        delta = (counts * centers - sums) / (1.0 + counts)
        self.centers.assign(centers - self.alpha * delta)

    def compute_output_shape(self, features_shape, ids_shape=None):
        return (features_shape[0], features_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_centers": self.num_centers,
                "update_rule": self.update_rule,
                "alpha": self.alpha,
                "center_initializer": keras.initializers.serialize(self.center_initializer),
            }
        )
        return config
