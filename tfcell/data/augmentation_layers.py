"""Keras preprocessing layers for what core Keras 3 lacks (see
`tfcell.data.augmentation`, which re-exports them with the papers' recipes).

Every layer takes float images in [0, 255], batched (N, H, W, 3); under a seed
the outputs are identical from run to run in a sequential `map`.
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
