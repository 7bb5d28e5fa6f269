"""Tests for tfcell.data.image_io: decoding odd images and scanning class folders."""

import numpy as np
import pytest
from PIL import Image

from tfcell.data import image_io, records


def _write(path, array=None, mode="RGB", size=(8, 6), **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    if array is None:
        rng = np.random.default_rng(abs(hash(str(path))) % 2**32)
        array = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(array).convert(mode).save(path, **kwargs)
    return path


def test_rgb_grey_rgba_palette(tmp_path):
    rgb = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    out = image_io.load_image(_write(tmp_path / "a.png", rgb))
    np.testing.assert_array_equal(out, rgb)
    grey = image_io.load_image(_write(tmp_path / "g.png", rgb, mode="L"))
    assert grey.shape == (6, 8, 3) and grey.dtype == np.uint8
    assert np.all(grey[..., 0] == grey[..., 1])
    rgba = image_io.load_image(_write(tmp_path / "r.png", rgb, mode="RGBA"))
    np.testing.assert_array_equal(rgba, rgb)
    pal = image_io.load_image(_write(tmp_path / "p.png", rgb, mode="P"))
    assert pal.shape == (6, 8, 3)
    assert image_io.load_image(tmp_path / "a.png", channels=1).shape == (6, 8, 1)


def test_16bit_scaled_to_8bit(tmp_path):
    values = np.array([[0, 257, 65535, 32896]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    out = image_io.load_image(path)
    np.testing.assert_array_equal(out[0, :, 0], [0, 1, 255, 128])
    tif = tmp_path / "deep.tif"
    Image.fromarray(values).save(tif)
    np.testing.assert_array_equal(image_io.load_image(tif)[0, :, 1], [0, 1, 255, 128])


def test_tiff_and_bmp(tmp_path):
    rgb = np.full((4, 5, 3), 7, np.uint8)
    for name in ("x.tif", "x.tiff", "x.bmp"):
        np.testing.assert_array_equal(image_io.load_image(_write(tmp_path / name, rgb)), rgb)


def test_truncated_and_junk_raise_naming_file(tmp_path):
    good = _write(tmp_path / "ok.jpg", size=(64, 64))
    data = good.read_bytes()
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(data[: len(data) // 3])
    junk = tmp_path / "junk.jpg"
    junk.write_text("<html>not an image</html>")
    for bad in (truncated, junk, tmp_path / "missing.png"):
        with pytest.raises(image_io.ImageReadError, match=bad.name) as info:
            image_io.load_image(bad)
        assert isinstance(info.value, ValueError)
        assert "delete" in str(info.value) or "Check the path" in str(info.value)
    assert not image_io.sniff_image(junk) and image_io.sniff_image(truncated)
    assert not image_io.verify_image(truncated) and image_io.verify_image(good)


def test_expected_size(tmp_path):
    path = _write(tmp_path / "s.png", size=(8, 6))
    assert image_io.image_size(path) == (6, 8)
    assert image_io.image_size(_write(tmp_path / "s.tif", size=(8, 6))) == (6, 8)
    image_io.load_image(path, expected_size=(6, 8))
    with pytest.raises(image_io.ImageReadError, match=r"s\.png.*\(6, 8\)"):
        image_io.load_image(path, expected_size=(50, 50))


def test_is_image_file():
    assert image_io.is_image_file("a/B.TIFF") and image_io.is_image_file("x.jpeg")
    assert not image_io.is_image_file(".DS_Store") and not image_io.is_image_file("a/.x.jpg")
    assert not image_io.is_image_file("notes.txt")


def _layout(tmp_path):
    root = tmp_path / "ds"
    for i in range(3):
        _write(root / "a" / f"a{i}.png", size=(8 + i, 6))
        _write(root / "b" / f"b{i}.jpg", size=(8 + i, 6))
    (root / "a" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "a" / "junk.jpg").write_text("junk")
    (root / "a" / "notes.txt").write_text("x")
    (root / "a" / "empty.png").write_bytes(b"")
    (root / "b" / "a0_copy.png").write_bytes((root / "a" / "a0.png").read_bytes())
    (root / "a" / "a1_copy.png").write_bytes((root / "a" / "a1.png").read_bytes())
    _write(root / "zzz" / "z.png")
    return root


def test_scan_counts_every_skip(tmp_path):
    root = _layout(tmp_path)
    skips = records.SkipLog("t")
    found = image_io.scan_class_folders(root, {"a": "A", "b": "B"}, skips)
    counts = skips.counts()
    assert counts["not an image file"] == 2  # .DS_Store, notes.txt
    assert counts["not an image (content does not match its extension)"] == 1  # junk.jpg
    assert counts["empty file (0 bytes)"] == 1
    assert counts["unknown class folder"] == 1
    assert counts["duplicate file"] == 1  # a1_copy
    assert counts["duplicate file in another class (label conflict)"] == 2  # a0 and its copy
    names = sorted(p.split("/")[-1] for p, _, _ in found)
    assert names == ["a1.png", "a2.png", "b0.jpg", "b1.jpg", "b2.jpg"]
    assert {c for _, _, c in found} == {"A", "B"}


def test_scan_strict_empty_and_drop(tmp_path):
    root = _layout(tmp_path)
    with pytest.raises(ValueError, match="zzz.*strict=False"):
        image_io.scan_class_folders(root, {"a": "A", "b": "B"}, records.SkipLog("t"), strict=True)
    (root / "c").mkdir()
    with pytest.raises(ValueError, match="c' holds no image.*empty='skip'"):
        image_io.scan_class_folders(root, {"a": "A", "b": "B", "c": "C"}, records.SkipLog("t"))
    skips = records.SkipLog("t")
    found = image_io.scan_class_folders(
        root, {"a": "A", "b": None, "c": "C", "zzz": "Z"}, skips, empty="skip"
    )
    assert skips.counts()["empty class folder"] == 1
    assert skips.counts()["class outside the label space"] == 4
    assert {c for _, _, c in found} == {"A", "Z"}
    with pytest.raises(FileNotFoundError, match="nowhere"):
        image_io.scan_class_folders(tmp_path / "nowhere", {}, records.SkipLog("t"))


def test_scan_verify_skips_truncated(tmp_path):
    root = tmp_path / "ds"
    good = _write(root / "a" / "good.jpg", size=(64, 64))
    (root / "a" / "cut.jpg").write_bytes(good.read_bytes()[:200])
    skips = records.SkipLog("t")
    assert len(image_io.scan_class_folders(root, {"a": "A"}, skips)) == 2
    skips = records.SkipLog("t")
    found = image_io.scan_class_folders(root, {"a": "A"}, skips, verify=True)
    assert [p.split("/")[-1] for p, _, _ in found] == ["good.jpg"]
    assert skips.as_dict()["corrupt or truncated image"][0].endswith("cut.jpg")
