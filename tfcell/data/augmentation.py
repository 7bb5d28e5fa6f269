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

import math

import keras
import numpy as np
from keras import ops

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


class _RandomLayer(keras.layers.Layer):
    """Per-sample random layer: a SeedGenerator and a p=`rate` application mask."""

    def __init__(self, rate=1.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must lie in [0, 1]; received {rate}.")
        self.rate = rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def _mask(self, images):
        draw = keras.random.uniform((ops.shape(images)[0], 1, 1, 1), seed=self.seed_generator)
        return ops.less(draw, self.rate)

    def call(self, images, training=True):
        if not training:
            return images
        images = ops.convert_to_tensor(images, "float32")
        return ops.where(self._mask(images), self.transform(images), images)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package="tfcell")
class RandomApply(keras.layers.Layer):
    """Applies `layer` to each sample with probability `rate` (else identity).

    Args:
        layer: any Keras layer taking the image batch.
        rate: probability per sample (the papers' p=0.5).
        seed: seed of the per-sample draw.

    Example:

    ```python
    blur = RandomApply(keras.layers.RandomGaussianBlur(kernel_size=5), rate=0.5, seed=1)
    ```
    """

    def __init__(self, layer, rate=0.5, seed=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(layer, dict):
            layer = keras.saving.deserialize_keras_object(layer)
        self.layer = layer
        self.rate = rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        if not training:
            return images
        images = ops.convert_to_tensor(images, "float32")
        draw = keras.random.uniform((ops.shape(images)[0], 1, 1, 1), seed=self.seed_generator)
        return ops.where(ops.less(draw, self.rate), ops.cast(self.layer(images), "float32"), images)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "layer": keras.saving.serialize_keras_object(self.layer),
            "rate": self.rate,
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package="tfcell")
class RandomRot90(_RandomLayer):
    """Rotates each sample by 90, 180 or 270 degrees (uniform) with probability
    `rate`. Exact (no interpolation); needs square images."""

    def transform(self, images):
        k = keras.random.randint((ops.shape(images)[0], 1, 1, 1), 1, 4, seed=self.seed_generator)
        out = images
        for turns in (1, 2, 3):
            out = ops.where(ops.equal(k, turns), ops.rot90(images, turns, axes=(1, 2)), out)
        return out


@keras.saving.register_keras_serializable(package="tfcell")
class RandomTranspose(_RandomLayer):
    """Diagonal flip (swaps rows and columns) with probability `rate`; square images."""

    def transform(self, images):
        return ops.transpose(images, (0, 2, 1, 3))


@keras.saving.register_keras_serializable(package="tfcell")
class RandomGaussianNoise(_RandomLayer):
    """Adds N(0, stddev) noise (in the image's units, 5 on 0-255 in the
    exclusive-CE paper) with probability `rate`, clipped to `value_range`."""

    def __init__(self, stddev=5.0, rate=0.5, value_range=(0, 255), seed=None, **kwargs):
        super().__init__(rate=rate, seed=seed, **kwargs)
        self.stddev = stddev
        self.value_range = tuple(value_range)

    def transform(self, images):
        noise = keras.random.normal(ops.shape(images), stddev=self.stddev, seed=self.seed_generator)
        return ops.clip(images + noise, *self.value_range)

    def get_config(self):
        return {**super().get_config(), "stddev": self.stddev, "value_range": self.value_range}


def _gaussian_kernel(size):
    # OpenCV's sigma for a given kernel size (cv2.GaussianBlur(ksize, 0)).
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    x = np.arange(size, dtype="float64") - (size - 1) / 2
    kernel = np.exp(-(x**2) / (2 * sigma**2))
    return (kernel / kernel.sum()).astype("float32")


def _separable_blur(images, kernel):
    size = kernel.shape[0]
    pad = size // 2
    channels = ops.shape(images)[-1]
    padded = ops.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
    kx = ops.tile(ops.reshape(ops.convert_to_tensor(kernel), (1, size, 1, 1)), (1, 1, channels, 1))
    ky = ops.reshape(kx, (size, 1, channels, 1))
    out = ops.depthwise_conv(padded, kx, padding="valid")
    return ops.depthwise_conv(out, ky, padding="valid")


