"""Decoded-image cache: a record table's images decoded and resized once per run.

`decoded_images(records, image_size)` returns uint8 `(N, H, W, 3)`, row i being
`records.iloc[i]`, decoded and resized by `pipeline.preload_images` (tf.io,
in parallel; the same decode, pad and resize as `pipeline.from_records`). The
array feeds `pipeline.from_arrays` every epoch, so a run decodes each file once.

Two levels:

- in memory, for the process: a small dict (the last `_MEMORY_ENTRIES`
  arrays); a second call with the same files, size and padding returns the
  same (read-only) array without decoding;
- on disk, when `cache_dir` is given: `<cache_dir>/<key>.npy`, written to a
  temporary file and renamed (`os.replace`), so a killed run never leaves a
  half file under the final name and a resumed or repeated run skips decoding.

The key is a SHA-256 of a format version, the image size, `pad_small`,
`pad_value` and, per row in order, the absolute path, the file size and its
modification time in nanoseconds: a rewritten or touched file, another order,
another size or padding never hits a stale entry. In-memory tables (an `image`
column and empty paths, as `tfcell.data.synthetic` returns) are keyed on a hash
of the pixels and resized with `tfcell.data.decode.fit_size`.

`clear_memory_cache()` empties the in-memory level; delete the `.npy` files of
`cache_dir` to empty the disk level.
"""

import collections
import hashlib
import logging
import os
import tempfile
import time

import numpy as np
import tensorflow as tf

from tfcell.data import decode, pipeline

__all__ = ["decoded_images", "clear_memory_cache"]

logger = logging.getLogger("tfcell.data")

# Bump when the decoded pixels of an unchanged file would change (decoder,
# resize method, rounding), so that old disk entries are never read again.
_FORMAT_VERSION = 1
_MEMORY_ENTRIES = 8
_MEMORY = collections.OrderedDict()


def clear_memory_cache():
    """Forgets every array held in memory (the disk cache is left as it is)."""
    _MEMORY.clear()


def _as_size(image_size):
    if image_size is None:
        raise ValueError(
            "decoded_images needs an image_size (int or (height, width)) to stack "
            "images of different sizes; received None."
        )
    size = (image_size, image_size) if np.ndim(image_size) == 0 else tuple(image_size)
    if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
        raise ValueError(
            f"image_size must be a positive int or a (height, width) pair; received {image_size!r}."
        )
    return (int(size[0]), int(size[1]))


def _as_pad_small(pad_small):
    if isinstance(pad_small, (bool, np.bool_)):
        return bool(pad_small)
    try:
        target = tuple(int(s) for s in pad_small)
    except TypeError:
        target = ()
    if len(target) != 2 or min(target) < 1:
        raise ValueError(
            "pad_small must be True (pad to image_size), False (resize only) or a "
            f"(height, width) native size such as (50, 50) for IDC; received {pad_small!r}."
        )
    return target


def _in_memory(records):
    return "image" in records.columns and bool((records["path"].astype(str) == "").all())


def _key(records, size, pad_small, pad_value):
    digest = hashlib.sha256()
    digest.update(repr((_FORMAT_VERSION, size, pad_small, int(pad_value))).encode())
    if _in_memory(records):
        digest.update(b"in-memory")
        for image in records["image"]:
            image = np.ascontiguousarray(image)
            digest.update(repr((image.shape, image.dtype.str)).encode())
            digest.update(image.data)
        return digest.hexdigest()
    paths = records["path"].astype(str).to_list()
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            pipeline.validate_files(paths)  # Raises an ImageError naming every bad file.
            raise
        digest.update(f"{os.path.abspath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _to_uint8(image):
    return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)


