"""U-Net (Ronneberger et al., 2015) for nucleus segmentation.

The segmentation network of the exclusive cross-entropy study (Panteli et
al., 2021, supplement Sec. 3: "implemented as originally introduced").
Whole tiles of any size are predicted with
`tfcell.evaluation.predict_instances` (tiling with overlap).
"""

import keras

__all__ = ["unet"]


def _conv_block(x, filters, batch_norm, name):
    """Two 3x3 convolutions, each followed by ReLU (and BatchNorm before it)."""
    for i in (1, 2):
        x = keras.layers.Conv2D(
            filters,
            3,
            padding="same",
            use_bias=not batch_norm,
            kernel_initializer="he_normal",
            name=f"{name}_conv{i}",
        )(x)
        if batch_norm:
            x = keras.layers.BatchNormalization(name=f"{name}_bn{i}")(x)
        x = keras.layers.ReLU(name=f"{name}_relu{i}")(x)
    return x


def unet(
    input_shape=(None, None, 3),
    num_classes=2,
    width=64,
    depth=4,
    batch_norm=False,
    dropout=0.5,
    name="unet",
):
    """U-Net: a contracting path, an expanding path and skip concatenations.

    ```python
    x = image / 255
    for level in range(depth):                 # contracting path
        x = relu(conv3x3(relu(conv3x3(x))))    # width * 2**level filters
        skips.append(x); x = maxpool2x2(x)
    x = two 3x3 convs with width * 2**depth filters (the bottleneck)
    for level in reversed(range(depth)):       # expanding path
        x = upconv2x2(x)                       # width * 2**level filters
        x = two 3x3 convs of concat([skips[level], x])
    logits = conv1x1(x, num_classes)
    ```

    Args:
        input_shape: image shape; height and width must be multiples of
            `2 ** depth` (16 for the paper's depth 4), or None for any such
            size.
        num_classes: output channels (logits, no activation); 2 for nucleus
            vs. background with a softmax loss, 1 for a sigmoid loss.
        width: filters of the first level (paper: 64); level `i` has
            `width * 2**i`. 8 or 16 runs on a CPU.
        depth: number of 2x2 max-poolings (paper: 4).
        batch_norm: BatchNormalization after every 3x3 convolution (not in
            the paper; default False).
        dropout: drop-out rate after the deepest contracting level and the
            bottleneck (paper Sec. 3.1: "drop-out layers at the end of the
            contracting path"; 0.5 is our reading, the paper gives no rate).
        name: model name.

    Returns:
        A `keras.Model` from float RGB images in [0, 255] (rescaled to [0, 1]
        inside) of shape `(N, H, W, 3)` to float32 logits `(N, H, W, num_classes)`.

    Note:
        - Ronneberger et al. use unpadded ("valid") convolutions, so their
          output is smaller than the input (572 -> 388 px) and tiles are
          predicted with the overlap-tile strategy. Here every convolution
          uses "same" (zero) padding: the output has the input's size, and
          `tfcell.evaluation.predict_instances` removes the border effects
          by averaging overlapping tiles with their margins down-weighted.
        - Weights start from He normal (the paper's Gaussian with std
          `sqrt(2 / N)`); the up-convolution is a 2x2, stride-2
          `Conv2DTranspose` that halves the channels, as in the paper.

    Example:
    ```python
    model = tfcell.models.unet(num_classes=2, width=16)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    ```

    Reference:
    - [Ronneberger et al., 2015](https://arxiv.org/abs/1505.04597), Fig. 1, Sec. 2-3.
    - [Panteli et al., 2021](https://arxiv.org/abs/2104.10425), supplement Sec. 3.
    """
    if int(width) < 1 or int(depth) < 1 or int(num_classes) < 1:
        raise ValueError(
            f"unet: width, depth and num_classes must be >= 1; received width={width!r}, "
            f"depth={depth!r}, num_classes={num_classes!r} (paper: 64, 4, 2)."
        )
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"unet: dropout must lie in [0, 1); received {dropout!r}.")
    factor = 2**depth
    for size in input_shape[:2]:
        if size is not None and size % factor:
            raise ValueError(
                f"unet: input_shape={tuple(input_shape)} has a side that is not a multiple of "
                f"2**depth = {factor}; the {depth} max-poolings need it. Crop or pad the "
                f"images to a multiple of {factor}, or use input_shape=(None, None, 3)."
            )
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    skips = []
    for level in range(depth):
        x = _conv_block(x, width * 2**level, batch_norm, f"down{level}")
        if dropout and level == depth - 1:
            x = keras.layers.Dropout(dropout, name=f"down{level}_dropout")(x)
        skips.append(x)
        x = keras.layers.MaxPooling2D(2, name=f"down{level}_pool")(x)
    x = _conv_block(x, width * 2**depth, batch_norm, "bottleneck")
    if dropout:
        x = keras.layers.Dropout(dropout, name="bottleneck_dropout")(x)
    for level in reversed(range(depth)):
        x = keras.layers.Conv2DTranspose(
            width * 2**level, 2, strides=2, kernel_initializer="he_normal", name=f"up{level}_upconv"
        )(x)
        x = keras.layers.Concatenate(name=f"up{level}_concat")([skips[level], x])
        x = _conv_block(x, width * 2**level, batch_norm, f"up{level}")
    logits = keras.layers.Conv2D(num_classes, 1, dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name=name)
