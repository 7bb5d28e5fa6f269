"""Gradient reversal: identity forward, `-factor * grad` backward (Ganin et al.)."""

import keras
from keras import ops

__all__ = ["GradientReversal"]


@keras.saving.register_keras_serializable(package="tfcell")
class GradientReversal(keras.layers.Layer):
    """Identity in the forward pass; multiplies the gradient by `-factor` backward.

    Placed between a feature extractor and a domain discriminator, it makes
    one backward pass train the discriminator to tell the domains apart while
    the features are pushed to confuse it (DANN). The factor is a
    non-trainable variable, so a schedule (Ganin's
    `2 / (1 + exp(-10 p)) - 1`) can change it during training without
    retracing: `layer.factor_variable.assign(value)`, from a callback or from
    a trainer's `train_step`.

    ```
    forward:  y = x
    backward: dL/dx = -factor * dL/dy
    ```

    Args:
        factor: float, the initial reversal factor (lambda). Default 1.0.
        **kwargs: forwarded to `keras.layers.Layer`.

    Call arguments:
        inputs: a tensor of any shape.
        training: unused; the reversal is the same in training and inference.

    Returns:
        `inputs`, unchanged.

    Example:
    ```python
    reversal = tfcell.layers.GradientReversal(factor=0.0)
    logits = discriminator(reversal(features))
    reversal.factor_variable.assign(0.5)  # e.g. from a callback
    ```

    Reference:
    - [Ganin et al., 2016](https://jmlr.org/papers/v17/15-239.html), Sec. 5.2
    """

    def __init__(self, factor=1.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = float(factor)
        self.factor_variable = None
        self.supports_masking = True

    def build(self, input_shape):
        # "only_first_replica" lets a trainer assign the scheduled factor inside
        # a MirroredStrategy replica context (every replica computes the same
        # value); the default "none" aggregation refuses replica-context writes.
        self.factor_variable = self.add_weight(
            name="factor",
            shape=(),
            initializer=keras.initializers.Constant(self.factor),
            trainable=False,
            aggregation="only_first_replica",
        )

    def call(self, inputs, training=None):
        factor = ops.cast(self.factor_variable, inputs.dtype)
        return _reverse_gradient(inputs, factor)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"factor": self.factor})
        return config


@ops.custom_gradient
def _reverse_gradient(x, factor):
    def grad(*args, upstream=None):
        if upstream is None:
            (upstream,) = args
        return -factor * upstream, ops.zeros_like(factor)

    return ops.copy(x), grad
