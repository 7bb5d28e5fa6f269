"""Cosine head for angular-margin losses (ArcFace, CosFace, SphereFace)."""

import warnings

import keras
from keras import ops

from tfcell.losses import margin as margin_lib

__all__ = ["CosineHead", "class_scores"]

# Squared-norm floor of the l2 normalisation (as tf.nn.l2_normalize): keeps a
# zero feature finite, with a finite gradient.
_EPSILON = 1e-12


@keras.saving.register_keras_serializable(package="tfcell")
class CosineHead(keras.layers.Layer):
    """Cosines between l2-normalised features and l2-normalised class weights.

    ```python
    cos = l2norm(x, axis=-1) @ l2norm(kernel, axis=0)          # (N, C)
    out = cos                                                  # sphereface_margin=None
    out = asoftmax_scores(cos, ||x||, sphereface_margin)       # A-Softmax, (N, C)
    ```

    The head holds no margin for ArcFace, CosFace and SphereFace with a fixed
    scale: those losses add it to the target class during training, and
    `argmax(predict)` is the margin-free argmax of the cosines.

    A-Softmax (Liu et al.: `SphereFaceLoss(scale=None)`, radius `||x||`)
    needs the norm and the cosines, which no `(N, C)` output can carry to a
    loss; with `sphereface_margin=m` the head therefore outputs, for each
    class j, the A-Softmax log-likelihood of j were j the label
    (`tfcell.losses.asoftmax_scores`): `(N, C)` scores, all <= 0, whose
    argmax is the argmax of the cosines, and the loss takes the label's one.

    Args:
        num_classes: C.
        sphereface_margin: None (cosines), or A-Softmax's multiplicative
            margin m (Liu et al.: 4) for `SphereFaceLoss(scale=None)`.
        return_norms: deprecated (warns): True appends `||x||` as a column
            C + 1, the old A-Softmax input of `SphereFaceLoss(margin=m,
            scale=None)`, so that `argmax(predict)` can name a class that does
            not exist and Keras' "accuracy" is wrong. Kept so that saved
            models load; `build_classifier` refuses it.
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        inputs: features `(N, h)`.
        training: unused.

    Returns:
        `(N, C)`: cosines, or A-Softmax scores with `sphereface_margin`
        (`(N, C + 1)` with the deprecated `return_norms=True`). For
        probabilities use `tfcell.evaluation.calibration` with head "cosine"
        and the loss's scale (1 for A-Softmax scores).

    Note:
        The authors' ArcFace / CosFace layers (Taslim-M/CFAL-max-margin-keras)
        take the labels as a second input and apply the margin inside; a
        head without labels keeps `predict` and serving label-free. The
        A-Softmax scores apply the margin to every class in turn, also
        without labels.

    Example:
    ```python
    x = keras.Input((64,))
    cos = tfcell.layers.CosineHead(num_classes=9)(x)
    model = keras.Model(x, cos)
    model.compile(optimizer="adam", loss=tfcell.losses.CosFaceLoss(margin=0.35, scale=20.0),
                  metrics=["accuracy"])
    scores = tfcell.layers.CosineHead(num_classes=9, sphereface_margin=4.0)(x)   # A-Softmax
    ```

    Reference:
    - [Wang et al., 2018](https://arxiv.org/abs/1801.09414) (normalised softmax head).
    - [Liu et al., 2017](https://arxiv.org/abs/1704.08063), Eq. 6-7 (A-Softmax).
    """

    def __init__(self, num_classes, sphereface_margin=None, return_norms=False, **kwargs):
        super().__init__(**kwargs)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(
                f"`num_classes` must be a positive integer. Received num_classes={num_classes!r}."
            )
        if not isinstance(return_norms, bool):
            raise ValueError(
                f"`return_norms` must be True or False. Received return_norms={return_norms!r}."
            )
        if return_norms:
            if sphereface_margin is not None:
                raise ValueError(
                    "`return_norms=True` and `sphereface_margin` exclude each other; use "
                    f"`sphereface_margin={sphereface_margin!r}` alone."
                )
            warnings.warn(
                "CosineHead(return_norms=True) is deprecated: its extra norm column makes "
                "predictions (N, C + 1), so argmax(predict) and Keras' accuracy are wrong. "
                "For A-Softmax use CosineHead(num_classes, sphereface_margin=4.0) with "
                "SphereFaceLoss(scale=None).",
                DeprecationWarning,
                stacklevel=2,
            )
        if sphereface_margin is not None and (
            isinstance(sphereface_margin, bool)
            or not isinstance(sphereface_margin, (int, float))
            or not sphereface_margin > 0
        ):
            raise ValueError(
                "`sphereface_margin` must be None or a number > 0. Received "
                f"sphereface_margin={sphereface_margin!r}. Liu et al. use 4."
            )
        self.num_classes = num_classes
        self.sphereface_margin = None if sphereface_margin is None else float(sphereface_margin)
        self.return_norms = return_norms

    def build(self, input_shape):
        if input_shape[-1] is None:
            raise ValueError(
                f"CosineHead needs a known feature size. Received input shape {input_shape}."
            )
        # glorot_uniform, as the authors' ArcFace / CosFace layers.
        self.kernel = self.add_weight(
            name="kernel",
            shape=(input_shape[-1], self.num_classes),
            initializer="glorot_uniform",
            trainable=True,
        )

    def call(self, inputs, training=None):
        dtype = self.compute_dtype if self.sphereface_margin is None else "float32"
        x = ops.cast(inputs, dtype)
        kernel = ops.cast(self.kernel, dtype)
        sq_norm = ops.sum(ops.square(x), axis=-1, keepdims=True)
        x_unit = x * ops.rsqrt(ops.maximum(sq_norm, _EPSILON))
        w_sq = ops.sum(ops.square(kernel), axis=0, keepdims=True)
        w_unit = kernel * ops.rsqrt(ops.maximum(w_sq, _EPSILON))
        cos = ops.matmul(x_unit, w_unit)
        norms = ops.sqrt(ops.maximum(sq_norm, _EPSILON))
        if self.return_norms:  # Deprecated (N, C + 1) output.
            return ops.concatenate([cos, norms], axis=-1)
        if self.sphereface_margin is None:
            return cos
        # acos and the (N, C, C) log-sum-exp in float32 under mixed precision.
        scores = margin_lib.asoftmax_scores(cos, norms, self.sphereface_margin)
        return ops.cast(scores, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes + int(self.return_norms))

    def get_config(self):
        config = super().get_config()
        config.update(
            {"num_classes": self.num_classes, "sphereface_margin": self.sphereface_margin}
        )
        if self.return_norms:
            config["return_norms"] = True
        return config


def class_scores(y_pred, num_classes):
    """Deprecated: heads output `(N, C)` now, so this is the identity.

    It dropped the norm column that `CosineHead(return_norms=True)` used to
    append; `argmax(model.predict(x), -1)` is the prediction for every head.
    """
    warnings.warn(
        "tfcell.layers.class_scores is deprecated: every head outputs (N, C), so "
        "argmax(model.predict(x), -1) is the prediction.",
        DeprecationWarning,
        stacklevel=2,
    )
    return y_pred[..., :num_classes]
