"""Cached, atomic, resumable downloads of the public datasets, with checksums.

`download` writes to `<file>.part` and renames when complete (never a half file
under the final name), resumes a `.part` with an HTTP Range request when the
server allows it, verifies a published checksum, and fails fast (short connect
timeout) with a message saying what to download and where to put it when the
machine is offline. `fetch(name, cache_dir)` does this for an entry of
`DATASETS` and extracts archives.
"""

import hashlib
import os
import pathlib
import shutil
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile

# `download` is left out of `__all__`: `tfcell/data/__init__.py` star-imports this
# module, and exporting a function named like the module would hide the module
# (`tfcell.data.download` must stay the module). The function is exported as
# `download_file`.
__all__ = ["DATASETS", "DownloadError", "download_file", "extract", "fetch"]


class DownloadError(RuntimeError):
    """A download failed; the message says what to fetch by hand and where to put it."""


# Public URLs given by the publishers. md5 values are the published ones
# (MedMNIST INFO table); None where no checksum is published or known here.
DATASETS = {
    "kather_100k": {
        "url": "https://zenodo.org/record/1214456/files/NCT-CRC-HE-100K.zip",
        "filename": "NCT-CRC-HE-100K.zip",
        "md5": None,  # Listed on the Zenodo record page; not verified here.
        "extract": True,
        "page": "https://zenodo.org/record/1214456",
    },
    "kather_7k": {
        "url": "https://zenodo.org/record/1214456/files/CRC-VAL-HE-7K.zip",
        "filename": "CRC-VAL-HE-7K.zip",
        "md5": None,
        "extract": True,
        "page": "https://zenodo.org/record/1214456",
    },
    "bloodmnist": {
        "url": "https://zenodo.org/records/10519652/files/bloodmnist.npz?download=1",
        "filename": "bloodmnist.npz",
        "md5": "7053d0359d879ad8a5505303e11de1dc",
        "extract": False,
        "page": "https://zenodo.org/records/10519652",
    },
    "pathmnist": {
        "url": "https://zenodo.org/records/10519652/files/pathmnist.npz?download=1",
        "filename": "pathmnist.npz",
        "md5": "a8b06965200029087d5bd730944a56c1",
        "extract": False,
        "page": "https://zenodo.org/records/10519652",
    },
    "breastmnist": {
        "url": "https://zenodo.org/records/10519652/files/breastmnist.npz?download=1",
        "filename": "breastmnist.npz",
        "md5": "750601b1f35ba3300ea97c75c52ff8f6",
        "extract": False,
        "page": "https://zenodo.org/records/10519652",
    },
    "pbc": {
        # Mendeley Data gives no stable direct file URL: download by hand.
        "url": None,
        "filename": "PBC_dataset_normal_DIB.zip",
        "md5": None,
        "extract": True,
        "page": "https://data.mendeley.com/datasets/snkd93bnjr/1",
    },
}


def _checksum(path, algorithm):
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(path, sha256, md5):
    for algorithm, expected in (("sha256", sha256), ("md5", md5)):
        if expected is None:
            continue
        actual = _checksum(path, algorithm)
        if actual.lower() != expected.lower():
            return f"{algorithm} is {actual}, expected {expected}"
    return None


def _offline_message(url, target, error):
    return (
        f"Could not download {url} ({type(error).__name__}: {error}). If this machine is "
        f"offline, download it elsewhere and put the file at {str(target)!r}; "
        "the next call will find it there (and check its checksum)."
    )


