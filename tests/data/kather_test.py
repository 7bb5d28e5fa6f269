"""Tests for tfcell.data.kather on a tiny fake Kather layout (.tif)."""

import numpy as np
import pytest
from PIL import Image

from tfcell.data import kather


def _fake(root, per_class):
    rng = np.random.default_rng(0)
    for name, count in per_class.items():
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(count):
            array = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(array).save(folder / f"{name}-{i:04d}.tif")
    return root


@pytest.fixture
def crc(tmp_path):
    train = {name: 20 + 2 * i for i, name in enumerate(kather.KATHER_CLASSES)}
    _fake(tmp_path / kather.KATHER_TRAIN_FOLDER, train)
    _fake(tmp_path / kather.KATHER_TEST_FOLDER, dict.fromkeys(kather.KATHER_CLASSES, 3))
    (tmp_path / kather.KATHER_TRAIN_FOLDER / "ADI" / ".DS_Store").write_bytes(b"x")
    return tmp_path


def test_read_kather(crc):
    frame = kather.read_kather(crc / kather.KATHER_TRAIN_FOLDER)
    assert frame.attrs["class_names"] == list(kather.KATHER_CLASSES)
    assert frame.groupby("class_name").size()["TUM"] == 36
    assert set(frame["domain"]) == {"NCT-CRC-HE-100K"}
    assert frame.attrs["skipped"]["not an image file"][0].endswith(".DS_Store")
    assert (frame["label"] == frame["class_name"].map(kather.KATHER_CLASSES.index)).all()


def test_cfal_protocol_stratified(crc):
    train, val, test = kather.cfal_protocol(crc, seed=1)
    total = sum(20 + 2 * i for i in range(9))
    assert len(train) + len(val) == total and len(test) == 27
    assert abs(len(val) / total - 0.15) < 0.01
    assert not set(train["path"]) & set(val["path"])
    share = val.groupby("class_name").size() / train.groupby("class_name").size()
    assert share.between(0.12, 0.22).all()
    again = kather.cfal_protocol(crc, seed=1)[1]
    assert list(again["path"]) == list(val["path"])


def test_cfal_protocol_missing_folder_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="zenodo.org/record/1214456"):
        kather.cfal_protocol(tmp_path)


def test_long_tailed_fractions(crc):
    assert abs(sum(kather.CFAL_LONG_TAIL_FRACTIONS.values()) - 1) < 1e-9
    assert kather.CFAL_LONG_TAIL_FRACTIONS["ADI"] == 0.052
    assert kather.CFAL_LONG_TAIL_FRACTIONS["TUM"] == 0.19
    frame = kather.read_kather(crc / kather.KATHER_TRAIN_FOLDER)
    small = kather.long_tailed(frame, total=100, seed=0)
    counts = small.groupby("class_name").size()
    assert counts["ADI"] == 5 and counts["TUM"] == 19 and len(small) == 100
    assert list(kather.long_tailed(frame, total=100, seed=0)["path"]) == list(small["path"])
    largest = kather.long_tailed(frame, total=None)
    assert largest.attrs["long_tailed"]["total"] >= 100
    with pytest.raises(ValueError, match="largest feasible total"):
        kather.long_tailed(frame, total=10_000)
    with pytest.raises(ValueError, match="sum to 1"):
        kather.long_tailed(frame, {"ADI": 0.5})


def test_paper_total_is_feasible_on_table2_counts():
    # CFAL Table II counts of NCT-CRC-HE-100K: 58,000 images at these shares fit.
    table2 = dict(
        zip(
            kather.KATHER_CLASSES,
            (10407, 10566, 11512, 11557, 8896, 13536, 8763, 10446, 14317),
            strict=True,
        )
    )
    for name, share in kather.CFAL_LONG_TAIL_FRACTIONS.items():
        assert round(share * 58_000) <= table2[name]
