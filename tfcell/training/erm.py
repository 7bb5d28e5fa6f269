"""ERM and the shared trainer machinery: dict batches, per-replica loss scaling.

`Trainer` is the base of every tfcell trainer (`Model -> Trainer -> DANNTrainer`).
A subclass overrides one or both hooks:

- `per_sample_losses(batch, features, logits)`: `{name: (N,) values}`, each
  averaged over the GLOBAL batch (sum on the replica / global batch size), so
  that the gradients the optimizer sums over replicas equal the single-device
  gradient.
- `batch_penalties(batch, features, logits)`: `{name: scalar}`, weighted
  batch statistics (CORAL, MMD, BoDA, ...), each divided by
  `num_replicas_in_sync` before the gradient: under `MirroredStrategy` every
  replica computes the statistic on its own part of the batch, and the
  optimizer's sum over replicas then gives the MEAN of the per-replica
  penalties (on one device, the penalty itself).
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

__all__ = ["Trainer", "ERMTrainer", "unpack_batch"]

_BATCH_KEYS = ("image", "label", "domain", "subject")


def unpack_batch(data):
    """Returns the dict batch `{"image", "label", "domain", "subject"}`.

    Accepts the dict itself, a 1-tuple holding it (what `fit` passes for
    `x=dict`), or an `(image, label)` pair (then domain and subject are 0).
    Labels and ids are flattened to `(N,)` int32.
    """
    if isinstance(data, (tuple, list)) and len(data) == 1:
        data = data[0]
    if isinstance(data, dict):
        missing = [k for k in ("image", "label") if k not in data]
        if missing:
            raise ValueError(
                f"A trainer batch needs the keys {_BATCH_KEYS} (domain and subject "
                f"may be left out); missing {missing} in keys {sorted(data)}. Use a "
                "tfcell.data.pipeline dict dataset."
            )
        batch = dict(data)
    elif isinstance(data, (tuple, list)) and len(data) in (2, 3):
        batch = {"image": data[0], "label": data[1]}
    else:
        raise ValueError(
            "A trainer batch must be a dict {'image', 'label', 'domain', 'subject'} "
            f"or an (image, label) tuple; received {type(data).__name__}."
        )
    label = ops.reshape(ops.cast(batch["label"], "int32"), (-1,))
    batch["label"] = label
    for key in ("domain", "subject"):
        if key in batch:
            batch[key] = ops.reshape(ops.cast(batch[key], "int32"), (-1,))
        else:
            batch[key] = ops.zeros_like(label)
    return batch


# Helpers shared by the trainer modules (dann, boda, heterogeneity).


def _feature_dim(featurizer, owner):
    """The static feature size D of a built featurizer with output `(N, D)`."""
    try:
        shape = featurizer.output_shape
    except (AttributeError, ValueError) as error:
        raise ValueError(
            f"{owner} needs a built featurizer to size its weights; pass a "
            "functional or Sequential model that starts with keras.Input(...)."
        ) from error
    if shape is None or isinstance(shape, list) or len(shape) != 2 or shape[-1] is None:
        raise ValueError(
            f"{owner} needs a featurizer with output (N, D) to size its weights; its "
            f"output shape is {shape}. Add a Flatten or pooling layer at the end."
        )
    return int(shape[-1])


def _serialize_models(featurizer, classifier):
    """The `featurizer` and `classifier` config entries of a trainer."""
    return {
        "featurizer": keras.saving.serialize_keras_object(featurizer),
        "classifier": keras.saving.serialize_keras_object(classifier),
    }


def _deserialize_models(config, custom_objects=None):
    """A copy of a trainer config with `featurizer` and `classifier` rebuilt."""
    config = dict(config)
    for key in ("featurizer", "classifier"):
        config[key] = keras.saving.deserialize_keras_object(
            config[key], custom_objects=custom_objects
        )
    return config


def _check_class_weights(class_weights):
    """None, or the weights as nested lists of floats after checking them."""
    if class_weights is None:
        return None
    table = np.asarray(class_weights, "float64")
    if table.ndim not in (1, 2) or table.size == 0:
        raise ValueError(
            "`class_weights` must be a list of one weight per class or a (num_domains, "
            f"num_classes) table; received shape {table.shape}."
        )
    if not np.all(np.isfinite(table)) or np.any(table < 0):
        raise ValueError(
            f"`class_weights` must be finite and >= 0; received {table.tolist()}. Use "
            "tfcell.losses.class_balanced_weights(counts, beta) for Cui et al.'s weights."
        )
    return table.tolist()


def _replica_context():
    context = tf.distribute.get_replica_context()
    if context is None:  # Cross-replica context: one "replica" does everything.
        return None, 1
    return context, context.num_replicas_in_sync


class Trainer(keras.Model):
    """A featurizer and a classifier trained with cross-entropy on dict batches.

    The shared base of the tfcell trainers; see the module docstring for the
    two hooks a subclass overrides and for how losses are scaled under
    `tf.distribute`.

    Args:
        featurizer: a built `keras.Model` (functional or Sequential with an
            `Input`) mapping images to features `(N, D)`.
        classifier: a built `keras.Model` mapping features to class logits
            `(N, C)` (no softmax).
        class_weights: optional weights of the cross-entropy term: a list of
            `C` floats (one per class) or a `(num_domains, C)` table (one per
            domain and class, as mdlt's `CBLoss`/`ReWeight`, which weight each
            domain's classes by that domain's counts). Sample i's CE is
            multiplied by `w[y_i]` (or `w[d_i, y_i]`); the term is still the
            sum over the global batch divided by its size (torch's weighted
            `cross_entropy` divides by the sum of the weights instead: with
            weights normalised to mean 1, as `class_balanced_weights` gives,
            the two agree in expectation). Default None (plain CE).
        **kwargs: forwarded to `keras.Model` (`name`, ...).

    Call arguments:
        inputs: an image batch, or a dict batch with an `"image"` key.
        training: bool.

    Returns:
        Class logits `(N, C)`; `predict` returns the same, and the predicted
        class is their argmax.

    Example:
    ```python
    trainer = tfcell.training.ERMTrainer(featurizer, classifier)
    trainer.compile(optimizer="adam")   # the loss is the trainer's own
    trainer.fit(dict_dataset, epochs=1)
    ```
    """

    # The names of the `batch_penalties` a subclass returns (for the metrics).
    penalty_names = ()

    def __init__(self, featurizer, classifier, class_weights=None, **kwargs):
        super().__init__(**kwargs)
        self.class_weights = _check_class_weights(class_weights)
        for arg, model in (("featurizer", featurizer), ("classifier", classifier)):
            if not isinstance(model, keras.layers.Layer):
                raise ValueError(
                    f"`{arg}` must be a keras Model or Layer, received {type(model).__name__}."
                )
        self.featurizer = featurizer
        self.classifier = classifier
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.ce_tracker = keras.metrics.Mean(name="ce")
        self.penalty_trackers = [keras.metrics.Mean(name=name) for name in self.penalty_names]
        self.accuracy_metric = keras.metrics.SparseCategoricalAccuracy(name="accuracy")

    # ---------------------------------------------------------------- forward
    def call(self, inputs, training=False):
        images = inputs["image"] if isinstance(inputs, dict) else inputs
        features = self.featurizer(images, training=training)
        return self.classifier(features, training=training)

    @property
    def metrics(self):
        return [
            self.loss_tracker,
            self.ce_tracker,
            *self.penalty_trackers,
            self.accuracy_metric,
        ]

    # ------------------------------------------------------------------ hooks
    def per_sample_losses(self, batch, features, logits):
        """`{name: (N,) values}`; the trainer averages them over the global batch."""
        ce = keras.losses.sparse_categorical_crossentropy(batch["label"], logits, from_logits=True)
        if self.class_weights is not None:
            table = ops.convert_to_tensor(np.asarray(self.class_weights, "float32"))
            if len(table.shape) == 1:
                weight = ops.take(table, batch["label"])
            else:
                num_classes = int(table.shape[1])
                flat = ops.reshape(table, (-1,))
                weight = ops.take(flat, batch["domain"] * num_classes + batch["label"])
            ce = ce * ops.cast(weight, ce.dtype)
        return {"ce": ce}

    def batch_penalties(self, batch, features, logits):
        """`{name: weighted scalar}`; divided by the replica count before the gradient."""
        return {}

    # ------------------------------------------------------------------ steps
    def train_step(self, data):
        batch = unpack_batch(data)
        context, num_replicas = _replica_context()
        local_size = ops.cast(ops.shape(batch["label"])[0], "float32")
        if num_replicas > 1:
            global_size = context.all_reduce(tf.distribute.ReduceOp.SUM, local_size)
        else:
            global_size = local_size
        global_size = ops.maximum(global_size, 1.0)

        with tf.GradientTape() as tape:
            features = self.featurizer(batch["image"], training=True)
            logits = self.classifier(features, training=True)
            # Under mixed_float16 the networks compute in float16; the losses and
            # the batch statistics (covariances, kernels, distances) in float32.
            features, logits = ops.cast(features, "float32"), ops.cast(logits, "float32")
            per_sample = self.per_sample_losses(batch, features, logits)
            penalties = self.batch_penalties(batch, features, logits)
            # Per-sample terms: sum on this replica / global batch size.
            scaled = [ops.sum(ops.cast(v, "float32")) / global_size for v in per_sample.values()]
            # Batch statistics and regularisers: / replicas, so the optimizer's
            # sum over replicas is their mean.
            scaled += [ops.cast(v, "float32") / num_replicas for v in penalties.values()]
            scaled += [ops.cast(v, "float32") / num_replicas for v in self.losses]
            loss = sum(scaled) if scaled else ops.zeros(())
            scaled_loss = self.optimizer.scale_loss(loss) if self.optimizer else loss

        variables = self.trainable_variables
        gradients = tape.gradient(scaled_loss, variables)
        self.optimizer.apply_gradients(
            [(g, v) for g, v in zip(gradients, variables) if g is not None]
        )
        return self._update_metrics(batch, logits, per_sample, penalties)

    def _update_metrics(self, batch, logits, per_sample, penalties):
        # Reported values are this replica's unscaled means (the Mean metrics
        # then average over replicas and steps).
        means = {k: ops.mean(ops.cast(v, "float32")) for k, v in per_sample.items()}
        total = sum(means.values()) + sum(ops.cast(v, "float32") for v in penalties.values())
        self.loss_tracker.update_state(total)
        self.ce_tracker.update_state(means["ce"])
        for tracker in self.penalty_trackers:
            if tracker.name in penalties:
                tracker.update_state(penalties[tracker.name])
            elif tracker.name in means:
                tracker.update_state(means[tracker.name])
        self.accuracy_metric.update_state(batch["label"], logits)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        batch = unpack_batch(data)
        logits = ops.cast(self(batch["image"], training=False), "float32")
        ce = keras.losses.sparse_categorical_crossentropy(batch["label"], logits, from_logits=True)
        self.loss_tracker.update_state(ops.mean(ce))
        self.ce_tracker.update_state(ops.mean(ce))
        self.accuracy_metric.update_state(batch["label"], logits)
        return {
            m.name: m.result() for m in (self.loss_tracker, self.ce_tracker, self.accuracy_metric)
        }

    # ---------------------------------------------------------- serialization
    def get_config(self):
        config = super().get_config()
        config.update(_serialize_models(self.featurizer, self.classifier))
        if self.class_weights is not None:
            config["class_weights"] = self.class_weights
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**_deserialize_models(config, custom_objects))


@keras.saving.register_keras_serializable(package="tfcell")
class ERMTrainer(Trainer):
    """Empirical risk minimisation: cross-entropy on the pooled domains.

    ```
    loss = mean(cross_entropy(classifier(featurizer(x)), y))   # over the global batch
    ```

    Args:
        featurizer: a built `keras.Model` mapping images to features.
        classifier: a built `keras.Model` mapping features to class logits.
        **kwargs: forwarded to `keras.Model`.

    Note:
        DomainBed's ERM concatenates one minibatch per domain; here the batch
        is whatever the dict dataset yields (balance it in the pipeline).

    Reference:
    - [Vapnik, 1999](https://doi.org/10.1109/72.788640); DomainBed @b93c22a,
      `domainbed/algorithms.py`, `ERM`
    """
