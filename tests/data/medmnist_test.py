"""Tests for tfcell.data.medmnist on fake .npz files."""

import numpy as np
import pytest

from tfcell.data import medmnist


def _npz(path, shape, n_classes, grey=False):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 10), ("val", 4), ("test", 6)):
        size = (n,) + shape if grey else (n,) + shape + (3,)
        arrays[f"{split}_images"] = rng.integers(0, 256, size, dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, n_classes, (n, 1))
    np.savez(path, **arrays)
    return path


def test_load_rgb_and_grey(tmp_path):
    images, labels = medmnist.load_medmnist(_npz(tmp_path / "bloodmnist.npz", (28, 28), 8))
    assert images.shape == (10, 28, 28, 3) and images.dtype == np.uint8
    assert labels.shape == (10,) and labels.dtype == np.int64
    grey, _ = medmnist.load_medmnist(
        _npz(tmp_path / "breastmnist.npz", (28, 28), 2, grey=True), "test"
    )
    assert grey.shape == (6, 28, 28, 3)
    np.testing.assert_array_equal(grey[..., 0], grey[..., 2])
    by_name, _ = medmnist.load_medmnist("breastmnist", "val", cache_dir=tmp_path)
    assert by_name.shape == (4, 28, 28, 3)


def test_record_table(tmp_path):
    frame = medmnist.read_medmnist(_npz(tmp_path / "pathmnist.npz", (28, 28), 9), "val")
    assert frame.attrs["class_names"] == list(medmnist.MEDMNIST_CLASSES["pathmnist"])
    assert len(frame) == 4 and set(frame["domain"]) == {"pathmnist"}
    assert frame["image"][0].shape == (28, 28, 3) and (frame["path"] == "").all()


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="fetch\\('bloodmnist'"):
        medmnist.load_medmnist("bloodmnist", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="split"):
        medmnist.load_medmnist(_npz(tmp_path / "bloodmnist.npz", (4, 4), 8), "dev")
    np.savez(tmp_path / "odd.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="lacks keys"):
        medmnist.load_medmnist(tmp_path / "odd.npz")
