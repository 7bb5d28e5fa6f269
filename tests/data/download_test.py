"""Tests for tfcell.data.download against file:// URLs and a local HTTP server."""

import contextlib
import functools
import hashlib
import http.server
import io
import tarfile
import threading
import time
import zipfile

import pytest

from tfcell.data import download

PAYLOAD = bytes(range(256)) * 400


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files, honouring `Range: bytes=N-` (SimpleHTTPRequestHandler does not)."""

    ranges = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        header = self.headers.get("Range")
        path = self.translate_path(self.path)
        try:
            data = open(path, "rb").read()
        except OSError:
            self.send_error(404)
            return
        type(self).ranges.append(header)
        if header and header.startswith("bytes="):
            start = int(header[len("bytes=") :].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            data = data[start:]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextlib.contextmanager
def _server(directory):
    handler = functools.partial(_RangeHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.timeout = 1
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def source(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "data.bin").write_bytes(PAYLOAD)
    return folder


def test_file_url_cached_and_checksummed(source, tmp_path):
    url = (source / "data.bin").as_uri()
    md5 = hashlib.md5(PAYLOAD).hexdigest()
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    path = download.download(url, tmp_path / "cache", md5=md5, sha256=sha)
    assert path.read_bytes() == PAYLOAD and not path.with_name("data.bin.part").exists()
    (source / "data.bin").unlink()  # cached: the source is no longer needed
    assert download.download(url, tmp_path / "cache", md5=md5) == path


def test_checksum_mismatch_deletes_part(source, tmp_path):
    with pytest.raises(download.DownloadError, match="md5 is .*expected 0+"):
        download.download((source / "data.bin").as_uri(), tmp_path / "c", md5="0" * 32)
    assert list((tmp_path / "c").iterdir()) == []


def test_http_resume_with_range(source, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "data.bin.part").write_bytes(PAYLOAD[:1000])
    _RangeHandler.ranges = []
    with _server(source) as base:
        path = download.download(
            f"{base}/data.bin", cache, sha256=hashlib.sha256(PAYLOAD).hexdigest()
        )
    assert path.read_bytes() == PAYLOAD
    assert _RangeHandler.ranges == ["bytes=1000-"]


def test_http_error_and_offline_fail_fast(source, tmp_path):
    with _server(source) as base:
        with pytest.raises(download.DownloadError, match="put the file at"):
            download.download(f"{base}/missing.zip", tmp_path / "c")
    start = time.monotonic()
    # Nothing listens on port 9 of 127.0.0.1: refused at once, as offline.
    with pytest.raises(download.DownloadError, match="offline.*missing.zip"):
        download.download("http://127.0.0.1:9/missing.zip", tmp_path / "c", timeout=2)
    assert time.monotonic() - start < 5


def test_extract_zip_and_tar(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("ds/ADI/x.tif", b"1")
    assert (download.extract(archive, tmp_path / "out") / "ds" / "ADI" / "x.tif").exists()
    tar = tmp_path / "a.tar.gz"
    with tarfile.open(tar, "w:gz") as handle:
        info = tarfile.TarInfo("ds/b.txt")
        info.size = 1
        handle.addfile(info, io.BytesIO(b"2"))
    assert (download.extract(tar, tmp_path / "out2") / "ds" / "b.txt").read_bytes() == b"2"
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as handle:
        handle.writestr("../escape.txt", b"x")
    with pytest.raises(ValueError, match="escapes"):
        download.extract(evil, tmp_path / "out3")
    (tmp_path / "not.zip").write_bytes(b"nope")
    with pytest.raises(ValueError, match="neither a zip nor a tar"):
        download.extract(tmp_path / "not.zip", tmp_path / "out4")


def test_fetch_registry(tmp_path):
    archive = tmp_path / "NCT-CRC-HE-100K.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("NCT-CRC-HE-100K/ADI/a.tif", b"1")
    registry = {
        "kather_100k": {
            "url": archive.as_uri(),
            "filename": archive.name,
            "md5": hashlib.md5(archive.read_bytes()).hexdigest(),
            "extract": True,
        },
        "manual": {"url": None, "filename": "x.zip", "page": "https://example.org/x"},
    }
    out = download.fetch("kather_100k", tmp_path / "cache", registry=registry)
    assert (out / "NCT-CRC-HE-100K" / "ADI" / "a.tif").exists()
    with pytest.raises(download.DownloadError, match="example.org/x.*x.zip"):
        download.fetch("manual", tmp_path / "cache", registry=registry)
    with pytest.raises(KeyError):
        download.fetch("nope", tmp_path)


def test_registry_entries():
    assert download.DATASETS["bloodmnist"]["md5"] == "7053d0359d879ad8a5505303e11de1dc"
    assert "1214456" in download.DATASETS["kather_7k"]["url"]
    for entry in download.DATASETS.values():
        assert entry["filename"] and entry["page"].startswith("https://")


def test_module_not_hidden_by_star_import():
    import tfcell.data

    assert tfcell.data.download.download is tfcell.data.download_file
    assert tfcell.data.fetch is download.fetch
