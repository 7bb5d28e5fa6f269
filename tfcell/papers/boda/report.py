"""The BoDA report: the poster's two tables, leave-one-domain-out, rare-class
recall, paired tests against ERM, confusion matrices and a feature-space figure.

Metrics as the poster: F1-micro (= accuracy for one label per cell) and
F1-macro over the classes present in the test part (`f1_macro_present`: a
domain without basophils is not scored on them), mean +- sample std over
seeds (leave-one-domain-out) or folds (the poster's protocol). Paired tests:
two-sided paired t-tests of each method against ERM over the same
(setting, seed) units (`tfcell.evaluation.statistics.paired_t_test`).
"""

import os

import numpy as np

from tfcell.evaluation import report, statistics
from tfcell.papers.boda import figures as figures_lib

__all__ = [
    "collect_section",
    "cv_table",
    "lodo_table",
    "paired_tests_table",
    "rare_recall_table",
    "result_line",
    "write_report",
]

_NOTE = (
    "F1-micro and F1-macro (over the classes present in the test part) as fractions, "
    "mean +- sample std over {unit}."
)


def _get(config, *keys, default=None):
    value = config
    for key in keys:
        try:
            value = value[key]
        except (KeyError, TypeError, AttributeError):
            return default
    return value


def _singles(records):
    return [r for r in records if r.get("kind", "single") == "single"]


def _methods(records, config):
    order = list(_get(config, "methods", default=()) or [])
    seen = [r["method"] for r in records]
    return [m for m in order if m in seen] + [m for m in dict.fromkeys(seen) if m not in order]


def _titles(records):
    return {r["method"]: r.get("title", r["method"]) for r in records}


def _cell(values):
    return statistics.format_mean_std(values, digits=3)


def _paper_cell(paper, table, method):
    row = _get(paper, table, method)
    if not row:
        return "-", "-"
    return f"{row[0]:.2f} +- {row[1]:.2f}", f"{row[2]:.2f} +- {row[3]:.2f}"


def _select(records, prefix, test_set):
    return [
        r for r in _singles(records)
        if r["setting"].startswith(prefix) and r.get("test_set") == test_set
    ]  # fmt: skip


def lodo_table(records, config):
    """Rows: methods; columns: F1-micro / F1-macro per held-out domain and the mean."""
    rows = [r for r in _singles(records) if r["setting"].startswith("lodo_")]
    rows = [r for r in rows if r.get("test_set") == "test"]
    if not rows:
        return ""
    domains = list(dict.fromkeys(r["setting"][len("lodo_") :] for r in rows))
    titles = _titles(rows)
    header = ["Method"] + [f"{d} F1-micro \\| F1-macro" for d in domains]
    header.append("mean F1-micro \\| F1-macro")
    body = []
    for method in _methods(rows, config):
        cells = [titles[method]]
        micro_all, macro_all = [], []
        for d in domains:
            sel = [r for r in rows if r["method"] == method and r["setting"] == f"lodo_{d}"]
            micro = [r["f1_micro"] for r in sel]
            macro = [r["f1_macro_present"] for r in sel]
            micro_all += micro
            macro_all += macro
            cells.append(f"{_cell(micro)} \\| {_cell(macro)}")
        cells.append(f"{_cell(micro_all)} \\| {_cell(macro_all)}")
        body.append(cells)
    return report.markdown_table(header, body)


def _cv_unseen(records):
    parts = {r.get("test_set") for r in _singles(records) if r["setting"].startswith("cv_")}
    unseen = sorted(p for p in parts if p and p.startswith("test:") and p != "test:sources")
    unseen = [p for p in unseen if not p.startswith("test:extra_")]
    return unseen[0] if unseen else None


