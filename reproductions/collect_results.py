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
import textwrap

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


def sweep_table(sweeps, config):
    """Best trial per method of a Keras Tuner sweep (Table III space) beside the
    config's defaults (Table IX)."""
    rows = []
    for r in sweeps:
        defaults = config["loss"][r["method"]]
        tuned = ", ".join(
            f"{k} {v:g}" + ("" if defaults.get(k) == v else f" (IX: {defaults.get(k, '-')})")
            for k, v in sorted(r["hparams"].items())
        )
        rows.append([r["method"], str(r["trials"]), f"{r['val_f1']:.3f}", tuned])
    return (
        f"Setting `{sweeps[0]['setting']}`, objective validation macro-F1, "
        f"{config['sweep']['tuner']} search over Table III; `(IX: v)` marks a value that "
        "differs from the config's Table IX default.\n\n"
        + report.markdown_table(
            ["method", "trials", "best val macro-F1", "best hyperparameters"], rows
        )
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
        sweeps = [r for r in report.read_results(workdir) if r.get("kind") == "sweep"]
        if sweeps:
            parts.append(f"### `{name}`: Keras Tuner sweep\n\n{sweep_table(sweeps, config)}\n")
        records = [r for r in report.read_results(workdir) if r.get("kind") != "sweep"]
        if not records:
            continue
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


def _run_info(workdir):
    """(hardware, minutes) of a run: run.json, else the report's header line."""
    path = os.path.join(workdir, "run.json")
    if os.path.exists(path):
        with open(path) as f:
            info = json.load(f)
        return info["hardware"], info["elapsed_min"]
    with open(os.path.join(workdir, "report.md")) as f:
        for line in f:
            if "whole run" in line:  # "...; <hardware>; whole run X min."
                parts = line.strip().rstrip(".").split("; ")
                return parts[-2], float(parts[-1].split()[-2])
    return "unknown hardware", float("nan")


def result_line(workdir, method="cfal", setting=None):
    """The module docstring's result line (HOUSE_STYLE): paper vs measured."""
    with open(os.path.join(workdir, "config.json")) as f:
        config = json.load(f)
    records = [r for r in report.read_results(workdir) if r.get("kind") == "single"]
    setting = setting or records[-1]["setting"]
    paper = config["paper"]
    _, _, p_f1, p_acc = dict(paper["results"])[method]
    lines = []
    for name in (method, "ce"):
        rows = [r for r in records if r["method"] == name and r["setting"] == setting]
        f1 = [r["f1"] for r in rows]
        acc = [100 * r["accuracy"] for r in rows]
        lines.append(
            f"{name} macro-F1 {report.mean_std_cell(f1)}, accuracy "
            f"{report.mean_std_cell(acc, digits=1)} % over {len(rows)} runs"
        )
    hardware, minutes = _run_info(workdir)
    data = "synthetic data" if any(r.get("synthetic") for r in records) else "real data"
    return (
        f"Result: paper ({paper['results_table']}): {method} macro-F1 {p_f1:.2f}, accuracy "
        f"{p_acc:.1f} %; measured (`{config['variant']}` config, {data}, `{setting}` split): "
        f"{lines[0]}; {lines[1]}; on {hardware}, {minutes:.0f} min "
        f"(written by collect_results.py from `{os.path.basename(os.path.normpath(workdir))}`)."
    )


def main(argv):
    workdirs = argv[1:]
    if not workdirs:
        sys.exit("Give one or more workdirs, e.g. workdirs/cfal_idc_cpu.")
    text = collect(workdirs)
    if _UPDATE.value:
        report.replace_marked_block(_DOCS.value, MARKER, text)
        print(f"Updated {_DOCS.value}")
        for workdir in workdirs:
            records = report.read_results(workdir) if report.is_done(workdir) else []
            if not any(r.get("kind") == "single" for r in records):
                continue  # Unfinished, or a sweep: no comparison result line.
            with open(os.path.join(workdir, "config.json")) as f:
                dataset = json.load(f)["dataset"]
            script = os.path.join(os.path.dirname(__file__), f"cfal_{dataset}.py")
            line = textwrap.fill(result_line(workdir), width=80)
            report.replace_marked_block(script, f"cfal_{dataset}:result", line)
            print(f"Updated {script}")
    else:
        print(text)


if __name__ == "__main__":
    app.run(main)
