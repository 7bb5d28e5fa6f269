"""The AE-CFE report: the thesis's tables beside the measured ones.

    Table 3.2 layout   every (trained on, tested on) domain pair x each method,
                       random-forest accuracy in % (mean +- std over runs), the
                       thesis's number beside where the pair maps to its sets
    summary            per method, the mean in-domain and cross-domain accuracy
                       (the thesis's claim: AE-CFE transfers across domains where
                       the supervised oracles fall towards chance)
    Table 3.3 layout   the supervised CNN oracle beside AE-CFE (and the thesis's
                       ResNext / Matek et al. / AE-CFE)
    Table 3.1 layout   random-forest accuracy on the source domain by latent size
    detector           held-out Dice on the masked crops, detected cells per domain
    figures            t-SNE / UMAP of the latent codes before (AE-RF) and after
                       (AE-CFE) the domain term (Fig. 3.14), reconstructions

Accuracies are fractions in the records and percentages in the tables (the
thesis's unit); std is the sample std over runs (`tfcell.evaluation.statistics`).
"""

import os

import numpy as np

from tfcell.evaluation import report, statistics
from tfcell.papers.aecfe import figures
from tfcell.papers.aecfe import methods as methods_lib

__all__ = [
    "bottleneck_table",
    "collect_section",
    "cross_domain_table",
    "detector_table",
    "oracle_table",
    "result_line",
    "skipped_methods",
    "summary_table",
    "write_report",
]

_AUTOENCODER_METHODS = ("ae_rf", "nd_ae_da", "aae_da", "ae_cfe")


def _get(config, *keys, default=None):
    value = config
    for key in keys:
        try:
            value = value[key]
        except (KeyError, TypeError, AttributeError, IndexError):
            return default
    return value


def _pct(values):
    """ "83.7 +- 0.5" in % (mean +- sample std over runs), "-" for none."""
    return statistics.format_mean_std([v for v in values if v is not None], digits=1, scale=100.0)


def _thesis(cell):
    """A thesis cell `(mean, std)` (% already) as text."""
    if cell is None or cell[0] is None:
        return "-"
    mean, std = cell[0], cell[1]
    return f"{mean:g}" if std is None else f"{mean:g} +- {std:g}"


def _forest(records):
    return [r for r in records if r.get("kind") == "forest"]


def _oracle(records):
    return [r for r in records if r.get("kind") == "oracle"]


def _ordered(records, key):
    return list(dict.fromkeys(r[key] for r in records))


def _bottleneck(method):
    return method.startswith("ae_rf_z")


def _methods(records, config, skipped=()):
    """Table 3.2's forest methods in the config's order (the bottleneck study's
    AE-RF variants are Table 3.1's), with `skipped` ones at their place."""
    present = [m for m in _ordered(_forest(records), "method") if not _bottleneck(m)]
    order = [m for m in _get(config, "methods", default=()) or () if m in present or m in skipped]
    return order + [m for m in present if m not in order]


def _titles(records):
    return {r["method"]: r.get("title", r["method"]) for r in records}


def _paper_name(config, domain):
    return (_get(config, "paper", "domain_names", default={}) or {}).get(domain)


def _lookup(config, table, columns):
    """`{(trained on, tested on): {column: (mean, std)}}` of a thesis table."""
    names = list(_get(config, "paper", columns, default=()) or ())
    out = {}
    for train, test, cells in _get(config, "paper", table, default=()) or ():
        out[(train, test)] = dict(zip(names, [tuple(c) for c in cells]))
    return out


def skipped_methods(config):
    """`{method: reason}` of methods the run left out (ResNet-RF without weights)."""
    out = {}
    if "resnet_rf" in (_get(config, "methods", default=()) or ()) and not _get(
        config, "model", "resnet_weights"
    ):
        out["resnet_rf"] = "not run: no ImageNet weights offline (--config.model.resnet_weights)"
    return out


def _accuracies(rows, **match):
    return [r.get("accuracy") for r in rows if all(r.get(k) == v for k, v in match.items())]


def cross_domain_table(records, config):
    """Table 3.2's layout: rows (trained on, tested on), one column per method,
    each cell "measured / thesis" in % (the thesis's where both domains map to
    its sets, else "-"), and the source's majority-class rate for reference."""
    rows = _forest(records)
    if not rows:
        return ""
    skipped = skipped_methods(config)
    methods = _methods(records, config, skipped)
    titles = {
        m: methods_lib.METHODS[m].title for m in skipped if m in methods_lib.METHODS
    } | _titles(rows)
    thesis = _lookup(config, "table_3_2", "table_3_2_methods")
    body = []
    for source in _ordered(rows, "source"):
        for target in _ordered(rows, "target"):
            pair = (_paper_name(config, source), _paper_name(config, target))
            row = [source, target]
            for method in methods:
                reference = thesis.get(pair, {}).get(method)
                if method in skipped:
                    cell = "not run"
                else:
                    cell = _pct(_accuracies(rows, source=source, target=target, method=method))
                row.append(f"{cell} / {_thesis(reference)}" if reference else cell)
            majority = [r.get("majority_accuracy") for r in rows
                        if r["source"] == source and r["target"] == target]  # fmt: skip
            row.append(_pct(majority[:1]))
            body.append(row)
    header = ["Trained on", "Tested on"] + [titles.get(m, m) for m in methods]
    header += ["majority class"]
    return report.markdown_table(header, body)


