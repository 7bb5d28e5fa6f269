"""HeterogeneityTrainer: cross-entropy plus Goswami et al.'s centre terms."""

import copy

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tfcell.layers import centers as centers_lib
from tfcell.losses import class_balanced
from tfcell.training import erm

__all__ = ["HeterogeneityTrainer", "subject_labels_from"]

NO_CENTER = -1  # `subject_labels` entry of a subject id without a centre.


@keras.saving.register_keras_serializable(package="tfcell")
class HeterogeneityTrainer(keras.Model):
    """Trains `classifier(featurizer(image))` with the heterogeneity loss.

    ```python
    features = featurizer(image)            # (N, h), the paper: Inception-v3
    logits = classifier(features)           # (N, C)
    known = (0 <= subject < S) & (subject_labels[subject] != -1)   # has a centre
    class_t = heterogeneity_terms(features, label, ...)[0]              # all samples
    _, subject_t, subject_class_t = heterogeneity_terms(
        features[known], label[known], subject[known],
        class_centers, subject_centers, subject_labels)                  # known only
    loss = (mean(CE(label, logits)) + l1 * class_t + l2 * subject_t
            + l3 * subject_class_t + sum(layer losses))
    ```

    The class centres `(C, h)` and subject centres `(S, h)` are trainable
    weights of two `tfcell.layers.Centers` layers, learned with the network.
    Batches are dicts `{"image", "label", "subject"}` (a `"domain"` key is
    ignored); `label` is an int id `(N,)`/`(N, 1)` or one-hot. `call` (and so
    `predict`) takes the image, or a dict with `"image"`, and returns logits.

    Subject ids are global: number every record table of a run with the same
    map (`tfcell.data.pipeline.from_arrays(..., id_maps=run_maps)` or
    `from_records(..., id_maps=...)`, e.g. `Setting.id_maps()`), so that a
    validation fold's subject never reuses a training subject's id. Without
    `id_maps` each table is numbered on its own and a validation subject
    silently takes the centre and class of the training subject with the
    same number. `subject_labels` has one entry per global id: the class of
    a training subject, or -1 for an id without a centre (a validation or
    test subject); `subject_labels_from(subjects, labels, id_map)` builds it
    from the training part.

    Unseen subjects (ids that are -1 in `subject_labels`, negative, or
    `>= len(subject_labels)`) have no centre, so their samples enter the
    cross-entropy and the class term only, and are left out of the two
    subject terms (Eqs. 4, 5 are sums over the subjects with a centre that
    are present in the batch). A validation fold of unseen subjects thus
    reports `loss = CE + l1 * class_t (+ layer losses)`, `subject_term = 0`
    and `subject_class_term = 0`; a batch without any known subject gives
    0 for both subject terms (no NaN). Ids are clipped before every gather,
    so an out-of-range id never raises (CPU) nor reads zeros (GPU).

    Layer losses (`self.losses`: kernel regularisers, `add_loss`) are added
    to the loss, in training and in evaluation, as `compile(loss=...)` does.

    Under `MirroredStrategy` each replica's loss is scaled so that summed
    gradients match one device: the cross-entropy is averaged over the
    global batch, the three batch-statistic terms (computed on the replica's
    own batch) and the layer losses are divided by `num_replicas_in_sync`.

    The paper's two-stage schedule (Adam at 1e-3 while the training loss
    improves, keep the best checkpoint, resume from it at 1e-5) is the
    callback `tfcell.training.TwoStageSchedule`.

    Args:
        featurizer: a Keras model/layer, image -> features `(N, h)`; its output
            size must be known.
        classifier: a Keras model/layer, features -> logits `(N, C)`.
        num_classes: int C.
        subject_labels: list of ints, one per global subject id (length S;
            subject ids index into it): the class of each training subject,
            -1 (or None) for ids without a centre. At least one entry must
            be a class id.
        lambda_class: weight of Eq. 3 (paper Sec. 5.1: 0.05).
        lambda_subject: weight of Eq. 4 (paper: 0.05).
        lambda_subject_class: weight of Eq. 5 (paper: 0.005).
        center_learning_rate: None (default): the centres are weights learned
            by the model's optimizer with the network. A float: the centres
            get their own plain SGD step at this rate, on the gradient of
            the loss divided by the weight of the term that pulls them
            (class centres: `lambda_class`; subject centres:
            `lambda_subject`), the PyTorch centre-loss practice (a separate
            SGD for the centres, lr 0.5, gradients times 1 / weight). With
            Eq. 3's per-group means a rate r moves a centre the fraction 2r
            of the way to its batch mean (0.25: half-way, Wen et al.'s
            alpha = 0.5), while Eq. 5 still moves subject centres.

    Note:
        Why `center_learning_rate`: learned by Adam at 1e-3 from their
        random-normal start, the centres move about 1e-3 per step, so early
        in training the cheapest way to shrink Eqs. 3-4 is to shrink the
        features. A small CNN trained from scratch on IDC (the `cpu`
        reproduction) then collapsed to the majority class within one epoch
        with the paper's lambdas (accuracy 0.74 = the majority share, while
        L_CE alone reached 0.85); the paper's ImageNet-pretrained
        Inception-v3 starts from discriminative features. The paper does
        not say how its centres were updated.
        With several replicas the centre terms are per-replica estimates (the
        classes and subjects present in each replica's share of the batch),
        averaged; they equal the global-batch terms when every replica sees
        the same groups, as in the paper's single-GPU batch of 16.
        The paper validates on held-out subjects (Table 1 folds) but does not
        say how `L_H` is computed for subjects without a centre (Fig. A1 plots
        a validation `L_H`); the unseen-subject rule above is tfcell's. A
        centre is allocated for every global id (S x h floats); ids marked -1
        never receive a gradient.

    Example:
    ```python
    maps = setting.id_maps()                       # global ids, whole run
    train = tfcell.data.pipeline.from_arrays(x_tr, y_tr, subjects=s_tr,
                                             id_maps=maps, output="dict")
    val = tfcell.data.pipeline.from_arrays(x_va, y_va, subjects=s_va,
                                           id_maps=maps, output="dict")
    trainer = tfcell.training.HeterogeneityTrainer(
        featurizer, classifier, num_classes=2,
        subject_labels=tfcell.training.subject_labels_from(s_tr, y_tr, maps["subject"]))
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    trainer.fit(train, validation_data=val, epochs=100,
                callbacks=[tfcell.training.TwoStageSchedule()])
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
        center_learning_rate=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if center_learning_rate is not None and not float(center_learning_rate) > 0:
            raise ValueError(
                "`center_learning_rate` must be None (centres learned by the model's "
                f"optimizer) or a positive float (e.g. 0.25); received {center_learning_rate!r}."
            )
        self.center_learning_rate = (
            None if center_learning_rate is None else float(center_learning_rate)
        )
        self._center_optimizer = None
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"`num_classes` must be an int >= 2, received {num_classes!r}.")
        subject_labels = [NO_CENTER if c is None else int(c) for c in subject_labels]
        known = [c for c in subject_labels if c != NO_CENTER]
        if not known or min(subject_labels) < NO_CENTER or max(known) >= num_classes:
            raise ValueError(
                "`subject_labels` must be a list with one entry per global subject id: "
                f"a class id in [0, {num_classes}) for a training subject, -1 for an id "
                f"without a centre, at least one class id; received {subject_labels!r}. "
                "Use tfcell.training.subject_labels_from(subjects, labels, id_map)."
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
        if isinstance(data, (tuple, list)) and len(data) == 1:
            data = data[0]
        if not isinstance(data, dict) or any(k not in data for k in ("image", "label", "subject")):
            keys = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ValueError(
                "HeterogeneityTrainer needs dict batches {'image', 'label', 'subject'} "
                f"with global subject ids; received {keys}. Use tfcell.data.pipeline "
                "from_arrays/from_records(..., output='dict', id_maps=run_maps)."
            )
        labels = class_balanced.to_class_ids(data["label"], self.num_classes)
        subjects = ops.reshape(ops.cast(data["subject"], "int32"), (-1,))
        features = self.featurizer(data["image"], training=training)
        logits = self.classifier(features, training=training)
        ce = ops.sparse_categorical_crossentropy(
            labels, ops.cast(logits, "float32"), from_logits=True
        )
        terms = _masked_heterogeneity_terms(
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
        # Layer losses (regularisers, add_loss) of this forward pass.
        layer_loss = sum((ops.cast(v, "float32") for v in self.losses), ops.zeros(()))
        return labels, logits, ce, terms, penalty, layer_loss

    def _update_metrics(self, labels, logits, ce, terms, penalty, layer_loss):
        self._trackers["ce"].update_state(ce)
        self._trackers["loss"].update_state(ops.mean(ce) + penalty + layer_loss)
        for name, value in zip(("class_term", "subject_term", "subject_class_term"), terms):
            self._trackers[name].update_state(value)
        self._accuracy.update_state(labels, logits)
        return {m.name: m.result() for m in self.metrics}

    def compile(self, *args, **kwargs):
        super().compile(*args, **kwargs)
        if self.center_learning_rate is not None:
            # Built now (inside the strategy scope of the caller), not in the step.
            self._center_optimizer = keras.optimizers.SGD(self.center_learning_rate)
            self._center_optimizer.build(self._center_variables())

    def _center_variables(self):
        if not self.class_centers.built:
            raise ValueError(
                "HeterogeneityTrainer(center_learning_rate=...): the featurizer's output "
                "size must be known before compile (build the featurizer on an Input)."
            )
        return [self.class_centers.centers, self.subject_centers.centers]

    def _center_weights(self):
        """Each centre table's gradient is divided by the weight of the term that
        pulls it (class: lambda_class; subject: lambda_subject, else
        lambda_subject_class), as the PyTorch centre-loss practice does, so that
        the centres' step does not depend on the lambdas; 0 = not updated."""
        subject = self.lambda_subject or self.lambda_subject_class
        return [
            1.0 / self.lambda_class if self.lambda_class else 0.0,
            1.0 / subject if subject else 0.0,
        ]

    def train_step(self, data):
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if self._center_optimizer is not None:
            return self._train_step_with_center_optimizer(data, replicas)
        with tf.GradientTape() as tape:
            labels, logits, ce, terms, penalty, layer_loss = self._compute_terms(
                data, training=True
            )
            # Gradients are summed over replicas: mean CE over the replica's
            # batch / replicas == mean over the global batch (equal shares);
            # the batch statistics and the layer losses are averaged over replicas.
            loss = (ops.mean(ce) + penalty + layer_loss) / replicas
            scaled = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, self.trainable_weights)
        self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
        return self._update_metrics(labels, logits, ce, terms, penalty, layer_loss)

    def _train_step_with_center_optimizer(self, data, replicas):
        centers = self._center_variables()
        center_ids = {id(v) for v in centers}
        others = [v for v in self.trainable_weights if id(v) not in center_ids]
        with tf.GradientTape(persistent=True) as tape:
            labels, logits, ce, terms, penalty, layer_loss = self._compute_terms(
                data, training=True
            )
            loss = (ops.mean(ce) + penalty + layer_loss) / replicas
            scaled = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, others)
        center_grads = tape.gradient(loss, centers)  # Unscaled (loss scaling aside).
        del tape
        self.optimizer.apply_gradients(zip(grads, others))
        pairs = [
            (ops.zeros_like(v) if g is None else _scaled(g, w), v)
            for g, v, w in zip(center_grads, centers, self._center_weights())
        ]
        self._center_optimizer.apply_gradients(pairs)
        return self._update_metrics(labels, logits, ce, terms, penalty, layer_loss)

    def test_step(self, data):
        return self._update_metrics(*self._compute_terms(data, training=False))

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
                "center_learning_rate": self.center_learning_rate,
            }
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # Deep copy: deserializing pops keys from the nested model configs,
        # which would empty the caller's config.
        return cls(**erm._deserialize_models(copy.deepcopy(config), custom_objects))


