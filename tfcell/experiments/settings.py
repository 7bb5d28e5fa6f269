"""Settings: the data splits a comparison runs on, built from `tfcell.data`.

A `Setting` is one record table (from a `tfcell.data` reader or
`tfcell.data.synthetic`) and named parts of it: `train`, `val`, `test` and any
further test parts (`test:<domain>` for a train-on-one / test-on-every-domain
matrix, or a user's extra hospitals). Parts are row positions into the table,
so the images are decoded and resized once per table (`tfcell.data.cache`)
and every part is a slice of that array.

The builders cover every protocol the five papers use, each on
`tfcell.data.splits` (which checks that no subject is on both sides):

    holdout(records, ...)               train / val / test, by patch or by subject
    subject_kfold(records, k, ...)      k folds with whole subjects in each
    leave_one_domain_out(records, ...)  train on all domains but one, test on it
    domain_matrix(records, ...)         train on one domain, test on every domain

Nothing here knows a paper: a paper package calls these (or builds `Setting`s
itself) in its `settings(config, repeat)`.
"""

import dataclasses

import numpy as np
import pandas as pd
from sklearn import model_selection

from tfcell.data import splits

__all__ = [
    "Setting",
    "domain_matrix",
    "from_parts",
    "holdout",
    "leave_one_domain_out",
    "subject_kfold",
    "subsample",
]


@dataclasses.dataclass
class Setting:
    """One split of one record table.

    Attributes:
        name: the setting's name (a job-key component: no '/').
        records: the record table (columns `path, label, class_name, domain,
            subject`, or `image` for in-memory data), RangeIndex.
        parts: `{part name: int row positions}`; needs "train" and "val", and
            "test" or parts named "test:<name>".
        class_names: the label space (`records.attrs["class_names"]`).
        description: one line for logs and reports.
        synthetic: True for `tfcell.data.synthetic` data (announced loudly).
        pad_small: how images smaller than the target size are fitted (see
            `tfcell.data.cache.decoded_images`).
    """

    name: str
    records: pd.DataFrame
    parts: dict
    class_names: tuple
    description: str = ""
    synthetic: bool = False
    pad_small: object = True

    def __post_init__(self):
        if "/" in self.name:
            raise ValueError(f"A setting name may not contain '/'; received {self.name!r}.")
        for required in ("train", "val"):
            if required not in self.parts:
                raise ValueError(
                    f"Setting {self.name!r} needs a {required!r} part; has {sorted(self.parts)}."
                )
        if not self.test_parts:
            raise ValueError(
                f"Setting {self.name!r} needs a 'test' part or parts named 'test:<name>'."
            )
        self.parts = {k: np.asarray(v, "int64") for k, v in self.parts.items()}
        n = len(self.records)
        for part, idx in self.parts.items():
            if len(idx) and (idx.min() < 0 or idx.max() >= n):
                raise ValueError(f"Setting {self.name!r}: part {part!r} indexes outside the table.")
        labels = self.records["label"].to_numpy()
        bad = (labels < 0) | (labels >= self.num_classes)
        if bad.any():
            raise ValueError(
                f"Setting {self.name!r}: {int(bad.sum())} record(s) have labels outside "
                f"[0, {self.num_classes}), e.g. row {int(np.flatnonzero(bad)[0])}; the reader's "
                "class_names and labels disagree."
            )

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def test_parts(self):
        return [p for p in self.parts if p == "test" or p.startswith("test:")]

    def labels(self, part):
        return self.records["label"].to_numpy("int64")[self.parts[part]]

    def table(self, part):
        return self.records.iloc[self.parts[part]]

    def class_counts(self, part="train"):
        return np.bincount(self.labels(part), minlength=self.num_classes)

    def size(self, part):
        return len(self.parts[part])

    def id_maps(self):
        """Global domain and subject ids over the whole table, so that every part
        (and every record table of a run) numbers subjects the same way."""
        return {
            column: {v: i for i, v in enumerate(sorted(set(self.records[column].astype(str))))}
            for column in ("domain", "subject")
            if column in self.records.columns
        }


def _positions(records, part):
    return records.index.get_indexer(part.index)


def from_parts(name, parts, class_names=None, **kwargs):
    """A `Setting` from separate record tables (e.g. a training set and a separately published test set):
    `parts={"train": t, "val": v, "test": te}`; they are concatenated."""
    tables, positions, start = [], {}, 0
    for part, table in parts.items():
        tables.append(table)
        positions[part] = np.arange(start, start + len(table))
        start += len(table)
    records = pd.concat(tables, ignore_index=True)
    first = next(iter(parts.values()))
    records.attrs = dict(first.attrs)
    names = tuple(class_names or first.attrs.get("class_names") or ())
    return Setting(name, records, positions, names, **kwargs)


