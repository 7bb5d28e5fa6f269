"""Stateless augmentation for the tf.data pipelines' fast paths (see
`tfcell.data.augmentation`, which re-exports these):

    PerImageAugmentation  per-image stateless ops inside the parallel decode map
    BatchAugmentation     the same operations vectorised over a batch
    RandomDihedral        flips + 90-degree turns as one pixel-index gather per batch

Deterministic under a seed: one stateless seed per image or per batch, drawn
in order by `tfcell.data.pipeline`, so the maps can run in parallel.
"""

import numpy as np

__all__ = [
    "PerImageAugmentation",
    "BatchAugmentation",
    "RandomDihedral",
]


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
        grey = getattr(aug, "grayscale", 0.0)
        self.grayscale = uniform(7, 0, 1) < grey if grey else None


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
    if draws.grayscale is not None:
        grey = tf.broadcast_to(tf.image.rgb_to_grayscale(images), tf.shape(images))
        images = tf.where(tf.reshape(draws.grayscale, (-1, 1, 1, 1)), grey, images)
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
    1 + contrast] about the per-channel mean), hue, saturation, and with
    probability `grayscale` the grey image (torchvision's RandomGrayscale, in
    mdlt's training augmentation).

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
        grayscale=0.0,
    ):
        self.flips = flips
        self.rotation = rotation
        self.brightness = brightness
        self.contrast = contrast
        self.hue = hue
        self.saturation = saturation
        self.fuse_resize = fuse_resize
        if not 0.0 <= grayscale <= 1.0:
            raise ValueError(f"grayscale is a probability in [0, 1]; received {grayscale!r}.")
        self.grayscale = float(grayscale)

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
        if self.grayscale:
            draw = tf.random.stateless_uniform([], seeds[7], 0.0, 1.0)
            grey = tf.broadcast_to(tf.image.rgb_to_grayscale(image), tf.shape(image))
            image = tf.where(draw < self.grayscale, grey, image)
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