def cv_table(records, config, test_set):
    """The poster's layout: per method F1-micro and F1-macro over the folds,
    the poster's values beside (`test_set` "test:sources" -> its first table,
    the unseen domain -> its second)."""
    rows = _select(records, "cv_", test_set)
    if not rows:
        return ""
    paper = _get(config, "paper", default={})
    table = "validation" if test_set == "test:sources" else "unseen"
    titles = _titles(rows)
    header = ["Method", "F1-micro", "F1-macro", "poster F1-micro", "poster F1-macro", "folds"]
    body = []
    for method in _methods(rows, config):
        sel = [r for r in rows if r["method"] == method]
        p_micro, p_macro = _paper_cell(paper, table, method)
        body.append(
            [
                titles[method],
                _cell([r["f1_micro"] for r in sel]),
                _cell([r["f1_macro_present"] for r in sel]),
                p_micro,
                p_macro,
                str(len(sel)),
            ]
        )
    return report.markdown_table(header, body)


def rare_recall_table(records, config, prefix, test_set):
    """Recall of the rare classes (those of `config.report.rare_classes` present
    in the test part), mean +- std."""
    rows = [
        r for r in _singles(records)
        if r["setting"].startswith(prefix) and (test_set is None or r.get("test_set") == test_set)
        and not str(r.get("test_set", "")).startswith("test:extra_")
    ]  # fmt: skip
    if not rows:
        return ""
    names = list(rows[0]["class_names"])
    wanted = [c for c in _get(config, "report", "rare_classes", default=()) if c in names]
    present = [
        c for c in wanted
        if any((r.get("recall_per_class") or [None] * len(names))[names.index(c)] is not None
               for r in rows)
    ]  # fmt: skip
    if not present:
        return ""
    titles = _titles(rows)
    header = ["Method"] + [f"{c} recall" for c in present]
    body = []
    for method in _methods(rows, config):
        sel = [r for r in rows if r["method"] == method]
        cells = [titles[method]]
        for c in present:
            values = [r["recall_per_class"][names.index(c)] for r in sel]
            cells.append(_cell([v for v in values if v is not None]))
        body.append(cells)
    return report.markdown_table(header, body)


def _units(records, method, prefix, test_set, metric):
    return {
        (r["setting"], r["repeat"]): r[metric]
        for r in _singles(records)
        if r["method"] == method and r["setting"].startswith(prefix) and r.get("test_set") == test_set
    }  # fmt: skip


def paired_tests_table(records, config, prefix, test_set):
    """Each method against ERM, paired by (setting, seed): mean difference and p."""
    rows = _select(records, prefix, test_set)
    methods = [m for m in _methods(rows, config) if m != "erm"]
    if not rows or "erm" not in {r["method"] for r in rows}:
        return ""
    titles = _titles(rows)
    header = ["Method vs ERM", "d F1-micro (p)", "d F1-macro (p)", "pairs"]
    body = []
    for method in methods:
        cells = [titles[method]]
        n = 0
        for metric in ("f1_micro", "f1_macro_present"):
            base = _units(records, "erm", prefix, test_set, metric)
            mine = _units(records, method, prefix, test_set, metric)
            keys = sorted(set(base) & set(mine))
            n = len(keys)
            test = statistics.paired_t_test([mine[k] for k in keys], [base[k] for k in keys])
            star = "*" if test["significant"] else ""
            p = "-" if np.isnan(test["p"]) else f"{test['p']:.3f}"
            cells.append(f"{test['mean_difference']:+.3f} ({p}){star}")
        cells.append(str(n))
        body.append(cells)
    return report.markdown_table(header, body)


def extra_table(records, config):
    """Every method on each extra test domain (a user's own hospitals)."""
    rows = [r for r in _singles(records) if str(r.get("test_set", "")).startswith("test:extra_")]
    if not rows:
        return ""
    titles = _titles(rows)
    domains = sorted({r["test_set"] for r in rows})
    header = ["Method"] + [f"{d[len('test:extra_') :]} F1-micro \\| F1-macro" for d in domains]
    body = []
    for method in _methods(rows, config):
        cells = [titles[method]]
        for d in domains:
            sel = [r for r in rows if r["method"] == method and r["test_set"] == d]
            cells.append(
                f"{_cell([r['f1_micro'] for r in sel])} \\| "
                f"{_cell([r['f1_macro_present'] for r in sel])}"
            )
        body.append(cells)
    return report.markdown_table(header, body)


