"""Tests for tfcell.data.wbc: Matek-19, Acevedo-20/PBC, INT-20, hospital sets, 5-class domains."""

import numpy as np
import pytest
from PIL import Image

from tfcell.data import wbc


def _img(path, seed, ext_mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).convert(ext_mode).save(path)


def test_mapping_tables_match_issue():
    assert len(wbc.HARMONISED_CLASSES) == 13 and len(wbc.MATEK_CLASSES) == 15
    assert set(wbc.MATEK_TO_HARMONISED) == set(wbc.MATEK_CLASSES)
    assert wbc.MATEK_TO_HARMONISED["PMB"] is None
    assert wbc.MATEK_TO_HARMONISED["MOB"] == wbc.MATEK_TO_HARMONISED["MON"] == "monocyte"
    assert wbc.ACEVEDO_TO_HARMONISED["MMY"] == "metamyelocyte"
    assert wbc.ACEVEDO_TO_HARMONISED["MY"] == "myelocyte"
    assert wbc.ACEVEDO_TO_HARMONISED["PMY"] == "promyelocyte"
    assert wbc.ACEVEDO_TO_HARMONISED["IG"] is None
    assert wbc.ACEVEDO_TO_HARMONISED["NEUTROPHIL"] is None
    assert wbc.INT20_TO_HARMONISED["08-LYMPH-neo"] == "lymphocyte_atypical"
    assert wbc.INT20_TO_HARMONISED["12-LYMPH-reaktiv"] == "lymphocyte_atypical"
    assert wbc.INT20_TO_HARMONISED["17-Kernschatten"] == "smudge_cell"
    harmonised = set(wbc.HARMONISED_CLASSES) | {None}
    for table in (wbc.MATEK_TO_HARMONISED, wbc.ACEVEDO_TO_HARMONISED, wbc.INT20_TO_HARMONISED):
        assert set(table.values()) <= harmonised


def test_read_matek(tmp_path):
    root = tmp_path / "AML-Cytomorphology_LMU"
    seed = 0
    for abbr in wbc.MATEK_CLASSES:
        for i in range(2):
            seed += 1
            _img(root / abbr / f"{abbr}_{i:04d}.tiff", seed)
    (root / "NGS" / ".DS_Store").write_bytes(b"x")
    frame = wbc.read_matek(tmp_path)
    assert len(frame) == 28  # 15 x 2 minus PMB
    assert frame.attrs["skipped"]["class outside the label space"][0].endswith(".tiff")
    assert frame.groupby("class_name").size()["monocyte"] == 4
    assert (frame["um_per_px"] == 29.0 / 400.0).all()
    assert set(frame[frame["source_class"] == "KSC"]["class_name"]) == {"smudge_cell"}
    native = wbc.read_matek(root, label_space="native")
    assert len(native) == 30 and native.attrs["class_names"] == list(wbc.MATEK_CLASSES)


def test_read_int20_drops_unknown_folders(tmp_path):
    folders = ["01-NORMO", "02-other", "08-LYMPH-neo", "12-LYMPH-reaktiv", "15-seg", "16-X"]
    for i, folder in enumerate(folders):
        _img(tmp_path / folder / f"{i}.png", i)
    frame = wbc.read_int20(tmp_path)
    assert sorted(frame["class_name"]) == [
        "erythroblast",
        "lymphocyte_atypical",
        "lymphocyte_atypical",
        "neutrophil_segmented",
    ]
    assert len(frame.attrs["skipped"]["class outside the label space"]) == 2


def _fake_pbc(root):
    names = {
        "basophil": ["BA_1.jpg"],
        "eosinophil": ["EO_2.jpg"],
        "erythroblast": ["ERB_3.jpg"],
        "ig": ["IG_4.jpg", "MMY_5.jpg", "MY_6.jpg", "PMY_7.jpg"],
        "lymphocyte": ["LY_8.jpg"],
        "monocyte": ["MO_9.jpg"],
        "neutrophil": ["BNE_10.jpg", "SNE_11.jpg", "NEUTROPHIL_12.jpg"],
        "platelet": ["PLATELET_13.jpg"],
    }
    for folder, files in names.items():
        for name in files:
            _img(root / folder / name, int(name.split("_")[1][:-4]))
    (root / "neutrophil" / ".DS_Store").write_bytes(b"x")
    (root / "neutrophil" / "SNE_99.jpg").write_text("junk")
    return root


def test_read_acevedo_label_spaces(tmp_path):
    root = _fake_pbc(tmp_path / "pbc")
    frame = wbc.read_acevedo(root)
    assert dict(zip(frame["subtype"], frame["class_name"], strict=True)) == {
        "BA": "basophil",
        "EO": "eosinophil",
        "ERB": "erythroblast",
        "MMY": "metamyelocyte",
        "MY": "myelocyte",
        "PMY": "promyelocyte",
        "LY": "lymphocyte_typical",
        "MO": "monocyte",
        "BNE": "neutrophil_banded",
        "SNE": "neutrophil_segmented",
    }
    skipped = frame.attrs["skipped"]
    assert len(skipped["class outside the label space"]) == 3  # IG, NEUTROPHIL, PLATELET
    assert skipped["not an image file"][0].endswith(".DS_Store")
    assert skipped["not an image (content does not match its extension)"][0].endswith("SNE_99.jpg")
    native = wbc.read_acevedo(root, label_space="native")
    assert len(native) == 13 and native.groupby("class_name").size()["ig"] == 4
    five = wbc.read_acevedo(root, label_space="five")
    assert sorted(five["class_name"].unique()) == sorted(wbc.WBC5_CLASSES)
    assert len(five) == 7


