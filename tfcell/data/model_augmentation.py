"""The tf.data training augmentation, moved into the model graph.

`config.training.augment_in_model=True` (`tfcell.experiments`): instead of
augmenting batches in the `tf.data` map (on the host CPUs), the network
starts with a `TrainingAugmentation` layer that runs the same stateless
operations on the accelerator, in training only:

    model(x, training=True)    augmented x, a fresh draw per batch
    model(x, training=False)   x unchanged (predict, evaluate, a saved model)

`in_model_augmentation(augment, seed)` turns what a protocol's `augmentation(config, seed)`
returns into that layer: `PerImageAugmentation` / `BatchAugmentation` (flips,
rotation, brightness, contrast, hue, saturation, grey) as the batched
`BatchAugmentation`, `RandomDihedral` as itself, a Keras layer as is.
"""

import keras
from keras import ops

from tfcell.data import fast_augmentation

__all__ = ["TrainingAugmentation", "in_model_augmentation"]

# PerImageAugmentation's arguments that the batched operations read (`fuse_resize`
# only matters inside a decode map, where a resize is fused in).
_BATCH_FIELDS = ("flips", "rotation", "brightness", "contrast", "hue", "saturation", "grayscale")


def _augmenter_config(augmenter):
    if isinstance(augmenter, fast_augmentation.RandomDihedral):
        return {"kind": "dihedral", **augmenter.get_config()}
    if isinstance(augmenter, fast_augmentation.PerImageAugmentation):
        return {"kind": "batch", **{k: getattr(augmenter, k) for k in _BATCH_FIELDS}}
    raise ValueError(
        "TrainingAugmentation runs a tfcell.data.augmentation.PerImageAugmentation, "
        f"BatchAugmentation or RandomDihedral; received {type(augmenter).__name__}."
    )


def _augmenter_from_config(config):
    config = dict(config)
    kind = config.pop("kind")
    if kind == "dihedral":
        return fast_augmentation.RandomDihedral(**config)
    if kind == "batch":
        return fast_augmentation.BatchAugmentation(**config)
    raise ValueError(f"Unknown augmentation kind {kind!r}; expected 'batch' or 'dihedral'.")


@keras.saving.register_keras_serializable(package="tfcell")
class TrainingAugmentation(keras.layers.Layer):
    """A `tfcell.data` stateless augmentation as a layer, active in training only.

    The operations are those of the tf.data path (`fast_augmentation`), so
    moving the augmentation from the input pipeline into the model keeps its
    distribution; only the random draws differ (one stateless seed per batch
    from the layer's `SeedGenerator` instead of from `tf.data.Dataset.random`).

    ```
    training:  seed = randint((2,), seed_generator); images = augmenter(images, seed)
    otherwise: images
    ```

    It computes in float32 (`dtype="float32"` unless given), so that under
    `mixed_float16` the colour operations do not round to float16 before the
    network's first layer casts.

    Args:
        augmentation: a `tfcell.data.augmentation.PerImageAugmentation` (run
            vectorised, as `BatchAugmentation`), `BatchAugmentation` or
            `RandomDihedral`, or the dict `get_config` stores for it.
        seed: int or None, the seed of the layer's `SeedGenerator`.
        **kwargs: forwarded to `keras.layers.Layer`.

    Call arguments:
        images: (N, H, W, 3) float or uint8 images in [0, 255].
        training: bool; False or None returns `images` unchanged.

    Returns:
        float32 images of the same shape.

    Note:
        Flips and rotations of a `BatchAugmentation` are one
        `ImageProjectiveTransformV3`, which has a GPU kernel but no XLA one:
        the layer then sets `supports_jit = False` (as Keras' `RandomZoom`
        does), so `jit_compile="auto"` leaves the step un-jitted.
        `RandomDihedral` (one gather) compiles with XLA.

    Example:

    ```python
    aug = TrainingAugmentation(tfcell.data.augmentation.RandomDihedral(), seed=0)
    inputs = keras.Input((64, 64, 3))
    model = keras.Model(inputs, network(aug(inputs)))
    ```
    """

    def __init__(self, augmentation, seed=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if isinstance(augmentation, dict):
            augmentation = _augmenter_from_config(augmentation)
        self.augmentation = augmentation
        self.seed = seed
        self._augmenter_config = _augmenter_config(augmentation)
        if isinstance(augmentation, fast_augmentation.PerImageAugmentation) and not isinstance(
            augmentation, fast_augmentation.BatchAugmentation
        ):
            self.augmentation = fast_augmentation.BatchAugmentation(
                **{k: getattr(augmentation, k) for k in _BATCH_FIELDS}
            )
        self.seed_generator = keras.random.SeedGenerator(seed)
        cfg = self._augmenter_config
        self.supports_jit = cfg["kind"] == "dihedral" or not (cfg["flips"] or cfg["rotation"])

    def call(self, images, training=None):
        if not training:
            return ops.cast(images, "float32")
        seed = keras.random.randint((2,), 0, 2**31 - 1, seed=self.seed_generator, dtype="int32")
        return ops.cast(self.augmentation(images, seed), "float32")

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"augmentation": dict(self._augmenter_config), "seed": self.seed})
        return config


def in_model_augmentation(augment, seed=None):
    """The layer that runs `augment` (a protocol's tf.data augmentation) in the model.

    Args:
        augment: None, a `PerImageAugmentation` / `BatchAugmentation` /
            `RandomDihedral`, or a Keras layer (returned as is: Keras'
            random preprocessing layers and `tfcell.data.augmentation_layers`
            are already inactive with `training=False`).
        seed: the seed of the layer's draws (the job's seed).

    Returns:
        A Keras layer, or None for None.

    Raises:
        ValueError: `augment` has no in-model equivalent (e.g. a crop, which
            changes the size of the image the network sees, or a plain function).
    """
    if augment is None:
        return None
    if isinstance(augment, keras.layers.Layer):
        return augment
    if isinstance(
        augment, (fast_augmentation.PerImageAugmentation, fast_augmentation.RandomDihedral)
    ):
        return TrainingAugmentation(augment, seed=seed, name="training_augmentation")
    raise ValueError(
        f"config.training.augment_in_model=True: the training augmentation "
        f"{type(augment).__name__} has no in-model equivalent (in-model layers exist for "
        "PerImageAugmentation, BatchAugmentation, RandomDihedral and Keras layers; a "
        "crop or a resize changes the image size the network is built for). Set "
        "config.training.augment_in_model=False to keep it in the tf.data pipeline."
    )
