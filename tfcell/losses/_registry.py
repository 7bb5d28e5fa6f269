"""Look up a tfcell loss by short name, class name or config (`tfcell.losses.get`).

One explicit table (no `globals()` look-up): a new public `keras.losses.Loss`
in `tfcell.losses` gets a row here, and tests/losses/get_test.py fails until it
has one.
"""

import keras

from tfcell.losses import (
    affinity,
    center,
    class_balanced,
    exclusive,
    focal,
    margin,
    ssim,
)

__all__ = ["get"]

# Short snake_case name -> class. The short name is the class name without the
# `Loss` suffix, in snake_case (`CFALoss` -> "cfal"), as the function twins and
# the configs' `loss` sections spell it.
LOSSES = {
    "affinity": affinity.AffinityLoss,
    "cfal": affinity.CFALoss,
    "center": center.CenterLoss,
    "class_balanced_crossentropy": class_balanced.ClassBalancedCrossentropyLoss,
    "class_balanced_focal": focal.ClassBalancedFocalLoss,
    "arcface": margin.ArcFaceLoss,
    "cosface": margin.CosFaceLoss,
    "sphereface": margin.SphereFaceLoss,
    "exclusive_crossentropy": exclusive.ExclusiveCrossentropyLoss,
    "ssim": ssim.SSIMLoss,
}
_BY_CLASS_NAME = {cls.__name__: cls for cls in LOSSES.values()}


def get(name_or_config, **kwargs):
    """Returns a loss instance from a short name, a class name or a config.

    Resolution order:

        "cfal", "arcface", ...          -> tfcell.losses.CFALoss(**kwargs), ...
        "CFALoss", "tfcell>CFALoss"     -> the same class
        {"class_name": ..., "config": {...}}  (a `keras.saving` config, or
            `{"class_name": "cfal", "config": {...}}`) -> from_config, with
            kwargs overriding config entries
        a `keras.losses.Loss` instance  -> returned as is (no kwargs allowed)
        anything else                   -> `keras.losses.get(name_or_config)`
                                           ("sparse_categorical_crossentropy",
                                           "SparseCategoricalCrossentropy", ...)

    Args:
        name_or_config: a short name (`"cfal"`), a class name (`"CFALoss"`),
            a serialized loss dict, or anything `keras.losses.get` accepts.
        **kwargs: constructor arguments for a tfcell loss or a Keras loss
            class (`margin=0.1`, `from_logits=True`, ...).

    Returns:
        A `keras.losses.Loss` instance (or a Keras loss function, when Keras
        resolves a function name and no kwargs are given).

    Raises:
        ValueError: the name is neither a tfcell loss nor a Keras one; the
            message lists the known tfcell names.

    Note:
        `model.compile(loss="cfal")` cannot work in Keras 3.15 through the
        public API: `compile` resolves a string with `keras.losses.get`, which
        reads Keras's own table of built-in losses only (not the
        `keras.saving.get_custom_objects()` registry, nor a
        `custom_object_scope`), so registering "cfal" as a custom object
        changes nothing. Write `model.compile(loss=tfcell.losses.get("cfal"))`.

    Example:

    ```python
    loss = tfcell.losses.get("cfal", margin=0.1, gamma=1.0)
    model.compile(optimizer="adam", loss=tfcell.losses.get("arcface"))
    ```
    """
    if isinstance(name_or_config, keras.losses.Loss):
        if kwargs:
            raise ValueError(
                f"tfcell.losses.get received a loss instance ({name_or_config!r}) and "
                f"keyword arguments {sorted(kwargs)}; pass a name to build a new loss."
            )
        return name_or_config
    if isinstance(name_or_config, dict) and "class_name" in name_or_config:
        cls = _lookup(name_or_config["class_name"])
        if cls is not None:
            return cls.from_config({**name_or_config.get("config", {}), **kwargs})
    if isinstance(name_or_config, str):
        cls = _lookup(name_or_config)
        if cls is not None:
            return cls(**kwargs)
    try:
        loss = keras.losses.get(name_or_config)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"Unknown loss {name_or_config!r}. Known tfcell losses: "
            f"{', '.join(sorted(LOSSES))} (or their class names: "
            f"{', '.join(sorted(_BY_CLASS_NAME))}); Keras's own losses are found by "
            "their names too (e.g. 'sparse_categorical_crossentropy')."
        ) from error
    if kwargs:
        if not isinstance(loss, keras.losses.Loss):
            raise ValueError(
                f"{name_or_config!r} is a Keras loss function and takes no keyword "
                f"arguments (received {sorted(kwargs)}); use its class name, e.g. "
                "'SparseCategoricalCrossentropy', to configure it."
            )
        loss = loss.__class__.from_config({**loss.get_config(), **kwargs})
    return loss


def _lookup(name):
    """A tfcell loss class by short name, class name or registered name, or None."""
    if not isinstance(name, str):
        return None
    if name in LOSSES:
        return LOSSES[name]
    return _BY_CLASS_NAME.get(name.removeprefix("tfcell>"))
