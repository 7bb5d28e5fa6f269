"""Splits: leak-free, counts reported, the leaky patch split says so."""

import glob
import pathlib

import pytest

from tfcell.data import records, splits, synthetic


@pytest.fixture(scope="module")
def cells():
    return synthetic.white_cells(600, image_size=8, seed=0)


@pytest.fixture(scope="module")
def idc():
    return synthetic.idc_like(num_patients=30, patches_per_patient=(10, 30), image_size=8, seed=0)


def _disjoint(split, column="subject"):
    return not (set(split.train[column]) & set(split.test[column]))


def test_subject_kfold_partitions_without_leaks(cells):
    folds = splits.subject_kfold(cells, 5, seed=0)
    assert len(folds) == 5
    assert all(_disjoint(f) and f.shared_subjects == 0 for f in folds)
    tested = sorted(i for f in folds for i in f.test.index)
    assert tested == sorted(cells.index)  # every record tested exactly once
    counts = folds[0].counts()
    assert list(counts.columns) == ["train", "test"]
    assert counts.to_numpy().sum() == len(cells)
    assert (counts["test"] > 0).all()  # stratified: every class in every fold


def test_subject_kfold_deterministic(cells):
    a = splits.subject_kfold(cells, 4, seed=3)
    b = splits.subject_kfold(cells, 4, seed=3)
    assert [list(f.test.index) for f in a] == [list(f.test.index) for f in b]


def test_subject_kfold_needs_subjects(idc):
    frame = idc.copy()
    frame.loc[frame.index[0], "subject"] = ""
    with pytest.raises(ValueError, match="no 'subject'"):
        splits.subject_kfold(frame, 3)


def test_split_detects_leak(cells):
    with pytest.raises(splits.LeakError, match="on both sides"):
        splits.Split(cells.iloc[:300], cells.iloc[250:], "bad")


def test_train_test_by_domain(cells):
    split = splits.train_test_by_domain(cells, test_size=0.25, seed=0)
    assert _disjoint(split)
    assert set(split.train["domain"]) == set(split.test["domain"]) == set(cells["domain"])
    assert 0.1 < len(split.test) / len(cells) < 0.4
    assert len(split.train) + len(split.test) == len(cells)


def test_leave_one_domain_out(cells):
    out = splits.leave_one_domain_out(cells)
    assert sorted(out) == sorted(cells["domain"].unique())
    for domain, split in out.items():
        assert set(split.test["domain"]) == {domain}
        assert domain not in set(split.train["domain"])
        assert _disjoint(split)


def test_patch_split_reports_patient_leak(idc, caplog):
    split = splits.patch_split(idc, test_size=0.3, seed=0)
    assert split.leaky and split.shared_subjects > 0
    assert "patient leakage" in caplog.text
    assert abs(len(split.test) / len(idc) - 0.3) < 0.02
    assert "LEAKY" in repr(split)


def test_patient_split_is_leak_free(idc):
    split = splits.patient_split(idc, test_size=0.3, seed=0)
    assert _disjoint(split) and not split.leaky
    assert 0.2 < len(split.test) / len(idc) < 0.4
    assert set(split.test["label"]) == {0, 1}
    train, test = split  # unpacks
    assert len(train) == len(split.train)


@pytest.mark.real_data
def test_patient_split_on_real_idc(shared_data):
    root = pathlib.Path(shared_data) / "idc"
    files = sorted(glob.glob(str(root / "*" / "[01]" / "*.png")))
    rows = [
        {
            "path": f,
            "label": int(pathlib.Path(f).parent.name),
            "class_name": pathlib.Path(f).parent.name,
            "domain": "idc",
            "subject": pathlib.Path(f).parent.parent.name,
        }
        for f in files
    ]
    table = records.make_records(rows, ["0", "1"])
    split = splits.patient_split(table, test_size=0.3, seed=0)
    assert split.shared_subjects == 0
    assert not set(split.train["subject"]) & set(split.test["subject"])
    assert split.counts().to_numpy().sum() == len(table) == 7187
    leaky = splits.patch_split(table, test_size=0.3, seed=0)
    assert leaky.shared_subjects > 100  # most of the 199 patients straddle a patch split
