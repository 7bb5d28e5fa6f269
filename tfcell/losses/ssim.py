"""SSIM loss, `1 - SSIM` per image (the AE-CFE reconstruction term)."""

import keras
import tensorflow as tf
from keras import ops

__all__ = ["SSIMLoss", "ssim_loss"]


def ssim_loss(y_true, y_pred, max_val=1.0, filter_size=11, filter_sigma=1.5, k1=0.01, k2=0.03):
    """Per-image `1 - SSIM(y_true, y_pred)` (`tf.image.ssim`, mean over pixels and channels).

    Args:
        y_true, y_pred: images `(N, H, W, C)` with `H, W >= filter_size`.
        max_val, filter_size, filter_sigma, k1, k2: as `tf.image.ssim`.

    Returns:
        `(N,)` values in `[0, 2]`, in the dtype of `y_pred` (computed in float32).
    """
    y_pred = ops.convert_to_tensor(y_pred)
    out_dtype = y_pred.dtype
    ssim = tf.image.ssim(
        ops.cast(y_true, "float32"),
        ops.cast(y_pred, "float32"),
        max_val=max_val,
        filter_size=filter_size,
        filter_sigma=filter_sigma,
        k1=k1,
        k2=k2,
    )
    return ops.cast(1.0 - ssim, out_dtype)


@keras.saving.register_keras_serializable(package="tfcell")
class SSIMLoss(keras.losses.Loss):
    """Structural-similarity loss `1 - SSIM`, one value per image.

    ```python
    mu_x, mu_y = gaussian_blur(x), gaussian_blur(y)        # 11x11 window, sigma 1.5
    var_x, var_y, cov = blur(x*x) - mu_x**2, blur(y*y) - mu_y**2, blur(x*y) - mu_x*mu_y
    c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
    ssim_map = (2 mu_x mu_y + c1) (2 cov + c2) / ((mu_x**2 + mu_y**2 + c1) (var_x + var_y + c2))
    loss_i = 1 - mean(ssim_map[i])                          # over valid pixels and channels
    ```

    Args:
        max_val: dynamic range of the images (AE-CFE: 1.0, images in [0, 1]).
        filter_size: Gaussian window size (11, `tf.image.ssim`'s default).
        filter_sigma: window sigma (1.5).
        k1: 0.01. k2: 0.03 (C1 = 0.01^2, C2 = 0.03^2 for max_val 1).
        reduction, name, dtype: as in `keras.losses.Loss`.

    Note:
        The AE-CFE code (marrlab/AE-CFE, `SSIM.py`) uses an even window of
        10, whose Gaussian has no centre pixel; tfcell defaults to the
        standard 11 (Wang et al. 2004, `tf.image.ssim`). Pass
        `filter_size=10` to match the authors' code. `tf.image.ssim` uses
        "valid" filtering while that code pads; values near the borders
        therefore differ slightly. Computed in float32 whatever the dtype.

    Example:
    ```python
    autoencoder.compile(optimizer="adam", loss=tfcell.losses.SSIMLoss())
    ```

    Reference:
    - [Wang et al., 2004](https://doi.org/10.1109/TIP.2003.819861)
    - Salehi et al., AE-CFE (MICCAI 2022), thesis Eq. 2.18-2.19; marrlab/AE-CFE @45785e2
    """

    def __init__(
        self,
        max_val=1.0,
        filter_size=11,
        filter_sigma=1.5,
        k1=0.01,
        k2=0.03,
        reduction="sum_over_batch_size",
        name="ssim_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if float(max_val) <= 0:
            raise ValueError(
                f"`max_val` must be > 0, received {max_val!r} (1.0 for [0, 1] images)."
            )
        if not isinstance(filter_size, int) or filter_size < 1:
            raise ValueError(
                f"`filter_size` must be a positive int, received {filter_size!r} (11)."
            )
        if float(filter_sigma) <= 0:
            raise ValueError(f"`filter_sigma` must be > 0, received {filter_sigma!r} (1.5).")
        if float(k1) <= 0 or float(k2) <= 0:
            raise ValueError(f"`k1` and `k2` must be > 0, received {k1!r}, {k2!r} (0.01, 0.03).")
        self.max_val = float(max_val)
        self.filter_size = filter_size
        self.filter_sigma = float(filter_sigma)
        self.k1 = float(k1)
        self.k2 = float(k2)

    def call(self, y_true, y_pred):
        return ssim_loss(
            y_true,
            y_pred,
            max_val=self.max_val,
            filter_size=self.filter_size,
            filter_sigma=self.filter_sigma,
            k1=self.k1,
            k2=self.k2,
        )

    def get_config(self):
        return {
            "max_val": self.max_val,
            "filter_size": self.filter_size,
            "filter_sigma": self.filter_sigma,
            "k1": self.k1,
            "k2": self.k2,
            "reduction": self.reduction,
            "name": self.name,
            "dtype": self.dtype,
        }