@keras.saving.register_keras_serializable(package="tfcell")
class RandomKernelBlur(_RandomLayer):
    """Gaussian blur with a kernel size drawn per sample from `kernel_sizes`
    (sigma as OpenCV derives it from the size), with probability `rate`."""

    def __init__(self, kernel_sizes=(3, 5, 7), rate=0.5, seed=None, **kwargs):
        super().__init__(rate=rate, seed=seed, **kwargs)
        self.kernel_sizes = tuple(int(k) for k in kernel_sizes)

    def transform(self, images):
        n = len(self.kernel_sizes)
        pick = keras.random.randint((ops.shape(images)[0], 1, 1, 1), 0, n, seed=self.seed_generator)
        out = images
        for i, size in enumerate(self.kernel_sizes):
            out = ops.where(
                ops.equal(pick, i), _separable_blur(images, _gaussian_kernel(size)), out
            )
        return out

    def get_config(self):
        return {**super().get_config(), "kernel_sizes": self.kernel_sizes}


# Ruifrok & Johnston (2001) H&E-DAB stain vectors (rows), as skimage's rgb2hed uses.
_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], "float64")
_RGB_FROM_HED /= np.linalg.norm(_RGB_FROM_HED, axis=1, keepdims=True)
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED)


@keras.saving.register_keras_serializable(package="tfcell")
class RandomStainPerturbation(_RandomLayer):
    """H&E stain-concentration perturbation (Tellez et al. 2018), probability `rate`.

    Colour deconvolution with the fixed Ruifrok stain matrix, then per sample
    and stain: `c' = alpha * c + beta`, `alpha ~ U(1 - sigma1, 1 + sigma1)`,
    `beta ~ U(-sigma2, sigma2)`, and back to RGB:

    ```
    od = -log((rgb + 1) / 256); c = od @ HED_FROM_RGB
    rgb' = 256 * exp(-(alpha * c + beta) @ RGB_FROM_HED) - 1
    ```

    Note: Tellez's "HED-light" defaults (sigma1 = sigma2 = 0.05); a fixed
    Ruifrok matrix, not a per-image Macenko estimate, as in Tellez's code. beta
    is in optical-density units (natural log).
    """

    def __init__(self, sigma1=0.05, sigma2=0.05, rate=0.5, seed=None, **kwargs):
        super().__init__(rate=rate, seed=seed, **kwargs)
        self.sigma1 = sigma1
        self.sigma2 = sigma2

    def transform(self, images):
        n = ops.shape(images)[0]
        od = -ops.log((ops.clip(images, 0.0, 255.0) + 1.0) / 256.0)
        conc = ops.einsum("nhwc,cs->nhws", od, ops.convert_to_tensor(_HED_FROM_RGB, "float32"))
        alpha = keras.random.uniform(
            (n, 1, 1, 3), 1 - self.sigma1, 1 + self.sigma1, seed=self.seed_generator
        )
        beta = keras.random.uniform(
            (n, 1, 1, 3), -self.sigma2, self.sigma2, seed=self.seed_generator
        )
        od = ops.einsum(
            "nhws,sc->nhwc", conc * alpha + beta, ops.convert_to_tensor(_RGB_FROM_HED, "float32")
        )
        return ops.clip(256.0 * ops.exp(-od) - 1.0, 0.0, 255.0)

    def get_config(self):
        return {**super().get_config(), "sigma1": self.sigma1, "sigma2": self.sigma2}


def _kelvin_to_rgb(kelvin):
    """Tanner Helland's black-body approximation, RGB multipliers in [0, 1]."""
    t = kelvin / 100.0
    red = ops.where(
        t <= 66, 255.0, 329.698727446 * ops.power(ops.maximum(t - 60, 1e-3), -0.1332047592)
    )
    green = ops.where(
        t <= 66,
        99.4708025861 * ops.log(t) - 161.1195681661,
        288.1221695283 * ops.power(ops.maximum(t - 60, 1e-3), -0.0755148492),
    )
    blue = ops.where(
        t >= 66,
        255.0,
        ops.where(
            t <= 19, 0.0, 138.5177312231 * ops.log(ops.maximum(t - 10, 1e-3)) - 305.0447927307
        ),
    )
    return ops.clip(ops.concatenate([red, green, blue], axis=-1), 0.0, 255.0) / 255.0


