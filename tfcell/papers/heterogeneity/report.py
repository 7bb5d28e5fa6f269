"""The heterogeneity report: Table 2 (the loss ablation), Table A1 (each fold
model and the ensemble), Table 3 (the ensemble beside the published results),
subject-level results, paired tests against L_CE, the schedule's stages and
the figures (Fig. A1, Fig. 2).

Metrics as the paper: accuracy and weighted-F1 (per-class F1 weighted by
support), in %, mean +- sample std over the fold models. Two test parts:
"val" is each fold model's own validation fold (Table A1's "on validation";
never used for training or model selection: the schedule keeps the best
epoch by training loss), "test" the held-out patients shared by all folds,
predicted with the 5-crop TTA (Table A1's "on test"), on which the 7 fold
models are also combined (Sec. 5.2). Paired tests: two-sided paired t-test
(`tfcell.evaluation.statistics.paired_t_test`) and Wilcoxon signed-rank
(scipy) of each loss against L_CE over the folds.
"""

import os

import numpy as np
from scipy import stats

from tfcell.evaluation import report, statistics
from tfcell.papers.heterogeneity import figures as figures_lib

__all__ = [
    "ablation_table",
    "collect_section",
    "ensemble_table",
    "fold_table",
    "paired_tests_table",
    "result_line",
    "stages_table",
    "subject_table",
    "write_report",
]

VAL, TEST = "test:fold", "test"


def _get(config, *keys, default=None):
    value = config
    for key in keys:
        try:
            value = value[key]
        except (KeyError, TypeError, AttributeError):
            return default
    return value


def _singles(records, test_set=None):
    return [
        r for r in records
        if r.get("kind", "single") == "single" and (test_set is None or r["test_set"] == test_set)
    ]  # fmt: skip


def _pairs(value):
    """A config's `((name, value), ...)` as a dict (ConfigDict keys take no dots)."""
    return {str(k): v for k, v in (value or ())}


def _ensembles(records):
    return [r for r in records if r.get("kind") == "ensemble"]


def _methods(records, config):
    order = list(_get(config, "methods", default=()) or [])
    seen = [r["method"] for r in records]
    return [m for m in order if m in seen] + [m for m in dict.fromkeys(seen) if m not in order]


def _titles(records):
    return {r["method"]: r.get("title", r["method"]) for r in records}


def _pct(values):
    return statistics.format_mean_std(values, digits=2, scale=100.0)


def _by_fold(rows):
    return sorted(rows, key=lambda r: (r["repeat"], r["setting"]))


def _values(records, method, test_set, metric):
    return [r[metric] for r in _by_fold(_singles(records, test_set)) if r["method"] == method]


def ablation_table(records, config):
    """Table 2's layout: each loss's fold models on their validation folds and
    on the held-out test patients, the theta ensemble, the paper beside."""
    rows = _singles(records)
    if not rows:
        return ""
    titles = _titles(rows)
    ensembles = _ensembles(records)
    theta = (list(_get(config, "ensemble", "rules", default=()) or []) or ["theta_0.95"])[0]
    body = []
    for method in _methods(rows, config):
        paper = _get(config, "paper", "table2", method)
        ens = [r for r in ensembles if r["method"] == method and r["rule"] == theta]
        body.append(
            [
                titles[method],
                _pct(_values(records, method, VAL, "accuracy")),
                _pct(_values(records, method, VAL, "f1_weighted")),
                _pct(_values(records, method, TEST, "accuracy")),
                _pct(_values(records, method, TEST, "f1_weighted")),
                _pct([r["f1_weighted"] for r in ens]) if ens else "-",
                f"{paper[0]:.2f}" if paper else "-",
                f"{paper[1]:.2f}" if paper else "-",
            ]
        )
    return report.markdown_table(
        [
            "Loss", "Val acc (%)", "Val wF1 (%)", "Test acc (%)", "Test wF1 (%)",
            f"Ensemble {theta} wF1 (%)", "Paper acc (%)", "Paper wF1 (%)",
        ],
        body,
    )  # fmt: skip


