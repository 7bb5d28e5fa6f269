"""A backbone, an embedding and a head: the one classifier every CFAL run trains.

    image -> backbone -> Dense(embedding_dim) ("embedding") -> head

Heads:
    "softmax"   Dense(num_classes) logits (cross-entropy, focal).
    "affinity"  `tfcell.layers.GaussianAffinity` affinities (affinity loss, CFAL).
    "cosine"    `tfcell.layers.CosineHead` cosines (ArcFace, CosFace; SphereFace with
                `return_norms=True`).

Prediction is always the margin-free argmax over the first `num_classes`
columns (`tfcell.layers.class_scores`). `feature_extractor(model)` returns the
image -> embedding part, e.g. for feature plots or feature-level ensembles.
"""

import keras

__all__ = ["HEADS", "build_classifier", "feature_extractor"]

HEADS = ("softmax", "affinity", "cosine")


def _make_head(head, num_classes, head_kwargs):
    from tfcell import layers

    if head == "softmax":
        return keras.layers.Dense(num_classes, name="head", **head_kwargs)
    if head == "affinity":
        return layers.GaussianAffinity(num_classes, name="head", **head_kwargs)
    if head == "cosine":
        return layers.CosineHead(num_classes, name="head", **head_kwargs)
    raise ValueError(f"build_classifier: head must be one of {HEADS}; received head={head!r}.")


def build_classifier(
    backbone, num_classes, head="softmax", embedding_dim=64, name=None, **head_kwargs
):
    """Puts an embedding and a head on a backbone.

    Args:
        backbone: a `keras.Model` from images to a feature vector (`tfcell.models`).
        num_classes: number of classes C.
        head: "softmax" | "affinity" | "cosine".
        embedding_dim: width of the embedding (the paper's "FC2" feature, Fig. 2)
            the head sees; None feeds the backbone features directly.
        name: model name (default `<backbone>_<head>`).
        **head_kwargs: passed to the head, e.g. `sigma=130` for "affinity" or
            `return_norms=True` for "cosine" (SphereFace).

    Returns:
        A functional `keras.Model` from images to head outputs: logits `(N, C)`,
        affinities `(N, C)`, or cosines `(N, C)` / `(N, C + 1)`.

    Example:

    ```python
    model = build_classifier(tfcell.models.alexnet(), 2, head="affinity", sigma=130.0)
    model.compile(optimizer="adam", loss=tfcell.losses.CFALoss(0.1, 2.0, weights))
    ```
    """
    inputs = keras.Input(backbone.input_shape[1:], name="image")
    x = backbone(inputs)
    if embedding_dim:
        # A plain linear layer (the paper's "FC2", Fig. 2). A BatchNorm here made
        # the affinity and cosine heads' validation predictions swing from epoch
        # to epoch on IDC (inference statistics vs batch statistics), so that
        # early stopping picked near-random epochs; without it they are stable.
        x = keras.layers.Dense(embedding_dim, name="embedding")(x)
    outputs = _make_head(head, num_classes, head_kwargs)(x)
    return keras.Model(inputs, outputs, name=name or f"{backbone.name}_{head}")


def feature_extractor(model):
    """The image -> embedding part of a `build_classifier` model (shared weights)."""
    try:
        features = model.get_layer("embedding").output
    except ValueError:  # Built with embedding_dim=None: the backbone's output.
        features = model.get_layer("head").input
    return keras.Model(model.inputs, features, name=f"{model.name}_features")
