"""Image decoding and folder-per-class scanning shared by every tfcell reader.

`load_image` decodes anything Pillow reads (TIFF, 16-bit PNG, palette, RGBA, grey)
to a uint8 `(H, W, channels)` array and turns every failure into an
`ImageReadError` that names the file and says how to fix it; the tf.data
pipeline falls back to it for the formats `tf.io` cannot decode.

`scan_class_folders` walks a `<root>/<class folder>/<image>` layout with
`os.scandir` (no decoding unless `verify=True`) and counts, in a
`tfcell.data.records.SkipLog`, every file it does not use: non-image files
(`.DS_Store`, junk), unknown class folders, empty class folders, duplicate
files (hashed only when sizes collide) and, with `verify=True`, corrupt images.
"""

import collections
import hashlib
import os
import pathlib
import struct

import numpy as np
from PIL import Image

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageReadError",
    "image_size",
    "is_image_file",
    "load_image",
    "scan_class_folders",
    "sniff_image",
    "verify_image",
]

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")

# Leading bytes of each format we accept; a file whose name says image but whose
# bytes say otherwise (the junk `.jpg` of the real PBC folders) is not an image.
_SIGNATURES = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",  # PNG
    b"II*\x00",  # TIFF little endian
    b"MM\x00*",  # TIFF big endian
    b"II+\x00",  # BigTIFF
    b"MM\x00+",
    b"BM",  # BMP
    b"GIF87a",
    b"GIF89a",
)


class ImageReadError(ValueError):
    """An image file could not be read; the message names the file and the fix."""