def test_read_acevedo_wrong_folder_prefix(tmp_path):
    root = _fake_pbc(tmp_path / "pbc")
    _img(root / "eosinophil" / "SNE_50.jpg", 50)
    with pytest.raises(ValueError, match="SNE_50.jpg.*'neutrophil', not 'eosinophil'"):
        wbc.read_acevedo(root)


def test_hospital_class_map(tmp_path):
    for i, folder in enumerate(["Neutro", "Lympho", "Junk", "Unknown"]):
        _img(tmp_path / "h" / folder / f"{i}.bmp", i)
    frame = wbc.read_class_folders(
        tmp_path / "h",
        {"Neutro": "neutrophil", "Lympho": "lymphocyte", "Junk": None},
        wbc.WBC5_CLASSES,
        domain="hospital_a",
        um_per_px=0.12,
    )
    assert sorted(frame["class_name"]) == ["lymphocyte", "neutrophil"]
    assert frame.attrs["class_names"] == list(wbc.WBC5_CLASSES)
    assert len(frame.attrs["skipped"]["unknown class folder"]) == 1
    with pytest.raises(ValueError, match="not in class_names"):
        wbc.read_class_folders(tmp_path / "h", {"Neutro": "neutro"}, wbc.WBC5_CLASSES)


def test_rescale_factor():
    assert wbc.rescale_factor(0.25, 0.1) == pytest.approx(2.5)
    assert wbc.rescale_factor(None, 0.1) is None
    assert wbc.rescale_factor(float("nan"), 0.1) is None
    assert wbc.UM_PER_PX["pbc_128"] == pytest.approx(0.25)
    assert wbc.UM_PER_PX["acevedo"] == pytest.approx(0.1)
    with pytest.raises(ValueError):
        wbc.rescale_factor(0.1, 0)


README_PBC = {
    "basophil": 1218,
    "eosinophil": 3117,
    "erythroblast": 1551,
    "ig": 2895,
    "lymphocyte": 1214,
    "monocyte": 1420,
    "neutrophil": 3329,
    "platelet": 2348,
}
README_BCCD = {"neutrophil": 207, "eosinophil": 88, "lymphocyte": 33, "monocyte": 20, "basophil": 3}
README_JTSC = {"neutrophil": 176, "lymphocyte": 53, "monocyte": 48, "eosinophil": 22, "basophil": 1}


@pytest.mark.real_data
def test_real_pbc_counts_and_harmonised(shared_data):
    native = wbc.read_acevedo(shared_data / "pbc_128", label_space="native", dedupe=False)
    assert native.groupby("class_name").size().to_dict() == README_PBC
    assert native.attrs["skipped"] == {}
    subtypes = native.groupby("subtype").size().to_dict()
    # Measured on pbc_128: sub-type prefixes of the real file names.
    assert subtypes["SNE"] == 1646 and subtypes["BNE"] == 1633 and subtypes["NEUTROPHIL"] == 50
    assert subtypes["MMY"] == 1015 and subtypes["MY"] == 1137 and subtypes["PMY"] == 592
    assert subtypes["IG"] == 151
    harmonised = wbc.read_acevedo(shared_data / "pbc_128", dedupe=False)
    counts = harmonised.groupby("class_name").size().to_dict()
    assert counts == {
        "basophil": 1218,
        "eosinophil": 3117,
        "erythroblast": 1551,
        "promyelocyte": 592,
        "myelocyte": 1137,
        "metamyelocyte": 1015,
        "lymphocyte_typical": 1214,
        "monocyte": 1420,
        "neutrophil_banded": 1633,
        "neutrophil_segmented": 1646,
    }
    # IG 151 + NEUTROPHIL 50 + PLATELET 2348 dropped, counted.
    assert len(harmonised.attrs["skipped"]["class outside the label space"]) == 2549
    # With dedupe (default) the byte-identical copies are counted, not read: 16 plain
    # duplicates and one pair of identical files in eosinophil/ and neutrophil/.
    deduped = wbc.read_acevedo(shared_data / "pbc_128", label_space="native")
    skipped = deduped.attrs["skipped"]
    assert len(skipped["duplicate file"]) == 16
    assert len(skipped["duplicate file in another class (label conflict)"]) == 2
    assert len(deduped) == 17092 - 18


@pytest.mark.real_data
def test_real_wbc_domains(shared_data):
    frame = wbc.read_wbc_domains(shared_data, dedupe=False)
    counts = frame.groupby(["domain", "class_name"]).size()
    assert counts["bccd"].to_dict() == README_BCCD
    assert counts["jtsc"].to_dict() == README_JTSC
    assert counts["pbc"].to_dict() == {c: README_PBC[c] for c in wbc.WBC5_CLASSES}
    assert frame.attrs["class_names"] == list(wbc.WBC5_CLASSES)
    scale = frame.groupby("domain")["um_per_px"].first()
    assert scale["pbc"] == pytest.approx(0.25)
    assert np.isnan(scale["bccd"]) and np.isnan(scale["jtsc"])
    assert len(frame.attrs["skipped"]["class outside the label space"]) == 1551 + 2895 + 2348