def _per_repeat_mean(rows, same, metric="accuracy"):
    """Per repeat, the mean `metric` over the in-domain (`same`) or cross-domain pairs."""
    values = {}
    for r in rows:
        if (r["source"] == r["target"]) == same and r.get(metric) is not None:
            values.setdefault(r["repeat"], []).append(r[metric])
    return [float(np.mean(v)) for _, v in sorted(values.items())]


def _thesis_means(cells, pairs):
    inside = [c[0] for (a, b), c in zip(pairs, cells) if a == b and c and c[0] is not None]
    across = [c[0] for (a, b), c in zip(pairs, cells) if a != b and c and c[0] is not None]
    fmt = lambda v: f"{np.mean(v):.1f}" if v else "-"  # noqa: E731
    return fmt(inside), fmt(across)


def summary_table(records, config):
    """Per method: mean in-domain and cross-domain accuracy (%, mean +- std over
    runs of the per-run means over pairs), the thesis's Table 3.2 / 3.3 beside."""
    forest, oracle = _forest(records), _oracle(records)
    if not forest and not oracle:
        return ""
    titles = _titles(records)
    thesis = _lookup(config, "table_3_2", "table_3_2_methods")
    pairs = list(thesis)
    body = []
    for method in _methods(records, config):
        mine = [r for r in forest if r["method"] == method]
        cells = [thesis[p].get(method) for p in pairs]
        inside, across = _thesis_means(cells, pairs) if pairs else ("-", "-")
        body.append([titles.get(method, method), _pct(_per_repeat_mean(mine, True)),
                     _pct(_per_repeat_mean(mine, False)), inside, across])  # fmt: skip
    for method in _ordered(oracle, "method"):
        mine = [r for r in oracle if r["method"] == method]
        body.append([titles.get(method, method) + " (supervised)",
                     _pct(_per_repeat_mean(mine, True)), _pct(_per_repeat_mean(mine, False)),
                     "-", "-"])  # fmt: skip
    oracles = _lookup(config, "table_3_3", "table_3_3_methods")
    for name in (_get(config, "paper", "table_3_3_methods", default=()) or ())[:2]:
        cells = [oracles[p].get(name) for p in oracles]
        inside, across = _thesis_means(cells, list(oracles))
        body.append([f"thesis: {name} (supervised)", "-", "-", inside, across])
    header = ["Method", "in-domain (measured)", "cross-domain (measured)",
              "in-domain (thesis)", "cross-domain (thesis)"]  # fmt: skip
    return report.markdown_table(header, body)


def balanced_summary_table(records, config):
    """Per method: mean in-domain and cross-domain BALANCED accuracy (mean recall
    over the classes present, %) and the source's majority-class accuracy on the
    same pairs. The target domains' class mixes differ (BCCD and JTSC are mostly
    neutrophils), so plain accuracy rewards predicting the source's majority
    class; balanced accuracy does not (chance: 100 / classes %). The thesis
    reports accuracy only."""
    forest, oracle = _forest(records), _oracle(records)
    if not forest and not oracle:
        return ""
    titles = _titles(records)
    body = []
    for method in _methods(records, config):
        mine = [r for r in forest if r["method"] == method]
        if not any(r.get("balanced_accuracy") is not None for r in mine):
            continue
        body.append([titles.get(method, method),
                     _pct(_per_repeat_mean(mine, True, "balanced_accuracy")),
                     _pct(_per_repeat_mean(mine, False, "balanced_accuracy"))])  # fmt: skip
    for method in _ordered(oracle, "method"):
        mine = [r for r in oracle if r["method"] == method]
        body.append([titles.get(method, method) + " (supervised)",
                     _pct(_per_repeat_mean(mine, True, "balanced_accuracy")),
                     _pct(_per_repeat_mean(mine, False, "balanced_accuracy"))])  # fmt: skip
    rows = forest or oracle
    first = rows[0]["method"]
    majority = [r for r in rows if r["method"] == first]
    body.append(["source's majority class (accuracy, for reference)",
                 _pct(_per_repeat_mean(majority, True, "majority_accuracy")),
                 _pct(_per_repeat_mean(majority, False, "majority_accuracy"))])  # fmt: skip
    if not body:
        return ""
    header = ["Method", "in-domain balanced accuracy", "cross-domain balanced accuracy"]
    return report.markdown_table(header, body)


