"""A YOLO-style single-scale nucleus detector (YOLLO, van Rijthoven et al., 2018).

The detection network of the exclusive cross-entropy study (Panteli et al.,
2021, supplement Sec. 3: "7 convolutional layers with batch normalisation and
max pooling"), with the grid encoding of ground-truth boxes, box decoding and
non-maximum suppression (IoU 0.2, supplement Table 2). Train it with
`tfcell.losses.DetectionLoss`; score it with `tfcell.evaluation.detection_scores`.

The grid. An image of `H x W` pixels gives a `(H / stride) x (W / stride)`
grid (stride 8: three 2x2 max-poolings). Each cell predicts one box and its
objectness from 5 raw outputs `(t_x, t_y, t_w, t_h, t_obj)`:

```python
x_center = (col + sigmoid(t_x)) * stride      # pixels; x, y relative to the cell
y_center = (row + sigmoid(t_y)) * stride
width = stride * exp(t_w)                     # w, h in cells, in log space
height = stride * exp(t_h)
score = sigmoid(t_obj)
```

Boxes are `(y_min, x_min, y_max, x_max)` in pixels, max exclusive, the order
of `tf.image.non_max_suppression` and of `tfcell.data.instances_from_mask`.
"""

import math

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tfcell.data import nuclei

__all__ = [
    "DETECTOR_STRIDE",
    "TARGET_CHANNELS",
    "decode_boxes",
    "detect",
    "encode_boxes",
    "encode_instances",
    "non_max_suppression",
    "yolo_detector",
]

# Three 2x2 max-poolings: one cell per 8 x 8 pixels, about half a MoNuSeg
# nucleus (~15-25 px at 40x), so one cell rarely holds two nucleus centres.
DETECTOR_STRIDE = 8
# exp(t_w) is clipped at exp(+-_MAX_LOG_SIZE) cells so an untrained output
# cannot overflow (e**8 = 2981 cells).
_MAX_LOG_SIZE = 8.0
# Target channels of `encode_boxes`: x, y, log w, log h, objectness, ignore.
TARGET_CHANNELS = 6


def yolo_detector(input_shape=(None, None, 3), width=16, name="yolo_detector"):
    """The 7-layer YOLO-style detector: conv-BN-leaky ReLU with max pooling.

    ```python
    x = image / 255
    x = maxpool2x2(block(x, width))            # block = conv3x3 -> BN -> LeakyReLU(0.1)
    x = maxpool2x2(block(x, 2 * width))
    x = maxpool2x2(block(x, 4 * width))        # stride 8
    x = block(block(block(x, 8 * width), 8 * width), 8 * width)
    out = conv1x1(x, 5)                        # (t_x, t_y, t_w, t_h, t_obj) per cell
    ```

    Args:
        input_shape: image shape; height and width must be multiples of
            `DETECTOR_STRIDE` (8), or None for any such size.
        width: filters of the first layer; later layers double it up to 8x.
            The supplement gives no widths; 16 (16-128 filters) runs on a CPU,
            32 is closer to tiny YOLO.
        name: model name.

    Returns:
        A `keras.Model` from float RGB images in [0, 255] (rescaled inside),
        `(N, H, W, 3)`, to raw float32 outputs `(N, H / 8, W / 8, 5)`; decode
        them with `decode_boxes` (or `detect`, which also runs the NMS).

    Note:
        The supplement names the layers (7 convolutions, batch normalisation,
        max pooling) but not their widths, kernel sizes or the grid. Our
        choices: 3x3 kernels with leaky ReLU 0.1 (as YOLO), three 2x2
        poolings (stride 8), one box per cell and no anchors (nuclei have one
        shape and a narrow size range), and a linear 1x1 output layer (the
        seventh convolution; no batch normalisation on it).

    Reference:
    - [van Rijthoven et al., 2018](https://arxiv.org/abs/1806.06545) (YOLLO).
    - [Panteli et al., 2021](https://arxiv.org/abs/2104.10425), supplement Sec. 3, Table 2.
    """
    if int(width) < 1:
        raise ValueError(f"yolo_detector: width must be >= 1; received {width!r}.")
    for size in input_shape[:2]:
        if size is not None and size % DETECTOR_STRIDE:
            raise ValueError(
                f"yolo_detector: input_shape={tuple(input_shape)} has a side that is not a "
                f"multiple of the stride {DETECTOR_STRIDE}. Crop or pad the images, or use "
                "input_shape=(None, None, 3)."
            )
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    filters = (width, 2 * width, 4 * width, 8 * width, 8 * width, 8 * width)
    for i, f in enumerate(filters):
        x = keras.layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.LeakyReLU(0.1, name=f"leaky{i}")(x)
        if i < 3:
            x = keras.layers.MaxPooling2D(2, name=f"pool{i}")(x)
    outputs = keras.layers.Conv2D(5, 1, dtype="float32", name="grid")(x)
    return keras.Model(inputs, outputs, name=name)