@keras.saving.register_keras_serializable(package="tfcell")
class RandomColorTemperature(_RandomLayer):
    """Multiplies RGB by a black-body colour of a random temperature (kelvin),
    as imgaug's ChangeColorTemperature used by the AE-CFE detector."""

    def __init__(self, kelvin_range=(4000, 9000), rate=1.0, seed=None, **kwargs):
        super().__init__(rate=rate, seed=seed, **kwargs)
        self.kelvin_range = tuple(kelvin_range)

    def transform(self, images):
        kelvin = keras.random.uniform(
            (ops.shape(images)[0], 1, 1, 1), *self.kelvin_range, seed=self.seed_generator
        )
        return ops.clip(images * _kelvin_to_rgb(kelvin), 0.0, 255.0)

    def get_config(self):
        return {**super().get_config(), "kelvin_range": self.kelvin_range}


@keras.saving.register_keras_serializable(package="tfcell")
class RandomLinearContrast(_RandomLayer):
    """`127 + alpha * (v - 127)` with `alpha ~ U(alpha_range)` (AE-CFE thesis 2.4.2)."""

    def __init__(self, alpha_range=(0.75, 1.25), rate=1.0, seed=None, **kwargs):
        super().__init__(rate=rate, seed=seed, **kwargs)
        self.alpha_range = tuple(alpha_range)

    def transform(self, images):
        alpha = keras.random.uniform(
            (ops.shape(images)[0], 1, 1, 1), *self.alpha_range, seed=self.seed_generator
        )
        return ops.clip(127.0 + alpha * (images - 127.0), 0.0, 255.0)

    def get_config(self):
        return {**super().get_config(), "alpha_range": self.alpha_range}


@keras.saving.register_keras_serializable(package="tfcell")
class RandomBilateralBlur(_RandomLayer):
    """Edge-preserving bilateral filter with a random colour sigma, probability `rate`.

    `out(p) = sum_q w(p, q) I(q) / sum_q w(p, q)` over a `diameter` window, with
    `w = exp(-|p-q|^2 / 2 sigma_space^2) * exp(-|I(p)-I(q)|^2 / 2 sigma_color^2)`.
    """

    def __init__(
        self,
        diameter=5,
        sigma_color_range=(10.0, 75.0),
        sigma_space=2.0,
        rate=1.0,
        seed=None,
        **kwargs,
    ):
        super().__init__(rate=rate, seed=seed, **kwargs)
        self.diameter = int(diameter)
        self.sigma_color_range = tuple(sigma_color_range)
        self.sigma_space = sigma_space

    def transform(self, images):
        shape = ops.shape(images)
        sigma = keras.random.uniform(
            (shape[0], 1, 1, 1), *self.sigma_color_range, seed=self.seed_generator
        )
        r = self.diameter // 2
        padded = ops.pad(images, ((0, 0), (r, r), (r, r), (0, 0)), mode="reflect")
        total = ops.zeros_like(images)
        weight = ops.zeros_like(images[..., :1])
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                if dy * dy + dx * dx > r * r:
                    continue
                shifted = ops.slice(padded, (0, r + dy, r + dx, 0), shape)
                diff = ops.sum(ops.square(shifted - images), axis=-1, keepdims=True)
                w = math.exp(-(dy * dy + dx * dx) / (2 * self.sigma_space**2)) * ops.exp(
                    -diff / (2 * ops.square(sigma))
                )
                total = total + w * shifted
                weight = weight + w
        return total / weight

    def get_config(self):
        return {
            **super().get_config(),
            "diameter": self.diameter,
            "sigma_color_range": self.sigma_color_range,
            "sigma_space": self.sigma_space,
        }


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


def _geometry(shape_in, size_out, flip_x, flip_y, angle):
    """Projective transforms (B, 8) mapping output pixels of `size_out` to input
    pixels of `shape_in` = (height, width): resize (tf.image.resize's
    half-pixel bilinear grid), flips (+-1 per image) and a rotation (radians)
    about the centre, composed so the image is resampled once."""
    import tensorflow as tf

    h_in, w_in = tf.cast(shape_in[0], tf.float32), tf.cast(shape_in[1], tf.float32)
    h_out, w_out = tf.cast(size_out[0], tf.float32), tf.cast(size_out[1], tf.float32)
    sx, sy = w_in / w_out, h_in / h_out
    cos, sin = tf.cos(angle), tf.sin(angle)
    # in_offset = S @ F @ R @ out_offset (offsets from the centres).
    a0, a1 = sx * flip_x * cos, -sx * flip_x * sin
    b0, b1 = sy * flip_y * sin, sy * flip_y * cos
    cx_out, cy_out = (w_out - 1) / 2, (h_out - 1) / 2
    a2 = (w_in - 1) / 2 - a0 * cx_out - a1 * cy_out
    b2 = (h_in - 1) / 2 - b0 * cx_out - b1 * cy_out
    zero = tf.zeros_like(a0)
    return tf.stack([a0, a1, a2, b0, b1, b2, zero, zero], axis=1)