def oracle_table(records, config):
    """Table 3.3's layout: the CNN oracle and AE-CFE per (trained on, tested on),
    measured in %, and the thesis's ResNext, Matek et al. and AE-CFE beside."""
    oracle = _oracle(records)
    if not oracle:
        return ""
    forest = [r for r in _forest(records) if r["method"] == "ae_cfe"]
    thesis = _lookup(config, "table_3_3", "table_3_3_methods")
    names = list(_get(config, "paper", "table_3_3_methods", default=()) or ())
    body = []
    for source in _ordered(oracle, "source"):
        for target in _ordered(oracle, "target"):
            pair = (_paper_name(config, source), _paper_name(config, target))
            body.append(
                [source, target, _pct(_accuracies(oracle, source=source, target=target)),
                 _pct(_accuracies(forest, source=source, target=target))]
                + [_thesis(thesis.get(pair, {}).get(n)) for n in names]
            )  # fmt: skip
    header = ["Trained on", "Tested on", "CNN oracle (measured)", "AE-CFE (measured)"]
    header += [f"{n} (thesis)" for n in names]
    return report.markdown_table(header, body)


def _latent(record):
    return int((record.get("hparams") or {}).get("latent_dim", 0))


def bottleneck_table(records, config):
    """Table 3.1's layout: AE-RF's forest accuracy on the source domain (trained
    on its 80 %, tested on its 20 %) and across domains, by latent size."""
    rows = [r for r in _forest(records)
            if r["method"] == "ae_rf" or r["method"].startswith("ae_rf_z")]  # fmt: skip
    sizes = sorted({_latent(r) for r in rows})
    if len(sizes) < 2:
        return ""
    source = _get(config, "autoencoder", "source_domain")
    thesis = {int(k): v for k, v in _get(config, "paper", "table_3_1", default=()) or ()}
    columns = list(_get(config, "paper", "table_3_1_columns", default=()) or ())
    body = []
    for size in sorted(set(sizes) | set(thesis)):
        mine = [r for r in rows if _latent(r) == size]
        inside = _accuracies(mine, source=source, target=source)
        row = [size, _pct(inside) if mine else "-", _pct(_per_repeat_mean(mine, False))]
        row += [f"{100 * v:.0f}" for v in thesis.get(size, ())] or ["-"] * len(columns)
        body.append(row)
    header = ["latent size", f"{source} -> {source} (measured)", "cross-domain mean (measured)"]
    header += [f"{c} (thesis, Matek-19)" for c in columns]
    return report.markdown_table(header, body)


def detector_table(records, config):
    """The detector's held-out Dice and the detected cells per domain."""
    summary = next((r["detector"] for r in records if r.get("detector")), None)
    if not summary:
        return ""
    dice = summary.get("dice", {})
    lines = [
        f"Segmenter trained on {summary.get('masks', '?')}; held-out crops: cell Dice "
        f"{dice.get('cell_dice', float('nan')):.3f}, central-cell Dice "
        f"{dice.get('central_dice', float('nan')):.3f}, nucleus Dice "
        f"{dice.get('nucleus_dice', float('nan')):.3f}, central cell found in "
        f"{100 * dice.get('detected', float('nan')):.0f} % of {dice.get('images', '?')}. "
        f"Undetected cells: {summary.get('on_miss', '?')}.",
        "",
    ]
    body = []
    paper = _get(config, "paper", "detected_fraction")
    for domain, counts in (summary.get("detection") or {}).items():
        body.append([domain, counts["images"], counts["detected"], counts["missed"],
                     f"{100 * counts['fraction']:.1f}",
                     f"{100 * paper:.0f} (three sets)" if domain == "all" and paper else "-"])  # fmt: skip
    header = ["domain", "images", "detected", "missed", "detected %", "thesis %"]
    return "\n".join(lines) + "\n" + report.markdown_table(header, body)


def _kind(records):
    return "synthetic data" if any(r.get("synthetic") for r in records) else "real data"


def _runs(records):
    return len({r.get("repeat") for r in records})


