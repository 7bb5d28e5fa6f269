"""AE-CFE trainer: feature + image reconstruction plus latent domain alignment.

Trains a `tfcell.models.aecfe_autoencoder` on dict batches
`{"features", "image", "domain"}` with the loss of the thesis's Eq. 2.20. The
reconstruction terms are per-sample (averaged over the global batch); the
domain term is a batch statistic, divided by the replica count before the
gradient (as `erm.Trainer` does), so under `MirroredStrategy` the update uses
the mean of the per-replica domain terms.
"""

import copy

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tfcell.layers import gradient_reversal
from tfcell.losses import alignment as alignment_losses
from tfcell.losses import ssim
from tfcell.training import erm

__all__ = ["AECFETrainer"]

_ALIGNMENTS = ("domain", "normal", "adversarial")


def _unpack(data):
    """The dict batch with `domain` flattened to `(N,)` int32 (0 when absent)."""
    if isinstance(data, (tuple, list)) and len(data) == 1:
        data = data[0]
    if not isinstance(data, dict) or "features" not in data or "image" not in data:
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(
            "An AECFETrainer batch must be a dict {'features': (N, ...), 'image': "
            f"(N, H, W, 3), 'domain': (N,)}} (domain may be left out); received {keys}."
        )
    batch = dict(data)
    if "domain" in batch:
        batch["domain"] = ops.reshape(ops.cast(batch["domain"], "int32"), (-1,))
    else:
        batch["domain"] = ops.zeros(ops.shape(batch["features"])[:1], "int32")
    return batch


def _standard_normal_points(latent_dim):
    """`2 D` points whose mean is exactly 0 and unbiased covariance exactly I.

    `+-a e_j` for each axis j: the mean is 0 and `sum x x^T / (2D - 1)`
    is `2 a^2 I / (2D - 1) = I` for `a = sqrt((2D - 1) / 2)`, so
    `aecfe_domain_loss(points, z)` compares `z` with N(0, I) exactly.
    """
    eye = np.sqrt((2.0 * latent_dim - 1.0) / 2.0) * np.eye(latent_dim)
    return np.concatenate([eye, -eye], axis=0).astype("float32")


