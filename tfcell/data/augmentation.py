"""The papers' augmentation sets, as Keras 3 preprocessing pipelines for tf.data.

Core Keras layers are used wherever they exist (RandomFlip, RandomRotation,
RandomTranslation, RandomZoom, RandomShear, RandomHue, RandomSaturation,
RandomContrast, RandomBrightness, RandomCrop). Custom layers cover what core
Keras 3.15 lacks, each saying why:

- `RandomApply`: apply any layer to a random half of the samples (Keras has no
  per-sample probability wrapper; the papers use p=0.5 per augmentation).
- `RandomRot90`: exact rotations by 90/180/270 (RandomRotation interpolates
  arbitrary angles and cannot restrict to that set).
- `RandomTranspose`: the diagonal flip (RandomFlip only flips along axes).
- `RandomDihedral`: flips + 90-degree turns (the 8 symmetries of a square) as
  ONE pixel-index gather per batch, stateless and parallel (the fast path for
  `from_arrays` / `from_records`; not a layer, see its docstring).
- `RandomGaussianNoise`: additive noise per sample with p and clipping
  (keras.layers.GaussianNoise is a regulariser: every sample, no clipping).
- `RandomKernelBlur`: Gaussian blur with a kernel drawn from {3, 5, 7}
  (RandomGaussianBlur has one fixed kernel size and draws sigma instead).
- `RandomStainPerturbation`: H&E concentration perturbation (no Keras layer).
- `RandomColorTemperature`, `RandomLinearContrast` (contrast about 127, not
  about the image mean as RandomContrast does), `RandomBilateralBlur`: the
  imgaug operations of the AE-CFE detector, absent from Keras.

Every layer takes float images in [0, 255], batched (N, H, W, 3). Under a seed
the outputs are identical from run to run when the layers are applied in a
sequential `map` (as `tfcell.data.pipeline` does).
"""

import keras
import numpy as np
from keras import ops

# The layers and the fast stateless augmenters live in their own modules; this
# one holds the papers' recipes and re-exports both, so `augmentation.X` works.
from tfcell.data.augmentation_layers import (
    RandomApply,
    RandomBilateralBlur,
    RandomColorTemperature,
    RandomGaussianNoise,
    RandomKernelBlur,
    RandomLinearContrast,
    RandomRot90,
    RandomStainPerturbation,
    RandomTranspose,
)
from tfcell.data.fast_augmentation import (
    BatchAugmentation,
    PerImageAugmentation,
    RandomDihedral,
)

__all__ = [
    "RandomApply",
    "RandomRot90",
    "RandomTranspose",
    "RandomGaussianNoise",
    "RandomKernelBlur",
    "RandomStainPerturbation",
    "RandomColorTemperature",
    "RandomLinearContrast",
    "RandomBilateralBlur",
    "heterogeneity_augmentation",
    "exclusive_ce_augmentation",
    "aecfe_detector_augmentation",
    "five_crop",
    "five_crop_predict",
    "PerImageAugmentation",
    "BatchAugmentation",
    "RandomDihedral",
]


def _seeds(seed, count):
    return [None if seed is None else seed + i for i in range(count)]


def heterogeneity_augmentation(crop_size=299, seed=None):
    """Goswami et al. (2020) train-time set: horizontal and vertical flips,
    rotation, affine (translation, zoom, shear), hue / saturation / contrast /
    brightness, then a random crop to `crop_size` (images come at 400 px).

    Note: the paper names the operations, not their ranges; the ranges here are
    moderate defaults. Flips are two layers (RandomFlip "horizontal_and_vertical"
    flips both axes together).
    """
    s = _seeds(seed, 10)
    crop = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
    return keras.layers.Pipeline(
        [
            keras.layers.RandomFlip("horizontal", seed=s[0]),
            keras.layers.RandomFlip("vertical", seed=s[1]),
            keras.layers.RandomRotation(0.5, fill_mode="reflect", seed=s[2]),
            keras.layers.RandomTranslation(0.05, 0.05, fill_mode="reflect", seed=s[3]),
            keras.layers.RandomZoom(0.1, fill_mode="reflect", seed=s[4]),
            keras.layers.RandomShear(0.1, 0.1, fill_mode="reflect", seed=s[5]),
            keras.layers.RandomHue(0.05, value_range=(0, 255), seed=s[6]),
            keras.layers.RandomSaturation((0.4, 0.6), value_range=(0, 255), seed=s[7]),
            keras.layers.RandomContrast(0.2, value_range=(0, 255), seed=s[8]),
            keras.layers.RandomBrightness(0.1, value_range=(0, 255), seed=s[9]),
            keras.layers.RandomCrop(*crop, seed=None if seed is None else seed + 10),
        ],
        name="heterogeneity_augmentation",
    )


