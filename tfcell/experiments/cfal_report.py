"""`report.md` for a CFAL run: the paper's numbers beside the measured ones.

Everything here is computed from `results.jsonl` and the config's `paper`
section (values cited to the paper's tables), never typed by hand;
`reproductions/collect_results.py` reuses `comparison_table`.
"""

import os

import numpy as np

from tfcell.evaluation import plots, report, statistics

__all__ = ["comparison_table", "write_report"]

METRICS = ("precision", "recall", "f1", "accuracy")


def _ordered_methods(records):
    seen = []
    for r in records:
        if r["method"] not in seen:
            seen.append(r["method"])
    return seen


def _paper_row(paper, setting, method):
    """The paper's (precision, recall, f1, accuracy %) for a method, or Nones."""
    if setting == "long_tailed":
        row = dict(paper.get("long_tailed", {})).get(method)
        return (tuple(row) + (None,)) if row else (None,) * 4
    row = dict(paper.get("results", {})).get(method)
    if row:
        return tuple(row)
    # The ablation tables (XI, XII) give only macro-F1 and accuracy.
    ablation = dict(paper.get("ablation", {})).get(method)
    return (None, None, *ablation) if ablation else (None,) * 4


def _fmt(value, digits):
    return "-" if value is None else f"{value:.{digits}f}"


def comparison_table(records, paper, setting):
    """Markdown table: per method, measured mean +- std beside the paper, and the
    paired t-test p-value of F1 against cross-entropy."""
    rows = [r for r in records if r["setting"] == setting]
    baseline = {r["repeat"]: r for r in rows if r["method"] == "ce"}
    header = [
        "method",
        "precision",
        "recall",
        "macro-F1",
        "accuracy (%)",
        "paper P / R / F1 / acc",
        "F1 vs CE (paired t)",
        "runs",
    ]
    body = []
    for method in _ordered_methods(rows):
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["repeat"])
        cells = [mine[0].get("title", method)]
        for m in METRICS:
            cells.append(
                statistics.format_mean_std(
                    [r[m] for r in mine],
                    1 if m == "accuracy" else 3,
                    100.0 if m == "accuracy" else 1.0,
                )
            )
        p = _paper_row(paper, setting, method)
        cells.append(" / ".join([_fmt(p[0], 2), _fmt(p[1], 2), _fmt(p[2], 2), _fmt(p[3], 1)]))
        paired = [r for r in mine if r["repeat"] in baseline]
        if method == "ce" or len(paired) < 2:
            cells.append("-")
        else:
            test = statistics.paired_t_test(
                [r["f1"] for r in paired], [baseline[r["repeat"]]["f1"] for r in paired]
            )
            if np.isnan(test["p"]):
                cells.append("-")
            else:
                sign = "+" if test["mean_difference"] > 0 else "-"
                star = " *" if test["significant"] else ""
                cells.append(f"{sign}{abs(test['mean_difference']):.3f}, p={test['p']:.3f}{star}")
        cells.append(len(mine))
        body.append(cells)
    return report.markdown_table(header, body)


def _ablation_table(records, paper, setting):
    rows = [r for r in records if r["setting"] == setting]
    paper_rows = dict(paper.get("ablation", {}))
    body = []
    for method in ("affinity", "cb_affinity", "cfal"):
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        p = paper_rows.get(method, (None, None))
        body.append(
            [
                mine[0].get("title", method),
                statistics.format_mean_std([r["f1"] for r in mine]),
                statistics.format_mean_std([r["accuracy"] for r in mine], 1, 100.0),
                f"{_fmt(p[0], 2)} / {_fmt(p[1], 1)}",
            ]
        )
    if not body:
        return ""
    return report.markdown_table(["loss", "macro-F1", "accuracy (%)", "paper F1 / acc"], body)


def _auroc_table(records, paper, setting):
    rows = [r for r in records if r["setting"] == setting]
    methods = [m for m in ("ce", "cfal", "ensemble_vote") if any(r["method"] == m for r in rows)]
    if not methods:
        return ""
    names = rows[0]["class_names"]
    paper_auroc = dict(paper.get("auroc", {})) if setting != "long_tailed" else {}
    header = ["class"] + [f"{m} (measured / paper)" for m in methods]
    body = []
    for c, name in enumerate(names):
        cells = [name]
        for m in methods:
            values = [r["auroc"][c] for r in rows if r["method"] == m and r["auroc"][c] is not None]
            ref = paper_auroc.get(m)
            cells.append(
                f"{statistics.format_mean_std(values)} / {_fmt(ref[c] if ref else None, 3)}"
            )
        body.append(cells)
    return report.markdown_table(header, body)