def _warp(images, transforms, size_out):
    import tensorflow as tf

    return tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(images, tf.float32), transforms=transforms,
        output_shape=tf.cast(size_out, tf.int32), fill_value=0.0,
        interpolation="BILINEAR", fill_mode="REFLECT",
    )  # fmt: skip


def _colour(images, brightness, contrast):
    """`(x - mean) * contrast + mean + brightness` per image and channel
    (= brightness shift, then tf.image.adjust_contrast); (B,) parameters."""
    import tensorflow as tf

    mean = tf.reduce_mean(images, axis=(1, 2), keepdims=True)
    c = tf.reshape(contrast, (-1, 1, 1, 1))
    b = tf.reshape(brightness, (-1, 1, 1, 1))
    return images * c + (mean * (1.0 - c) + b)


class _Draws:
    """Per-image random parameters as (B,) tensors from one stateless seed."""

    def __init__(self, aug, seed, n):
        import tensorflow as tf

        seeds = tf.random.experimental.stateless_split(seed, 8)

        def uniform(i, low, high):
            return tf.random.stateless_uniform([n], seeds[i], low, high)

        one = tf.ones([n])
        self.flip_x = tf.where(uniform(0, 0, 1) < 0.5, -one, one) if aug.flips else one
        self.flip_y = tf.where(uniform(1, 0, 1) < 0.5, -one, one) if aug.flips else one
        self.angle = uniform(2, -1, 1) * (aug.rotation * np.pi / 180) if aug.rotation else 0 * one
        delta = aug.brightness * 255.0
        self.brightness = uniform(3, -delta, delta) if aug.brightness else 0 * one
        c = aug.contrast
        self.contrast = uniform(4, 1 - c, 1 + c) if c else one
        self.hue = uniform(5, -aug.hue, aug.hue) if aug.hue else None
        s = aug.saturation
        self.saturation = uniform(6, 1 - s, 1 + s) if s else None


def _apply(aug, images, draws, size_out=None):
    """Flips + rotation (+ resize to `size_out`) in one resampling, then colour."""
    import tensorflow as tf

    shape = tf.shape(images)
    out = shape[1:3] if size_out is None else tf.constant(size_out, tf.int32)
    if aug.flips or aug.rotation or size_out is not None:
        transforms = _geometry(shape[1:3], out, draws.flip_x, draws.flip_y, draws.angle)
        images = _warp(images, transforms, out)
        if size_out is not None:
            images.set_shape([None, *size_out, None])
    images = tf.cast(images, tf.float32)
    if aug.brightness or aug.contrast:
        images = _colour(images, draws.brightness, draws.contrast)
    if draws.hue is not None:
        hsv = tf.image.rgb_to_hsv(tf.clip_by_value(images, 0.0, 255.0) / 255.0)
        hue = tf.math.floormod(hsv[..., 0] + tf.reshape(draws.hue, (-1, 1, 1)), 1.0)
        images = tf.image.hsv_to_rgb(tf.stack([hue, hsv[..., 1], hsv[..., 2]], -1)) * 255.0
    if draws.saturation is not None:
        grey = tf.image.rgb_to_grayscale(images)
        s = tf.reshape(draws.saturation, (-1, 1, 1, 1))
        images = grey + s * (images - grey)
    return tf.clip_by_value(images, 0.0, 255.0)


