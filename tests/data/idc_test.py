"""Tests for tfcell.data.idc on a fake layout and on the real IDC patches."""

import numpy as np
import pytest
from PIL import Image

from tfcell.data import idc


def _patch(path, size=(50, 50)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[0], size[1], 3), 200, np.uint8)).save(path)


def _fake(root):
    for patient in ("10253", "8863"):
        for label in (0, 1):
            for x in (1, 51):
                name = f"{patient}_idx5_x{x}_y101_class{label}.png"
                _patch(root / patient / str(label) / name)
    _patch(root / "8863" / "0" / "8863_idx5_x2001_y1_class0.png", size=(27, 50))
    (root / "8863" / "0" / ".DS_Store").write_bytes(b"x")
    return root


@pytest.mark.parametrize("nested", [False, True])
def test_read_idc(tmp_path, nested):
    root = _fake(tmp_path / (idc.IDC_FOLDER if nested else "patients"))
    frame = idc.read_idc(tmp_path if nested else root)
    assert len(frame) == 9 and frame.attrs["small_patches"] == 1
    row = frame[frame["height"] == 27].iloc[0]
    assert (row["subject"], row["x"], row["y"], row["width"]) == ("8863", 2001, 1, 50)
    assert set(frame["subject"]) == {"10253", "8863"}
    assert frame.attrs["skipped"] == {"not an image file": [str(root / "8863/0/.DS_Store")]}
    assert frame.attrs["class_names"] == ["non_idc", "idc"]


def test_small_patches_skip_and_error(tmp_path):
    root = _fake(tmp_path / "p")
    frame = idc.read_idc(root, small_patches="skip")
    assert len(frame) == 8 and len(frame.attrs["skipped"]["patch smaller than 50x50"]) == 1
    with pytest.raises(ValueError, match="x2001_y1.*27x50"):
        idc.read_idc(root, small_patches="error")


def test_class_mismatch_names_file(tmp_path):
    root = _fake(tmp_path / "p")
    _patch(root / "8863" / "1" / "8863_idx5_x9_y9_class0.png")
    with pytest.raises(ValueError, match="x9_y9_class0.png.*class0.*folder '1'"):
        idc.read_idc(root)


def test_patient_mismatch_and_corrupt(tmp_path):
    root = _fake(tmp_path / "p")
    (root / "8863" / "1" / "8863_idx5_x7_y7_class1.png").write_bytes(b"\x89PNG\r\n\x1a\ngarbage")
    frame = idc.read_idc(root)
    assert frame.attrs["skipped"]["corrupt or truncated image"][0].endswith("x7_y7_class1.png")
    _patch(root / "8863" / "1" / "10253_idx5_x9_y9_class1.png")
    with pytest.raises(ValueError, match="patient '10253'"):
        idc.read_idc(root)


def test_parse_name():
    assert idc.parse_idc_name("9036_idx5_x1051_y2401_class1.png") == {
        "patient": "9036",
        "x": 1051,
        "y": 2401,
        "label": 1,
    }
    assert idc.parse_idc_name("junk.png") is None


@pytest.mark.real_data
def test_real_idc_counts(shared_data):
    frame = idc.read_idc(shared_data / "idc")
    # ../shared/data/README.md: 7,187 patches, class 0: 5,301, class 1: 1,886, 199 patients.
    assert len(frame) == 7187
    assert frame.groupby("class_name").size().to_dict() == {"non_idc": 5301, "idc": 1886}
    assert frame["subject"].nunique() == 199
    assert frame.attrs["skipped"] == {}
    # Measured: 61 edge patches smaller than 50x50 (60 of class 0, 1 of class 1).
    small = frame[(frame["height"] < 50) | (frame["width"] < 50)]
    assert frame.attrs["small_patches"] == len(small) == 61
    skipped = idc.read_idc(shared_data / "idc", small_patches="skip")
    assert len(skipped) == 7187 - 61
    assert len(skipped.attrs["skipped"]["patch smaller than 50x50"]) == 61
