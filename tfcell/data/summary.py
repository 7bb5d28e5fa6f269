"""What a reader found: per-class counts, subjects and skips of a record table, as markdown.

`summarize(records)` turns any record table (see `tfcell.data.records`) into a
short markdown section: the number of images, classes and subjects, the count
of every class (one column per domain when there are several), the pixel size
of each domain when the reader records one, and how many files were skipped
for each reason (`records.attrs["skipped"]`).

The command line reads every real dataset of the shared data folder with the
tfcell readers (file names and headers only, no image is decoded) and prints
one section per dataset:

```
python -m tfcell.data.summary --shared ../shared/data [--only idc] [--update_docs]
```

`--update_docs` also writes the output between `<!-- data_counts:start -->`
and `<!-- data_counts:end -->` in docs/data.md, so the counts in the docs are
measured, never typed.
"""

import argparse
import logging
import math
import os
import pathlib
import sys

from tfcell.data import idc, nuclei, wbc

__all__ = ["SHARED_DATASETS", "summarize", "summarize_shared"]

DOCS_PATH = pathlib.Path(__file__).resolve().parents[2] / "docs" / "data.md"
DOCS_BLOCK = "data_counts"


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def _pixel_size(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "unknown"
    return f"{value:.4g} µm/px"


def summarize(records, title=None):
    """Markdown summary of a record table.

    Args:
        records: a record table (`path, label, class_name, domain, subject`, with
            `attrs["class_names"]` and `attrs["skipped"]`).
        title: optional heading (`### title`) put first.

    Returns:
        A markdown string: totals (images, classes, domains, subjects), a class
        count table (one column per domain and a total when there are several
        domains; every class of `attrs["class_names"]` is listed, zero counts
        included), the pixel size per domain when a `um_per_px` column exists,
        and the skip counts per reason.

    Example:

    ```python
    frame = tfcell.data.read_idc("../shared/data/idc")
    print(tfcell.data.summarize(frame, title="idc"))
    ```
    """
    class_names = list(records.attrs.get("class_names") or sorted(records["class_name"].unique()))
    domains = sorted(records["domain"].unique()) if len(records) else []
    subjects = records.loc[records["subject"] != "", "subject"].nunique() if len(records) else 0
    lines = [f"### {title}", ""] if title else []
    subject_text = f"{subjects} subjects" if subjects else "no subject ids in this layout"
    lines.append(
        f"{len(records)} images, {len(class_names)} class{'es' if len(class_names) != 1 else ''}, "
        f"{len(domains)} domain{'s' if len(domains) != 1 else ''} "
        f"({', '.join(domains) if domains else 'none'}), {subject_text}."
    )
    lines.append("")
    if len(domains) > 1:
        counts = records.groupby(["class_name", "domain"]).size()
        rows = []
        for name in class_names:
            per_domain = [int(counts.get((name, d), 0)) for d in domains]
            rows.append([name, *per_domain, sum(per_domain)])
        totals = [int((records["domain"] == d).sum()) for d in domains]
        rows.append(["**total**", *totals, len(records)])
        lines += _table(["class", *domains, "total"], rows)
        if subjects:
            lines.append("")
            per_domain = records[records["subject"] != ""].groupby("domain")["subject"].nunique()
            lines.append(
                "Subjects per domain: "
                + ", ".join(f"{d} {int(per_domain.get(d, 0))}" for d in domains)
                + "."
            )
    else:
        counts = records.groupby("class_name").size()
        rows = [[name, int(counts.get(name, 0))] for name in class_names]
        rows.append(["**total**", len(records)])
        lines += _table(["class", "images"], rows)
    if "um_per_px" in records.columns and len(records):
        sizes = records.groupby("domain")["um_per_px"].first()
        lines.append("")
        lines.append(
            "Pixel size: " + ", ".join(f"{d} {_pixel_size(sizes.get(d))}" for d in domains) + "."
        )
    small = records.attrs.get("small_patches")
    if small:
        lines.append("")
        lines.append(
            f"{small} patches smaller than the nominal size kept (padded in the pipeline)."
        )
    skipped = records.attrs.get("skipped") or {}
    lines.append("")
    if skipped:
        total = sum(len(paths) for paths in skipped.values())
        lines.append(f"Skipped {total} files:")
        lines.append("")
        roots = _domain_roots(records) if len(domains) > 1 else None
        if roots:
            columns = [*domains, "other"]
            rows = []
            for reason, paths in skipped.items():
                per = dict.fromkeys(columns, 0)
                for path in paths:
                    per[_domain_of(path, roots)] += 1
                rows.append([reason, *(per[c] for c in columns), len(paths)])
            if not any(row[-2] for row in rows):  # No unattributed skip: drop "other".
                columns = domains
                rows = [[*row[:-2], row[-1]] for row in rows]
            lines += _table(["reason", *columns, "total"], rows)
        else:
            lines += _table(["reason", "files"], [[r, len(p)] for r, p in skipped.items()])
    else:
        lines.append("Skipped: none.")
    return "\n".join(lines)


def _domain_roots(records):
    """The folder holding each domain's files (the common path of its records)."""
    roots = {}
    for domain, paths in records.groupby("domain")["path"]:
        paths = [p for p in paths if p]
        if not paths:
            return None
        common = os.path.commonpath(paths)
        if len(paths) == 1 or common in paths:
            common = os.path.dirname(common)
        roots[domain] = common.rstrip(os.sep) + os.sep
    return roots


def _domain_of(path, roots):
    """The domain whose folder holds `path` (the deepest match), else "other"."""
    matches = [(len(root), d) for d, root in roots.items() if str(path).startswith(root)]
    return max(matches)[1] if matches else "other"


def _pbc(folder, label_space, domain, scale):
    def read(root):
        return wbc.read_acevedo(
            root / folder, label_space=label_space, domain=domain, um_per_px=wbc.UM_PER_PX[scale]
        )

    return read


# name -> (folder that must exist, description, reader taking the shared root).
SHARED_DATASETS = {
    "pbc_128 (native 8 classes)": (
        "pbc_128",
        "Acevedo-20 / PBC, 128 px copies, `read_acevedo(label_space='native')`.",
        _pbc("pbc_128", "native", "pbc_128", "pbc_128"),
    ),
    "pbc_128 (harmonised 13 classes)": (
        "pbc_128",
        "The same images in the 13-class harmonised space, "
        "`read_acevedo(label_space='harmonised')`.",
        _pbc("pbc_128", "harmonised", "pbc_128", "pbc_128"),
    ),
    "pbc_native_sample (native 8 classes)": (
        "pbc_native_sample",
        "50 native-size PBC images per class, `read_acevedo(label_space='native')`.",
        _pbc("pbc_native_sample", "native", "pbc_native", "pbc_native"),
    ),
    "wbc_domains (5 classes, 3 domains)": (
        "wbc_domains",
        "PBC (pbc_128), BCCD and JTSC in the five shared classes, `read_wbc_domains`.",
        lambda root: wbc.read_wbc_domains(root),
    ),
    "idc": (
        "idc",
        "IDC 50x50 H&E patches with patient ids, `read_idc`.",
        lambda root: idc.read_idc(root / "idc"),
    ),
    "monuseg": (
        "nuclei/monuseg_train",
        "MoNuSeg 2018 training tiles with binary masks, `read_monuseg`; "
        "classes are the mask's pixel classes, counts are tiles.",
        lambda root: nuclei.read_monuseg(root / "nuclei" / "monuseg_train"),
    ),
}


def summarize_shared(root, only=None):
    """One markdown section per dataset of the shared data folder.

    Args:
        root: the shared data folder (e.g. ../shared/data).
        only: optional iterable of names; a name matches the datasets of
            `SHARED_DATASETS` whose key starts with it (e.g. "idc", "pbc_128").

    Returns:
        A dict name -> markdown section (a dataset whose folder is absent gets a
        one-line section saying so).
    """
    root = pathlib.Path(root)
    sections = {}
    for name, (folder, description, read) in SHARED_DATASETS.items():
        if only is not None and not any(name.startswith(o) for o in only):
            continue
        if not (root / folder).is_dir():
            sections[name] = f"### {name}\n\n`{folder}/` is absent from {root}."
            continue
        frame = read(root)
        body = summarize(frame)
        sections[name] = f"### {name}\n\n{description}\n\n{body}"
    return sections


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Print what the tfcell readers find in the shared real-data folder."
    )
    parser.add_argument("--shared", required=True, help="the shared data folder")
    parser.add_argument("--only", nargs="*", default=None, help="dataset names (prefixes) to read")
    parser.add_argument(
        "--update_docs",
        action="store_true",
        help=f"also write the output into {DOCS_PATH} between the {DOCS_BLOCK} markers",
    )
    parser.add_argument("--docs", default=str(DOCS_PATH), help="the docs file to update")
    args = parser.parse_args(argv)
    logging.getLogger("tfcell.data").setLevel(logging.ERROR)
    root = pathlib.Path(args.shared)
    if not (root / "README.md").exists() and not root.is_dir():
        parser.error(f"{root} is not a folder; pass the shared data folder (../shared/data).")
    sections = summarize_shared(root, only=args.only)
    text = "\n\n".join(sections.values())
    sys.stdout.write(text + "\n")
    if args.update_docs:
        from tfcell.evaluation.report import replace_marked_block

        generated = (
            "_Generated by `python -m tfcell.data.summary --shared ../shared/data "
            "--update_docs`; do not edit by hand._\n\n"
        )
        replace_marked_block(args.docs, DOCS_BLOCK, generated + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
