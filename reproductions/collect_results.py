r"""Turns finished CFAL workdirs into the measured tables of docs/papers.md.

    python reproductions/collect_results.py workdirs/cfal_idc_cpu workdirs/cfal_crc
    python reproductions/collect_results.py workdirs/cfal_idc_cpu --update_docs

Reads each workdir's `config.json` (for the paper's numbers, cited there) and
`results.jsonl`; skips workdirs without `done`. With `--update_docs` the text
between `<!-- cfal:measured:start -->` and `<!-- cfal:measured:end -->` in
docs/papers.md is replaced; otherwise the tables are printed. Nothing here is
typed by hand: every number comes from the files.
"""

import json
import os
import sys

from absl import app, flags

from tfcell.evaluation import report
from tfcell.experiments import cfal_report

_UPDATE = flags.DEFINE_boolean("update_docs", False, "Rewrite the block in docs/papers.md.")
_DOCS = flags.DEFINE_string(
    "docs", os.path.join(os.path.dirname(__file__), "..", "docs", "papers.md"), "Docs file."
)

MARKER = "cfal:measured"  # <!-- cfal:measured:start --> ... <!-- cfal:measured:end -->


def _summary_line(records, config):
    singles = [r for r in records if r.get("kind") == "single"]
    total = sum(r.get("train_time_s", 0.0) for r in singles)
    repeats = len({r["repeat"] for r in records})
    data = "synthetic data" if any(r.get("synthetic") for r in records) else "real data"
    return (
        f"{config['model']['backbone']} at {config['data']['image_size']} px, {data}, "
        f"{repeats} repeat(s), {len(singles)} networks trained in {total / 60:.1f} min in all."
    )


def collect(workdirs):
    """Markdown for the given workdirs (unfinished ones are listed, not tabulated)."""
    parts = []
    for workdir in workdirs:
        name = os.path.basename(os.path.normpath(workdir))
        if not report.is_done(workdir):
            parts.append(f"### `{name}`\n\nNot finished (no `done` file).\n")
            continue
        with open(os.path.join(workdir, "config.json")) as f:
            config = json.load(f)
        records = [r for r in report.read_results(workdir) if r.get("kind") != "sweep"]
        paper = config["paper"]
        parts.append(f"### `{name}`: {config['title']}\n\n{_summary_line(records, config)}\n")
        settings = []
        for r in records:
            if r["setting"] not in settings:
                settings.append(r["setting"])
        for setting in settings:
            table = (
                paper["long_tailed_table"] if setting == "long_tailed" else paper["results_table"]
            )
            parts.append(
                f"Setting `{setting}` (paper: {table}):\n\n"
                + cfal_report.comparison_table(records, paper, setting)
                + "\n"
            )
        parts.append(
            f"Seconds per epoch, setting `{settings[0]}` ({paper['epoch_time_table']}):\n\n"
            + cfal_report._time_table(records, paper, settings[0])
            + "\n"
        )
    return "\n".join(parts)


def main(argv):
    workdirs = argv[1:]
    if not workdirs:
        sys.exit("Give one or more workdirs, e.g. workdirs/cfal_idc_cpu.")
    text = collect(workdirs)
    if _UPDATE.value:
        report.replace_marked_block(_DOCS.value, MARKER, text)
        print(f"Updated {_DOCS.value}")
    else:
        print(text)


if __name__ == "__main__":
    app.run(main)
