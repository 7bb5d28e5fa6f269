"""The losses the CFAL paper compares, each with the head it trains.

    name            head                      loss (hyperparameters from config.loss.<name>)
    ce              softmax (logits)          cross-entropy, the baseline [13], [22]
    cb_sphereface   cosine                    class-balanced SphereFace (scale, margin, beta)
    cfal            Gaussian affinity         CFAL, Eq. 7 (margin=lambda, sigma, gamma, beta)
    cb_arcface      cosine                    class-balanced ArcFace (scale, margin, beta)
    cb_cosface      cosine                    class-balanced CosFace (scale, margin, beta)
    cb_focal        softmax (logits)          class-balanced focal (gamma, beta)
    affinity        Gaussian affinity         vanilla affinity loss, Eq. 4 (ablation)
    cb_affinity     Gaussian affinity         class-balanced affinity, Eq. 8 (ablation)

Adding a method is one entry in `METHODS`.
"""

import keras

from tfcell import losses
from tfcell.experiments import methods

__all__ = ["METHODS"]


def _affinity_head(hp):
    return {"sigma": float(hp["sigma"]), "num_centers": int(hp.get("num_centers", 1))}


def _sphereface_loss(hp, w):
    if hp.get("scale") is None:  # The head applied the margin (A-Softmax scores).
        return losses.SphereFaceLoss(margin=None, scale=None, class_weights=w)
    return losses.SphereFaceLoss(margin=hp["margin"], scale=hp["scale"], class_weights=w)


METHODS = {
    "ce": methods.LossMethod(
        "Cross-entropy",
        "softmax",
        lambda hp, w: keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    ),
    "cb_sphereface": methods.LossMethod(
        "Class-balanced SphereFace",
        "cosine",
        _sphereface_loss,
        # Table IX gives a scale, so the head outputs plain cosines; scale=None
        # (Liu et al.'s feature-norm radius) applies the margin in the head,
        # which outputs the A-Softmax scores (`tfcell.layers.CosineHead`).
        lambda hp: {} if hp.get("scale") is not None else {"sphereface_margin": hp["margin"]},
        class_balanced=True,
        required=("margin", "scale"),
    ),
    "cfal": methods.LossMethod(
        "Center-focused affinity loss (CFAL)",
        "affinity",
        lambda hp, w: losses.CFALoss(margin=hp["margin"], gamma=hp["gamma"], class_weights=w),
        _affinity_head,
        class_balanced=True,
        required=("margin", "gamma", "sigma"),
    ),
    "cb_arcface": methods.LossMethod(
        "Class-balanced ArcFace",
        "cosine",
        lambda hp, w: losses.ArcFaceLoss(margin=hp["margin"], scale=hp["scale"], class_weights=w),
        class_balanced=True,
        required=("margin", "scale"),
    ),
    "cb_cosface": methods.LossMethod(
        "Class-balanced CosFace",
        "cosine",
        lambda hp, w: losses.CosFaceLoss(margin=hp["margin"], scale=hp["scale"], class_weights=w),
        class_balanced=True,
        required=("margin", "scale"),
    ),
    "cb_focal": methods.LossMethod(
        "Class-balanced focal loss",
        "softmax",
        lambda hp, w: losses.ClassBalancedFocalLoss(
            gamma=hp["gamma"], class_weights=w, from_logits=True
        ),
        class_balanced=True,
        required=("gamma",),
    ),
    "affinity": methods.LossMethod(
        "Vanilla affinity loss",
        "affinity",
        lambda hp, w: losses.AffinityLoss(margin=hp["margin"]),
        _affinity_head,
        required=("margin", "sigma"),
    ),
    "cb_affinity": methods.LossMethod(
        "Class-balanced affinity loss",
        "affinity",
        lambda hp, w: losses.AffinityLoss(margin=hp["margin"], class_weights=w),
        _affinity_head,
        class_balanced=True,
        required=("margin", "sigma"),
    ),
}