def download(url, dest_dir, *, filename=None, sha256=None, md5=None, timeout=10.0):
    """Downloads `url` into `dest_dir` (cached, atomic, resumable, checksummed).

    Args:
        url: http(s) or file URL.
        dest_dir: folder for the file (created).
        filename: name of the file (default: the last part of the URL path).
        sha256, md5: expected checksums (hex); a mismatch deletes the download.
        timeout: seconds to wait for a connection or a read (short, so an
            offline machine fails fast).

    Returns:
        The `pathlib.Path` of the complete file.

    Raises:
        DownloadError: offline, HTTP error or checksum mismatch; the message
            says what to download and where to put it.
    """
    dest_dir = pathlib.Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    if filename is None:
        filename = os.path.basename(urllib.parse.urlparse(url).path) or "download"
    target = dest_dir / filename
    if target.exists():
        problem = _verify(target, sha256, md5)
        if problem is None:
            return target
        raise DownloadError(
            f"Cached file {str(target)!r} fails its checksum ({problem}). Delete it and "
            f"download {url} again."
        )
    part = target.with_name(target.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "tfcell"})
    if offset and urllib.parse.urlparse(url).scheme in ("http", "https"):
        request.add_header("Range", f"bytes={offset}-")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = getattr(response, "status", None) or response.getcode()
            # 206: the server resumes; anything else sends the whole file again.
            mode = "ab" if offset and status == 206 else "wb"
            with open(part, mode) as handle:
                shutil.copyfileobj(response, handle, length=1 << 20)
    except urllib.error.HTTPError as error:
        # 416: the .part already holds the whole file; let the checksum judge it.
        if not (error.code == 416 and offset):
            raise DownloadError(_offline_message(url, target, error)) from error
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise DownloadError(_offline_message(url, target, error)) from error
    problem = _verify(part, sha256, md5)
    if problem is not None:
        part.unlink()
        raise DownloadError(
            f"Download of {url} is corrupt ({problem}); the partial file was deleted. "
            f"Try again, or download it by hand to {str(target)!r}."
        )
    os.replace(part, target)
    return target


download_file = download


def extract(archive, dest):
    """Extracts a zip or tar(.gz/.bz2/.xz) archive into `dest` (created).

    Members that would land outside `dest` (absolute paths, `..`) are refused.

    Returns:
        `pathlib.Path(dest)`.
    """
    archive, dest = pathlib.Path(archive), pathlib.Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()

    def _check(name):
        target = (root / name).resolve()
        if root != target and root not in target.parents:
            raise ValueError(f"Archive {str(archive)!r} member {name!r} escapes {str(dest)!r}.")

    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as handle:
            for name in handle.namelist():
                _check(name)
            handle.extractall(dest)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as handle:
            members = handle.getmembers()
            for member in members:
                _check(member.name)
                if member.issym() or member.islnk():
                    _check(os.path.join(os.path.dirname(member.name), member.linkname))
            handle.extractall(dest, members=members)
    else:
        raise ValueError(
            f"{str(archive)!r} is neither a zip nor a tar archive; it may be a partial "
            "download: delete it and fetch again."
        )
    return dest


def fetch(name, cache_dir, *, timeout=10.0, registry=None):
    """Downloads (and extracts) a registered dataset into `cache_dir`.

    Args:
        name: a key of `DATASETS` (or of `registry`).
        cache_dir: where the file goes (and is extracted).
        timeout: connection/read timeout in seconds.
        registry: optional dict overriding `DATASETS` (tests, mirrors).

    Returns:
        The path of the downloaded file, or of `cache_dir` when it was extracted.

    Raises:
        KeyError: unknown name. DownloadError: as in `download`, or a dataset
            without a direct URL (the message gives its page).
    """
    registry = DATASETS if registry is None else registry
    if name not in registry:
        raise KeyError(f"Unknown dataset {name!r}; known: {sorted(registry)}.")
    entry = registry[name]
    cache_dir = pathlib.Path(cache_dir)
    target = cache_dir / entry["filename"]
    if entry.get("url") is None and not target.exists():
        raise DownloadError(
            f"{name} has no direct download URL. Download {entry['filename']} from "
            f"{entry.get('page')} and put it at {str(target)!r}."
        )
    path = target
    if entry.get("url") is not None:
        path = download(
            entry["url"],
            cache_dir,
            filename=entry["filename"],
            md5=entry.get("md5"),
            sha256=entry.get("sha256"),
            timeout=timeout,
        )
    if entry.get("extract"):
        marker = cache_dir / f".{entry['filename']}.extracted"
        if not marker.exists():
            extract(path, cache_dir)
            marker.touch()
        return cache_dir
    return path