def _resize_in_memory(images, size, pad_small, pad_value):
    """Pads and resizes in-memory images as the file pipeline does, one shape
    group at a time (a table may mix sizes), in a parallel tf.data map."""
    out = np.zeros((len(images), *size, 3), "uint8")
    groups = collections.defaultdict(list)
    for i, image in enumerate(images):
        groups[np.shape(image)].append(i)
    for shape, rows in groups.items():
        stack = np.stack([np.asarray(images[i]) for i in rows])
        if stack.ndim == 3:  # Grey (H, W): three equal channels, as tf.io decodes.
            stack = stack[..., None]
        if stack.shape[-1] == 1:
            stack = np.repeat(stack, 3, axis=-1)
        if stack.shape[-1] != 3:
            raise ValueError(
                f"in-memory images must have 1 or 3 channels; received shape {shape}. "
                "Convert them to RGB first."
            )
        dataset = tf.data.Dataset.from_tensor_slices(stack).map(
            lambda image: _to_uint8(decode.fit_size(image, size, pad_small, pad_value)),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        out[rows] = np.concatenate(list(dataset.batch(256).as_numpy_iterator()))
    return out


def _load(path, n, size):
    try:
        images = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        logger.warning("ignoring the unreadable decoded-image cache %s (%s)", path, error)
        return None
    if images.dtype != np.uint8 or images.shape != (n, *size, 3):
        logger.warning(
            "ignoring the decoded-image cache %s: shape %s %s, expected (%d, %d, %d, 3) uint8",
            path, images.shape, images.dtype, n, *size,
        )  # fmt: skip
        return None
    return images


def _save(path, images):
    """Writes `images` to `path` atomically: a temporary file, then os.replace."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npy", dir=folder)
    try:
        with os.fdopen(handle, "wb") as f:
            np.save(f, images, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def decoded_images(records, image_size, *, pad_small=True, pad_value=255, cache_dir=None):
    """All images of a record table, decoded and resized once, as uint8 (N, H, W, 3).

    Row i is `records.iloc[i]`. Decoding is `pipeline.preload_images` (the file
    pipeline's decode, pad and resize, in parallel), after the header check of
    `pipeline.validate_files` so a bad file fails with its name. The result is
    kept in memory for the process and, with `cache_dir`, on disk; see the
    module docstring for the key. The array is read-only: it is shared by every
    caller that asks for the same images.

    Args:
        records: a record table (`tfcell.data.records`), or an in-memory table
            (`image` column, empty `path`) as `tfcell.data.synthetic` returns.
        image_size: int or (height, width) every image is resized to.
        pad_small: as in `pipeline.from_records`: True pads images smaller than
            `image_size` with `pad_value` instead of upscaling them; a (height,
            width) pads images smaller than that native size to it first, then
            resizes (IDC: `(50, 50)`, the size `tfcell.data.read_idc` promises);
            False resizes only. Padding goes to the bottom and right.
        pad_value: the padding colour (255: white glass).
        cache_dir: folder for `<key>.npy` files, or None for memory only.

    Returns:
        A read-only uint8 NumPy array (len(records), height, width, 3).

    Example:

    ```python
    frame = tfcell.data.read_idc("../shared/data/idc")
    images = tfcell.data.decoded_images(frame, 32, pad_small=(50, 50), cache_dir="/tmp/tfcell")
    dataset = tfcell.data.from_arrays(images, frame["label"].to_numpy(), batch_size=64)
    ```
    """
    size = _as_size(image_size)
    pad_small = _as_pad_small(pad_small)
    if not 0 <= pad_value <= 255 or int(pad_value) != pad_value:
        raise ValueError(f"pad_value must be an int in [0, 255]; received {pad_value!r}.")
    pad_value = int(pad_value)
    n = len(records)
    start = time.perf_counter()
    key = _key(records, size, pad_small, pad_value)
    path = None if cache_dir is None else os.path.join(os.fspath(cache_dir), f"{key}.npy")
    if key in _MEMORY:
        _MEMORY.move_to_end(key)
        logger.debug("decoded images: %d at %dx%d from memory (key %s)", n, *size, key[:12])
        if path is not None and not os.path.exists(path):  # Decoded earlier without cache_dir.
            _save(path, _MEMORY[key])
        return _MEMORY[key]
    images = _load(path, n, size) if path is not None and os.path.exists(path) else None
    if images is not None:
        logger.info(
            "decoded images: loaded %d at %dx%d from %s in %.2f s",
            n, *size, path, time.perf_counter() - start,
        )  # fmt: skip
    else:
        if _in_memory(records):
            images = _resize_in_memory(records["image"].to_list(), size, pad_small, pad_value)
            source = "in-memory images"
        else:
            paths = records["path"].astype(str).to_list()
            pipeline.validate_files(paths)
            images = pipeline.preload_images(paths, size, pad_small, pad_value)
            source = "files"
        images = np.ascontiguousarray(images, "uint8")
        logger.info(
            "decoded images: decoded %d %s to %dx%d (pad_small=%s) in %.2f s",
            n, source, *size, pad_small, time.perf_counter() - start,
        )  # fmt: skip
        if path is not None:
            _save(path, images)
            logger.info("decoded images: wrote %s (%.1f MB)", path, images.nbytes / 1e6)
    images.flags.writeable = False
    _MEMORY[key] = images
    while len(_MEMORY) > _MEMORY_ENTRIES:
        _MEMORY.popitem(last=False)
    return images
