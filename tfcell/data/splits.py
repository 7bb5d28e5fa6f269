"""Subject-, patient- and domain-aware splits of record tables.

Every split returns `Split` objects (`.train`, `.test`, `.counts()`), checks on
construction that no subject (patient) is on both sides, and raises
`LeakError` if one is. The one deliberate exception is `patch_split`, the
CFAL IDC protocol (70/30 at random over patches), which leaks patients: it
counts them in `split.shared_subjects` and logs a warning.
"""

import logging

import numpy as np
import pandas as pd
from sklearn import model_selection

__all__ = [
    "LeakError",
    "Split",
    "subject_kfold",
    "train_test_by_domain",
    "leave_one_domain_out",
    "patch_split",
    "patient_split",
]

logger = logging.getLogger("tfcell.data")


class LeakError(AssertionError):
    """A subject or patient is on both sides of a split."""


def _with_attrs(frame, source):
    frame = frame.copy()
    frame.attrs = dict(source.attrs)
    return frame


class Split:
    """A train/test pair of record tables.

    Attributes:
        train, test: record tables (the source's `attrs` are kept).
        name: a label ("fold 0", "test domain: jtsc", ...).
        group: the column checked for leaks ("subject"), or None.
        shared_subjects: subjects on both sides (0 unless `leaky`).
        leaky: True only for `patch_split`.

    `train, test = split` unpacks it.
    """

    def __init__(self, train, test, name="", group="subject", leaky=False, source=None):
        self.train = _with_attrs(train, source if source is not None else train)
        self.test = _with_attrs(test, source if source is not None else test)
        self.name = name
        self.group = group
        self.leaky = leaky
        self.shared_subjects = len(_shared(train, test, group)) if group else 0
        if self.shared_subjects and not leaky:
            examples = sorted(_shared(train, test, group))[:5]
            raise LeakError(
                f"{name}: {self.shared_subjects} {group}(s) on both sides of the split, "
                f"e.g. {examples}. Split by {group} (subject_kfold / patient_split)."
            )

    def counts(self):
        """Class counts per side: a DataFrame indexed by class name, columns train/test."""
        names = list(self.train.attrs.get("class_names", [])) or sorted(
            set(self.train["class_name"]) | set(self.test["class_name"])
        )
        table = pd.DataFrame(
            {
                "train": self.train["class_name"].value_counts(),
                "test": self.test["class_name"].value_counts(),
            }
        )
        return table.reindex(names).fillna(0).astype(int)

    def __iter__(self):
        return iter((self.train, self.test))

    def __repr__(self):
        leak = f", LEAKY: {self.shared_subjects} shared {self.group}s" if self.leaky else ""
        return f"Split({self.name!r}, train={len(self.train)}, test={len(self.test)}{leak})"


def _shared(train, test, group):
    if group not in train.columns:
        return set()
    a = set(train[group].astype(str)) - {""}
    b = set(test[group].astype(str)) - {""}
    return a & b


def _require_groups(records, group):
    if group not in records.columns or (records[group].astype(str) == "").any():
        missing = int((records.get(group, pd.Series([""] * len(records))).astype(str) == "").sum())
        raise ValueError(
            f"{missing} record(s) have no {group!r}; a {group}-level split needs it on every "
            "row. Use a reader that parses it, or patch_split for a patch-level split."
        )


def subject_kfold(records, n_splits, seed=0, group="subject"):
    """Stratified k-fold with every subject in exactly one test fold
    (scikit-learn `StratifiedGroupKFold`, shuffled with `seed`).

    Returns:
        A list of `n_splits` `Split`s; their test sets partition the records.
    """
    _require_groups(records, group)
    groups = records[group].astype(str).to_numpy()
    if len(set(groups)) < n_splits:
        raise ValueError(f"{len(set(groups))} {group}s cannot fill {n_splits} folds.")
    folds = model_selection.StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    splits = []
    for k, (tr, te) in enumerate(folds.split(np.zeros(len(records)), records["label"], groups)):
        splits.append(
            Split(records.iloc[tr], records.iloc[te], f"fold {k}", group=group, source=records)
        )
    return splits