def _reindexed(records):
    attrs = dict(records.attrs)
    records = records.reset_index(drop=True)
    records.attrs = attrs
    return records


def _names(records, kwargs):
    """`class_names` from kwargs (a paper's own wording) or the reader's attrs."""
    return tuple(kwargs.pop("class_names", None) or records.attrs.get("class_names", ()))


def subsample(records, limit, seed):
    """At most `limit` rows, stratified by label (0 or None = all)."""
    if not limit or len(records) <= limit:
        return records
    keep, _ = model_selection.train_test_split(
        records, train_size=int(limit), stratify=records["label"], random_state=seed
    )
    out = keep.sort_index()
    out.attrs = dict(records.attrs)
    return out


def holdout(name, records, test_fraction, val_fraction, seed, by="patch", **kwargs):
    """Train / val / test by patch (stratified rows) or by subject (whole
    subjects on one side; `splits.patient_split`). The validation part is cut
    from the training part the same way.

    Note: by "patch" leaks patients (counted and
    logged by `tfcell.data.splits.patch_split`).
    """
    records = _reindexed(records)
    split = {"patch": splits.patch_split, "subject": splits.patient_split}.get(by)
    if split is None:
        raise ValueError(f"holdout: by must be 'patch' or 'subject'; received {by!r}.")
    rest, test = split(records, test_size=test_fraction, seed=seed)
    train, val = split(rest, test_size=val_fraction, seed=seed)
    parts = {p: _positions(records, t) for p, t in (("train", train), ("val", val), ("test", test))}
    return Setting(name, records, parts, _names(records, kwargs), **kwargs)


def subject_kfold(records, n_splits, val_fraction, seed, name="fold{fold}", **kwargs):
    """`n_splits` settings, each testing on one fold of whole subjects; the
    validation part is a subject-level cut of the remaining folds."""
    records = _reindexed(records)
    names = _names(records, kwargs)
    out = []
    for fold, split in enumerate(splits.subject_kfold(records, n_splits, seed=seed)):
        train, val = splits.patient_split(split.train, test_size=val_fraction, seed=seed)
        parts = {
            "train": _positions(records, train),
            "val": _positions(records, val),
            "test": _positions(records, split.test),
        }
        out.append(
            Setting(
                name.format(fold=fold),
                records,
                parts,
                names,
                **kwargs,
            )  # fmt: skip
        )
    return out


def _val_cut(records, train, val_fraction, seed, group):
    """A stratified (or subject-level) validation cut of `train` rows."""
    if group:
        tr, va = splits.patient_split(train, test_size=val_fraction, seed=seed)
    else:
        tr, va = splits.patch_split(train, test_size=val_fraction, seed=seed)
    return _positions(records, tr), _positions(records, va)


def leave_one_domain_out(records, val_fraction, seed, by_subject=False, **kwargs):
    """One setting per domain: train (and validate) on the others, test on it
    Named `lodo_<domain>`."""
    records = _reindexed(records)
    names = _names(records, kwargs)
    out = []
    for domain, split in splits.leave_one_domain_out(records).items():
        train, val = _val_cut(records, split.train, val_fraction, seed, by_subject)
        parts = {"train": train, "val": val, "test": _positions(records, split.test)}
        out.append(
            Setting(
                f"lodo_{domain}",
                records,
                parts,
                names,
                **kwargs,
            )  # fmt: skip
        )
    return out


def _has_subjects(table):
    return (
        "subject" in table.columns
        and (table["subject"].astype(str) != "").all()
        and table["subject"].nunique() > 1
    )


def domain_matrix(records, val_fraction, test_fraction, seed, by_subject=None, **kwargs):
    """Train on one domain, test on every domain: one setting per source domain,
    named `from_<domain>`, with parts `test:<d>` for every domain d (the source
    domain's own part is a held-out cut of it, and validation a cut of the
    rest: by subject when `by_subject`, or by default when the domain has
    subject ids, else stratified by row)."""
    records = _reindexed(records)
    names = _names(records, kwargs)
    domains = sorted(set(records["domain"].astype(str)))
    out = []
    for source in domains:
        own = records[records["domain"].astype(str) == source]
        group = _has_subjects(own) if by_subject is None else by_subject
        split = splits.patient_split if group else splits.patch_split
        rest, held = split(own, test_size=test_fraction, seed=seed)
        train, val = _val_cut(records, rest, val_fraction, seed, group)
        parts = {"train": train, "val": val, f"test:{source}": _positions(records, held)}
        for target in domains:
            if target != source:
                other = records[records["domain"].astype(str) == target]
                parts[f"test:{target}"] = _positions(records, other)
        out.append(
            Setting(
                f"from_{source}",
                records,
                parts,
                names,
                **kwargs,
            )  # fmt: skip
        )
    return out