class PerImageAugmentation:
    """Fast per-image augmentation from stateless TF ops, for the parallel
    decode map of `tfcell.data.from_records` (`augment=` this object): the
    default training augmentation of the file pipelines.

    Each image gets its own seed (drawn in order from `tf.data.Dataset.random`),
    so the decode map stays parallel and a seed still gives identical outputs
    run after run. Operations: left-right and up-down flips (p=0.5 each),
    rotation by an angle in [-rotation, rotation] degrees (reflect fill),
    brightness (+-brightness of 255), contrast (factor in [1 - contrast,
    1 + contrast] about the per-channel mean), hue and saturation.

    `fuse_resize=True` (opt-in): inside `from_records` the resize to the target
    size, the flips and the rotation become one projective transform of the
    decoded image (`ImageProjectiveTransformV3`, bilinear, resampled once) and
    brightness + contrast one affine map. Note: on the loaded 2-core machine it
    measured slower than the separate ops (the transform's cost dominates and
    the fused one reads the larger native image); compare both with
    `benchmarks/input_pipeline.py` before switching. Called directly,
    `aug(image, seed)`
    takes one float or uint8 image in [0, 255] and keeps its size.
    """

    per_image = True

    def __init__(
        self,
        flips=True,
        rotation=180.0,
        brightness=0.1,
        contrast=0.2,
        hue=0.0,
        saturation=0.0,
        fuse_resize=False,
    ):
        self.flips = flips
        self.rotation = rotation
        self.brightness = brightness
        self.contrast = contrast
        self.hue = hue
        self.saturation = saturation
        self.fuse_resize = fuse_resize

    def resize_and_augment(self, image, size, seed):
        """One decoded image (H, W, 3) -> augmented float32 `size` image."""
        return _apply(self, image[None], _Draws(self, seed, 1), size)[0]

    def __call__(self, image, seed):
        if self.fuse_resize:
            return _apply(self, image[None], _Draws(self, seed, 1))[0]
        return self._separate_ops(image, seed)

    def _separate_ops(self, image, seed):
        """The unfused reference: one tf.image op per augmentation."""
        import tensorflow as tf

        seeds = tf.random.experimental.stateless_split(seed, 8)
        if self.flips:
            image = tf.image.stateless_random_flip_left_right(image, seeds[0])
            image = tf.image.stateless_random_flip_up_down(image, seeds[1])
        if self.rotation:
            angle = (
                tf.random.stateless_uniform([], seeds[2], -1.0, 1.0) * self.rotation * np.pi / 180
            )
            shape = tf.cast(tf.shape(image)[:2], tf.float32)
            cos, sin = tf.cos(angle), tf.sin(angle)
            cy, cx = (shape[0] - 1) / 2, (shape[1] - 1) / 2
            # Output -> input pixel map: rotate about the centre.
            transform = tf.stack(
                [cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy, 0.0, 0.0]
            )
            image = tf.raw_ops.ImageProjectiveTransformV3(
                images=image[None], transforms=transform[None], output_shape=tf.shape(image)[:2],
                fill_value=0.0, interpolation="BILINEAR", fill_mode="REFLECT",
            )[0]  # fmt: skip
        image = tf.cast(image, tf.float32)
        if self.brightness:
            delta = self.brightness * 255.0
            image = image + tf.random.stateless_uniform([], seeds[3], -delta, delta)
        if self.contrast:
            image = tf.image.stateless_random_contrast(
                image, 1 - self.contrast, 1 + self.contrast, seeds[4]
            )
        if self.hue:
            image = tf.image.stateless_random_hue(image / 255.0, self.hue, seeds[5]) * 255.0
        if self.saturation:
            image = tf.image.stateless_random_saturation(
                image, 1 - self.saturation, 1 + self.saturation, seeds[6]
            )
        return tf.clip_by_value(image, 0.0, 255.0)


class BatchAugmentation(PerImageAugmentation):
    """`PerImageAugmentation`'s operations vectorised over a batch, applied
    after `batch` in `tfcell.data.from_records` / `from_arrays`.

    Per-image parameters are (B,) tensors drawn from one stateless seed per
    batch (drawn in order from `tf.data.Dataset.random(seed)`), so the map can
    run in parallel and a seed gives identical batches run after run; flips and
    rotation are one `ImageProjectiveTransformV3` call with (B, 8) transforms.
    On decoded files it measured below the per-image path (the transform
    kernel, not per-op overhead, dominates); it is what `from_arrays` runs for
    a `PerImageAugmentation` on in-memory arrays. Call: `aug(images, seed)`
    with float or uint8 images (B, H, W, 3) in [0, 255].
    """

    per_image = False
    batched = True

    def __call__(self, images, seed):
        import tensorflow as tf

        n = tf.shape(images)[0]
        return _apply(self, images, _Draws(self, seed, n))


def _dihedral_maps(height, width, flips, rotations):
    """Flat source-pixel index maps (K, height * width): output pixel p of
    transform k is input pixel maps[k, p]. Order: identity, up-down flip,
    left-right flip, 180-degree turn, then (square, `flips` and `rotations`)
    their transposes, i.e. transpose, 90-degree turn clockwise, 90-degree turn
    counter-clockwise, anti-transpose."""
    index = np.arange(height * width, dtype="int32").reshape(height, width)
    axis_flips = [index, index[::-1], index[:, ::-1], index[::-1, ::-1]]
    if flips and rotations:
        maps = axis_flips + [m.T for m in axis_flips]
    elif flips:
        maps = axis_flips
    else:
        maps = [np.rot90(index, k) for k in range(4)]
    return np.stack([m.reshape(-1) for m in maps])