def _group_split(records, test_size, seed, group="subject", tries=50):
    """Group-aware split closest to `test_size` (of rows) and to the class mix:
    the best of `tries` seeded GroupShuffleSplit draws."""
    groups = records[group].astype(str).to_numpy()
    labels = records["label"].to_numpy()
    target = np.bincount(labels, minlength=labels.max() + 1) / len(labels)
    best, best_score = None, np.inf
    rng = np.random.default_rng(seed)
    for _ in range(tries):
        splitter = model_selection.GroupShuffleSplit(
            n_splits=1, test_size=test_size, random_state=int(rng.integers(2**31))
        )
        tr, te = next(splitter.split(labels, labels, groups))
        if len(te) == 0 or len(tr) == 0:
            continue
        share = np.bincount(labels[te], minlength=target.size) / len(te)
        score = abs(len(te) / len(labels) - test_size) + np.abs(share - target).sum()
        if score < best_score:
            best, best_score = (tr, te), score
    if best is None:
        raise ValueError(f"Cannot split {len(set(groups))} {group}(s) with test_size={test_size}.")
    return best


def _row_split(records, test_size, seed):
    labels = records["label"].to_numpy()
    index = np.arange(len(records))
    try:
        return model_selection.train_test_split(
            index, test_size=test_size, random_state=seed, stratify=labels
        )
    except ValueError:  # a class with one sample, or fewer test rows than classes
        return model_selection.train_test_split(index, test_size=test_size, random_state=seed)


def train_test_by_domain(records, test_size=0.2, seed=0):
    """Per-domain train/test split: within each domain, stratified by class and,
    when that domain has subject ids, patient-aware (no subject on both sides).

    Returns:
        One `Split` whose train and test each hold `test_size` of every domain.
    """
    train, test = [], []
    for _domain, part in records.groupby("domain", sort=True):
        has_groups = (part["subject"].astype(str) != "").all() and part["subject"].nunique() > 1
        if has_groups:
            tr, te = _group_split(part, test_size, seed)
        else:
            tr, te = _row_split(part, test_size, seed)
        train.append(part.iloc[tr])
        test.append(part.iloc[te])
    return Split(pd.concat(train), pd.concat(test), "per-domain", source=records)


def leave_one_domain_out(records):
    """One `Split` per domain: test on that domain, train on all the others.

    Returns:
        A dict `{domain: Split}` in sorted domain order.
    """
    domains = sorted(records["domain"].astype(str).unique())
    if len(domains) < 2:
        raise ValueError(f"leave_one_domain_out needs >= 2 domains; received {domains}.")
    out = {}
    for domain in domains:
        held = records["domain"].astype(str) == domain
        out[domain] = Split(
            records[~held], records[held], f"test domain: {domain}", group="domain", source=records
        )
        # Subjects are domain-scoped; also check them in case ids repeat across domains.
        shared = _shared(records[~held], records[held], "subject")
        if shared:
            logger.warning(
                "leave_one_domain_out(%s): %d subject id(s) appear in several domains (%s...); "
                "they are different people only if the ids are domain-scoped.",
                domain,
                len(shared),
                sorted(shared)[:3],
            )
    return out


def patch_split(records, test_size=0.3, seed=0):
    """The CFAL IDC protocol: a stratified random 70/30 split of the PATCHES.

    Warning: patches of one patient land on both sides (patient leakage), as in
    the benchmark study CFAL follows; `split.shared_subjects` counts the
    patients on both sides and a warning is logged. Use `patient_split` for a
    leak-free estimate.
    """
    tr, te = _row_split(records, test_size, seed)
    split = Split(
        records.iloc[tr], records.iloc[te], "patch-level (leaky)", leaky=True, source=records
    )
    if split.shared_subjects:
        logger.warning(
            "patch_split: %d patient(s) have patches in both train and test (patient leakage, "
            "as in the CFAL IDC protocol); use patient_split for a leak-free split.",
            split.shared_subjects,
        )
    return split


def patient_split(records, test_size=0.3, seed=0):
    """A patient-level train/test split: every patient's patches on one side,
    test share and class mix as close to `test_size` and the overall mix as the
    best of 50 seeded group shuffles gives."""
    _require_groups(records, "subject")
    tr, te = _group_split(records, test_size, seed)
    return Split(records.iloc[tr], records.iloc[te], "patient-level", source=records)
