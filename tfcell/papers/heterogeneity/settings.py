"""The protocol of Goswami et al. Sec. 4.1 and 5.2: held-out test subjects and
7 subject-level folds of the rest, stratified by class.

    patients --(stratified group split)--> test (the final-test stand-in)
             \\-> development --(StratifiedGroupKFold, k = 7)--> fold 0 .. fold 6
    setting fold<k>: train = the other 6 folds, val = fold k,
                     parts "test" (held-out patients, shared by every fold,
                     so the 7 fold models form an ensemble on it) and
                     "test:fold" (= val: Table A1's "on validation" column)

Every split groups by `patient` (see `data.py`), so no patient is on two
sides; `check_disjoint` asserts it for every setting. The paper's test set is
C-NMC's final phase (17 subjects, scored on the challenge's leaderboard); its
labels are not published with the images, so `test_patients` patients (17
for `paper`, a fraction for `cpu`) are held out of the 101 instead, and the 7
folds hold the rest (84 subjects for `paper`, not Table 1's 101).
"""

import numpy as np
from sklearn import model_selection

from tfcell.experiments import settings as settings_lib

__all__ = ["check_disjoint", "cnmc_settings", "split_test_patients"]


def split_test_patients(records, test_patients, seed):
    """`(development rows, test rows)`: `test_patients` whole patients (an int
    count, or a fraction of the patients) held out, stratified by class
    (`StratifiedGroupKFold`: the fold whose size is closest to the request)."""
    patients = records["patient"].astype(str).to_numpy()
    unique = np.unique(patients)
    count = test_patients if test_patients >= 1 else round(test_patients * len(unique))
    count = int(count)
    if not 1 <= count < len(unique):
        raise ValueError(
            f"config.data.test_patients={test_patients!r} holds out {count} of {len(unique)} "
            "patients; it must leave at least one on each side."
        )
    n_splits = max(2, round(len(unique) / count))
    folds = model_selection.StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    best = None
    for _, test in folds.split(np.zeros(len(records)), records["label"].to_numpy(), patients):
        size = len(np.unique(patients[test]))
        if best is None or abs(size - count) < abs(best[0] - count):
            best = (size, test)
    test = np.sort(best[1])
    dev = np.setdiff1d(np.arange(len(records)), test)
    return dev, test


def check_disjoint(setting, column="patient"):
    """Asserts that no `column` value is in two of train / val / test."""
    table = setting.records[column].astype(str).to_numpy()
    groups = {p: set(table[setting.parts[p]]) for p in ("train", "val", "test")}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        shared = groups[a] & groups[b]
        if shared:
            raise AssertionError(
                f"Setting {setting.name}: {len(shared)} {column}(s) in both {a} and {b}, "
                f"e.g. {sorted(shared)[:3]}."
            )


def cnmc_settings(records, config, repeat):
    """The `config.data.num_folds` fold settings of one repeat (seed = config.seed + repeat)."""
    from tfcell.data import splits

    seed = config.seed + repeat
    records = records.reset_index(drop=True)
    records.attrs = dict(records.attrs)
    dev, test = split_test_patients(records, config.data.test_patients, seed)
    development = records.iloc[dev]
    folds = splits.subject_kfold(development, config.data.num_folds, seed=seed, group="patient")
    names = tuple(records.attrs.get("class_names", ()))
    n_test = len(set(records["patient"].iloc[test]))
    out = []
    for k, fold in enumerate(folds):
        train = records.index.get_indexer(fold.train.index)
        val = records.index.get_indexer(fold.test.index)
        parts = {"train": train, "val": val, "test": test, "test:fold": val}
        setting = settings_lib.Setting(
            f"fold{k}", records, parts, names,
            description=(
                f"fold {k} of {config.data.num_folds}: train {fold.train['patient'].nunique()} "
                f"patients, val {fold.test['patient'].nunique()}, test {n_test} held out"
            ),
            synthetic=bool(records.attrs.get("synthetic", False)),
            pad_small=config.data.pad_small,
        )  # fmt: skip
        check_disjoint(setting)
        out.append(setting)
    return out
