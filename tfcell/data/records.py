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
    """Raises ValueError when a label is out of range or mismatches `class_name`."""
    if frame.empty:
        return
    labels = frame["label"].to_numpy()
    if labels.min() < 0 or labels.max() >= len(class_names):
        raise ValueError(
            f"Labels must lie in [0, {len(class_names)}) for class_names={class_names}; "
            f"received labels in [{labels.min()}, {labels.max()}]."
        )
    expected = [class_names[i] for i in labels]
    bad = frame.index[frame["class_name"].to_numpy() != pd.Series(expected).to_numpy()]
    if len(bad):
        row = frame.loc[bad[0]]
        raise ValueError(
            f"Record {row['path']!r} has label {row['label']} "
            f"({class_names[row['label']]!r}) but class_name {row['class_name']!r}: "
            "a reader mislabelled it. Fix the reader's class map."
        )


def class_counts(frame, by=None):
    """Per-class counts (optionally per `by` column, e.g. "domain"), as a DataFrame."""
    if by is None:
        return frame.groupby("class_name").size().rename("count").to_frame()
    return frame.groupby([by, "class_name"]).size().unstack(fill_value=0)
