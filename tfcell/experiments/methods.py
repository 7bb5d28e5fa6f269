"""Methods behind one interface: what the harness trains in a job.

Two kinds, both built from a backbone the config names:

    LossMethod      backbone -> embedding -> head, compiled with a loss, on
                    `(image, label)` batches (a loss with its head).
    TrainerMethod   a `tfcell.training` trainer (featurizer + classifier with
                    its own `train_step`) on dict batches
                    `{"image", "label", "domain", "subject"}` (ERM, DANN,
                    domain-alignment trainers, ...), with its callbacks
                    (centroid refresh, annealing, two-stage schedules).

`method.build(info, hp, config)` returns a `Built`: the model (compiled by the
harness with the config's optimizer), the loss (None for trainers), the head
kind and scale that turn its outputs into logits for calibration
(`tfcell.evaluation.calibration.to_logits`), and a callback factory. A paper
package maps method names to `Method`s; nothing in the harness dispatches on
a method's name.
"""

import dataclasses

import keras
import numpy as np

__all__ = [
    "Built",
    "DataInfo",
    "LossMethod",
    "Method",
    "TrainerMethod",
    "make_backbone",
    "make_optimizer",
]


@dataclasses.dataclass(frozen=True)
class DataInfo:
    """What a method may know about the training data of a setting."""

    num_classes: int
    class_counts: tuple  # Training images per class.
    image_shape: tuple  # (H, W, 3)
    num_domains: int = 1
    num_subjects: int = 1
    domain_class_counts: tuple = ()  # (num_domains, num_classes) training counts.
    # A Keras layer the network starts with, active in training only (the
    # tf.data augmentation moved onto the accelerator, config.training.
    # augment_in_model); None: the pipeline augments, or nothing does.
    augmentation: object = None


@dataclasses.dataclass
class Built:
    model: keras.Model
    loss: object = None  # None: a trainer with its own loss.
    head: str = "softmax"  # softmax | cosine | affinity (for calibration).
    scale: float = 1.0  # The cosine loss's scale s (logits = s * cos).
    # (model, data) -> [keras.callbacks.Callback]; `data` has `train_dataset()`.
    callbacks: object = None


class Method:
    """Base: a title (as the paper's tables name it) and the batch type.

    Subclasses implement `build(info, hp, config) -> Built`.
    """

    batches = "tuple"  # "tuple": (image, label); "dict": the trainers' dict batches.

    def __init__(self, title):
        self.title = title

    def build(self, info, hp, config):
        raise NotImplementedError


def _require(hp, keys, title):
    missing = [k for k in keys if k not in hp]
    if missing:
        raise ValueError(
            f"{title}: hyperparameters {missing} are missing from the config's loss section "
            f"(received {sorted(hp)}); add them to configs/<paper>.py."
        )


class LossMethod(Method):
    """A classifier (`tfcell.models.build_classifier`) compiled with a loss.

    Args:
        title: the paper's name for it.
        head: "softmax" | "affinity" | "cosine".
        make_loss: `(hp, class_weights) -> keras.losses.Loss`; `class_weights`
            is `class_balanced_weights(train counts, hp["beta"])` when
            `class_balanced`, else None.
        head_kwargs: `(hp) -> dict` for the head (e.g. sigma).
        class_balanced: whether the loss takes class-balanced weights.
        required: hyperparameter names that must be in `hp`.
    """

    def __init__(self, title, head, make_loss, head_kwargs=None, class_balanced=False, required=()):
        super().__init__(title)
        self.head = head
        self.make_loss = make_loss
        self.head_kwargs = head_kwargs or (lambda hp: {})
        self.class_balanced = class_balanced
        self.required = tuple(required) + (("beta",) if class_balanced else ())

    def build(self, info, hp, config):
        from tfcell import losses, models

        _require(hp, self.required, self.title)
        weights = None
        if self.class_balanced:
            counts = np.maximum(np.asarray(info.class_counts), 1)  # A class absent from a fold.
            weights = [float(w) for w in losses.class_balanced_weights(counts, hp["beta"])]
        backbone = make_backbone(config.model, info.image_shape)
        model = models.build_classifier(
            backbone,
            info.num_classes,
            head=self.head,
            embedding_dim=config.model.embedding_dim,
            augmentation=info.augmentation,
            **self.head_kwargs(hp),
        )
        scale = hp.get("scale") if self.head == "cosine" else None
        return Built(
            model, self.make_loss(hp, weights), self.head, 1.0 if scale is None else float(scale)
        )


