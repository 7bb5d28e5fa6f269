"""Reading image files for the pipelines: validation, decoding, fitting to a size.

Shared by `tfcell.data.pipeline` (tf.data over files and arrays) and
`tfcell.data.cache` (decode once per run):

    validate_files(paths)       every bad file named in one `ImageError`
    check_images(images)        NaN / inf float images named by index
    decode(path, python_reader) one file -> uint8 (H, W, 3) inside tf.data
                                (tf.io; TIFF and other formats through
                                `tfcell.data.image_io` in a numpy_function)
    pad_to_target, fit_size, fit_size_uint8
                                pad images smaller than a target (IDC edge
                                patches, white glass) instead of upscaling
                                them, then resize (skipped when the image
                                already has the size)
"""

import os

import numpy as np
import tensorflow as tf

__all__ = [
    "ImageError",
    "as_size",
    "check_images",
    "decode",
    "fit_size",
    "fit_size_uint8",
    "needs_python_reader",
    "pad_to_target",
    "validate_files",
]

AUTOTUNE = tf.data.AUTOTUNE

_TF_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


_SIGNATURES = {
    b"\xff\xd8": "jpeg",
    b"\x89PNG": "png",
    b"BM": "bmp",
    b"GIF8": "gif",
    b"II*\x00": "tiff",
    b"MM\x00*": "tiff",
}


class ImageError(ValueError):
    """An image file that cannot be read; the message names the file(s)."""


def _signature(head):
    for magic, kind in _SIGNATURES.items():
        if head.startswith(magic):
            return kind
    return None


def _check_header(path):
    """Returns None when the file looks like a complete image, else the reason."""
    try:
        size = os.path.getsize(path)
    except OSError:
        return "missing"
    if size == 0:
        return "empty file"
    with open(path, "rb") as handle:
        head = handle.read(16)
        handle.seek(max(size - 64, 0))
        tail = handle.read(64)
    kind = _signature(head)
    if kind is None:
        return "not an image (unknown file signature)"
    suspect = (kind == "jpeg" and b"\xff\xd9" not in tail) or (
        kind == "png" and b"IEND" not in tail
    )
    if suspect:
        # No end marker: probably truncated; some writers append bytes, so decode to be sure.
        try:
            tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        except (tf.errors.InvalidArgumentError, tf.errors.OpError):
            return f"truncated or corrupt {kind.upper()} (no end marker, decoding fails)"
    return None


def needs_python_reader(path):
    return not str(path).lower().endswith(_TF_EXTENSIONS)


def validate_files(paths, mode="header", num_parallel_calls=AUTOTUNE):
    """Raises `ImageError` naming every file that cannot be decoded.

    Args:
        paths: image file paths.
        mode: "header" (cheap: existence, signature, end marker) or "decode"
            (every file decoded once with the pipeline's decoder, in parallel).
    """
    paths = [str(p) for p in paths]
    bad = {}
    for path in paths:
        reason = _check_header(path)
        if reason is not None:
            bad[path] = reason
    if mode == "decode" and not bad:
        python_reader = np.array([needs_python_reader(p) for p in paths], bool)
        any_python = bool(python_reader.any())
        dataset = tf.data.Dataset.from_tensor_slices((np.arange(len(paths)), paths, python_reader))
        dataset = dataset.map(
            lambda i, p, r: (i, tf.shape(decode(p, r, any_python))),
            num_parallel_calls=num_parallel_calls,
        ).ignore_errors()
        ok = {int(i) for i, _ in dataset.as_numpy_iterator()}
        bad = {p: "cannot be decoded" for i, p in enumerate(paths) if i not in ok}
    if bad:
        lines = "\n".join(f"  {path}: {reason}" for path, reason in list(bad.items())[:20])
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise ImageError(
            f"{len(bad)} image file(s) cannot be read:\n{lines}{more}\n"
            "Remove or replace them, or re-read the folder with the tfcell reader, "
            "which skips and counts bad files."
        )


