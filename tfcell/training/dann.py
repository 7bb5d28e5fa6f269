"""DANN: domain-adversarial training with a gradient reversal layer."""

import keras
from keras import ops

from tfcell.layers import gradient_reversal
from tfcell.training import erm

__all__ = ["DANNTrainer", "ganin_lambda"]

_SCHEDULES = ("ganin", "constant")


def ganin_lambda(progress):
    """Ganin's reversal schedule, `2 / (1 + exp(-10 p)) - 1`, `p` in [0, 1]."""
    p = ops.clip(ops.cast(progress, "float32"), 0.0, 1.0)
    return 2.0 / (1.0 + ops.exp(-10.0 * p)) - 1.0


@keras.saving.register_keras_serializable(package="tfcell")
class DANNTrainer(erm.Trainer):
    """Domain-adversarial neural network: CE plus a reversed domain classifier.

    The features go to the class head and, through a `GradientReversal`
    layer, to an MLP domain discriminator. One backward pass trains the
    discriminator to predict the domain and pushes the featurizer, with the
    reversed gradient `-lambda * grad`, to make the domains indistinguishable.

    ```
    p = step / total_steps
    lambda = reversal_factor * (2 / (1 + exp(-10 p)) - 1)   # "ganin"; or reversal_factor
    loss = mean(CE(classifier(z), y)) + mean(CE(discriminator(reverse(z, lambda)), d))
    ```

    Args:
        featurizer: a built `keras.Model` mapping images to features `(N, D)`.
        classifier: a built `keras.Model` mapping features to class logits.
        num_domains: int, the number of training domains (discriminator outputs).
        discriminator_width: int, hidden width of the MLP. DomainBed: 256.
        discriminator_depth: int, number of Dense layers of the MLP (the last
            one outputs the domain logits). DomainBed: 3.
        lambda_schedule: `"ganin"` (default) or `"constant"`.
        reversal_factor: float, the constant factor, or the schedule's limit
            for `"ganin"`. Default 1.0.
        total_steps: int, the steps over which `p` goes from 0 to 1 (the
            step is `optimizer.iterations`). DomainBed's default 5000.
        **kwargs: forwarded to `keras.Model`.

    Note:
        DomainBed alternates discriminator and generator steps
        (`d_steps_per_g_step`) with a gradient penalty on the discriminator;
        this trainer takes Ganin's single step with the reversal layer, whose
        featurizer gradient equals DomainBed's generator-step gradient
        (`-lambda * grad` of the discriminator loss) and which trains the
        discriminator in the same step. No gradient penalty.

    Reference:
    - [Ganin et al., 2016](https://jmlr.org/papers/v17/15-239.html), Eq. 14
      and Sec. 5.2.2 (schedule); DomainBed @b93c22a, `domainbed/algorithms.py`,
      `AbstractDANN`, `domainbed/networks.py`, `MLP`
    """

    penalty_names = ("domain_ce",)

    def __init__(
        self,
        featurizer,
        classifier,
        num_domains,
        discriminator_width=256,
        discriminator_depth=3,
        lambda_schedule="ganin",
        reversal_factor=1.0,
        total_steps=5000,
        **kwargs,
    ):
        super().__init__(featurizer, classifier, **kwargs)
        if not isinstance(num_domains, int) or num_domains < 2:
            raise ValueError(
                f"`num_domains` must be an int >= 2 (the discriminator tells domains "
                f"apart), received {num_domains!r}."
            )
        if discriminator_depth < 1 or discriminator_width < 1:
            raise ValueError(
                "`discriminator_depth` and `discriminator_width` must be >= 1, received "
                f"{discriminator_depth} and {discriminator_width}."
            )
        if lambda_schedule not in _SCHEDULES:
            raise ValueError(
                f"`lambda_schedule` must be one of {_SCHEDULES}, received {lambda_schedule!r}."
            )
        if total_steps < 1:
            raise ValueError(f"`total_steps` must be >= 1, received {total_steps}.")
        self.num_domains = num_domains
        self.discriminator_width = int(discriminator_width)
        self.discriminator_depth = int(discriminator_depth)
        self.lambda_schedule = lambda_schedule
        self.reversal_factor = float(reversal_factor)
        self.total_steps = int(total_steps)

        initial = 0.0 if lambda_schedule == "ganin" else self.reversal_factor
        self.reversal = gradient_reversal.GradientReversal(factor=initial, name="reversal")
        feature_dim = erm._feature_dim(featurizer, "DANNTrainer")
        self.reversal.build((None, feature_dim))
        # DomainBed's MLP: Linear-ReLU blocks, then a Linear output layer.
        layers = [keras.Input((feature_dim,))]
        for i in range(self.discriminator_depth - 1):
            layers.append(
                keras.layers.Dense(self.discriminator_width, activation="relu", name=f"hidden_{i}")
            )
        layers.append(keras.layers.Dense(num_domains, name="domain_logits"))
        self.discriminator = keras.Sequential(layers, name="discriminator")

    def current_lambda(self):
        """The reversal factor for the step about to run."""
        if self.lambda_schedule == "constant":
            return ops.convert_to_tensor(self.reversal_factor, "float32")
        progress = ops.cast(self.optimizer.iterations, "float32") / float(self.total_steps)
        return self.reversal_factor * ganin_lambda(progress)

    def train_step(self, data):
        self.reversal.factor_variable.assign(self.current_lambda())
        return super().train_step(data)

    def per_sample_losses(self, batch, features, logits):
        losses = super().per_sample_losses(batch, features, logits)
        domain_logits = self.discriminator(self.reversal(features), training=True)
        domain_logits = ops.cast(domain_logits, "float32")  # float16 under mixed_float16.
        losses["domain_ce"] = keras.losses.sparse_categorical_crossentropy(
            batch["domain"], domain_logits, from_logits=True
        )
        return losses

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_domains": self.num_domains,
                "discriminator_width": self.discriminator_width,
                "discriminator_depth": self.discriminator_depth,
                "lambda_schedule": self.lambda_schedule,
                "reversal_factor": self.reversal_factor,
                "total_steps": self.total_steps,
            }
        )
        return config