class TrainerMethod(Method):
    """A `tfcell.training` trainer on dict batches.

    Args:
        title: the paper's name for it.
        make_trainer: `(featurizer, classifier, info, hp) -> keras.Model`
            (a `tfcell.training.Trainer`).
        make_callbacks: optional `(model, data, hp) -> [Callback]`, e.g. a
            centroid refresh on `data.train_dataset(shuffle=False)`.
        required: hyperparameter names that must be in `hp`.
    """

    batches = "dict"

    def __init__(self, title, make_trainer, make_callbacks=None, required=()):
        super().__init__(title)
        self.make_trainer = make_trainer
        self.make_callbacks = make_callbacks
        self.required = tuple(required)

    def build(self, info, hp, config):
        _require(hp, self.required, self.title)
        backbone = make_backbone(config.model, info.image_shape)
        inputs = keras.Input(info.image_shape, name="image")
        x = backbone(inputs if info.augmentation is None else info.augmentation(inputs))
        if config.model.get("embedding_dim"):
            x = keras.layers.Dense(config.model.embedding_dim, name="embedding")(x)
        featurizer = keras.Model(inputs, x, name="featurizer")
        # Logits in float32 under a mixed policy (they feed the trainer's losses).
        classifier = keras.Sequential(
            [
                keras.Input(featurizer.output_shape[1:]),
                keras.layers.Dense(info.num_classes, dtype="float32"),
            ],
            name="classifier",
        )
        model = self.make_trainer(featurizer, classifier, info, hp)
        callbacks = None
        if self.make_callbacks is not None:

            def callbacks(built_model, data):
                return self.make_callbacks(built_model, data, hp)

        return Built(model, None, "softmax", 1.0, callbacks)


def make_backbone(model_config, image_shape):
    """A backbone from `config.model.backbone` (vgg19 | resnet50 | inception_v3 | alexnet |
    cct | small_cnn),
    with `widths`, `weights` and further keyword arguments from `config.model`."""
    from tfcell import models

    shape = tuple(int(s) for s in image_shape)
    name = model_config.backbone
    if name == "vgg19":
        return models.vgg19(shape, weights=model_config.get("weights") or None)
    if name == "resnet50":
        return models.resnet50(shape, weights=model_config.get("weights") or None)
    if name == "inception_v3":
        return models.inception_v3(shape, weights=model_config.get("weights") or None)
    if name == "alexnet":
        return models.alexnet(shape, widths=tuple(model_config.get("widths") or (32, 32, 64)))
    if name == "cct":
        return models.cct(shape)
    if name == "small_cnn":
        return models.small_cnn(shape, widths=tuple(model_config.get("widths") or (16, 32, 64)))
    raise ValueError(
        f"config.model.backbone must be vgg19, resnet50, inception_v3, alexnet, cct or "
        "small_cnn; "
        f"received {name!r}."
    )


def make_optimizer(optimizer_config):
    """Adam or SGD (with momentum) from `config.optimizer`."""
    name = optimizer_config.name
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=optimizer_config.learning_rate)
    if name == "sgd":
        return keras.optimizers.SGD(
            learning_rate=optimizer_config.learning_rate,
            momentum=optimizer_config.get("momentum", 0.9),
        )
    raise ValueError(f"config.optimizer.name must be 'adam' or 'sgd'; received {name!r}.")