def subject_labels_from(subjects, labels, id_map):
    """`HeterogeneityTrainer(subject_labels=...)` from the training part's samples.

    ```python
    ids = [id_map[str(s)] for s in subjects]     # or the ids themselves
    subject_labels = [-1] * S                    # S = len(id_map) (or id_map itself)
    for s, y in zip(ids, labels): subject_labels[s] = y
    ```

    Args:
        subjects: the training samples' subjects: names (looked up in
            `id_map`, as `tfcell.data.pipeline` does, via `str`) or global
            int ids when `id_map` is an int.
        labels: the training samples' class ids.
        id_map: the run's global subject map `{name: id}`
            (`Setting.id_maps()["subject"]`, `dataset.id_maps["subject"]`),
            or the number S of global subject ids.

    Returns:
        A list of S ints: each training subject's class, -1 for the ids with
        no training sample (validation and test subjects).

    Raises:
        ValueError: a subject has samples of two classes (Eq. 5 needs one
            class per subject), or a name or id is not in the map.
    """
    labels = np.asarray(labels).reshape(-1).astype("int64")
    subjects = np.asarray(subjects).reshape(-1)
    if len(subjects) != len(labels):
        raise ValueError(
            f"subject_labels_from: {len(subjects)} subjects but {len(labels)} labels; "
            "pass one subject and one label per training sample."
        )
    if isinstance(id_map, dict):
        num_subjects = len(id_map)
        names = subjects.astype(str).tolist()
        unknown = sorted(set(names) - set(id_map))
        if unknown:
            raise ValueError(
                f"subject_labels_from: {len(unknown)} subject(s) not in id_map, e.g. "
                f"{unknown[:3]}; build the map over every record table of the run."
            )
        ids = np.array([id_map[n] for n in names], "int64")
    else:
        num_subjects = int(id_map)
        ids = subjects.astype("int64")
        if ids.size and (ids.min() < 0 or ids.max() >= num_subjects):
            raise ValueError(
                f"subject_labels_from: subject ids must be in [0, {num_subjects}); "
                f"received ids in [{ids.min()}, {ids.max()}]."
            )
    table = [NO_CENTER] * num_subjects
    for s in np.unique(ids):
        classes = np.unique(labels[ids == s])
        if len(classes) > 1:
            raise ValueError(
                f"subject_labels_from: subject id {int(s)} has samples of classes "
                f"{classes.tolist()}; the heterogeneity loss (Eq. 5) needs one class per "
                "subject (a patient's diagnosis, as in C-NMC)."
            )
        table[int(s)] = int(classes[0])
    return table


