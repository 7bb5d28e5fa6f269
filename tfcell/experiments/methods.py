"""The losses the CFAL paper compares, each with the head it trains.

    name            head                      loss (hyperparameters from config.loss.<name>)
    ce              softmax (logits)          cross-entropy, the baseline [13], [22]
    cb_sphereface   cosine (+ norm if s=None) class-balanced SphereFace (scale, margin, beta)
    cfal            Gaussian affinity         CFAL, Eq. 7 (margin=lambda, sigma, gamma, beta)
    cb_arcface      cosine                    class-balanced ArcFace (scale, margin, beta)
    cb_cosface      cosine                    class-balanced CosFace (scale, margin, beta)
    cb_focal        softmax (logits)          class-balanced focal (gamma, beta)
    affinity        Gaussian affinity         vanilla affinity loss, Eq. 4 (ablation)
    cb_affinity     Gaussian affinity         class-balanced affinity, Eq. 8 (ablation)

Adding a method is one entry in `METHODS`; nothing else dispatches on names.
"""

import dataclasses

import keras

__all__ = ["METHODS", "Method", "build_model", "make_backbone"]


@dataclasses.dataclass(frozen=True)
class Method:
    title: str  # As the paper's tables name it.
    head: str  # "softmax" | "affinity" | "cosine"
    make_loss: object  # (hp, class_weights) -> keras.losses.Loss
    head_kwargs: object = lambda hp: {}  # noqa: E731
    class_balanced: bool = True

    def probability_scale(self, hp):
        """The scale that turns a cosine head's output into training-time logits."""
        scale = hp.get("scale") if self.head == "cosine" else None
        return 1.0 if scale is None else float(scale)


def _losses():
    from tfcell import losses

    return losses


def _affinity_head(hp):
    return {"sigma": float(hp["sigma"]), "num_centers": int(hp.get("num_centers", 1))}


METHODS = {
    "ce": Method(
        "Cross-entropy",
        "softmax",
        lambda hp, w: keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        class_balanced=False,
    ),
    "cb_sphereface": Method(
        "Class-balanced SphereFace",
        "cosine",
        lambda hp, w: _losses().SphereFaceLoss(
            margin=hp["margin"], scale=hp["scale"], class_weights=w
        ),
        # Table IX gives a scale, so the head outputs plain cosines; scale=None
        # (Liu et al.'s feature-norm radius) needs the norm column.
        lambda hp: {"return_norms": hp.get("scale") is None},
    ),
    "cfal": Method(
        "Center-focused affinity loss (CFAL)",
        "affinity",
        lambda hp, w: _losses().CFALoss(margin=hp["margin"], gamma=hp["gamma"], class_weights=w),
        _affinity_head,
    ),
    "cb_arcface": Method(
        "Class-balanced ArcFace",
        "cosine",
        lambda hp, w: _losses().ArcFaceLoss(
            margin=hp["margin"], scale=hp["scale"], class_weights=w
        ),
    ),
    "cb_cosface": Method(
        "Class-balanced CosFace",
        "cosine",
        lambda hp, w: _losses().CosFaceLoss(
            margin=hp["margin"], scale=hp["scale"], class_weights=w
        ),
    ),
    "cb_focal": Method(
        "Class-balanced focal loss",
        "softmax",
        lambda hp, w: _losses().ClassBalancedFocalLoss(
            gamma=hp["gamma"], class_weights=w, from_logits=True
        ),
    ),
    "affinity": Method(
        "Vanilla affinity loss",
        "affinity",
        lambda hp, w: _losses().AffinityLoss(margin=hp["margin"]),
        _affinity_head,
        class_balanced=False,
    ),
    "cb_affinity": Method(
        "Class-balanced affinity loss",
        "affinity",
        lambda hp, w: _losses().AffinityLoss(margin=hp["margin"], class_weights=w),
        _affinity_head,
    ),
}


def make_backbone(model_config, image_size):
    """A backbone from `config.model` (`backbone`: vgg19 | alexnet | cct | small_cnn)."""
    from tfcell import models

    shape = (image_size, image_size, 3)
    name = model_config.backbone
    if name == "vgg19":
        return models.vgg19(shape, weights=model_config.get("weights") or None)
    if name == "alexnet":
        return models.alexnet(shape, widths=tuple(model_config.get("widths") or (32, 32, 64)))
    if name == "cct":
        return models.cct(shape)
    if name == "small_cnn":
        return models.small_cnn(shape, widths=tuple(model_config.get("widths") or (16, 32, 64)))
    raise ValueError(
        f"config.model.backbone must be vgg19, alexnet, cct or small_cnn; received {name!r}."
    )


def build_model(method_name, hp, class_counts, config):
    """`(model, loss, method)` for one method: backbone + embedding + its head.

    `hp` is the method's hyperparameter dict (`config.loss[method_name]`);
    class-balanced methods get `class_balanced_weights(class_counts, hp["beta"])`.
    """
    from tfcell import losses, models

    if method_name not in METHODS:
        raise ValueError(f"Unknown method {method_name!r}; known: {sorted(METHODS)}.")
    method = METHODS[method_name]
    weights = None
    if method.class_balanced:
        weights = [float(w) for w in losses.class_balanced_weights(class_counts, hp["beta"])]
    backbone = make_backbone(config.model, config.data.image_size)
    model = models.build_classifier(
        backbone,
        len(class_counts),
        head=method.head,
        embedding_dim=config.model.embedding_dim,
        name=method_name,
        **method.head_kwargs(hp),
    )
    return model, method.make_loss(hp, weights), method