@keras.saving.register_keras_serializable(package="tfcell")
class AECFETrainer(keras.Model):
    """AE-CFE: two-stage autoencoder trained with MSE, 1 - SSIM and domain alignment.

    ```
    z, h^, r^ = autoencoder(h)               # latent, features, cell image
    mse    = mean((h^ - h) ** 2)             # per sample, then over the global batch
    ssim   = 1 - SSIM(r^, r)                 # per image (tfcell.losses.ssim_loss)
    domain = sum over target domains k present of aecfe_domain_loss(z[d == source], z[d == k])
             # 0 when the source or every target is absent from the batch
    loss   = mse + ssim + beta * domain      # thesis Eq. 2.20, beta = 5
    ```

    `alignment` selects the ablation baselines of the thesis's Sec. 3.4:
    `"domain"` (AE-CFE, above), `"normal"` (ND-AE-DA: every domain present,
    the source included, is aligned with a reference N(0, I) by the same mean
    + symmetric-KL covariance term) and `"adversarial"` (AAE-DA: a 3-layer
    discriminator predicts the domain from `z` through a `GradientReversal`
    layer; `domain` is its per-sample cross-entropy). `beta=0` gives AE-RF
    (no domain adaptation; the domain term is still computed and logged).

    Args:
        autoencoder: a built `tfcell.models.aecfe_autoencoder` model (any
            functional model with a sub-model named `"encoder"` giving
            `(N, D)` codes and dict outputs `latent`, `features`, `image`).
        num_domains: int, the number of domains K (ids in `[0, K)`).
        beta: float, weight of the domain term. Default 5.0 (the authors'
            `train.py`).
        source_domain: int, the reference domain of Eq. 2.14 (Matek-19 in the
            paper). Default 0. Unused by `"normal"` and `"adversarial"`.
        alignment: `"domain"` (default), `"normal"` or `"adversarial"`.
        discriminator_width: int, hidden width of the AAE-DA discriminator
            (Dense-ReLU, Dense-ReLU, Dense). Default 64 (the thesis gives 3
            layers but no width).
        **kwargs: forwarded to `keras.Model`.

    Call arguments:
        inputs: features `(N, ...)`, or a dict batch with a `"features"` key.
        training: bool.

    Returns:
        The autoencoder's dict `{"latent", "features", "image"}`.

    Example:
    ```python
    autoencoder = tfcell.models.aecfe_autoencoder(feature_shape=(256,), image_size=64)
    trainer = tfcell.training.AECFETrainer(autoencoder, num_domains=3)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))   # Sec. 3.4.3
    trainer.fit(dataset, epochs=150)    # batches {"features", "image" in [0, 1], "domain"}
    codes = tfcell.models.aecfe_encode(trainer, features)   # for the random forest
    ```

    Note:
        The domain term sums over the targets (the authors' `loss1 + loss2`),
        and a target absent from the batch, or an absent source, contributes
        0 (the authors' code gives NaN there). One row of a domain gives a
        zero covariance (see `tfcell.losses.aecfe_domain_loss`).

    Note:
        ND-AE-DA: the reference N(0, I) enters through `2 D` fixed points with
        exactly its mean and covariance, not through samples. The latent code
        ends in tanh, so its variances cannot reach 1; the thesis does not say
        otherwise.

    Note:
        AAE-DA: the thesis trains the discriminator and the autoencoder with
        two Adam optimizers (lr 1e-3 each) and applies NLLLoss to
        un-normalised outputs; here one optimizer and a gradient reversal
        layer (factor 1) train both in one step with softmax cross-entropy
        (the discriminator minimises `beta * CE`, the encoder maximises it).

    Note:
        The SSIM term is `tf.image.ssim`'s (11 x 11 window, valid filtering;
        the authors' window is 10, padded), so crops must be at least 11 px.

    Reference:
    - [Salehi et al., 2022](https://arxiv.org/abs/2208.11431); thesis Eq.
      2.8-2.20 and Sec. 3.4; marrlab/AE-CFE @45785e2, `train.py`, `MMD_Loss.py`
    """

    def __init__(
        self,
        autoencoder,
        num_domains,
        beta=5.0,
        source_domain=0,
        alignment="domain",
        discriminator_width=64,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(autoencoder, keras.Model):
            raise ValueError(
                "`autoencoder` must be a keras Model (tfcell.models.aecfe_autoencoder), "
                f"received {type(autoencoder).__name__}."
            )
        if not isinstance(num_domains, int) or num_domains < 1:
            raise ValueError(f"`num_domains` must be a positive int, received {num_domains!r}.")
        if not isinstance(source_domain, int) or not 0 <= source_domain < num_domains:
            raise ValueError(
                f"`source_domain` must be an int in [0, num_domains={num_domains}), received "
                f"{source_domain!r}."
            )
        if float(beta) < 0:
            raise ValueError(f"`beta` must be >= 0 (paper: 5; 0 for AE-RF), received {beta}.")
        if alignment not in _ALIGNMENTS:
            raise ValueError(f"`alignment` must be one of {_ALIGNMENTS}, received {alignment!r}.")
        if alignment == "adversarial" and num_domains < 2:
            raise ValueError(
                "`alignment='adversarial'` needs num_domains >= 2 (the discriminator tells "
                f"domains apart), received {num_domains}."
            )
        if not isinstance(discriminator_width, int) or discriminator_width < 1:
            raise ValueError(
                f"`discriminator_width` must be a positive int, received {discriminator_width!r}."
            )
        self.autoencoder = autoencoder
        self.num_domains = num_domains
        self.beta = float(beta)
        self.source_domain = source_domain
        self.alignment = alignment
        self.discriminator_width = discriminator_width
        latent_dim = erm._feature_dim(self.encoder, "AECFETrainer")
        self._reference = _standard_normal_points(latent_dim)
        if alignment == "adversarial":
            # Thesis Sec. 3.4.2: three layers, ReLU in between, no output activation.
            self.reversal = gradient_reversal.GradientReversal(factor=1.0, name="reversal")
            self.reversal.build((None, latent_dim))
            self.discriminator = keras.Sequential(
                [
                    keras.Input((latent_dim,)),
                    keras.layers.Dense(discriminator_width, activation="relu", name="hidden_0"),
                    keras.layers.Dense(discriminator_width, activation="relu", name="hidden_1"),
                    keras.layers.Dense(num_domains, name="domain_logits"),
                ],
                name="discriminator",
            )
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.term_trackers = {
            name: keras.metrics.Mean(name=name) for name in ("mse", "ssim_term", "domain_term")
        }
        # Every sub-model is built here, so the trainer is too (`.keras` saving
        # and loading then need no call on data first).
        self.built = True

    @property
    def encoder(self):
        """The encoder sub-model: features -> latent codes `(N, latent_dim)`."""
        try:
            return self.autoencoder.get_layer("encoder")
        except ValueError as error:
            raise ValueError(
                "AECFETrainer needs an autoencoder with a sub-model named 'encoder'; build it "
                "with tfcell.models.aecfe_autoencoder."
            ) from error

    def call(self, inputs, training=False):
        features = inputs["features"] if isinstance(inputs, dict) else inputs
        return self.autoencoder(features, training=training)

    @property
    def metrics(self):
        return [self.loss_tracker, *self.term_trackers.values()]

    # ------------------------------------------------------------------ terms
    def domain_term(self, latent, domains):
        """The unweighted batch statistic L_DA (`"domain"` or `"normal"`)."""
        latent = ops.cast(latent, "float32")
        if self.alignment == "domain":
            return alignment_losses.aecfe_multi_domain_loss(
                latent, domains, self.num_domains, source_domain=self.source_domain
            )
        reference = ops.convert_to_tensor(self._reference)
        total = ops.zeros((), "float32")
        for k in range(self.num_domains):
            mask = ops.cast(ops.equal(domains, k), "float32")
            present = ops.cast(ops.sum(mask) > 0, "float32")
            term = alignment_losses.aecfe_domain_loss(reference, latent, mask_b=mask)
            total = total + present * term
        return total

    def _terms(self, batch, outputs, training):
        """`(per_sample, batch_statistics)`, unweighted, float32."""
        features = ops.cast(batch["features"], "float32")
        error = ops.square(ops.cast(outputs["features"], "float32") - features)
        per_sample = {
            "mse": ops.mean(error, axis=tuple(range(1, len(error.shape)))),
            "ssim_term": ssim.ssim_loss(
                ops.cast(batch["image"], "float32"), ops.cast(outputs["image"], "float32")
            ),
        }
        statistics = {}
        if self.alignment == "adversarial":
            logits = self.discriminator(self.reversal(outputs["latent"]), training=training)
            per_sample["domain_term"] = keras.losses.sparse_categorical_crossentropy(
                batch["domain"], ops.cast(logits, "float32"), from_logits=True
            )
        else:
            statistics["domain_term"] = self.domain_term(outputs["latent"], batch["domain"])
        return per_sample, statistics

    def _weight(self, name):
        return self.beta if name == "domain_term" else 1.0

    # ------------------------------------------------------------------ steps
    def train_step(self, data):
        batch = _unpack(data)
        context, num_replicas = erm._replica_context()
        local_size = ops.cast(ops.shape(batch["domain"])[0], "float32")
        if num_replicas > 1:
            global_size = context.all_reduce(tf.distribute.ReduceOp.SUM, local_size)
        else:
            global_size = local_size
        global_size = ops.maximum(global_size, 1.0)

        with tf.GradientTape() as tape:
            outputs = self.autoencoder(batch["features"], training=True)
            per_sample, statistics = self._terms(batch, outputs, training=True)
            # Per-sample terms: sum on this replica / global batch size.
            scaled = [self._weight(k) * ops.sum(v) / global_size for k, v in per_sample.items()]
            # Batch statistics and layer losses: / replicas, so the optimizer's
            # sum over replicas is their mean (HOUSE_STYLE, batch statistics).
            scaled += [self._weight(k) * v / num_replicas for k, v in statistics.items()]
            scaled += [ops.cast(v, "float32") / num_replicas for v in self.losses]
            loss = sum(scaled)
            scaled_loss = self.optimizer.scale_loss(loss) if self.optimizer else loss

        variables = self.trainable_variables
        gradients = tape.gradient(scaled_loss, variables)
        self.optimizer.apply_gradients(
            [(g, v) for g, v in zip(gradients, variables) if g is not None]
        )
        return self._update_metrics(per_sample, statistics)

    def test_step(self, data):
        batch = _unpack(data)
        outputs = self.autoencoder(batch["features"], training=False)
        per_sample, statistics = self._terms(batch, outputs, training=False)
        return self._update_metrics(per_sample, statistics)

    def _update_metrics(self, per_sample, statistics):
        # This replica's unweighted means; the Mean metrics average over
        # replicas and steps. `loss` weights the domain term by beta.
        values = {k: ops.mean(v) for k, v in per_sample.items()}
        values.update(statistics)
        total = sum(self._weight(k) * v for k, v in values.items())
        self.loss_tracker.update_state(total)
        for name, tracker in self.term_trackers.items():
            tracker.update_state(values[name])
        return {m.name: m.result() for m in self.metrics}

    # ---------------------------------------------------------- serialization
    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "autoencoder": keras.saving.serialize_keras_object(self.autoencoder),
                "num_domains": self.num_domains,
                "beta": self.beta,
                "source_domain": self.source_domain,
                "alignment": self.alignment,
                "discriminator_width": self.discriminator_width,
            }
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        # deserialize_keras_object consumes the dict it is given: copy it.
        config["autoencoder"] = keras.saving.deserialize_keras_object(
            copy.deepcopy(config["autoencoder"]), custom_objects=custom_objects
        )
        return cls(**config)