def fold_table(records, config, method="heterogeneity"):
    """Table A1's layout for `method`: each fold model on its validation fold
    and on the test patients (TTA), then the ensemble rules; the paper beside."""
    val = {(r["repeat"], r["setting"]): r for r in _singles(records, VAL) if r["method"] == method}
    test = {
        (r["repeat"], r["setting"]): r for r in _singles(records, TEST) if r["method"] == method
    }
    if not val:
        return ""
    paper = list(_get(config, "paper", "table_a1", default=()) or [])
    body = []
    for i, key in enumerate(sorted(val)):
        p = paper[i] if i < len(paper) else None
        t = test.get(key)
        body.append(
            [
                f"{key[1]} model" + (f" (r{key[0]})" if key[0] else ""),
                f"{100 * val[key]['accuracy']:.2f}",
                f"{100 * val[key]['f1_weighted']:.2f}",
                f"{100 * t['f1_weighted']:.2f}" if t else "-",
                f"{p[0]:.2f} / {p[1]:.2f} / {p[2]:.2f}" if p else "-",
            ]
        )
    paper_ens = _pairs(_get(config, "paper", "ensemble"))
    for r in sorted(
        (r for r in _ensembles(records) if r["method"] == method), key=lambda r: r["rule"]
    ):
        p = paper_ens.get(r["rule"])
        body.append(
            [
                f"ensemble ({r['rule']})" + (f" (r{r['repeat']})" if r["repeat"] else ""),
                "-",
                "-",
                f"{100 * r['f1_weighted']:.2f}",
                f"- / - / {p:.2f}" if p else "-",
            ]
        )
    return report.markdown_table(
        ["Model", "Val acc (%)", "Val wF1 (%)", "Test wF1 (%, TTA)",
         "Paper: val acc / val wF1 / test wF1"],
        body,
    )  # fmt: skip


def ensemble_table(records, config):
    """Table 3's layout: every loss's ensemble by each rule on the test patients,
    beside the mean fold model; the paper's ensemble beside."""
    ens = _ensembles(records)
    if not ens:
        return ""
    titles = _titles(records)
    rules = list(dict.fromkeys(r["rule"] for r in ens))
    paper = _pairs(_get(config, "paper", "ensemble"))
    body = []
    for method in _methods(ens, config):
        cells = []
        for rule in rules:
            sel = [r for r in ens if r["method"] == method and r["rule"] == rule]
            cells.append(_pct([r["f1_weighted"] for r in sel]) if sel else "-")
        body.append([titles[method], _pct(_values(records, method, TEST, "f1_weighted"))] + cells)
    body.append(
        ["Paper (L_H, C-NMC final test)", "90.39-94.41 (Table A1)"]
        + [f"{paper[r]:.2f}" if r in paper else "-" for r in rules]
    )
    return report.markdown_table(
        ["Loss", "Mean fold model wF1 (%)"] + [f"Ensemble {r} wF1 (%)" for r in rules], body
    )


def subject_table(records, config):
    """Per-patient accuracy on the test patients: mean, std and minimum over
    patients (per fold model, then averaged over folds; and the theta
    ensemble), and how many patients fall below 50 %."""
    rows = _singles(records, TEST)
    if not rows or "subject_accuracy_mean" not in rows[0]:
        return ""
    titles = _titles(rows)
    ens = _ensembles(records)
    theta = (list(_get(config, "ensemble", "rules", default=()) or []) or ["theta_0.95"])[0]
    body = []
    for method in _methods(rows, config):
        sel = [r for r in rows if r["method"] == method]
        e = [r for r in ens if r["method"] == method and r["rule"] == theta]
        body.append(
            [
                titles[method],
                str(sel[0]["num_subjects"]),
                _pct([r["subject_accuracy_mean"] for r in sel]),
                _pct([r["subject_accuracy_std"] for r in sel]),
                _pct([r["subject_accuracy_min"] for r in sel]),
                f"{np.mean([r['subjects_below_half'] for r in sel]):.1f}",
                (
                    f"{100 * e[0]['subject_accuracy_mean']:.2f} / "
                    f"{100 * e[0]['subject_accuracy_std']:.2f} / "
                    f"{100 * e[0]['subject_accuracy_min']:.2f} / {e[0]['subjects_below_half']}"
                )
                if e
                else "-",
            ]
        )
    return report.markdown_table(
        ["Loss", "Patients", "Mean patient acc (%)", "Std over patients (%)",
         "Worst patient (%)", "Patients < 50 %", f"Ensemble {theta}: mean / std / worst / < 50 %"],
        body,
    )  # fmt: skip