def decode_boxes(outputs, stride=DETECTOR_STRIDE):
    """Boxes and scores from the raw grid outputs (see the module docstring).

    Args:
        outputs: `(N, Gh, Gw, 5)` raw outputs of `yolo_detector`.
        stride: pixels per cell (8).

    Returns:
        `(boxes, scores)`: float32 `(N, Gh * Gw, 4)` boxes
        `(y_min, x_min, y_max, x_max)` in pixels and `(N, Gh * Gw)`
        objectness probabilities, cells in row-major order.
    """
    outputs = ops.cast(ops.convert_to_tensor(outputs), "float32")
    shape = ops.shape(outputs)
    rows = ops.cast(ops.arange(shape[1]), "float32")[None, :, None]
    cols = ops.cast(ops.arange(shape[2]), "float32")[None, None, :]
    x_center = (cols + ops.sigmoid(outputs[..., 0])) * stride
    y_center = (rows + ops.sigmoid(outputs[..., 1])) * stride
    log_size = ops.clip(outputs[..., 2:4], -_MAX_LOG_SIZE, _MAX_LOG_SIZE)
    half = 0.5 * stride * ops.exp(log_size)
    boxes = ops.stack(
        [
            y_center - half[..., 1],
            x_center - half[..., 0],
            y_center + half[..., 1],
            x_center + half[..., 0],
        ],
        axis=-1,
    )
    boxes = ops.reshape(boxes, (shape[0], -1, 4))
    scores = ops.reshape(ops.sigmoid(outputs[..., 4]), (shape[0], -1))
    return boxes, scores