def _sections(records, config):
    """`[(title, explanation, table)]` of every non-empty table."""
    skipped = skipped_methods(config)
    note = "".join(f" {m}: {why}." for m, why in skipped.items())
    return [
        ("Table 3.2 layout: random forest across domains",
         "Accuracy (%) of a random forest (max_depth 16) trained on the training 80 % of one "
         "domain and tested on the 20 % of every domain, mean +- std over runs; "
         "\"measured / thesis\" where both domains are sets of the thesis (other label "
         "spaces and sizes: a reference, not a target). The last column: the source's "
         f"majority class on that test part (chance level).{note}",
         cross_domain_table(records, config)),
        ("Summary: in-domain and cross-domain means",
         "Per run, the mean over the in-domain pairs (trained and tested on one domain) and "
         "over the cross-domain pairs; then mean +- std over runs. The thesis's means are "
         "over its Tables 3.2 and 3.3.", summary_table(records, config)),
        ("Balanced accuracy: in-domain and cross-domain means",
         "The same means of balanced accuracy (mean recall over the classes present, %; "
         "chance is 100 / classes). The domains' class mixes differ, so plain accuracy "
         "rewards predicting the source's majority class (last row, as accuracy); the "
         "thesis reports accuracy only.", balanced_summary_table(records, config)),
        ("Table 3.3 layout: supervised oracle",
         "A CNN trained with labels on each domain's training 80 %, tested on every domain.",
         oracle_table(records, config)),
        ("Table 3.1 layout: bottleneck size",
         "AE-RF (no domain term) with each latent size; the forest learns on the source "
         "domain.", bottleneck_table(records, config)),
        ("Detector", "The U-Net cell segmenter standing in for Mask R-CNN.",
         detector_table(records, config)),
    ]  # fmt: skip


def write_report(workdir, config, records, run_info):
    figures_dir = os.path.join(workdir, "figures")
    os.makedirs(figures_dir, exist_ok=True)
    lines = [f"# {config.title}", "", f"Paper: {config.paper.citation}", ""]
    if any(r.get("synthetic") for r in records):
        lines += ["> **SYNTHETIC DATA.** These numbers come from the embedded synthetic images: "
                  "they show the code runs end to end and say nothing about the paper's claims.",
                  ""]  # fmt: skip
    first = records[0] if records else {}
    lines += [
        f"Data: {first.get('description', '')}; undetected cells: "
        f"{(first.get('detector') or {}).get('on_miss', '?')}.",
        "",
        f"{_runs(records)} run(s); autoencoders: {config.autoencoder.epochs} epochs, batch "
        f"{config.autoencoder.batch_size}, Adam {config.optimizer.learning_rate:g}, latent "
        f"{config.model.latent_dim}, source domain {config.autoencoder.source_domain}; "
        f"{run_info.get('hardware', '')}; whole run {run_info.get('elapsed_min', 0.0):.1f} min.",
        "",
    ]
    for title, text, table in _sections(records, config):
        if table:
            lines += [f"## {title}", "", text, "", table, ""]
    if config.report.figures:
        lines += figures.report_figures(workdir, config, records, figures_dir)
    lines += [
        "Saved: the detector `detector/model.keras` (cells and features: `detector/cells.npz`), "
        "each autoencoder `autoencoders/r<run>/<method>/model.keras` with its codes, each "
        "oracle `jobs/from_<domain>/r<run>/oracle_cnn/model.keras`. A folder of cell images "
        "to latent codes: `tfcell.papers.aecfe.predict.encode_folder(workdir, folder)`.",
        "",
    ]
    path = os.path.join(workdir, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def collect_section(name, config, records, run_info):
    minutes = run_info.get("elapsed_min", float("nan"))
    parts = [
        f"### `{name}`: {config['title']}\n\n`{config['variant']}` config, {_kind(records)}, "
        f"{_runs(records)} run(s); {run_info.get('hardware', '')}, {minutes:.0f} min.\n"
    ]
    for title, text, table in _sections(records, config):
        if table:
            parts.append(f"{title}. {text}\n\n{table}\n")
    return "\n".join(parts)


def result_line(config, records, run_info):
    forest = _forest(records)
    if not forest:
        return ""
    thesis = _lookup(config, "table_3_2", "table_3_2_methods")
    pairs = list(thesis)
    _, paper_across = _thesis_means([thesis[p].get("ae_cfe") for p in pairs], pairs)
    out = []
    for method, label in (("ae_cfe", "AE-CFE"), ("ae_rf", "AE-RF"), ("rcnn_rf", "R-CNN-RF")):
        mine = [r for r in forest if r["method"] == method]
        if mine:
            out.append(f"{label} {_pct(_per_repeat_mean(mine, False))} %")
    oracle = _oracle(records)
    if oracle:
        out.append(f"CNN oracle {_pct(_per_repeat_mean(oracle, False))} %")
    return (
        f"Cross-domain mean accuracy (Table 3.2): thesis AE-CFE {paper_across} %. Measured "
        f"(`{config['variant']}` config, {_kind(records)}, {_runs(records)} runs): "
        + ", ".join(out)
        + f"; {run_info.get('hardware', '')}, {run_info.get('elapsed_min', float('nan')):.0f} min"
    )
