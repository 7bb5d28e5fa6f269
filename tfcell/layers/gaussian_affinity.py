"""Gaussian affinity head with multiple prototypes per class (Hayat et al., 2019)."""

import keras
from keras import ops

# An object import: `tfcell.losses.affinity` is the loss function (the package's
# star import rebinds the name), so the module cannot be imported by attribute.
from tfcell.losses.affinity import prototype_diversity

__all__ = ["GaussianAffinity"]


@keras.saving.register_keras_serializable(package="tfcell")
class GaussianAffinity(keras.layers.Layer):
    """Affinities of features to learned class prototypes, plus their diversity term.

    Each class owns `num_centers` prototypes; a sample's affinity to a class is
    its largest Gaussian similarity to that class's prototypes. The layer also
    adds the diversity regulariser R of all `num_classes * num_centers`
    prototypes with `add_loss` (Eq. 6 of the CFAL paper), so a model compiled
    with `AffinityLoss` or `CFALoss` minimises Eq. 4 / Eq. 7 in full.

    ```python
    d[i, j] = max_t exp(-||f_i - centers[j, t]||^2 / sigma)
    self.add_loss(diversity_weight * prototype_diversity(centers))
    ```

    Args:
        num_classes: C.
        sigma: divides the squared distance directly (no 2 sigma^2); CFAL
            paper Table IX: 130 (IDC and CRC).
        num_centers: prototypes per class, m (default 1).
        diversity_weight: constant weight of R (default 1: Eq. 4 of Hayat et
            al. / the CFAL paper and the affinity-loss code). For CFAL, see
            the Note: Eq. 7 scales R by a batch factor this layer cannot see.
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        inputs: features `(N, h)`.
        training: unused.

    Returns:
        Affinities in (0, 1], shape `(N, num_classes)`.

    Note:
        The authors' layer (koshian2/affinity-loss, reused in
        Taslim-M/CFAL-max-margin-keras) returns R as an extra output column
        that the loss then reads; here R goes through `add_loss` and the
        output is the C affinities only (same total loss). Distances are
        computed in float32 under mixed precision: a float16 squared distance
        overflows for features of a few hundred dimensions.

        CFAL (Eq. 7) multiplies each sample's whole affinity loss
        `L_a = L_mm + R` by `w[y_i] * (1 - d[i, y_i]) ** gamma`, so averaged
        over a batch R carries the factor `mean_i(w[y_i] (1 - d[i, y_i]) **
        gamma)`; the authors' code does the same (0.1-0.5 once training
        settles, e.g. on 9 CRC classes). That factor needs the labels, which
        a head does not receive, and the loss cannot see R; so here R has the
        constant weight `diversity_weight`, and with the default 1 it is 2 to
        10 times stronger, relative to the CFAL term, than in the paper. To
        follow the paper's strength, set `diversity_weight` to
        `CFALoss.regularizer_factor(y, model.predict(x))` measured on
        training data (`tfcell.losses.cfal_regularizer_factor`); the vanilla
        and class-balanced affinity losses (Eq. 4, Eq. 8) use 1 and mean
        `w[y_i]` the same way.

    Example:
    ```python
    x = keras.Input((64,))
    d = tfcell.layers.GaussianAffinity(num_classes=8, sigma=130.0, num_centers=2)(x)
    model = keras.Model(x, d)
    model.compile(optimizer="adam", loss=tfcell.losses.CFALoss(margin=0.1, gamma=1.0))
    ```

    Reference:
    - [Hayat et al., 2019](https://arxiv.org/abs/1901.07711), Sec. 3.
    - [Mahbub et al., 2024](https://doi.org/10.1109/JBHI.2023.3336372), Eq. 3-6.
    """

    def __init__(self, num_classes, sigma, num_centers=1, diversity_weight=1.0, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = _positive_int(num_classes, "num_classes")
        self.num_centers = _positive_int(num_centers, "num_centers")
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma > 0:
            raise ValueError(
                f"`sigma` must be a positive number. Received sigma={sigma!r}. "
                "The CFAL paper uses 130 (Table IX)."
            )
        self.sigma = float(sigma)
        if (
            isinstance(diversity_weight, bool)
            or not isinstance(diversity_weight, (int, float))
            or not diversity_weight >= 0
        ):
            raise ValueError(
                "`diversity_weight` must be a number >= 0. Received "
                f"diversity_weight={diversity_weight!r}. Use 0 to switch the regulariser off."
            )
        self.diversity_weight = float(diversity_weight)

    def build(self, input_shape):
        features = input_shape[-1]
        if features is None:
            raise ValueError(
                "GaussianAffinity needs a known feature size. Received input shape "
                f"{input_shape}; flatten or pool the features first."
            )
        # he_normal, as the authors' layer.
        self.centers = self.add_weight(
            name="centers",
            shape=(self.num_classes, self.num_centers, features),
            initializer="he_normal",
            trainable=True,
        )

    def call(self, inputs, training=None):
        features = ops.cast(inputs, "float32")
        centers = ops.cast(self.centers, "float32")
        # (N, 1, 1, h) - (1, C, m, h): exact squared distances, never negative.
        diff = ops.expand_dims(ops.expand_dims(features, 1), 1) - ops.expand_dims(centers, 0)
        sq_dist = ops.sum(ops.square(diff), axis=-1)
        affinities = ops.max(ops.exp(-sq_dist / self.sigma), axis=-1)
        if self.diversity_weight > 0:
            self.add_loss(self.diversity_weight * prototype_diversity(centers))
        return ops.cast(affinities, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "sigma": self.sigma,
                "num_centers": self.num_centers,
                "diversity_weight": self.diversity_weight,
            }
        )
        return config


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer. Received {name}={value!r}.")
    return value