def check_images(images, where="images", chunk=1024):
    """Raises ValueError naming the indices of float images with NaN or inf values.

    Integer images (uint8) are always finite and are not scanned; float
    arrays are scanned in chunks of `chunk` images to bound the memory used.
    """
    images = np.asarray(images)
    if not np.issubdtype(images.dtype, np.floating) or images.size == 0:
        return
    bad = []
    for start in range(0, len(images), chunk):
        part = images[start : start + chunk]
        finite = np.isfinite(part.reshape(len(part), -1)).all(axis=1)
        bad.extend((start + np.flatnonzero(~finite)).tolist())
    if bad:
        shown = ", ".join(str(i) for i in bad[:10])
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise ValueError(
            f"{where}: {len(bad)} image(s) contain NaN or inf values, at index {shown}{more}. "
            "A NaN image makes the whole batch's loss NaN. Drop or repair them, e.g. keep "
            "images[np.isfinite(images).reshape(len(images), -1).all(axis=1)]."
        )


def _python_load(path):
    from tfcell.data import image_io  # Lazy: the reader module is optional here.

    path = path.decode() if isinstance(path, bytes) else str(path)
    return np.asarray(image_io.load_image(path, channels=3), "uint8")


def decode(path, python_reader, any_python=True):
    """Decodes one file to uint8 (H, W, 3); `python_reader` picks image_io for
    formats tf.io lacks (the numpy_function branch exists only if `any_python`)."""

    def tf_decode():
        return tf.io.decode_image(
            tf.io.read_file(path), channels=3, dtype=tf.uint8, expand_animations=False
        )

    if any_python:
        image = tf.cond(
            python_reader,
            lambda: tf.numpy_function(_python_load, [path], tf.uint8, stateful=False),
            tf_decode,
        )
    else:
        image = tf_decode()
    image.set_shape([None, None, 3])
    return image


def fit_size(image, image_size, pad_small, pad_value):
    """Pads images smaller than the pad target (IDC edge patches), then resizes;
    float32. An image already of `image_size` is only cast (the bilinear
    resize to the same size is the identity, so the values are the same)."""
    if image_size is None:
        return tf.cast(image, tf.float32)
    image = pad_to_target(image, image_size, pad_small, pad_value)
    return _resize_unless_fitting(image, image_size, lambda x: tf.cast(x, tf.float32), lambda x: x)


def fit_size_uint8(image, image_size, pad_small, pad_value):
    """`fit_size` rounded to uint8; an image already of `image_size` keeps its
    decoded uint8 pixels untouched (no float32 round trip, no extra pass)."""
    if image_size is None:
        return image
    image = pad_to_target(image, image_size, pad_small, pad_value)
    return _resize_unless_fitting(
        image,
        image_size,
        lambda x: tf.cast(x, tf.uint8),  # a no-op on decoded uint8 images
        lambda x: tf.cast(tf.round(tf.clip_by_value(x, 0.0, 255.0)), tf.uint8),
    )


def _resize_unless_fitting(image, image_size, as_is, after_resize):
    """`as_is(image)` when it already has `image_size`, else
    `after_resize(bilinear resize of the float32 image)`."""
    height, width = image_size
    shape = tf.shape(image)
    fits = tf.logical_and(tf.equal(shape[0], height), tf.equal(shape[1], width))
    out = tf.cond(
        fits,
        lambda: as_is(image),
        lambda: after_resize(tf.image.resize(tf.cast(image, tf.float32), image_size)),
    )
    out.set_shape([height, width, image.shape[-1]])
    return out


def pad_to_target(image, image_size, pad_small, pad_value):
    """Pads an image smaller than the target at the bottom and right with
    `pad_value`: the target is `image_size` when `pad_small` is True, the given
    (h, w) otherwise (IDC: (50, 50)); False or an image not smaller: unchanged."""
    height, width = image_size
    if pad_small:
        target = (height, width) if pad_small is True else tuple(pad_small)
        shape = tf.shape(image)
        pad_h = tf.maximum(target[0] - shape[0], 0)
        pad_w = tf.maximum(target[1] - shape[1], 0)
        small = tf.logical_and(shape[0] <= target[0], shape[1] <= target[1])
        image = tf.cond(
            small,
            lambda: tf.pad(image, [[0, pad_h], [0, pad_w], [0, 0]], constant_values=pad_value),
            lambda: image,
        )
    return image


def as_size(image_size):
    """An int or (height, width) as a (height, width) tuple; None stays None."""
    if image_size is None or isinstance(image_size, (tuple, list)):
        return None if image_size is None else tuple(int(s) for s in image_size)
    return (int(image_size), int(image_size))
