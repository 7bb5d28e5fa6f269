"""Tests for tfcell.data.cnmc on a fake C-NMC 2019 layout (.bmp + labels CSV)."""

import numpy as np
import pytest
from PIL import Image

from tfcell.data import cnmc


def _bmp(path, value=100):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((6, 6, 3), value, np.uint8)).save(path)


def _fake(root, n_all=10, n_hem=6, per_subject=3):
    train = root / "training_data"
    value = 0
    for fold in range(3):
        for s in range(n_all):
            if s % 3 != fold:
                continue
            for i in range(per_subject):
                value += 1
                _bmp(train / f"fold_{fold}" / "all" / f"UID_{s + 1}_{i + 1}_1_all.bmp", value % 256)
        for s in range(n_hem):
            if s % 3 != fold:
                continue
            for i in range(per_subject):
                value += 1
                _bmp(
                    train / f"fold_{fold}" / "hem" / f"UID_H{s + 1}_{i + 1}_2_hem.bmp", value % 256
                )
    prelim = root / "validation_data" / "C-NMC_test_prelim_phase_data"
    rows = ["Patient_ID,new_names,labels"]
    for n, (name, label) in enumerate(
        [("UID_57_29_1_all.bmp", 1), ("UID_57_30_1_all.bmp", 1), ("UID_H40_2_1_hem.bmp", 0)],
        start=1,
    ):
        _bmp(prelim / f"{n}.bmp", 200 + n)
        rows.append(f"{name},{n}.bmp,{label}")
    rows.append("UID_H41_3_1_hem.bmp,99.bmp,0")  # a row without its image
    _bmp(prelim / "50.bmp", 250)  # an image without a row
    (root / "validation_data" / "C-NMC_test_prelim_phase_data_labels.csv").write_text(
        "\n".join(rows) + "\n"
    )
    return root


def test_parse_name():
    assert cnmc.parse_cnmc_name("UID_H10_43_1_hem.bmp") == {
        "subject": "H10",
        "image_id": 43,
        "cell_id": 1,
        "class_name": "hem",
    }
    assert cnmc.parse_cnmc_name("UID_11_10_1_all.bmp")["subject"] == "11"
    assert cnmc.parse_cnmc_name("readme.txt") is None


def test_read_cnmc(tmp_path):
    root = _fake(tmp_path / "C-NMC_Leukemia")
    frame = cnmc.read_cnmc(root)
    assert frame.attrs["class_names"] == ["hem", "all"]
    training = frame[frame["source_fold"] != "prelim"]
    assert len(training) == (10 + 6) * 3
    assert training.groupby("class_name")["subject"].nunique().to_dict() == {"all": 10, "hem": 6}
    prelim = frame[frame["source_fold"] == "prelim"]
    assert sorted(prelim["subject"]) == ["57", "57", "H40"]
    assert list(prelim.sort_values("original_name")["label"]) == [1, 1, 0]
    skipped = frame.attrs["skipped"]
    assert skipped["labels CSV row without image"][0].endswith("99.bmp")
    assert skipped["image without a labels CSV row"][0].endswith("50.bmp")
    only_training = cnmc.read_cnmc(root / "training_data", include_prelim=False)
    assert len(only_training) == 48


def test_missing_image_error_and_mismatches(tmp_path):
    root = _fake(tmp_path / "c")
    image_dir = root / "validation_data" / "C-NMC_test_prelim_phase_data"
    csv = root / "validation_data" / "C-NMC_test_prelim_phase_data_labels.csv"
    with pytest.raises(ValueError, match=r"line 5 names image '99.bmp'.*missing_images='skip'"):
        cnmc.read_cnmc_prelim(image_dir, csv, missing_images="error")
    csv.write_text("Patient_ID,new_names,labels\nUID_57_29_1_all.bmp,1.bmp,0\n")
    with pytest.raises(ValueError, match="line 2: label 0 disagrees"):
        cnmc.read_cnmc_prelim(image_dir, csv)
    _bmp(root / "training_data" / "fold_0" / "all" / "UID_H3_1_1_hem.bmp")
    with pytest.raises(ValueError, match="UID_H3_1_1_hem.bmp.*folder 'all'"):
        cnmc.read_cnmc(root, include_prelim=False)


def test_heterogeneity_folds_subject_level(tmp_path):
    frame = cnmc.read_cnmc(_fake(tmp_path / "c", n_all=21, n_hem=14), include_prelim=False)
    folds = cnmc.heterogeneity_folds(frame, n_folds=7, seed=0)
    assert len(folds) == 7
    seen = []
    for train, val in folds:
        assert not set(train["subject"]) & set(val["subject"])
        assert len(train) + len(val) == len(frame)
        assert set(val["class_name"]) == {"all", "hem"}
        seen += list(val["subject"].unique())
    assert sorted(seen) == sorted(frame["subject"].unique())
    again = cnmc.heterogeneity_folds(frame, n_folds=7, seed=0)
    assert list(again[3][1]["path"]) == list(folds[3][1]["path"])
    with pytest.raises(ValueError, match="subjects cannot make 7"):
        cnmc.heterogeneity_folds(frame[frame["subject"].isin(["1", "2"])], n_folds=7)


def test_table1_constants():
    totals = {k: sum(n for n, _ in v) for k, v in cnmc.HETEROGENEITY_TABLE1.items()}
    subjects = {k: sum(s for _, s in v) for k, v in cnmc.HETEROGENEITY_TABLE1.items()}
    assert totals == {"all": 8491, "hem": 4037} and subjects == {"all": 60, "hem": 41}
