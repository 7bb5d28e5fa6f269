"""The record table every tfcell reader returns, and the skip log behind it.

A reader turns a dataset in its publisher's layout into a `pandas.DataFrame`
with one row per image and (at least) these columns:

    path        str   the image file (absolute), or "" for in-memory data
    label       int   class id in the reader's label space (0..C-1)
    class_name  str   the name of that class
    domain      str   acquisition domain (hospital, scanner, dataset name)
    subject     str   subject / patient id ("" when the layout has none)

Readers may add columns (e.g. `subtype`, `fold`, `x`, `y`, `mask_path`). The
frame's `attrs` carry `class_names` (the ordered label space) and `skipped`
(a `SkipLog.as_dict()`), so a skip is always counted and never silent.
"""

import collections
import logging

import numpy as np
import pandas as pd

COLUMNS = ("path", "label", "class_name", "domain", "subject")

logger = logging.getLogger("tfcell.data")


class SkipLog:
    """Counts and remembers every file a reader did not use, and why.

    Example:

    ```python
    skips = SkipLog("pbc")
    skips.add("/data/pbc/.DS_Store", "not an image")
    skips.counts()  # {"not an image": 1}
    ```
    """

    def __init__(self, name):
        self.name = name
        self._paths = collections.defaultdict(list)

    def add(self, path, reason):
        self._paths[reason].append(str(path))

    def counts(self):
        return {reason: len(paths) for reason, paths in self._paths.items()}

    def total(self):
        return sum(len(paths) for paths in self._paths.values())

    def as_dict(self):
        return {reason: list(paths) for reason, paths in self._paths.items()}

    def log(self):
        """Logs one warning line per skip reason (count and an example file)."""
        for reason, paths in self._paths.items():
            logger.warning(
                "%s: skipped %d file(s): %s (e.g. %s)", self.name, len(paths), reason, paths[0]
            )

    def __repr__(self):
        return f"SkipLog({self.name!r}, {self.counts()})"


def make_records(rows, class_names, skips=None):
    """Builds and validates a record table.

    Args:
        rows: iterable of dicts with at least the keys in `COLUMNS`.
        class_names: the ordered label space; `label` indexes into it.
        skips: the reader's `SkipLog` (logged and stored in `attrs["skipped"]`).

    Returns:
        A `pandas.DataFrame` with `attrs["class_names"]` and `attrs["skipped"]`.

    Raises:
        ValueError: if a column is missing or a label disagrees with its class name.
    """
    frame = pd.DataFrame(list(rows))
    if frame.empty:
        frame = pd.DataFrame(columns=list(COLUMNS))
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"Record rows lack columns {missing}; every reader must give {COLUMNS}.")
    check_labels(
        frame["label"].to_numpy(), len(class_names), names=row_names(frame), where="make_records"
    )
    frame["label"] = frame["label"].astype("int64")
    for column in ("path", "class_name", "domain", "subject"):
        frame[column] = frame[column].astype(str)
    class_names = list(class_names)
    validate_records(frame, class_names)
    frame.attrs["class_names"] = class_names
    frame.attrs["skipped"] = skips.as_dict() if skips is not None else {}
    if skips is not None:
        skips.log()
    return frame


def validate_records(frame, class_names):
    """Raises ValueError when a label is out of range or mismatches `class_name`.

    Every label must be an integer in `[0, len(class_names))`; the error names
    the files (or row indices of in-memory tables) with bad labels.
    """
    if frame.empty:
        return
    check_labels(
        frame["label"].to_numpy(), len(class_names), names=row_names(frame), where="records"
    )
    labels = frame["label"].to_numpy().astype("int64")
    expected = [class_names[i] for i in labels]
    bad = frame.index[frame["class_name"].to_numpy() != pd.Series(expected).to_numpy()]
    if len(bad):
        row = frame.loc[bad[0]]
        raise ValueError(
            f"Record {row['path']!r} has label {row['label']} "
            f"({class_names[int(row['label'])]!r}) but class_name {row['class_name']!r}: "
            "a reader mislabelled it. Fix the reader's class map."
        )


def check_labels(labels, num_classes=None, names=None, where="labels"):
    """Raises ValueError naming every bad label (up to 5) and the fix.

    A label is bad when it is NaN or inf, not an integer, negative, or (with
    `num_classes`) `>= num_classes`. A model fed such a label trains on a
    wrong or zero loss without an error on GPU (a gather out of range
    returns zeros), so the data pipelines refuse it before training.

    Args:
        labels: 1-D array-like of class ids (any numeric dtype).
        num_classes: C, or None to check only that labels are integers >= 0.
        names: optional names of the entries (file paths) for the message;
            default "index i".
        where: the caller, as the message names it.
    """
    values = np.asarray(labels)
    if values.size == 0:
        return
    try:
        numeric = values.astype("float64").reshape(-1)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{where}: labels must be integer class ids; received dtype {values.dtype}."
        ) from error
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(numeric) | (numeric < 0) | (numeric != np.round(numeric))
        if num_classes is not None:
            bad |= numeric >= num_classes
    if not bad.any():
        return
    where_bad = np.flatnonzero(bad)
    shown = ", ".join(
        f"{names[i] if names is not None else f'index {i}'} (label {_plain(values.reshape(-1)[i])})"
        for i in where_bad[:5]
    )
    more = f" and {len(where_bad) - 5} more" if len(where_bad) > 5 else ""
    span = f"[0, {num_classes}) (C = {num_classes})" if num_classes is not None else "[0, C)"
    finite = numeric[np.isfinite(numeric)]
    received = f"[{finite.min():g}, {finite.max():g}]" if finite.size else "only NaN / inf"
    raise ValueError(
        f"{where}: {len(where_bad)} label(s) are not integer class ids in {span}; received "
        f"labels in {received}: {shown}{more}. A label outside the class range trains on a "
        "wrong loss (on GPU without any error). Fix the labels (or the reader's class map), "
        "drop those samples, or pass the right num_classes."
    )


def _plain(value):
    """A NumPy scalar as Python prints it (3, -1, nan, 1.5)."""
    return value.item() if hasattr(value, "item") else value


def row_names(frame):
    """File paths of the rows, or "row <index>" for in-memory tables."""
    if "path" not in frame.columns:
        return None
    return [
        str(path) if str(path) else f"row {index}"
        for index, path in zip(frame.index, frame["path"].to_numpy())
    ]


def class_counts(frame, by=None):
    """Per-class counts (optionally per `by` column, e.g. "domain"), as a DataFrame."""
    if by is None:
        return frame.groupby("class_name").size().rename("count").to_frame()
    return frame.groupby([by, "class_name"]).size().unstack(fill_value=0)