_TERMS = ("ce", "macro", "boda", "penalty", "domain_ce")


def terms_table(records, config):
    """Each method's training terms at its last epoch (weighted as in the loss),
    mean +- std over jobs: how much each penalty weighs beside cross-entropy."""
    rows = [r for r in _singles(records) if r.get("train_history")]
    seen = {}
    for r in rows:  # One record per test part: count each job once.
        seen[(r["setting"], r["repeat"], r["method"])] = r
    rows = list(seen.values())
    terms = [t for t in _TERMS if any(t in r["train_history"] for r in rows)]
    if not rows or not terms:
        return ""
    titles = _titles(rows)
    body = []
    for method in _methods(rows, config):
        sel = [r for r in rows if r["method"] == method]
        body.append(
            [titles[method]]
            + [
                _cell([r["train_history"][t][-1] for r in sel if t in r["train_history"]])
                if any(t in r["train_history"] for r in sel)
                else "-"
                for t in terms
            ]
        )
    return report.markdown_table(["Method"] + list(terms), body)


def _write(workdir, lines):
    path = os.path.join(workdir, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def _header(config, records, run_info):
    elapsed = run_info.get("elapsed_min", 0.0)
    synthetic = any(r.get("synthetic") for r in records)
    description = records[0].get("description", "") if records else ""
    lines = [f"# {config.title}", "", f"Paper: {config.paper.citation}", ""]
    if synthetic:
        lines += [
            "> **SYNTHETIC DATA.** These numbers come from the embedded synthetic images: "
            "they show the code runs end to end and say nothing about the paper's claims.",
            "",
        ]
    lines += [
        f"Data: {description.split('; ')[0]}.",
        "",
        f"Backbone `{config.model.backbone}` at {config.data.image_size} px, "
        f"{config.training.epochs} x {config.training.steps_per_epoch or 'all'} steps, "
        f"sampler `{config.training.get('sampler', 'shuffle')}` "
        f"({config.training.get('per_domain')} per domain); {run_info.get('hardware', '')}; "
        f"whole run {elapsed:.1f} min.",
        "",
        "Model selection: the epoch with the best macro-F1 on the source domains' "
        "validation part (DomainBed's training-domain validation); no held-out or extra "
        "domain image is ever used for training or selection.",
        "",
    ]
    return lines


def write_report(workdir, config, records, run_info, protocol=None):
    """Writes `<workdir>/report.md` and its figures; returns its path."""
    figures = os.path.join(workdir, "figures")
    os.makedirs(figures, exist_ok=True)
    lines = _header(config, records, run_info)
    lodo = lodo_table(records, config)
    if lodo:
        lines += [
            "## Leave-one-domain-out",
            "",
            "Train on all domains but one, test on all of it. " + _NOTE.format(unit="seeds"),
            "",
            lodo,
            "",
            "Rare-class recall on the held-out domains (all seeds and domains pooled):",
            "",
            rare_recall_table(records, config, "lodo_", "test") or "(none present)",
            "",
            "Paired t-tests against ERM (units: held-out domain x seed):",
            "",
            paired_tests_table(records, config, "lodo_", "test"),
            "",
        ]
    unseen = _cv_unseen(records)
    if unseen:
        lines += [
            f"## The poster's protocol: k-fold CV on the sources, {unseen[5:]} unseen",
            "",
            "In-domain (the held-out fold of the source domains; poster: its first table). "
            + _NOTE.format(unit="folds"),
            "",
            cv_table(records, config, "test:sources"),
            "",
            f"Unseen domain {unseen[5:]} (poster: its second table, INT-20):",
            "",
            cv_table(records, config, unseen),
            "",
            f"Rare-class recall on {unseen[5:]}:",
            "",
            rare_recall_table(records, config, "cv_", unseen) or "(none present)",
            "",
            "Paired t-tests against ERM on the unseen domain (units: folds):",
            "",
            paired_tests_table(records, config, "cv_", unseen),
            "",
        ]
        if config.report.figures:
            lines += ["Confusion matrices on the unseen domain (rows normalised):", ""]
            lines += figures_lib.confusions(_select(records, "cv_", unseen), unseen, figures)
            lines.append("")
            path = None
            if protocol is not None:
                path = figures_lib.feature_figure(
                    workdir, config, protocol, os.path.join(figures, "features_tsne.png")
                )
            if path:
                lines += [
                    "Penultimate features (t-SNE) of ERM and BoDA, fold 1: source validation "
                    f"images and {unseen[5:]}, coloured by domain (top) and class (bottom):",
                    "",
                    "![features](figures/features_tsne.png)",
                    "",
                ]
    extra = extra_table(records, config)
    if extra:
        lines += ["## Extra test domains (unseen by every model)", "", extra, ""]
    terms = terms_table(records, config)
    if terms:
        lines += [
            "## Training terms at the last epoch",
            "",
            "Weighted as in each loss (`macro`: BoDA's CORAL alignment, `boda`: "
            "boda_weight x the BoDA term, `penalty`: CORAL / MMD, `domain_ce`: DANN's "
            "discriminator), mean +- std over jobs:",
            "",
            terms,
            "",
        ]
    lines += [
        "Trained networks: `jobs/<setting>/r<seed>/<method>/model.keras` (load with "
        "`tfcell.models.load_model` after `import tfcell`); input contract in `config.json` "
        "(`data.image_size`, RGB in [0, 255], class order `class_names` of results.jsonl).",
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
    lodo = lodo_table(records, config)
    if lodo:
        parts += [
            "Leave-one-domain-out, " + _NOTE.format(unit="seeds") + "\n\n" + lodo + "\n",
            "Paired t-tests against ERM (units: held-out domain x seed):\n\n"
            + paired_tests_table(records, config, "lodo_", "test")
            + "\n",
        ]
    unseen = _cv_unseen(records)
    if unseen:
        parts += [
            "The poster's protocol, in-domain (held-out source fold), poster's first table "
            "beside:\n\n" + cv_table(records, config, "test:sources") + "\n",
            f"Unseen domain `{unseen[5:]}`, poster's second table (INT-20) beside:\n\n"
            + cv_table(records, config, unseen)
            + "\n",
            f"Rare-class recall on `{unseen[5:]}`:\n\n"
            + (rare_recall_table(records, config, "cv_", unseen) or "(none present)")
            + "\n",
        ]
    terms = terms_table(records, config)
    if terms:
        parts.append(
            "Training terms at the last epoch (weighted as in the loss), mean +- std over "
            "jobs:\n\n" + terms + "\n"
        )
    return "\n".join(parts)


def result_line(config, records, run_info):
    """The docstring line: BoDA vs ERM on the unseen domain, poster beside."""
    unseen = _cv_unseen(records)
    if not unseen:
        return ""
    rows = _select(records, "cv_", unseen)
    out = []
    for method in ("boda", "erm"):
        sel = [r for r in rows if r["method"] == method]
        out.append(
            f"{method} F1-micro {_cell([r['f1_micro'] for r in sel])}, F1-macro "
            f"{_cell([r['f1_macro_present'] for r in sel])}"
        )
    data = "synthetic data" if any(r.get("synthetic") for r in records) else "real data"
    p_boda = _get(config, "paper", "unseen", "boda")
    p_erm = _get(config, "paper", "unseen", "erm")
    return (
        f"Result: poster (INT-20 unseen): BoDA F1-micro {p_boda[0]:.2f}, F1-macro "
        f"{p_boda[2]:.2f}; ERM {p_erm[0]:.2f}, {p_erm[2]:.2f}. Measured (`{config['variant']}` "
        f"config, {data}, {unseen[5:]} unseen): {out[0]}; {out[1]}; "
        f"{run_info.get('hardware', '')}, {run_info.get('elapsed_min', float('nan')):.0f} min"
    )


# --------------------------------------------------------------------- PBC