def non_max_suppression(boxes, scores, iou_threshold=0.2, score_threshold=0.5, max_detections=1000):
    """Greedy NMS of one image's boxes (`tf.image.non_max_suppression`).

    Args:
        boxes: `(K, 4)` boxes `(y_min, x_min, y_max, x_max)`.
        scores: `(K,)` scores.
        iou_threshold: a box whose IoU with a higher-scoring kept box is above
            this is removed (supplement Table 2: 0.2).
        score_threshold: boxes scoring below this are dropped first (not in
            the supplement; 0.5, the objectness decision boundary).
        max_detections: the most boxes kept.

    Returns:
        `(boxes, scores)` as NumPy arrays `(M, 4)`, `(M,)`, highest score first.
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    scores = tf.convert_to_tensor(scores, tf.float32)
    keep = tf.image.non_max_suppression(
        boxes,
        scores,
        max_output_size=max_detections,
        iou_threshold=iou_threshold,
        score_threshold=score_threshold,
    )
    return tf.gather(boxes, keep).numpy(), tf.gather(scores, keep).numpy()


def detect(
    model,
    images,
    stride=DETECTOR_STRIDE,
    iou_threshold=0.2,
    score_threshold=0.5,
    max_detections=1000,
    batch_size=8,
):
    """Runs `model` on `images`, decodes the grid and applies NMS per image.

    Args:
        model: a `yolo_detector` (any model with its output layout).
        images: `(N, H, W, 3)` float images in [0, 255].
        stride, iou_threshold, score_threshold, max_detections: as in
            `decode_boxes` and `non_max_suppression`.
        batch_size: images per forward pass.

    Returns:
        A list of N `(boxes, scores)` pairs of NumPy arrays.
    """
    outputs = model.predict(np.asarray(images, "float32"), batch_size=batch_size, verbose=0)
    boxes, scores = decode_boxes(outputs, stride)
    boxes, scores = ops.convert_to_numpy(boxes), ops.convert_to_numpy(scores)
    return [
        non_max_suppression(b, s, iou_threshold, score_threshold, max_detections)
        for b, s in zip(boxes, scores)
    ]


def encode_boxes(boxes, image_shape, stride=DETECTOR_STRIDE, ignore_boxes=None):
    """The grid target of `DetectionLoss` from ground-truth boxes.

    Each box goes to the cell that holds its centre:

    ```python
    y_c, x_c = (y_min + y_max) / 2, (x_min + x_max) / 2
    row, col = floor(y_c / stride), floor(x_c / stride)
    target[row, col] = (x_c / stride - col, y_c / stride - row,        # in [0, 1)
                        log((x_max - x_min) / stride), log((y_max - y_min) / stride),
                        1, 0)                                           # objectness, ignore
    ```

    Args:
        boxes: `(K, 4)` boxes `(y_min, x_min, y_max, x_max)` in pixels (max
            exclusive, as `tfcell.data.instances_from_mask` gives them).
        image_shape: `(H, W)`; both multiples of `stride`.
        stride: pixels per cell (8).
        ignore_boxes: optional `(M, 4)` boxes of objects known to be present
            but not annotated (e.g. the dropped objects of
            `tfcell.data.sparsify_annotations`). Their centre cells get
            `ignore = 1` (unless they hold an annotated box), and
            `DetectionLoss` leaves them out of its background term.

    Returns:
        A float32 `(H / stride, W / stride, 6)` array: x, y, log w, log h,
        objectness, ignore. Cells without a box are all zero.

    Note:
        When two box centres fall in one cell, the cell keeps the larger box
        (YOLO has one box per cell, too); the smaller one is lost from the
        target. With stride 8 this is rare for nuclei.
    """
    height, width = (int(s) for s in image_shape[:2])
    if height % stride or width % stride:
        raise ValueError(
            f"encode_boxes: image_shape {tuple(image_shape)} is not a multiple of the stride "
            f"{stride}. Crop or pad the image to a multiple of {stride}."
        )
    target = np.zeros((height // stride, width // stride, TARGET_CHANNELS), np.float32)
    best_area = np.zeros(target.shape[:2], np.float64)

    def cell_of(box):
        y_c, x_c = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
        row = min(int(math.floor(y_c / stride)), target.shape[0] - 1)
        col = min(int(math.floor(x_c / stride)), target.shape[1] - 1)
        return y_c, x_c, max(row, 0), max(col, 0)

    for box in np.asarray(boxes, np.float64).reshape(-1, 4):
        box_h, box_w = box[2] - box[0], box[3] - box[1]
        if box_h <= 0 or box_w <= 0:
            raise ValueError(f"encode_boxes: box {box.tolist()} has no area (max <= min).")
        y_c, x_c, row, col = cell_of(box)
        if box_h * box_w <= best_area[row, col]:
            continue
        best_area[row, col] = box_h * box_w
        target[row, col] = (
            x_c / stride - col,
            y_c / stride - row,
            math.log(box_w / stride),
            math.log(box_h / stride),
            1.0,
            0.0,
        )
    if ignore_boxes is not None:
        for box in np.asarray(ignore_boxes, np.float64).reshape(-1, 4):
            _, _, row, col = cell_of(box)
            if target[row, col, 4] == 0.0:
                target[row, col, 5] = 1.0
    return target


def encode_instances(instance_map, stride=DETECTOR_STRIDE, unannotated_map=None):
    """`encode_boxes` of the instances of a mask: box = the instance's extent.

    Args:
        instance_map: `(H, W)` instance map (0 background) or binary mask
            (labelled into connected components), as
            `tfcell.data.instances_from_mask` reads it.
        stride: pixels per cell (8).
        unannotated_map: optional `(H, W)` map of the objects present but not
            annotated; they become ignore cells. From
            `kept, annotated = tfcell.data.sparsify_annotations(full, 0.3)`:
            `unannotated_map = np.where(annotated, 0, full)`.

    Returns:
        The float32 `(H / stride, W / stride, 6)` target of `encode_boxes`.
    """
    instance_map = np.asarray(instance_map)
    boxes = nuclei.instances_from_mask(instance_map)["boxes"]
    ignore = None
    if unannotated_map is not None:
        ignore = nuclei.instances_from_mask(np.asarray(unannotated_map))["boxes"]
    return encode_boxes(boxes, instance_map.shape[:2], stride, ignore_boxes=ignore)