def exclusive_ce_augmentation(stain=True, seed=None):
    """Panteli et al. (2021) supplement: Gaussian blur (kernel 3/5/7), additive
    Gaussian noise (sigma 5 on 0-255), rotation by 90/180/270, left-right,
    up-down and diagonal flips, and (H&E data, `stain=True`) stain-concentration
    perturbation; each with p=0.5 per sample. Square images."""
    s = _seeds(seed, 7)
    layers = [
        RandomKernelBlur((3, 5, 7), rate=0.5, seed=s[0]),
        RandomGaussianNoise(5.0, rate=0.5, seed=s[1]),
        RandomRot90(rate=0.5, seed=s[2]),
        keras.layers.RandomFlip("horizontal", seed=s[3]),  # p=0.5 per sample
        keras.layers.RandomFlip("vertical", seed=s[4]),
        RandomTranspose(rate=0.5, seed=s[5]),
    ]
    if stain:
        layers.append(RandomStainPerturbation(rate=0.5, seed=s[6]))
    return keras.layers.Pipeline(layers, name="exclusive_ce_augmentation")


def aecfe_detector_augmentation(seed=None):
    """Salehi (2023) thesis 2.4.2, the Mask R-CNN detector set: flips, affine
    rotation and scaling, colour temperature, linear contrast, bilateral blur;
    half of the samples are augmented (imgaug `Sometimes(0.5, ...)`).

    Note: the thesis gives no ranges; these are imgaug-like moderate defaults.
    For a detector, boxes must follow the geometric part: use it on images
    only (classification) or pass boxes through Keras' bounding-box support.
    """
    s = _seeds(seed, 8)
    inner = keras.layers.Pipeline(
        [
            keras.layers.RandomFlip("horizontal", seed=s[0]),
            keras.layers.RandomFlip("vertical", seed=s[1]),
            keras.layers.RandomRotation(0.5, fill_mode="constant", fill_value=255.0, seed=s[2]),
            keras.layers.RandomZoom(0.2, fill_mode="constant", fill_value=255.0, seed=s[3]),
            RandomColorTemperature(seed=s[4]),
            RandomLinearContrast(seed=s[5]),
            RandomBilateralBlur(rate=0.5, seed=s[6]),
        ]
    )
    return RandomApply(inner, rate=0.5, seed=s[7], name="aecfe_detector_augmentation")


def five_crop(images, crop_size):
    """The four corner crops and the centre crop: (N, H, W, C) -> (N, 5, h, w, C)."""
    h, w = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
    height, width = images.shape[1], images.shape[2]
    if h > height or w > width:
        raise ValueError(f"crop_size {(h, w)} exceeds the image size {(height, width)}.")
    top, left = (height - h) // 2, (width - w) // 2
    corners = [(0, 0), (0, width - w), (height - h, 0), (height - h, width - w), (top, left)]
    return ops.stack([images[:, y : y + h, x : x + w] for y, x in corners], axis=1)


def five_crop_predict(model, images, crop_size, batch_size=32):
    """Goswami et al. (2020) TTA: the model's outputs averaged over `five_crop`.

    Returns:
        NumPy array (N, ...) of the mean of the five crops' outputs.
    """
    crops = ops.convert_to_numpy(five_crop(images, crop_size))
    outputs = [model.predict(crops[:, k], batch_size=batch_size, verbose=0) for k in range(5)]
    return np.mean(np.stack(outputs, axis=0), axis=0)
