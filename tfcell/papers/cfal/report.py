"""The CFAL paper's tables: `report.md` of a run and its docs/papers.md section,
the paper's numbers beside the measured ones.

Everything here is computed from `results.jsonl` and the config's `paper`
section (values cited to the paper's tables), never typed by hand.
"""

import os

import numpy as np

from tfcell.evaluation import plots, report, statistics

__all__ = ["collect_section", "comparison_table", "result_line", "sweep_table", "write_report"]

SELECTION_TEXT = {
    "val_macro_f1": "validation macro-F1",
    "val_accuracy": "validation accuracy",
}

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


def _main(records):
    """The evaluations on each setting's main test part (not extra test sets or sweeps)."""
    return [r for r in records if r.get("kind") != "sweep" and r.get("test_set", "test") == "test"]


def comparison_table(records, paper, setting):
    """Markdown table: per method, measured mean +- std beside the paper, and the
    paired t-test p-value of F1 against cross-entropy."""
    rows = [r for r in _main(records) if r["setting"] == setting]
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


def write_report(workdir, config, records, run_info):
    """Writes `<workdir>/report.md` (and confusion-matrix PNGs); returns its path."""
    records = _main(records)
    elapsed = run_info.get("elapsed_min", 0.0) * 60
    hardware = run_info.get("hardware", "")
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
        f"{len(repeats)} repeat(s), up to {config.training.epochs} epochs; "
        f"{hardware}" + (f"; whole run {elapsed / 60:.1f} min." if elapsed else "."),
        "",
        f"Model selection: every method keeps the epoch with the best "
        f"{SELECTION_TEXT[config.training.selection]} (stopping after "
        f"{config.training.patience} epochs without improvement), the same criterion for "
        'every loss. The paper says only "early stopping, patience 5, when the validation '
        "loss plateaus\"; a loss value does not track accuracy across losses (CFAL's focal "
        "weight rises as the model improves), and the authors' code keeps the best "
        "validation accuracy.",
        "",
        "Probabilities: each network's head scores (logits, scaled cosines, log-affinities) "
        "are turned into probabilities with one temperature fitted on the validation part "
        "(temperature scaling), so that the ensembles average and compare members on one "
        "calibrated scale; ECE is the expected calibration error of those probabilities.",
        "",
        "Accuracy in %, other metrics as fractions; mean +- sample std over repeats. "
        "`F1 vs CE`: mean difference and two-sided paired t-test p-value "
        "(* = significant at 0.05). Trained networks: "
        "`jobs/<setting>/r<repeat>/<loss>/model.keras` (`keras.saving.load_model` after "
        "`import tfcell`).",
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
            "### Calibration and selection",
            "",
            calibration_table(records, setting),
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


def calibration_table(records, setting):
    """Per method: the fitted temperature and the test ECE (mean +- std)."""
    rows = [r for r in _main(records) if r["setting"] == setting and r.get("kind") == "single"]
    body = []
    for method in _ordered_methods(rows):
        mine = [r for r in rows if r["method"] == method]
        body.append(
            [
                mine[0].get("title", method),
                mine[0].get("head", "-"),
                statistics.format_mean_std([r["temperature"] for r in mine], 2),
                statistics.format_mean_std([r["ece"] for r in mine], 3),
                statistics.format_mean_std([r["best_epoch"] for r in mine], 1),
            ]
        )
    return report.markdown_table(
        ["method", "head", "temperature", "test ECE", "selected epoch"], body
    )


def _summary_line(records, config):
    singles = [r for r in records if r.get("kind") == "single"]
    total = sum(r.get("train_time_s", 0.0) for r in singles)
    repeats = len({r["repeat"] for r in records})
    data = "synthetic data" if any(r.get("synthetic") for r in records) else "real data"
    selection = SELECTION_TEXT.get(config["training"].get("selection"), "?")
    return (
        f"{config['model']['backbone']} at {config['data']['image_size']} px, {data}, "
        f"{repeats} repeat(s), {len(singles)} networks trained in {total / 60:.1f} min in all; "
        f"every method selected by {selection}; ensembles over temperature-calibrated "
        "probabilities."
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
        rows.append([r["method"], str(r["trials"]), f"{r['best_value']:.3f}", tuned])
    objective = SELECTION_TEXT.get(sweeps[0].get("objective"), sweeps[0].get("objective"))
    return (
        f"Setting `{sweeps[0]['setting']}`, objective {objective}, "
        f"{config['sweep']['tuner']} search over Table III; `(IX: v)` marks a value that "
        "differs from the config's Table IX default.\n\n"
        + report.markdown_table(["method", "trials", "best value", "best hyperparameters"], rows)
    )


def collect_section(name, config, records, run_info):
    """The docs/papers.md section of one finished workdir."""
    parts = []
    sweeps = [r for r in records if r.get("kind") == "sweep"]
    if sweeps:
        parts.append(f"### `{name}`: Keras Tuner sweep\n\n{sweep_table(sweeps, config)}\n")
    records = _main(records)
    if not records:
        return "\n".join(parts)
    paper = config["paper"]
    hardware = run_info.get("hardware", "unknown hardware")
    minutes = run_info.get("elapsed_min", float("nan"))
    parts.append(
        f"### `{name}`: {config['title']}\n\n{_summary_line(records, config)} "
        f"{hardware}, {minutes:.0f} min.\n"
    )
    settings = []
    for r in records:
        if r["setting"] not in settings:
            settings.append(r["setting"])
    for setting in settings:
        table = paper["long_tailed_table"] if setting == "long_tailed" else paper["results_table"]
        parts.append(
            f"Setting `{setting}` (paper: {table}):\n\n"
            + comparison_table(records, paper, setting)
            + "\n\nCalibration and selection:\n\n"
            + calibration_table(records, setting)
            + "\n"
        )
    parts.append(
        f"Seconds per epoch, setting `{settings[0]}` ({paper['epoch_time_table']}):\n\n"
        + _time_table(records, paper, settings[0])
        + "\n"
    )
    return "\n".join(parts)


def result_line(config, records, run_info, method="cfal", setting=None):
    """The module docstring's result line (HOUSE_STYLE): paper vs measured."""
    records = [r for r in _main(records) if r.get("kind") == "single"]
    if not records:
        return ""
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
    data = "synthetic data" if any(r.get("synthetic") for r in records) else "real data"
    return (
        f"Result: paper ({paper['results_table']}): {method} macro-F1 {p_f1:.2f}, accuracy "
        f"{p_acc:.1f} %; measured (`{config['variant']}` config, {data}, `{setting}` split): "
        f"{lines[0]}; {lines[1]}; on {run_info.get('hardware', 'unknown hardware')}, "
        f"{run_info.get('elapsed_min', float('nan')):.0f} min"
    )
