"""A backbone, an embedding and a head: the one classifier every CFAL run trains.

    image -> backbone -> Dense(embedding_dim) ("embedding") -> head

Heads, each `(N, C)` per-class scores whose argmax is the prediction, so
`model.compile(..., metrics=["accuracy"])` and any `keras.metrics` work as is:
    "softmax"   Dense(num_classes) logits (cross-entropy, focal).
    "affinity"  `tfcell.layers.GaussianAffinity` affinities in (0, 1] (affinity
                loss, CFAL).
    "cosine"    `tfcell.layers.CosineHead` cosines (ArcFace, CosFace, SphereFace
                with a scale), or A-Softmax log-likelihoods with
                `sphereface_margin=m` (SphereFace with the feature norm).

`with_probabilities(model, head, temperature, scale)` wraps a classifier so
that `predict` gives calibrated probabilities (`tfcell.evaluation.calibration`).
`feature_extractor(model)` returns the image -> embedding part, e.g. for
feature plots or feature-level ensembles.
"""

import keras

from tfcell import layers
from tfcell.evaluation import calibration

__all__ = ["HEADS", "build_classifier", "feature_extractor", "with_probabilities"]

HEADS = ("softmax", "affinity", "cosine")


def _make_head(head, num_classes, head_kwargs):
    # The scores feed a loss: float32 under a mixed policy too (Keras' mixed
    # precision guide: the last layer in float32; the cosine and affinity heads
    # then return float32, not float16 rounded from float32).
    head_kwargs = {"dtype": "float32", **head_kwargs}
    if head == "softmax":
        return keras.layers.Dense(num_classes, name="head", **head_kwargs)
    if head == "affinity":
        return layers.GaussianAffinity(num_classes, name="head", **head_kwargs)
    if head == "cosine":
        return layers.CosineHead(num_classes, name="head", **head_kwargs)
    raise ValueError(f"build_classifier: head must be one of {HEADS}; received head={head!r}.")


def build_classifier(
    backbone,
    num_classes,
    head="softmax",
    embedding_dim=64,
    name=None,
    augmentation=None,
    **head_kwargs,
):
    """Puts an embedding and a head on a backbone.

    Args:
        backbone: a `keras.Model` from images to a feature vector (`tfcell.models`).
        num_classes: number of classes C.
        head: "softmax" | "affinity" | "cosine".
        embedding_dim: width of the embedding (the paper's "FC2" feature, Fig. 2)
            the head sees; None feeds the backbone features directly.
        name: model name (default `<backbone>_<head>`).
        augmentation: optional Keras layer put between the input and the
            backbone, active in training only (e.g.
            `tfcell.data.TrainingAugmentation`, for
            `config.training.augment_in_model`); None (default): none.
        **head_kwargs: passed to the head, e.g. `sigma=130` for "affinity" or
            `sphereface_margin=4.0` for "cosine" (A-Softmax,
            `SphereFaceLoss(scale=None)`).

    Returns:
        A functional `keras.Model` from images to `(N, C)` head scores: logits,
        affinities, cosines or A-Softmax log-likelihoods, in float32 under any
        dtype policy. `argmax(predict, -1)` is the predicted class for every
        head; `with_probabilities` gives calibrated probabilities.

    Example:

    ```python
    model = build_classifier(tfcell.models.alexnet(), 2, head="affinity", sigma=130.0)
    model.compile(optimizer="adam", loss=tfcell.losses.CFALoss(0.1, 2.0, weights),
                  metrics=["accuracy"])
    ```
    """
    if head_kwargs.get("return_norms"):
        raise ValueError(
            "build_classifier: return_norms=True is not supported: its norm column made "
            "predictions (N, C + 1). For A-Softmax (SphereFaceLoss(scale=None)) pass "
            "sphereface_margin=4.0 to the cosine head."
        )
    inputs = keras.Input(backbone.input_shape[1:], name="image")
    x = backbone(inputs if augmentation is None else augmentation(inputs))
    if embedding_dim:
        # A plain linear layer (the paper's "FC2", Fig. 2). A BatchNorm here made
        # the affinity and cosine heads' validation predictions swing from epoch
        # to epoch on IDC (inference statistics vs batch statistics), so that
        # early stopping picked near-random epochs; without it they are stable.
        x = keras.layers.Dense(embedding_dim, name="embedding")(x)
    outputs = _make_head(head, num_classes, head_kwargs)(x)
    return keras.Model(inputs, outputs, name=name or f"{backbone.name}_{head}")


def with_probabilities(model, head, temperature, scale=1.0):
    """A model whose `predict` gives calibrated class probabilities.

    ```python
    probs = softmax(calibration.to_logits(model(x), head, C, scale) / temperature)
    ```

    Args:
        model: a functional classifier with `(N, C)` outputs (`build_classifier`).
        head: "softmax" | "cosine" | "affinity", the head of `model`.
        temperature: T > 0, usually `tfcell.evaluation.fit_temperature` on
            validation logits (1 for the head's uncalibrated reading).
        scale: the cosine loss's scale s (1 for A-Softmax scores; ignored by
            the other heads).

    Returns:
        A `keras.Model` sharing `model`'s layers and weights, ending in a
        `tfcell.evaluation.TemperatureScaling` layer named "probabilities";
        it saves and reloads as a `.keras` file after `import tfcell`.

    Example:

    ```python
    logits = tfcell.evaluation.to_logits(model.predict(x_val), "affinity", 9)
    T = tfcell.evaluation.fit_temperature(logits, y_val)
    served = tfcell.models.with_probabilities(model, "affinity", T)
    served.predict(x_test)  # rows sum to 1
    ```
    """
    outputs = getattr(model, "outputs", None)
    if not outputs or len(outputs) != 1:
        raise ValueError(
            f"with_probabilities needs a functional model with one (N, C) output; "
            f"received {type(model).__name__} {model.name!r}. Build it with "
            "tfcell.models.build_classifier."
        )
    num_classes = outputs[0].shape[-1]
    probabilities = calibration.TemperatureScaling(
        head, num_classes, temperature, scale, name="probabilities"
    )(outputs[0])
    return keras.Model(model.inputs, probabilities, name=f"{model.name}_probabilities")


def feature_extractor(model):
    """The image -> embedding part of a `build_classifier` model (shared weights)."""
    try:
        features = model.get_layer("embedding").output
    except ValueError:  # Built with embedding_dim=None: the backbone's output.
        features = model.get_layer("head").input
    return keras.Model(model.inputs, features, name=f"{model.name}_features")
