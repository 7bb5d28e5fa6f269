"""Feature extractors: VGG19 (CRC), the IDC AlexNet variant, the Compact
Convolutional Transformer (CCT) and a small CPU-sized CNN.

Every backbone is a `keras.Model` from images (float32 in [0, 255], as the
`tfcell.data` pipelines yield them) to one feature vector per image; each
rescales its inputs itself. Pair any of them with any head through
`tfcell.models.build_classifier`.
"""

import logging
import os
import socket

import keras
from keras import ops

__all__ = [
    "CaffePreprocess",
    "PatchTokens",
    "PositionEmbedding",
    "SequencePooling",
    "alexnet",
    "cct",
    "inception_v3",
    "resnet50",
    "small_cnn",
    "vgg19",
]

logger = logging.getLogger("tfcell.models")

_VGG19_NOTOP = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
_RESNET50_NOTOP = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
_INCEPTION_V3_NOTOP = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
_WEIGHTS_HOST = ("storage.googleapis.com", 443)


@keras.saving.register_keras_serializable(package="tfcell")
class CaffePreprocess(keras.layers.Layer):
    """ImageNet "caffe" preprocessing inside the model (RGB -> BGR, mean subtracted).

    What `keras.applications.vgg19.preprocess_input` does, as a layer, so a saved
    model needs no `Lambda` (which `safe_mode` refuses).

    Call arguments:
        inputs: RGB images in [0, 255], shape `(N, H, W, 3)`.

    Returns:
        BGR images minus the ImageNet channel means.
    """

    MEAN_BGR = (103.939, 116.779, 123.68)

    def call(self, inputs):
        bgr = ops.flip(inputs, axis=-1)
        return bgr - ops.convert_to_tensor(self.MEAN_BGR, dtype=bgr.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


def _online(host=_WEIGHTS_HOST, timeout=3.0):
    """True when the weights host answers within `timeout` seconds (no hang offline)."""
    try:
        with socket.create_connection(host, timeout=timeout):
            return True
    except OSError:
        return False


def _resolve_weights(weights, notop, owner="vgg19"):
    """Returns what to hand `keras.applications`: "imagenet", a file, or None."""
    if weights is None:
        return None
    if weights != "imagenet":
        if not os.path.exists(weights):
            raise ValueError(
                f"{owner}(weights={weights!r}): no such file. Pass None, 'imagenet', or the "
                f"path of a local '{notop}'."
            )
        return weights
    cached = os.path.join(os.path.expanduser("~"), ".keras", "models", notop)
    if os.path.exists(cached) or _online():
        return "imagenet"
    logger.warning(
        "=" * 72 + "\n%s: ImageNet weights are neither cached (%s) nor downloadable "
        "(offline). Using RANDOM INITIALISATION: results will not match the paper's "
        "ImageNet-pretrained network. Pass weights=<path to %s> to use a local copy.\n" + "=" * 72,
        owner,
        cached,
        notop,
    )
    return None


def _resolve_vgg19_weights(weights):
    return _resolve_weights(weights, _VGG19_NOTOP, "vgg19")


def vgg19(input_shape=(224, 224, 3), weights=None, pooling="avg", name="vgg19"):
    """VGG19 convolutional base (`keras.applications.VGG19`, no top), pooled.

    The backbone of the CRC study (Kather et al. 2019; Mahbub et al. 2024, Sec. IV-A),
    ImageNet-pretrained in the paper.

    Args:
        input_shape: image shape; the paper uses 224 x 224 x 3.
        weights: None (random init), "imagenet" (cached or downloaded; when offline
            a loud warning and random init instead, never a hang), or a path to the
            no-top `.h5` weight file.
        pooling: "avg" or "max" global pooling of the last block.
        name: model name.

    Returns:
        A `keras.Model` from `[0, 255]` RGB images to 512 features.
    """
    weights = _resolve_vgg19_weights(weights)
    inputs = keras.Input(input_shape, name="image")
    x = CaffePreprocess(name="caffe_preprocess")(inputs)
    base = keras.applications.VGG19(
        include_top=False, weights=weights, input_shape=input_shape, pooling=pooling
    )
    return keras.Model(inputs, base(x), name=name)


def alexnet(input_shape=(32, 32, 3), widths=(32, 32, 64), name="alexnet"):
    """The AlexNet variant of Janowczyk & Madabhushi (2016) for 32 x 32 IDC patches.

    Their IDC use case (Sec. "Invasive ductal carcinoma") runs the Caffe
    CIFAR-10 "full" AlexNet variant on patches resized to 32 x 32:

        conv 32 5x5 -> max-pool 3/2 -> ReLU -> conv 32 5x5 -> ReLU -> avg-pool 3/2
        -> conv 64 5x5 -> ReLU -> avg-pool 3/2 -> flatten

    Note: their local response normalisation layers are left out (Keras has none,
    and they do not change results at this size); the final `fc` layers are the
    classifier's embedding and head (`build_classifier`). With no normalisation
    and no dropout it computes the same function in training and in inference,
    so its validation curves carry no BatchNorm-statistics noise (`small_cnn`).

    Args:
        input_shape: patch shape; 32 x 32 x 3 in both papers.
        widths: filters of the three convolutions (32, 32, 64 in the original);
            smaller widths give a faster network for CPU runs.
        name: model name.

    Returns:
        A `keras.Model` from `[0, 255]` RGB patches to a flat feature vector.

    Reference:
        - [Janowczyk & Madabhushi, 2016](https://doi.org/10.4103/2153-3539.186902)
    """
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    x = keras.layers.Conv2D(widths[0], 5, padding="same", name="conv1")(x)
    x = keras.layers.MaxPooling2D(3, 2, padding="same")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(widths[1], 5, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.AveragePooling2D(3, 2, padding="same")(x)
    x = keras.layers.Conv2D(widths[2], 5, padding="same", activation="relu", name="conv3")(x)
    x = keras.layers.AveragePooling2D(3, 2, padding="same")(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, x, name=name)


_NORMS = ("group", "batch")


def resnet50(input_shape=(224, 224, 3), weights=None, pooling="avg", name="resnet50"):
    """ResNet-50 (`keras.applications.ResNet50`, no top), pooled: the backbone
    of the BoDA white-cell study (Umer et al. 2023: ImageNet-pretrained) and of
    AE-CFE's ResNet-RF baseline.

    Args:
        input_shape: image shape (224 x 224 x 3 in the papers).
        weights: None (random init), "imagenet" (cached or downloaded; offline: a
            loud warning and random init, never a hang), or the path of the
            no-top `.h5` weight file.
        pooling: "avg" or "max".
        name: model name.

    Returns:
        A `keras.Model` from `[0, 255]` RGB images to 2048 features.
    """
    weights = _resolve_weights(weights, _RESNET50_NOTOP, "resnet50")
    inputs = keras.Input(input_shape, name="image")
    x = CaffePreprocess(name="caffe_preprocess")(inputs)  # ResNet50's "caffe" mode.
    base = keras.applications.ResNet50(
        include_top=False, weights=weights, input_shape=input_shape, pooling=pooling
    )
    return keras.Model(inputs, base(x), name=name)


def inception_v3(input_shape=(299, 299, 3), weights=None, pooling="avg", name="inception_v3"):
    """Inception-v3 (`keras.applications.InceptionV3`, no top), pooled: the
    backbone of the heterogeneity-loss paper (Goswami et al. 2020, Sec. 4.2:
    ImageNet-pretrained, 299 x 299 crops; its 2048 pooled features are the
    deep features the centre losses act on).

    Args:
        input_shape: image shape (299 x 299 x 3 in the paper; at least 75 x 75).
        weights: None (random init), "imagenet" (cached or downloaded; offline: a
            loud warning and random init, never a hang), or the path of the
            no-top `.h5` weight file.
        pooling: "avg" or "max".
        name: model name.

    Returns:
        A `keras.Model` from `[0, 255]` RGB images to 2048 features (the "tf"
        preprocessing, `x / 127.5 - 1`, is a `Rescaling` layer inside).
    """
    weights = _resolve_weights(weights, _INCEPTION_V3_NOTOP, "inception_v3")
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="tf_preprocess")(inputs)
    base = keras.applications.InceptionV3(
        include_top=False, weights=weights, input_shape=input_shape, pooling=pooling
    )
    return keras.Model(inputs, base(x), name=name)


def small_cnn(
    input_shape=(64, 64, 3), widths=(16, 32, 64), norm="batch", groups=8, name="small_cnn"
):
    """A small CNN (conv-norm-ReLU-pool blocks, global average pool) for CPU runs.

    Not in the paper: it stands in for VGG19 in the `cpu` and `smoke` configs so a
    whole CRC comparison fits in minutes on two cores.

    Train it with `tfcell.training.PreciseBatchNormCallback(train_data)`. Its
    BatchNorm moving statistics lag the weights in these short Adam runs, so
    without the callback inference-mode accuracy swings from epoch to epoch while
    the same weights with batch statistics do not (PBC, 64 px: 0.83, 0.81, 0.60,
    0.85 vs 0.86, 0.91, 0.90, 0.94), and every validation curve, early-stopping
    choice and CPU table inherits that noise. The callback re-estimates the
    statistics with the current weights before each evaluation.

    `norm="group"` (GroupNorm) has no train/inference difference at all, but it
    is not the default: measured side by side on PBC (`benchmarks/bn_inference.py`,
    docs/benchmarks.md) it reached clearly lower accuracy in the same epochs and
    cost more CPU time per epoch, while the callback costs a few percent.

    Args:
        input_shape: image shape.
        widths: filters of each block (one 3x3 conv and one 2x2 max-pool per block).
        norm: "batch" (BatchNorm, momentum 0.9; layers `bn{i}`) or "group"
            (GroupNorm; layers `gn{i}`).
        groups: GroupNorm groups per layer (capped at the layer's width, which it
            must divide); ignored for `norm="batch"`.
        name: model name.

    Returns:
        A `keras.Model` from `[0, 255]` RGB images to `widths[-1]` features.
    """
    if norm not in _NORMS:
        raise ValueError(
            f'small_cnn: norm must be one of {_NORMS}; received norm={norm!r}. Use "batch" '
            '(BatchNorm; train with PreciseBatchNormCallback) or "group" (GroupNorm).'
        )
    if norm == "group":
        bad = [w for w in widths if groups < 1 or w % min(groups, w)]
        if bad:
            raise ValueError(
                f"small_cnn: groups={groups} must be >= 1 and divide every width (or exceed "
                f"it); widths {bad} of {tuple(widths)} are not divisible. Pick groups that "
                "divide all widths, e.g. a power of two with power-of-two widths."
            )
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    for i, width in enumerate(widths):
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        if norm == "group":
            x = keras.layers.GroupNormalization(min(groups, width), name=f"gn{i}")(x)
        else:
            # momentum 0.9: short CPU runs leave 0.99's moving statistics unsettled.
            x = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{i}")(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, x, name=name)


@keras.saving.register_keras_serializable(package="tfcell")
class PatchTokens(keras.layers.Layer):
    """Flattens a feature map `(N, H, W, D)` into a token sequence `(N, H * W, D)`."""

    def call(self, inputs):
        shape = ops.shape(inputs)
        return ops.reshape(inputs, (shape[0], shape[1] * shape[2], shape[3]))

    def compute_output_shape(self, input_shape):
        n, h, w, d = input_shape
        tokens = None if h is None or w is None else h * w
        return (n, tokens, d)


@keras.saving.register_keras_serializable(package="tfcell")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned position embedding to a token sequence `(N, T, D)`.

    Weights are made in `build()` from the (static) sequence length.
    """

    def build(self, input_shape):
        self.embedding = self.add_weight(
            name="embedding",
            shape=(input_shape[1], input_shape[2]),
            initializer=keras.initializers.TruncatedNormal(stddev=0.2),
        )

    def call(self, inputs):
        return inputs + ops.cast(self.embedding, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="tfcell")
class SequencePooling(keras.layers.Layer):
    """CCT sequence pooling: attention weights over tokens, then a weighted sum.

    `w = softmax(dense(x), axis=tokens)`, `out = sum_t w_t * x_t` (Hassani et al.
    2021, Sec. 3.2), shape `(N, T, D)` -> `(N, D)`.
    """

    def build(self, input_shape):
        self.attention = keras.layers.Dense(1, name="attention")
        self.attention.build(input_shape)

    def call(self, inputs):
        weights = ops.softmax(self.attention(inputs), axis=1)
        return ops.sum(weights * inputs, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])


def cct(
    input_shape=(32, 32, 3),
    num_conv_layers=2,
    num_transformer_layers=2,
    projection_dim=128,
    num_heads=2,
    mlp_units=(128, 128),
    dropout=0.1,
    name="cct",
):
    """Compact Convolutional Transformer, the configuration of Table XIV.

    Convolutional tokenizer (`num_conv_layers` x [conv 3x3 -> ReLU -> max-pool 3/2]),
    learned position embedding, `num_transformer_layers` pre-norm transformer
    blocks, layer norm and sequence pooling. With the defaults (2 conv layers, 2
    transformer layers, projection 128, 32 x 32 inputs) it has about 0.4 M
    parameters, as the paper reports (Sec. V-D3).

    Note: the paper does not give heads, MLP width or input size; these follow
    the Keras CCT example the authors' configuration matches (2 heads, MLP
    128-128, 32 x 32 inputs, stochastic depth left out).

    Args:
        input_shape: image shape.
        num_conv_layers: tokenizer convolutions (Table XIV: 2).
        num_transformer_layers: transformer blocks (Table XIV: 2).
        projection_dim: token width (Table XIV: 128).
        num_heads: attention heads.
        mlp_units: widths of each block's MLP (the last must equal `projection_dim`).
        dropout: dropout in the MLP and attention.
        name: model name.

    Reference:
        - [Hassani et al., 2021](https://arxiv.org/abs/2104.05704)
    """
    if mlp_units[-1] != projection_dim:
        raise ValueError(
            f"cct: mlp_units[-1] must equal projection_dim (residual sum); received "
            f"mlp_units={mlp_units}, projection_dim={projection_dim}."
        )
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    for i in range(num_conv_layers):
        width = projection_dim if i == num_conv_layers - 1 else projection_dim // 2
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"tok_conv{i}")(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D(3, 2, padding="same")(x)
    x = PatchTokens(name="tokens")(x)
    x = PositionEmbedding(name="position_embedding")(x)
    for i in range(num_transformer_layers):
        h = keras.layers.LayerNormalization(epsilon=1e-5, name=f"block{i}_ln1")(x)
        h = keras.layers.MultiHeadAttention(
            num_heads, projection_dim, dropout=dropout, name=f"block{i}_attention"
        )(h, h)
        x = keras.layers.Add()([x, h])
        h = keras.layers.LayerNormalization(epsilon=1e-5, name=f"block{i}_ln2")(x)
        for j, units in enumerate(mlp_units):
            h = keras.layers.Dense(units, activation="gelu", name=f"block{i}_mlp{j}")(h)
            h = keras.layers.Dropout(dropout)(h)
        x = keras.layers.Add()([x, h])
    x = keras.layers.LayerNormalization(epsilon=1e-5, name="final_ln")(x)
    x = SequencePooling(name="sequence_pooling")(x)
    return keras.Model(inputs, x, name=name)
