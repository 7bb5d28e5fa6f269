"""AE-CFE: ROI features of detected cells and the two-stage autoencoder.

Salehi et al.'s AutoEncoder-based Cell Feature Extractor starts from the ROI
features `h_i` that a Mask R-CNN pools for every detected cell, encodes them
into a 50-d latent code `z_i`, decodes `z_i` back to features `h^_i` (feature
decoder) and `h^_i` to the cell crop `r^_i` (image decoder):

```
z_i  = encoder(h_i)            # thesis Eq. 2.15
h^_i = feature_decoder(z_i)    # Eq. 2.16
r^_i = image_decoder(h^_i)     # Eq. 2.17
```

`roi_features` gives `h_i` from any encoder feature map and instance boxes;
`aecfe_autoencoder` builds the three networks as one functional model (plain
Keras layers, so `.keras` files load with `safe_mode`); the loss of Eq. 2.20
and its domain term live in `tfcell.training.AECFETrainer`. A random forest
(`max_depth=16`) on `aecfe_encode(...)` codes gives the paper's accuracies.
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

__all__ = ["aecfe_autoencoder", "aecfe_encode", "minmax_features", "roi_features"]

# marrlab/AE-CFE @45785e2, model.py. Encoder: Conv -> ReLU -> GroupNorm five
# times, then a 1x1 Conv to the latent code with tanh (six layers, thesis
# Sec. 2.10). (filters, kernel, stride, GroupNorm groups)
_ENCODER = ((200, 3, 1, 40), (150, 3, 2, 30), (100, 3, 1, 10), (70, 2, 1, 10), (60, 2, 1, 20))
# Feature decoder: ConvTranspose -> ReLU twice, then to the feature channels
# with tanh. (filters, kernel, stride)
_FEATURE_DECODER = ((150, 5, 1), (200, 4, 2))
# Image decoder: ConvTranspose -> ReLU four times, then a 1x1 ConvTranspose to
# RGB with a sigmoid: 14 -> 31 -> 63 -> 127 -> 128 pixels.
_IMAGE_DECODER = ((200, 5, 2), (180, 3, 2), (150, 3, 2), (128, 2, 1))
# The spatial sizes the convolutional variant is built for (kernel arithmetic).
_MAP_SIZE = 14
_MAP_IMAGE_SIZE = 128
# Vector variant (tfcell): the image decoder starts from a 4x4 grid of 200
# channels and doubles it with these widths (then 128) up to `image_size`.
_VECTOR_GRID = 4
_VECTOR_UPSAMPLING = (180, 150, 128)
# The authors' GroupNorm epsilon (keras's default is 1e-3).
_GROUP_NORM_EPSILON = 1e-5


def roi_features(
    feature_map, boxes, box_indices=None, output_size=14, image_size=None, pooling="avg"
):
    """ROI-aligns instance boxes on a feature map and average-pools each crop.

    Mask R-CNN's ROI features in spirit (matterport's `PyramidROIAlign` on one
    level): every box is resampled bilinearly to an `output_size` grid with
    `tf.image.crop_and_resize`, then averaged over the grid to one vector.

    ```
    if image_size is given:                          # pixel boxes, (y2, x2) exclusive
        boxes = (y1, x1, y2 - 1, x2 - 1) / (H - 1, W - 1, H - 1, W - 1)
    crops = crop_and_resize(feature_map, boxes, box_indices, output_size)
    # normalised coordinate t samples the map at row/column t * (Hf - 1) / (Wf - 1):
    # 0 is the centre of the first cell, 1 the centre of the last one
    h = mean(crops, over the output grid)             # pooling="avg"
    ```

    Args:
        feature_map: `(B, Hf, Wf, C)` encoder features of B images, or
            `(Hf, Wf, C)` for one image.
        boxes: `(N, 4)` boxes `[y1, x1, y2, x2]`; normalised to `[0, 1]` of
            the image when `image_size` is None (TensorFlow's convention),
            else in pixels of an image of `image_size`.
        box_indices: `(N,)` int, the image of the batch each box lies on.
            Default: all on image 0.
        output_size: int or `(height, width)` of the ROI-align grid. Default
            14, Mask R-CNN's mask-branch pool size (the thesis's 256 x 14 x 14
            features).
        image_size: None, or `(H, W)` of the image the pixel boxes refer to;
            they are normalised as matterport's `norm_boxes` does.
        pooling: `"avg"` (default) for one `(N, C)` vector per box, or None for
            the `(N, oh, ow, C)` crops (the input of the convolutional
            autoencoder, `aecfe_autoencoder(feature_shape=(14, 14, C))`).

    Returns:
        float32 `(N, C)` (pooled) or `(N, oh, ow, C)`.

    Note:
        Mask R-CNN picks the FPN level from the box area and the authors keep
        the unpooled 14 x 14 x 256 crop; here the caller chooses the map, and
        the crop is average-pooled by default so that a cell is one vector.

    Reference:
    - [He et al., 2017](https://arxiv.org/abs/1703.06870) (RoIAlign);
      matterport Mask_RCNN `mrcnn/model.py` (`PyramidROIAlign`, `norm_boxes`);
      Salehi et al. thesis Sec. 2.4 and 2.10
    """
    if pooling not in ("avg", None):
        raise ValueError(f'`pooling` must be "avg" or None, received {pooling!r}.')
    crop_size = _pair(output_size, "output_size")
    feature_map = tf.convert_to_tensor(feature_map)
    if feature_map.shape.rank == 3:
        feature_map = feature_map[None]
    if feature_map.shape.rank != 4:
        raise ValueError(
            f"`feature_map` must be (B, H, W, C) or (H, W, C), received shape {feature_map.shape}."
        )
    boxes = tf.reshape(tf.cast(boxes, "float32"), (-1, 4))
    if image_size is not None:
        height, width = _pair(image_size, "image_size")
        if height < 2 or width < 2:
            raise ValueError(f"`image_size` must be at least (2, 2), received {image_size!r}.")
        scale = tf.constant([height - 1, width - 1, height - 1, width - 1], "float32")
        shift = tf.constant([0.0, 0.0, 1.0, 1.0])
        boxes = (boxes - shift) / scale
    if box_indices is None:
        box_indices = tf.zeros(tf.shape(boxes)[:1], "int32")
    box_indices = tf.reshape(tf.cast(box_indices, "int32"), (-1,))
    crops = tf.image.crop_and_resize(
        tf.cast(feature_map, "float32"), boxes, box_indices, crop_size, method="bilinear"
    )
    if pooling is None:
        return crops
    return tf.reduce_mean(crops, axis=(1, 2))


def minmax_features(features, epsilon=1e-12):
    """Scales each sample's features to `[-1, 1]` (the authors' data loader).

    ```
    h = 2 * (h - min(h)) / max(max(h) - min(h), epsilon) - 1   # per sample
    ```

    The feature decoder ends in tanh, so its targets must lie in `[-1, 1]`.

    Args:
        features: `(N, ...)` features (vectors or maps).
        epsilon: floor of the range, so a constant sample gives -1, not NaN.

    Returns:
        The scaled features, same shape and dtype.

    Reference:
    - marrlab/AE-CFE @45785e2, `Dataloader.py` (`2 * (feat - min) / ptp - 1`)
    """
    features = ops.convert_to_tensor(features)
    axes = tuple(range(1, len(features.shape)))
    low = ops.min(features, axis=axes, keepdims=True)
    high = ops.max(features, axis=axes, keepdims=True)
    return 2.0 * (features - low) / ops.maximum(high - low, epsilon) - 1.0


def aecfe_autoencoder(feature_shape=(14, 14, 256), latent_dim=50, image_size=128, name="aecfe"):
    """The AE-CFE two-stage autoencoder: features -> latent -> features -> cell image.

    ```
    z  = encoder(h)            # 5 x (layer -> ReLU -> GroupNorm), layer(latent_dim) -> tanh
    h^ = feature_decoder(z)    # 2 x (layer -> ReLU), layer(feature size) -> tanh
    r^ = image_decoder(h^)     # upsampling layers -> ReLU, 1x1 to RGB -> sigmoid
    ```

    With `feature_shape=(14, 14, C)` (the thesis's Mask R-CNN ROI features,
    256 x 14 x 14) the three networks are the authors' convolutional ones:
    encoder Conv 200/150/100/70/60 (kernels 3, 3 stride 2, 3, 2, 2; GroupNorm
    after each ReLU) and a 1x1 Conv to the latent code (14 -> 1 pixels);
    feature decoder ConvTranspose 150 (5), 200 (4, stride 2), C (3): 1 -> 14;
    image decoder ConvTranspose 200 (5, s2), 180 (3, s2), 150 (3, s2), 128
    (2), 3 (1): 14 -> 128 pixels. With `feature_shape=(F,)` (average-pooled
    ROI vectors, `roi_features`) the same widths become Dense layers and the
    image decoder starts from a 4 x 4 x 200 grid (a Dense layer) and doubles
    it with stride-2 ConvTranspose layers of 180, 150, then 128 filters until
    `image_size`.

    Args:
        feature_shape: `(14, 14, C)` (convolutional, the paper's; default
            `(14, 14, 256)`) or `(F,)` (dense). Features should lie in
            `[-1, 1]` (the feature decoder ends in tanh): see
            `minmax_features`.
        latent_dim: int, size of the latent code. Default 50 (thesis Sec. 3.3).
        image_size: int, side of the reconstructed square RGB crop, in
            `[0, 1]` (sigmoid). 128 (the authors') for the convolutional
            variant; `4 * 2**k` (8, 16, 32, 64, 128, ...) for the dense one.
        name: model name.

    Returns:
        A functional `keras.Model` from features `(N, *feature_shape)` to the
        dict `{"latent": (N, latent_dim), "features": (N, *feature_shape),
        "image": (N, image_size, image_size, 3)}`; its sub-models are
        `get_layer("encoder")`, `"feature_decoder"` and `"image_decoder"`.

    Example:
    ```python
    autoencoder = tfcell.models.aecfe_autoencoder(feature_shape=(256,), image_size=64)
    trainer = tfcell.training.AECFETrainer(autoencoder, num_domains=3)
    ```

    Note:
        GroupNorm: the authors' first GroupNorm has 32 groups over 200
        channels, which their own reshape allows (groups then straddle
        channels) but `keras.layers.GroupNormalization` does not; tfcell uses
        40 groups of 5 channels (the second layer's group size). The others
        are the authors' (30, 10, 10, 20), with their epsilon 1e-5; their
        variance is the unbiased one, keras's the biased one.

    Note:
        The dense variant (for pooled vectors) is tfcell's: the thesis only
        describes 14 x 14 maps ("fully convolutional, 6 layers").

    Reference:
    - [Salehi et al., 2022](https://arxiv.org/abs/2208.11431); thesis Sec.
      2.10, Eq. 2.15-2.17, Fig. 2.12; marrlab/AE-CFE @45785e2, `model.py`
    """
    feature_shape = tuple(int(d) for d in feature_shape)
    if not isinstance(latent_dim, int) or latent_dim < 1:
        raise ValueError(
            f"`latent_dim` must be a positive int (paper: 50), received {latent_dim!r}."
        )
    if len(feature_shape) == 3:
        if feature_shape[:2] != (_MAP_SIZE, _MAP_SIZE) or image_size != _MAP_IMAGE_SIZE:
            raise ValueError(
                "The convolutional AE-CFE is built for 14 x 14 ROI feature maps and 128 x 128 "
                f"crops; received feature_shape={feature_shape}, image_size={image_size}. Use "
                "roi_features(..., output_size=14, pooling=None) and 128-pixel crops, or pooled "
                "features with feature_shape=(F,)."
            )
        parts = _conv_parts(feature_shape, latent_dim)
    elif len(feature_shape) == 1:
        parts = _dense_parts(feature_shape[0], latent_dim, _doublings(image_size))
    else:
        raise ValueError(f"`feature_shape` must be (14, 14, C) or (F,), received {feature_shape}.")
    encoder, feature_decoder, image_decoder = parts
    features = keras.Input(feature_shape, name="features")
    latent = encoder(features)
    reconstructed = feature_decoder(latent)
    image = image_decoder(reconstructed)
    outputs = {"latent": latent, "features": reconstructed, "image": image}
    return keras.Model(features, outputs, name=name)


def _conv_parts(feature_shape, latent_dim):
    """The authors' convolutional encoder, feature decoder and image decoder."""
    layers = [keras.Input(feature_shape)]
    for i, (filters, kernel, stride, groups) in enumerate(_ENCODER):
        layers += [
            keras.layers.Conv2D(
                filters, kernel, strides=stride, activation="relu", name=f"conv_{i}"
            ),
            _group_norm(groups, f"group_norm_{i}"),
        ]
    layers += [
        keras.layers.Conv2D(latent_dim, 1, activation="tanh", name="latent"),
        keras.layers.Flatten(name="flatten"),
    ]
    encoder = keras.Sequential(layers, name="encoder")

    layers = [keras.Input((latent_dim,)), keras.layers.Reshape((1, 1, latent_dim))]
    for i, (filters, kernel, stride) in enumerate(_FEATURE_DECODER):
        layers.append(_deconv(filters, kernel, stride, "relu", f"deconv_{i}"))
    layers.append(_deconv(feature_shape[-1], 3, 1, "tanh", "features"))
    feature_decoder = keras.Sequential(layers, name="feature_decoder")

    layers = [keras.Input(feature_shape)]
    for i, (filters, kernel, stride) in enumerate(_IMAGE_DECODER):
        layers.append(_deconv(filters, kernel, stride, "relu", f"deconv_{i}"))
    layers.append(_deconv(3, 1, 1, "sigmoid", "image"))
    image_decoder = keras.Sequential(layers, name="image_decoder")
    return encoder, feature_decoder, image_decoder


def _dense_parts(feature_dim, latent_dim, stages):
    """The same widths as Dense layers, for pooled feature vectors (tfcell)."""
    layers = [keras.Input((feature_dim,))]
    for i, (units, _, _, groups) in enumerate(_ENCODER):
        layers += [
            keras.layers.Dense(units, activation="relu", name=f"dense_{i}"),
            _group_norm(groups, f"group_norm_{i}"),
        ]
    layers.append(keras.layers.Dense(latent_dim, activation="tanh", name="latent"))
    encoder = keras.Sequential(layers, name="encoder")

    layers = [keras.Input((latent_dim,))]
    for i, (units, _, _) in enumerate(_FEATURE_DECODER):
        layers.append(keras.layers.Dense(units, activation="relu", name=f"dense_{i}"))
    layers.append(keras.layers.Dense(feature_dim, activation="tanh", name="features"))
    feature_decoder = keras.Sequential(layers, name="feature_decoder")

    first = _IMAGE_DECODER[0][0]
    layers = [
        keras.Input((feature_dim,)),
        keras.layers.Dense(_VECTOR_GRID * _VECTOR_GRID * first, activation="relu", name="grid"),
        keras.layers.Reshape((_VECTOR_GRID, _VECTOR_GRID, first)),
    ]
    for i in range(stages):
        filters = _VECTOR_UPSAMPLING[min(i, len(_VECTOR_UPSAMPLING) - 1)]
        layers.append(
            keras.layers.Conv2DTranspose(
                filters, 3, strides=2, padding="same", activation="relu", name=f"deconv_{i}"
            )
        )
    layers.append(_deconv(3, 1, 1, "sigmoid", "image"))
    image_decoder = keras.Sequential(layers, name="image_decoder")
    return encoder, feature_decoder, image_decoder


def _doublings(image_size):
    """k with `image_size == 4 * 2**k`, k >= 1 (the dense image decoder's stages)."""
    size, stages = _VECTOR_GRID, 0
    while isinstance(image_size, int) and size < image_size:
        size, stages = 2 * size, stages + 1
    if not isinstance(image_size, int) or size != image_size or stages == 0:
        raise ValueError(
            f"`image_size` must be 4 * 2**k (8, 16, 32, 64, 128, ...) for vector features, "
            f"received {image_size!r}."
        )
    return stages


def _group_norm(groups, name):
    return keras.layers.GroupNormalization(groups=groups, epsilon=_GROUP_NORM_EPSILON, name=name)


def _deconv(filters, kernel, stride, activation, name):
    # "valid" as torch's ConvTranspose2d(padding=0): size (n - 1) * stride + kernel.
    return keras.layers.Conv2DTranspose(
        filters, kernel, strides=stride, activation=activation, name=name
    )


def aecfe_encode(model, features, batch_size=256):
    """Latent codes `z` of features, for the random forest of the AE-CFE protocol.

    Runs only the encoder (not the two decoders).

    Args:
        model: an `aecfe_autoencoder` model, a `tfcell.training.AECFETrainer`
            (its `encoder`) or an encoder model itself.
        features: `(N, *feature_shape)` array or dataset of features.
        batch_size: int, as `keras.Model.predict`.

    Returns:
        A NumPy array `(N, latent_dim)`.
    """
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, keras.Model):
        try:
            encoder = model.get_layer("encoder")
        except ValueError:
            encoder = model
    from tfcell.training import loop  # Local: tfcell.training imports tfcell.models.

    return np.asarray(loop.predict(encoder, features, batch_size=batch_size))


def _pair(value, arg):
    """`value` as a `(height, width)` pair of positive ints."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in pair):
        raise ValueError(f"`{arg}` must be a positive int or a pair of them, received {value!r}.")
    return int(pair[0]), int(pair[1])