class RandomDihedral:
    """Random flips and 90-degree turns, exact, as one gather per batch.

    Each image gets one of the symmetries of a square, uniformly: with the
    defaults all 8 (identity, left-right flip, up-down flip, 90/180/270-degree
    turns, transpose, anti-transpose), which is the distribution of a
    left-right flip, an up-down flip and a turn by 0/90/180/270 degrees drawn
    independently (p = 0.5, 0.5, uniform). The output is an exact permutation
    of the input's pixels (no interpolation, any dtype: uint8 stays uint8):

    ```
    maps[k] = flat source index of each output pixel under transform k  # (K, H*W)
    pick = stateless_uniform([B], seed, 0, K)
    out[b].flat[p] = images[b].flat[maps[pick[b], p]]   # one tf.gather
    ```

    It follows the batched protocol of `BatchAugmentation` (`batched = True`):
    `tfcell.data.from_arrays` / `from_records` call it after `batch` as
    `aug(images, seed)` with one stateless seed per batch drawn in order from
    `tf.data.Dataset.random(seed)`, so the map runs in parallel and a seed gives
    identical batches run after run. `from_arrays` applies it to the gathered
    uint8 batch before the cast to float32 (a quarter of the bytes moved).

    Compared with `keras.layers.RandomFlip` x2 + `RandomRot90` (the same
    distribution): those make several float32 passes over the batch each and
    need a sequential map; this is one pass (`benchmarks/input_pipeline.py`).

    Args:
        flips: draw among the axis flips.
        rotations: draw among the 90-degree turns. Both (default): the 8
            dihedral transforms; `flips` only: identity, left-right, up-down
            and both (= the 180-degree turn), which keeps non-square shapes;
            `rotations` only: turns by 0/90/180/270 degrees.

    Call arguments:
        images: (B, H, W, C) tensor of any dtype, H and W known statically
            (as the pipelines' batches are); H == W unless `rotations=False`.
        seed: int tensor of shape (2,), the stateless seed of this batch.

    Returns:
        The transformed batch, same shape and dtype.

    Raises:
        ValueError: both options False, an unknown image size, or a non-square
            image with `rotations=True` (turns and transposes would change its
            shape; use `RandomDihedral(rotations=False)`, flips only).

    Example:

    ```python
    images = tfcell.data.decoded_images(frame, 128)
    dataset = tfcell.data.from_arrays(
        images, frame["label"].to_numpy(), augment=RandomDihedral(), seed=0
    )
    ```
    """

    per_image = False
    batched = True

    def __init__(self, flips=True, rotations=True):
        if not (flips or rotations):
            raise ValueError(
                "RandomDihedral needs flips=True or rotations=True; received both False. "
                "For no augmentation pass augment=None."
            )
        self.flips = bool(flips)
        self.rotations = bool(rotations)
        self._maps = {}

    def maps(self, height, width):
        """The (K, height * width) int32 index maps, K = 8 or 4 (see `_dihedral_maps`)."""
        if self.rotations and height != width:
            raise ValueError(
                f"RandomDihedral(rotations=True) needs square images; received "
                f"{height}x{width}. Resize to a square image_size, or use "
                "RandomDihedral(rotations=False) (flips only keep the shape)."
            )
        key = (height, width)
        if key not in self._maps:
            self._maps[key] = _dihedral_maps(height, width, self.flips, self.rotations)
        return self._maps[key]

    def __call__(self, images, seed):
        import tensorflow as tf

        images = tf.convert_to_tensor(images)
        height, width, channels = images.shape[1:]
        if height is None or width is None or channels is None:
            raise ValueError(
                f"RandomDihedral needs a static image size; received shape {images.shape}. "
                "Resize to an image_size first (from_arrays / from_records batches have one)."
            )
        maps = self.maps(height, width)
        n = tf.shape(images)[0]
        pick = tf.random.stateless_uniform([n], seed, 0, len(maps), tf.int32)
        index = tf.gather(tf.constant(maps), pick)
        flat = tf.reshape(images, (n, height * width, channels))
        out = tf.gather(flat, index, batch_dims=1)
        return tf.reshape(out, (n, height, width, channels))

    def get_config(self):
        return {"flips": self.flips, "rotations": self.rotations}
