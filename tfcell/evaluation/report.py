"""Run outputs: `results.jsonl` (one JSON line per evaluation), `report.md`, `done`.

The layout follows DomainBed's `train.py`: a run appends one line per
evaluation to `<workdir>/results.jsonl` and writes `<workdir>/done` last, so a
collector (`reproductions/collect_results.py`) can tell finished runs from
interrupted ones and rebuild every table from the lines alone.
"""

import collections
import json
import math
import os

import numpy as np

from tfcell.evaluation import statistics

__all__ = [
    "ResultsWriter",
    "group_results",
    "is_done",
    "markdown_table",
    "mean_std_cell",
    "read_results",
    "replace_marked_block",
    "write_done",
]

RESULTS_FILE = "results.jsonl"
DONE_FILE = "done"


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; a missing value reads back as None.
    return value


class ResultsWriter:
    """Appends one JSON object per line to `<workdir>/results.jsonl`.

    Example:

    ```python
    writer = ResultsWriter(workdir)
    writer.write({"setting": "patient", "method": "cfal", "repeat": 0, "f1": 0.83})
    ```
    """

    def __init__(self, workdir, filename=RESULTS_FILE):
        os.makedirs(workdir, exist_ok=True)
        self.path = os.path.join(workdir, filename)

    def write(self, record):
        with open(self.path, "a") as f:
            f.write(json.dumps(_jsonable(record), sort_keys=True) + "\n")


def read_results(workdir, filename=RESULTS_FILE):
    """All records of a workdir's `results.jsonl` ([] when absent)."""
    path = os.path.join(workdir, filename)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_done(workdir):
    """Marks the run finished (written last)."""
    with open(os.path.join(workdir, DONE_FILE), "w") as f:
        f.write("done\n")


def is_done(workdir):
    return os.path.exists(os.path.join(workdir, DONE_FILE))


def group_results(records, keys, metric):
    """`{tuple(record[k] for k in keys): [metric values in repeat order]}`."""
    groups = collections.defaultdict(list)
    for record in sorted(records, key=lambda r: r.get("repeat", 0)):
        if metric in record:
            groups[tuple(record.get(k) for k in keys)].append(record[metric])
    return dict(groups)


def markdown_table(header, rows):
    """A GitHub markdown table from a header list and rows of cells."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join("-" if c is None else str(c) for c in row) + " |")
    return "\n".join(lines)


def mean_std_cell(values, digits=3, scale=1.0):
    """A table cell "mean +- std" from repeated values (see `statistics`)."""
    return statistics.format_mean_std(values, digits=digits, scale=scale)


def replace_marked_block(path, name, text):
    """Replaces the text between `<!-- NAME:start -->` and `<!-- NAME:end -->`.

    How measured tables get into the docs without being typed: a collector or
    benchmark writes its output between the markers of `path`.

    Raises:
        ValueError: if the markers are missing (add them where the table goes).
    """
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    with open(path) as f:
        docs = f.read()
    if start not in docs or end not in docs:
        raise ValueError(
            f"{path} lacks the markers {start} ... {end}; add them where the table goes."
        )
    head, rest = docs.split(start, 1)
    _, tail = rest.split(end, 1)
    with open(path, "w") as f:
        f.write(f"{head}{start}\n{text}\n{end}{tail}")
