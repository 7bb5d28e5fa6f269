"""HeterogeneityTrainer: cross-entropy plus Goswami et al.'s centre terms."""

import keras
import tensorflow as tf
from keras import ops

from tfcell.layers import centers as centers_lib
from tfcell.losses import class_balanced
from tfcell.losses import heterogeneity as heterogeneity_lib
from tfcell.training import erm

__all__ = ["HeterogeneityTrainer"]


@keras.saving.register_keras_serializable(package="tfcell")
class HeterogeneityTrainer(keras.Model):
    """Trains `classifier(featurizer(image))` with the heterogeneity loss.

    ```python
    features = featurizer(image)            # (N, h), the paper: Inception-v3
    logits = classifier(features)           # (N, C)
    class_t, subject_t, subject_class_t = heterogeneity_terms(
        features, label, subject, class_centers, subject_centers, subject_labels)
    loss = mean(CE(label, logits)) + l1 * class_t + l2 * subject_t + l3 * subject_class_t
    ```

    The class centres `(C, h)` and subject centres `(S, h)` are trainable
    weights of two `tfcell.layers.Centers` layers, learned with the network.
    Batches are dicts `{"image", "label", "subject"}` (a `"domain"` key is
    ignored); `label` is an int id `(N,)`/`(N, 1)` or one-hot. `call` (and so
    `predict`) takes the image, or a dict with `"image"`, and returns logits.

    Under `MirroredStrategy` each replica's loss is scaled so that summed
    gradients match one device: the cross-entropy is averaged over the
    global batch, the three batch-statistic terms (computed on the replica's
    own batch) are divided by `num_replicas_in_sync`.

    Args:
        featurizer: a Keras model/layer, image -> features `(N, h)`; its output
            size must be known.
        classifier: a Keras model/layer, features -> logits `(N, C)`.
        num_classes: int C.
        subject_labels: list of ints, the class of each training subject
            (length S; subject ids index into it).
        lambda_class: weight of Eq. 3 (paper Sec. 5.1: 0.05).
        lambda_subject: weight of Eq. 4 (paper: 0.05).
        lambda_subject_class: weight of Eq. 5 (paper: 0.005).

    Note:
        With several replicas the centre terms are per-replica estimates (the
        classes and subjects present in each replica's share of the batch),
        averaged; they equal the global-batch terms when every replica sees
        the same groups, as in the paper's single-GPU batch of 16.

    Example:
    ```python
    trainer = tfcell.training.HeterogeneityTrainer(
        featurizer, classifier, num_classes=2, subject_labels=[0, 1, 1, 0, ...])
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    trainer.fit(dataset_of_dicts, epochs=...)
    probs = keras.ops.softmax(trainer.predict(images))
    ```

    Reference:
    - Goswami et al., 2020, "Heterogeneity loss to handle intersubject and
      intrasubject variability in cancer" (ICLR 2020 AI4AH workshop), Eqs. 1-5, Sec. 5.1
    """

    def __init__(
        self,
        featurizer,
        classifier,
        num_classes,
        subject_labels,
        lambda_class=0.05,
        lambda_subject=0.05,
        lambda_subject_class=0.005,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"`num_classes` must be an int >= 2, received {num_classes!r}.")
        subject_labels = [int(c) for c in subject_labels]
        if not subject_labels or min(subject_labels) < 0 or max(subject_labels) >= num_classes:
            raise ValueError(
                "`subject_labels` must be a non-empty list of class ids in "
                f"[0, {num_classes}), one per subject; received {subject_labels!r}."
            )
        for name, value in (
            ("lambda_class", lambda_class),
            ("lambda_subject", lambda_subject),
            ("lambda_subject_class", lambda_subject_class),
        ):
            if float(value) < 0:
                raise ValueError(f"`{name}` must be >= 0, received {value!r}.")
        self.featurizer = featurizer
        self.classifier = classifier
        self.num_classes = num_classes
        self.subject_labels = subject_labels
        self.lambda_class = float(lambda_class)
        self.lambda_subject = float(lambda_subject)
        self.lambda_subject_class = float(lambda_subject_class)
        self.class_centers = centers_lib.Centers(num_classes, name="class_centers")
        self.subject_centers = centers_lib.Centers(len(subject_labels), name="subject_centers")
        self._trackers = {
            name: keras.metrics.Mean(name=name)
            for name in ("loss", "ce", "class_term", "subject_term", "subject_class_term")
        }
        self._accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        feature_dim = _output_dim(featurizer)
        if feature_dim is not None:
            self._build_centers(feature_dim)

    def _build_centers(self, feature_dim):
        if not self.class_centers.built:
            self.class_centers.build((None, feature_dim))
            self.subject_centers.build((None, feature_dim))

    def build(self, input_shape=None):
        if not self.class_centers.built:
            shape = input_shape["image"] if isinstance(input_shape, dict) else input_shape
            spec = keras.KerasTensor(shape)
            feature_dim = self.featurizer.compute_output_spec(spec).shape[-1]
            self._build_centers(feature_dim)
        self.built = True

    @property
    def metrics(self):
        return list(self._trackers.values()) + [self._accuracy]

    def call(self, inputs, training=False):
        images = inputs["image"] if isinstance(inputs, dict) else inputs
        features = self.featurizer(images, training=training)
        self._build_centers(features.shape[-1])
        return self.classifier(features, training=training)

    def _compute_terms(self, data, training):
        labels = class_balanced.to_class_ids(data["label"], self.num_classes)
        subjects = class_balanced.to_class_ids(data["subject"], len(self.subject_labels))
        features = self.featurizer(data["image"], training=training)
        logits = self.classifier(features, training=training)
        ce = ops.sparse_categorical_crossentropy(
            labels, ops.cast(logits, "float32"), from_logits=True
        )
        terms = heterogeneity_lib.heterogeneity_terms(
            ops.cast(features, "float32"),
            labels,
            subjects,
            self.class_centers.centers,
            self.subject_centers.centers,
            ops.convert_to_tensor(self.subject_labels, "int32"),
        )
        penalty = (
            self.lambda_class * terms[0]
            + self.lambda_subject * terms[1]
            + self.lambda_subject_class * terms[2]
        )
        return labels, logits, ce, terms, penalty

    def _update_metrics(self, labels, logits, ce, terms, penalty):
        self._trackers["ce"].update_state(ce)
        self._trackers["loss"].update_state(ops.mean(ce) + penalty)
        for name, value in zip(("class_term", "subject_term", "subject_class_term"), terms):
            self._trackers[name].update_state(value)
        self._accuracy.update_state(labels, logits)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            labels, logits, ce, terms, penalty = self._compute_terms(data, training=True)
            # Gradients are summed over replicas: mean CE over the replica's
            # batch / replicas == mean over the global batch (equal shares);
            # the batch statistics are averaged over replicas.
            loss = (ops.mean(ce) + penalty) / replicas
            scaled = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, self.trainable_weights)
        self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
        return self._update_metrics(labels, logits, ce, terms, penalty)

    def test_step(self, data):
        labels, logits, ce, terms, penalty = self._compute_terms(data, training=False)
        return self._update_metrics(labels, logits, ce, terms, penalty)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                **erm._serialize_models(self.featurizer, self.classifier),
                "num_classes": self.num_classes,
                "subject_labels": list(self.subject_labels),
                "lambda_class": self.lambda_class,
                "lambda_subject": self.lambda_subject,
                "lambda_subject_class": self.lambda_subject_class,
            }
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**erm._deserialize_models(config, custom_objects))


def _output_dim(layer):
    """The static feature size of a built featurizer, else None (built lazily)."""
    try:
        return erm._feature_dim(layer, "HeterogeneityTrainer")
    except ValueError:
        return None