def _scaled(gradient, weight):
    """`gradient * weight`, keeping a gather's `IndexedSlices` sparse."""
    if isinstance(gradient, tf.IndexedSlices):
        return tf.IndexedSlices(gradient.values * weight, gradient.indices, gradient.dense_shape)
    return gradient * weight


def _sum_of_group_means(values, one_hot):
    """`sum_{g present} mean_{i in g} values[i]` for a (possibly masked) one-hot."""
    sums = ops.matmul(values[None, :], one_hot)[0]  # (G,)
    counts = ops.sum(one_hot, axis=0)
    # Absent groups have sums == 0; dividing by max(count, 1) drops them.
    return ops.sum(sums / ops.maximum(counts, 1.0)), counts


def _masked_heterogeneity_terms(
    features, labels, subjects, class_centers, subject_centers, subject_labels
):
    """`tfcell.losses.heterogeneity_terms` with the subject terms over known subjects.

    The class term is over every sample; Eqs. 4 and 5 are over the samples
    whose subject id is in `[0, S)` and not -1 in `subject_labels`, the
    others contribute nothing. Same formulas and fixed shapes as
    `heterogeneity_terms` (equal to it on a batch of known subjects);
    float32.
    """
    x = ops.cast(features, "float32")
    c1 = ops.cast(class_centers, "float32")
    c2 = ops.cast(subject_centers, "float32")
    num_classes, num_subjects = c1.shape[0], c2.shape[0]

    # Eq. 3, every sample (labels are valid class ids).
    d_class = ops.sum(ops.square(x - ops.take(c1, labels, axis=0)), axis=-1)
    class_term, _ = _sum_of_group_means(d_class, ops.one_hot(labels, num_classes))

    # Which samples have a centre; ids clipped so no gather leaves the table.
    in_range = ops.logical_and(ops.greater_equal(subjects, 0), ops.less(subjects, num_subjects))
    safe = ops.where(in_range, subjects, ops.zeros_like(subjects))
    class_of_subject = ops.take(subject_labels, safe, axis=0)
    known = ops.logical_and(in_range, ops.not_equal(class_of_subject, NO_CENTER))
    mask = ops.cast(known, "float32")

    # Eq. 4, known samples only (their one-hot rows; the others' are zero).
    c2_of_sample = ops.take(c2, safe, axis=0)  # (N, h)
    d_subject = ops.sum(ops.square(x - c2_of_sample), axis=-1) * mask
    one_hot = ops.one_hot(safe, num_subjects) * mask[:, None]
    subject_term, counts = _sum_of_group_means(d_subject, one_hot)

    # Eq. 5 over pairs of known samples (i, j), s_i != s_j, weight 1 / (n_si * n_sj),
    # which counts each ordered pair of present subjects once.
    diff = c2_of_sample[:, None, :] - c2_of_sample[None, :, :]
    d2 = ops.sum(ops.square(diff), axis=-1)  # (N, N)
    same_class = ops.cast(
        ops.equal(class_of_subject[:, None], class_of_subject[None, :]), "float32"
    )
    pair_value = same_class * d2 + (1.0 - same_class) / (1.0 + d2)
    n = ops.maximum(ops.take(counts, safe, axis=0), 1.0)  # >= 1, also for unknown samples
    different = ops.cast(ops.not_equal(safe[:, None], safe[None, :]), "float32")
    weights = different * mask[:, None] * mask[None, :] / (n[:, None] * n[None, :])
    subject_class_term = ops.sum(weights * pair_value)
    return class_term, subject_term, subject_class_term


def _output_dim(layer):
    """The static feature size of a built featurizer, else None (built lazily)."""
    try:
        return erm._feature_dim(layer, "HeterogeneityTrainer")
    except ValueError:
        return None