def paired_tests_table(records, config, baseline="ce"):
    """Each loss against `baseline` over the folds: mean difference (points),
    paired t-test p and Wilcoxon signed-rank p, on the validation folds' and
    the test patients' weighted-F1."""
    rows = _singles(records)
    methods = [m for m in _methods(rows, config) if m != baseline]
    if not methods or not any(r["method"] == baseline for r in rows):
        return ""
    titles = _titles(rows)
    body = []
    for method in methods:
        cells = [titles[method]]
        for test_set in (VAL, TEST):
            a = _values(records, method, test_set, "f1_weighted")
            b = _values(records, baseline, test_set, "f1_weighted")
            if len(a) != len(b) or not a:
                cells += ["-", "-", "-"]
                continue
            t = statistics.paired_t_test(a, b)
            diff = np.asarray(a) - np.asarray(b)
            w = float("nan")
            if len(diff) >= 2 and np.any(diff != 0):
                w = float(stats.wilcoxon(a, b).pvalue)
            cells += [f"{100 * t['mean_difference']:+.2f}", _p(t["p"]), _p(w)]
        body.append(cells)
    return report.markdown_table(
        ["Loss vs L_CE", "Val: mean diff (pts)", "t-test p", "Wilcoxon p",
         "Test: mean diff (pts)", "t-test p", "Wilcoxon p"],
        body,
    )  # fmt: skip


def _p(value):
    """A p-value for a table: 3 decimals, "< 0.001" below that, "-" when undefined."""
    if value != value:  # NaN: fewer than two pairs, or all differences equal.
        return "-"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def _job_rows(records):
    seen = {}
    for r in _singles(records):
        seen[(r["setting"], r["repeat"], r["method"])] = r
    return list(seen.values())


def stages_table(records, config):
    """The two-stage schedule as it ran: epochs per stage and the best training
    loss of each stage, and the training terms at the last epoch (weighted as in
    the loss), mean +- std over folds."""
    rows = [r for r in _job_rows(records) if "stage" in r.get("train_history", {})]
    if not rows:
        return ""
    titles = _titles(rows)
    body = []
    for method in _methods(rows, config):
        sel = [r for r in rows if r["method"] == method]
        s1, s2, l1, l2, terms = [], [], [], [], {}
        hp = sel[0].get("hparams", {})
        for r in sel:
            h = r["train_history"]
            stage = np.asarray(h["stage"])
            loss = np.asarray(h["loss"])
            s1.append(int((stage == 1).sum()))
            s2.append(int((stage == 2).sum()))
            l1.append(float(loss[stage == 1].min()) if (stage == 1).any() else float("nan"))
            if (stage == 2).any():
                l2.append(float(loss[stage == 2].min()))
            for name, weight in (("ce", 1.0), ("class_term", hp.get("lambda_class", 0)),
                                 ("subject_term", hp.get("lambda_subject", 0)),
                                 ("subject_class_term", hp.get("lambda_subject_class", 0))):  # fmt: skip
                if name in h:
                    terms.setdefault(name, []).append(float(weight) * h[name][-1])
        body.append(
            [
                titles[method],
                statistics.format_mean_std(s1, digits=1),
                statistics.format_mean_std(s2, digits=1),
                statistics.format_mean_std(l1, digits=4),
                statistics.format_mean_std(l2, digits=4) if l2 else "-",
            ]
            + [
                statistics.format_mean_std(terms[t], digits=4) if t in terms else "-"
                for t in ("ce", "class_term", "subject_term", "subject_class_term")
            ]
        )
    return report.markdown_table(
        ["Loss", "Stage-1 epochs", "Stage-2 epochs", "Best loss, stage 1", "Best loss, stage 2",
         "CE (last)", "l1 L_class", "l2 L_subject", "l3 L_subject-class"],
        body,
    )  # fmt: skip