def is_image_file(path):
    """True when `path` has an image extension (case-insensitive) and is not hidden."""
    name = os.path.basename(str(path))
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def sniff_image(path):
    """True when the first bytes of `path` are those of a supported image format.

    Cheap (reads 12 bytes, decodes nothing): it catches non-image files that carry
    an image extension. Truncated images still pass; `verify_image` catches those.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(12)
    except OSError:
        return False
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return True
    return any(head.startswith(signature) for signature in _SIGNATURES)


def image_size(path):
    """Returns `(height, width)` of an image, reading only its header.

    PNG sizes are read straight from the IHDR chunk (the IDC patches); other
    formats through Pillow's lazy open.

    Raises:
        ImageReadError: if the header cannot be read.
    """
    path = str(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(24)
        if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
            width, height = struct.unpack(">II", head[16:24])
            return int(height), int(width)
        with Image.open(path) as image:
            width, height = image.size
        return int(height), int(width)
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ImageReadError(_read_error_message(path, error)) from error


def _read_error_message(path, error):
    if isinstance(error, FileNotFoundError):
        return f"Image file {path!r} does not exist. Check the path, or re-run the reader."
    return (
        f"Cannot read image {path!r} ({type(error).__name__}: {error}). The file is "
        "truncated, corrupt or not an image: re-download it, or delete it (or move it "
        "out of the dataset folder); readers skip and count such files with verify=True."
    )


def _to_uint8(image):
    """Converts a Pillow image of any mode to a uint8 array (grey or RGB)."""
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit (or 32-bit integer) grey: scale the full 16-bit range to 8 bit.
        array = np.asarray(image, dtype=np.float64)
        return np.clip(np.round(array / 257.0), 0, 255).astype(np.uint8)
    if mode == "F":
        array = np.asarray(image, dtype=np.float64)
        if np.nanmax(array) <= 1.0:
            array = array * 255.0
        return np.clip(np.round(np.nan_to_num(array)), 0, 255).astype(np.uint8)
    if mode in ("L", "RGB"):
        return np.asarray(image, dtype=np.uint8)
    if mode == "1":
        return np.asarray(image.convert("L"), dtype=np.uint8)
    # P (palette), PA, LA, RGBA, CMYK, YCbCr, ...: Pillow's conversion handles
    # palettes and drops alpha (as keras.utils.load_img does).
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def load_image(path, channels=3, expected_size=None):
    """Decodes an image file to a uint8 numpy array of shape `(H, W, channels)`.

    Handles grey, RGBA, palette and 16-bit images (scaled to 8 bit by `/257`),
    multi-page TIFFs (first page) and every format Pillow reads.

    Args:
        path: the image file.
        channels: 3 (RGB; grey is replicated) or 1 (grey; colour is converted
            with the ITU-R 601 luma weights).
        expected_size: optional `(height, width)`; a different size raises.

    Returns:
        A `numpy.ndarray` of dtype uint8 and shape `(H, W, channels)`.

    Raises:
        ImageReadError: naming the file, for a missing, truncated, corrupt or
            non-image file, or a size other than `expected_size`.
        ValueError: if `channels` is not 1 or 3.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3; received {channels!r}.")
    path = str(path)
    try:
        with Image.open(path) as image:
            image.load()
            array = _to_uint8(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise ImageReadError(_read_error_message(path, error)) from error
    if array.ndim == 2:
        array = array[..., None]
    if channels == 3 and array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    elif channels == 1 and array.shape[-1] == 3:
        grey = array.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        array = np.clip(np.round(grey), 0, 255).astype(np.uint8)[..., None]
    if expected_size is not None and tuple(array.shape[:2]) != tuple(expected_size):
        raise ImageReadError(
            f"Image {path!r} has size {tuple(array.shape[:2])} (height, width) but "
            f"{tuple(expected_size)} was expected. Resize it, or read the dataset with "
            "a reader option that pads or skips odd-sized images."
        )
    return array


def verify_image(path):
    """True when `path` fully decodes (catches truncated and corrupt files)."""
    try:
        with Image.open(str(path)) as image:
            image.load()
        return True
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return False


def _file_hash(path):
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def scan_class_folders(
    root,
    class_map,
    skips,
    *,
    strict=False,
    empty="error",
    dedupe=True,
    verify=False,
    sniff=True,
    extensions=IMAGE_EXTENSIONS,
):
    """Lists the images of a folder-per-class layout, counting every file it skips.

    Args:
        root: folder holding one sub-folder per class.
        class_map: dict from class-folder name to the class name it means, or to
            None for a known folder whose images are dropped (counted as
            "class outside the label space").
        skips: the caller's `tfcell.data.records.SkipLog`.
        strict: if True, a folder missing from `class_map` raises; otherwise its
            files are skipped and counted as "unknown class folder".
        empty: "error" (default) raises for a mapped class folder holding no
            image, "skip" counts the folder as "empty class folder".
        dedupe: skip byte-identical files after the first (sorted by path);
            files are hashed only when their sizes collide. A duplicate whose
            copies sit in different classes is a label conflict: every copy
            is dropped and counted.
        verify: decode every image and skip (count) the ones that fail. Slow.
        sniff: read the first bytes of each file and skip (count) files whose
            content is not an image despite their extension. Cheap.
        extensions: accepted file extensions (lower case, with the dot).

    Returns:
        A list of `(path, folder, class_name)` tuples, sorted by path, `path` a str.

    Raises:
        FileNotFoundError: if `root` is not a folder.
        ValueError: for an unknown folder with `strict=True`, or an empty class
            folder with `empty="error"`; the message names the folder and the fix.
    """
    if empty not in ("error", "skip"):
        raise ValueError(f'empty must be "error" or "skip"; received {empty!r}.')
    root = pathlib.Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"Dataset folder {str(root)!r} does not exist or is not a folder. "
            "Download the dataset (tfcell.data.download) or pass the right path."
        )
    extensions = tuple(e.lower() for e in extensions)
    found = []  # (path, folder, class_name, size)
    with os.scandir(root) as entries:
        entries = sorted(entries, key=lambda e: e.name)
    for entry in entries:
        if not entry.is_dir():
            skips.add(entry.path, "not a class folder (file at the dataset root)")
            continue
        folder = entry.name
        if folder.startswith("."):
            skips.add(entry.path, "hidden folder")
            continue
        if folder not in class_map:
            if strict:
                raise ValueError(
                    f"Unknown class folder {entry.path!r}: it is not in the class map "
                    f"{sorted(class_map)}. Add it to the class map (mapped to a class, or "
                    "to None to drop it), remove the folder, or pass strict=False to "
                    "skip and count its files."
                )
            for path in _walk_files(entry.path):
                skips.add(path, "unknown class folder")
            continue
        class_name = class_map[folder]
        images = []
        with os.scandir(entry.path) as files:
            files = sorted(files, key=lambda e: e.name)
        for file in files:
            if file.is_dir():
                for path in _walk_files(file.path):
                    skips.add(path, "nested folder inside a class folder (not read)")
                continue
            name = file.name
            if name.startswith(".") or not name.lower().endswith(extensions):
                skips.add(file.path, "not an image file")
                continue
            size = file.stat().st_size
            if size == 0:
                skips.add(file.path, "empty file (0 bytes)")
                continue
            if sniff and not sniff_image(file.path):
                skips.add(file.path, "not an image (content does not match its extension)")
                continue
            images.append((file.path, folder, class_name, size))
        if not images:
            if empty == "error" and class_name is not None:
                raise ValueError(
                    f"Class folder {entry.path!r} holds no image. Put its images back, "
                    "delete the folder, or pass empty='skip' to count it and go on."
                )
            skips.add(entry.path, "empty class folder")
            continue
        if class_name is None:
            for path, *_ in images:
                skips.add(path, "class outside the label space")
            continue
        found.extend(images)

    if dedupe:
        found = _drop_duplicates(found, skips)
    if verify:
        kept = []
        for item in found:
            if verify_image(item[0]):
                kept.append(item)
            else:
                skips.add(item[0], "corrupt or truncated image")
        found = kept
    return [(path, folder, class_name) for path, folder, class_name, _ in found]


def _walk_files(top):
    for directory, _, names in os.walk(top):
        for name in sorted(names):
            yield os.path.join(directory, name)


def _drop_duplicates(found, skips):
    by_size = collections.defaultdict(list)
    for item in found:
        by_size[item[3]].append(item)
    drop = set()
    for items in by_size.values():
        if len(items) < 2:
            continue
        by_hash = collections.defaultdict(list)
        for item in sorted(items):
            by_hash[_file_hash(item[0])].append(item)
        for copies in by_hash.values():
            if len(copies) < 2:
                continue
            if len({item[2] for item in copies}) > 1:
                # The same bytes under two classes: no copy can be trusted.
                for item in copies:
                    drop.add(item[0])
                    skips.add(item[0], "duplicate file in another class (label conflict)")
                continue
            for item in copies[1:]:
                drop.add(item[0])
                skips.add(item[0], "duplicate file")
    return [item for item in found if item[0] not in drop]
