"""Cosine head for angular-margin losses (ArcFace, CosFace, SphereFace)."""

import keras
from keras import ops

__all__ = ["CosineHead", "class_scores"]

# Squared-norm floor of the l2 normalisation (as tf.nn.l2_normalize): keeps a
# zero feature finite, with a finite gradient.
_EPSILON = 1e-12


@keras.saving.register_keras_serializable(package="tfcell")
class CosineHead(keras.layers.Layer):
    """Cosines between l2-normalised features and l2-normalised class weights.

    ```python
    cos = l2norm(x, axis=-1) @ l2norm(kernel, axis=0)      # (N, C)
    out = concat([cos, ||x||], -1) if return_norms else cos
    ```

    The head holds no margin: the margin losses (`ArcFaceLoss`, `CosFaceLoss`,
    `SphereFaceLoss`) add it to the target class during training, and the
    prediction is the margin-free argmax of the cosines.

    Args:
        num_classes: C.
        return_norms: if True, append the feature norm `||x||` as a last
            column, output `(N, C + 1)`; `SphereFaceLoss(scale=None)` reads it.
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        inputs: features `(N, h)`.
        training: unused.

    Returns:
        `(N, C)` cosines, or `(N, C + 1)` with `return_norms=True`. Use
        `class_scores(outputs, num_classes)` to get the `(N, C)` cosines.

    Note:
        The authors' ArcFace / CosFace layers (Taslim-M/CFAL-max-margin-keras)
        take the labels as a second input and apply the margin inside; a
        head without labels keeps `predict` and serving label-free.

    Example:
    ```python
    x = keras.Input((64,))
    cos = tfcell.layers.CosineHead(num_classes=9)(x)
    model = keras.Model(x, cos)
    model.compile(optimizer="adam", loss=tfcell.losses.CosFaceLoss(margin=0.35, scale=20.0))
    ```

    Reference:
    - [Wang et al., 2018](https://arxiv.org/abs/1801.09414) (normalised softmax head).
    """

    def __init__(self, num_classes, return_norms=False, **kwargs):
        super().__init__(**kwargs)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(
                f"`num_classes` must be a positive integer. Received num_classes={num_classes!r}."
            )
        if not isinstance(return_norms, bool):
            raise ValueError(
                f"`return_norms` must be True or False. Received return_norms={return_norms!r}."
            )
        self.num_classes = num_classes
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
        x = ops.cast(inputs, self.compute_dtype)
        kernel = ops.cast(self.kernel, self.compute_dtype)
        sq_norm = ops.sum(ops.square(x), axis=-1, keepdims=True)
        x_unit = x * ops.rsqrt(ops.maximum(sq_norm, _EPSILON))
        w_sq = ops.sum(ops.square(kernel), axis=0, keepdims=True)
        w_unit = kernel * ops.rsqrt(ops.maximum(w_sq, _EPSILON))
        cos = ops.matmul(x_unit, w_unit)
        if not self.return_norms:
            return cos
        return ops.concatenate([cos, ops.sqrt(ops.maximum(sq_norm, _EPSILON))], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes + int(self.return_norms))

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "return_norms": self.return_norms})
        return config


def class_scores(y_pred, num_classes):
    """The first `num_classes` columns of a head's output (drops the norm column).

    Prediction is `argmax(class_scores(model.predict(x), C), axis=-1)`; for a
    plain `(N, C)` output it is the identity.
    """
    return y_pred[..., :num_classes]