def _write(workdir, lines):
    path = os.path.join(workdir, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def _header(config, records, run_info):
    synthetic = any(r.get("synthetic") for r in records)
    singles = _singles(records, TEST)
    first = singles[0] if singles else {}
    lines = [f"# {config.title}", "", f"Paper: {config.paper.citation}", ""]
    if synthetic:
        lines += [
            "> **SYNTHETIC DATA.** These numbers come from the embedded synthetic images: "
            "they show the code runs end to end and say nothing about the paper's claims.",
            "",
        ]
    lines += [
        f"Data: `{config.data.source}`, {config.data.num_folds} folds split by patient and "
        f"stratified by class; {first.get('num_test', '?')} test images of "
        f"{first.get('num_subjects', '?')} held-out patients (shared by every fold).",
        "",
        f"Backbone `{config.model.backbone}` on {config.data.crop_size} px crops of "
        f"{config.data.image_size} px images, batch {config.training.batch_size}, Adam, "
        f"two stages ({config.schedule.stage1_lr:g} then {config.schedule.stage2_lr:g}, "
        f"patience {config.schedule.patience} on the training loss"
        + (
            f", stage 1 at most {config.schedule.stage1_max_epochs} epochs"
            if config.schedule.get("stage1_max_epochs")
            else ""
        )
        + f", at most {config.training.epochs} epochs); test-time augmentation "
        f"`{config.evaluation.tta}`; {run_info.get('hardware', '')}; whole run "
        f"{run_info.get('elapsed_min', 0.0):.1f} min.",
        "",
        "Model selection: none on validation data. Each fold model ends with the best "
        "epoch by training loss of its last stage (`TwoStageSchedule`), as the paper; "
        "the validation fold is only measured.",
        "",
    ]
    return lines


def write_report(workdir, config, records, run_info):
    """Writes `<workdir>/report.md` and its figures; returns its path."""
    figures = os.path.join(workdir, "figures")
    os.makedirs(figures, exist_ok=True)
    lines = _header(config, records, run_info)
    sections = [
        ("## Table 2: the loss ablation",
         "Accuracy and weighted-F1 (%), mean +- std over the fold models; the paper's "
         "Table 2 (Inception-v3, the challenge's train / validation split) beside.",
         ablation_table(records, config)),
        ("## Table A1: each fold model and the ensemble (L_H)",
         "Each fold model on its own validation fold and on the held-out test patients "
         "(5-crop TTA); the ensemble of all fold models by each rule. Paper beside "
         "(C-NMC final test).",
         fold_table(records, config)),
        ("## Table 3: the ensemble",
         "Weighted-F1 (%) on the held-out test patients: the mean single fold model and "
         "the ensemble of the fold models by each rule (theta: the most confident model "
         "if above theta, else the harmonic mean; average; maximum confidence).",
         ensemble_table(records, config)),
        ("## Subject-level results",
         "Accuracy per test patient (%): the spread the heterogeneity loss aims to narrow.",
         subject_table(records, config)),
        ("## Paired tests against L_CE",
         "Over the folds (same folds, same data, only the loss differs).",
         paired_tests_table(records, config)),
        ("## The two-stage schedule",
         "Epochs per stage, best training loss per stage, and the weighted training "
         "terms at the last epoch, mean +- std over folds.",
         stages_table(records, config)),
    ]  # fmt: skip
    for title, note, table in sections:
        if table:
            lines += [title, "", note, "", table, ""]
    if config.report.figures:
        curves = figures_lib.stage_curves(records, config, os.path.join(figures, "curves.png"))
        if curves:
            lines += [
                "## Fig. A1: training and validation curves per stage",
                "",
                "Accuracy and L_H per epoch for every fold model of L_H; stage 1 solid, "
                "stage 2 dashed.",
                "",
                "![curves](figures/curves.png)",
                "",
            ]
        tsne = figures_lib.tsne_figure(workdir, config, os.path.join(figures, "tsne.png"))
        if tsne:
            lines += [
                "## Fig. 2: t-SNE of the features on one validation fold",
                "",
                f"Pooled features of `{config.report.tsne_setting}`'s validation patients "
                "(never trained on), L_CE against L_H, coloured by class (top) and by "
                "patient (bottom).",
                "",
                "![tsne](figures/tsne.png)",
                "",
            ]
    lines += [
        "Trained networks: `jobs/fold<k>/r<repeat>/<method>/model.keras`; the ensemble on "
        "new cells: `tfcell.papers.heterogeneity.predict.predict_images(workdir, paths)`. "
        "Input contract in `config.json` (`input_contract`: stored size, crop size, RGB in "
        "[0, 255], class order).",
        "",
    ]
    return _write(workdir, lines)


def collect_section(name, config, records, run_info):
    """The docs/papers.md section of one finished workdir."""
    minutes = run_info.get("elapsed_min", float("nan"))
    data = "synthetic data" if any(r.get("synthetic") for r in records) else "real data"
    parts = [
        f"### `{name}`: {config['title']}\n\n`{config['variant']}` config, {data}; "
        f"{run_info.get('hardware', '')}, {minutes:.0f} min.\n"
    ]
    for note, table in (
        ("Table 2 layout (the loss ablation), mean +- std over folds, paper beside:",
         ablation_table(records, config)),
        ("Table A1 layout (L_H fold models and the ensemble), paper beside:",
         fold_table(records, config)),
        ("Table 3 layout (the ensemble on the held-out patients):",
         ensemble_table(records, config)),
        ("Subject-level results on the held-out patients:", subject_table(records, config)),
        ("Paired tests against L_CE over the folds:", paired_tests_table(records, config)),
        ("The two-stage schedule as it ran:", stages_table(records, config)),
    ):  # fmt: skip
        if table:
            parts.append(note + "\n\n" + table + "\n")
    return "\n".join(parts)


def result_line(config, records, run_info):
    """The docstring line: the L_H and L_CE ensembles' weighted-F1, paper beside."""
    ens = _ensembles(records)
    if not ens:
        return ""
    rule = (list(_get(config, "ensemble", "rules", default=()) or []) or ["theta_0.95"])[0]
    out = []
    for method in ("heterogeneity", "ce"):
        sel = [r for r in ens if r["method"] == method and r["rule"] == rule]
        folds = _values(records, method, TEST, "f1_weighted")
        if sel:
            out.append(
                f"{method} ensemble wF1 {_pct([r['f1_weighted'] for r in sel])} % (fold "
                f"models {_pct(folds)} %)"
            )
    data = "synthetic data" if any(r.get("synthetic") for r in records) else "real data"
    paper = _pairs(_get(config, "paper", "ensemble")).get(rule)
    return (
        f"Result: paper (C-NMC final test): L_H ensemble ({rule}) weighted-F1 "
        f"{paper if paper is not None else '-'} %. Measured (`{config['variant']}` config, "
        f"{data}, held-out patients): " + "; ".join(out) + f"; {run_info.get('hardware', '')}, "
        f"{run_info.get('elapsed_min', float('nan')):.0f} min"
    )