def _time_table(records, paper, setting=None):
    """Seconds per epoch per loss (one setting: epochs differ in size between them)."""
    singles = [
        r
        for r in records
        if r.get("kind") == "single" and (setting is None or r["setting"] == setting)
    ]
    by_method = report.group_results(singles, ("method",), "epoch_time_s")
    ce = np.mean(by_method.get(("ce",), [np.nan]))
    paper_times = dict(paper.get("epoch_time", {}))
    ce_paper = paper_times.get("ce", (None, None))[0]
    body = []
    for (method,), values in by_method.items():
        mean, std = statistics.mean_std(values)
        p = paper_times.get(method)
        ratio_paper = f"{p[0] / ce_paper:.2f}" if p and ce_paper else "-"
        body.append(
            [
                method,
                f"{mean:.2f} ({std:.2f})",
                f"{mean / ce:.2f}" if np.isfinite(ce) else "-",
                f"{p[0]} ({p[1]})" if p else "-",
                ratio_paper,
            ]
        )
    return report.markdown_table(
        ["loss", "s/epoch mean (sd)", "ratio to CE", "paper s/epoch (sd)", "paper ratio"], body
    )


def write_report(workdir, config, elapsed=None, hardware=""):
    """Writes `<workdir>/report.md` (and confusion-matrix PNGs); returns its path."""
    records = report.read_results(workdir)
    paper = config.paper
    figures = os.path.join(workdir, "figures")
    os.makedirs(figures, exist_ok=True)
    settings = []
    for r in records:
        if r["setting"] not in settings:
            settings.append(r["setting"])
    repeats = sorted({r["repeat"] for r in records})
    lines = [f"# {config.title}", "", f"Paper: {paper.citation}", ""]
    if any(r.get("synthetic") for r in records):
        lines += [
            "> **SYNTHETIC DATA.** These numbers come from the embedded synthetic images: "
            "they show the code runs end to end and say nothing about the paper's claims.",
            "",
        ]
    lines += [
        f"Backbone `{config.model.backbone}` at {config.data.image_size} px, "
        f"{len(repeats)} repeat(s), up to {config.training.epochs} epochs "
        f"(early stopping, patience {config.training.patience}, on validation loss); "
        f"{hardware}" + (f"; whole run {elapsed / 60:.1f} min." if elapsed else "."),
        "",
        "Accuracy in %, other metrics as fractions; mean +- sample std over repeats. "
        "`F1 vs CE`: mean difference and two-sided paired t-test p-value "
        "(* = significant at 0.05). Trained networks: "
        "`<setting>/<loss>/model.keras`, later repeats in `r<k>/` (`keras.saving.load_model` after `import tfcell`).",
        "",
    ]
    for setting in settings:
        rows = [r for r in records if r["setting"] == setting]
        table = paper.long_tailed_table if setting == "long_tailed" else paper.results_table
        lines += [
            f"## Setting `{setting}`",
            "",
            f"Train {rows[0]['num_train']}, validation {rows[0]['num_val']}, "
            f"test {rows[0]['num_test']} images. Paper: {table}.",
            "",
            comparison_table(records, paper, setting),
            "",
        ]
        ablation = _ablation_table(records, paper, setting)
        if ablation:
            lines += [f"### Ablation ({paper.ablation_table})", "", ablation, ""]
        auroc = _auroc_table(records, paper, setting)
        if auroc:
            lines += [f"### Class-wise AUROC ({paper.auroc_table})", "", auroc, ""]
        lines += ["### Confusion matrices (first repeat, rows normalised)", ""]
        for r in rows:
            if r["repeat"] == repeats[0] and r["method"] in ("ce", "cfal", "ensemble_vote"):
                name = f"confusion_{setting}_{r['method']}.png"
                plots.plot_confusion_matrix(
                    r["confusion"],
                    r["class_names"],
                    os.path.join(figures, name),
                    title=f"{setting}: {r.get('title', r['method'])}",
                )
                lines.append(f"![{r['method']}](figures/{name})")
        lines.append("")
    lines += [
        f"## Wall time per epoch ({paper.epoch_time_table})",
        "",
        f"Setting `{settings[0]}`, measured in this run on the same machine (first "
        "epoch, which includes graph tracing, left out).",
        "",
        _time_table(records, paper, settings[0]),
        "",
    ]
    path = os.path.join(workdir, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path
