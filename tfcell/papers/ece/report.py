"""The exclusive cross-entropy report: the supplement's Table 3 layout (Dice and
AJI per fraction of annotated nuclei, CE vs ECE) and Table 4 layout (detection
F1), detection precision / recall (the paper: ECE makes fewer false
positives), per-fraction curves and overlays of CE vs ECE on a test tile.

Metrics on whole held-out tiles with all their nuclei, mean +- sample std
over seeds (each seed draws its own kept nuclei and initialisation).
"""

import os

import numpy as np

from tfcell.evaluation import report, statistics

__all__ = ["collect_section", "detection_table", "result_line", "segmentation_table",
           "write_report"]  # fmt: skip


def _get(config, *keys, default=None):
    value = config
    for key in keys:
        try:
            value = value[key]
        except (KeyError, TypeError, AttributeError):
            return default
    return value


def _rows(records, task, test_set="test"):
    return [
        r for r in records
        if r.get("task") == task and r.get("test_set") == test_set
    ]  # fmt: skip


def _fractions(records):
    return sorted({float(r["fraction"]) for r in records})


def _cell(values):
    return statistics.format_mean_std(values, digits=3) if values else "-"


def _methods(rows):
    return list(dict.fromkeys(r["method"] for r in rows))


def _pct(f):
    return f"{100 * f:.0f} %"


def segmentation_table(records, config, test_set="test"):
    """Rows: CE and ECE; columns: Dice, then AJI, at every fraction; the
    supplement's TNBC / CPM15 / CoNSeP rows (30 / 60 / 100 %) beside."""
    rows = _rows(records, "segmentation", test_set)
    if not rows:
        return ""
    fractions = _fractions(rows)
    body = []
    for method in _methods(rows):
        sel = [r for r in rows if r["method"] == method]
        body.append(
            [sel[0].get("title", method) + " (measured)"]
            + [_cell([r["dice"] for r in sel if r["fraction"] == f]) for f in fractions]
            + [_cell([r["aji"] for r in sel if r["fraction"] == f]) for f in fractions]
        )
    paper_fractions = (0.3, 0.6, 1.0)
    for dataset, loss, dice, aji in _get(config, "paper", "table3", default=()) or ():
        cells_d = [
            f"{dice[paper_fractions.index(f)]:.2f}" if f in paper_fractions else "-"
            for f in fractions
        ]
        cells_a = [
            f"{aji[paper_fractions.index(f)]:.2f}" if f in paper_fractions else "-"
            for f in fractions
        ]
        body.append([f"paper, {dataset}: {loss}"] + cells_d + cells_a)
    header = (["Method"] + [f"Dice {_pct(f)}" for f in fractions]
              + [f"AJI {_pct(f)}" for f in fractions])  # fmt: skip
    return report.markdown_table(header, body)


def detection_table(records, config, test_set="test"):
    """Rows: CE and ECE; columns: F1 (and precision / recall) per fraction; the
    supplement's Table 4 (CoNSeP, Kumar at 90 / 100 %) beside."""
    rows = _rows(records, "detection", test_set)
    if not rows:
        return ""
    fractions = _fractions(rows)
    body = []
    for method in _methods(rows):
        sel = [r for r in rows if r["method"] == method]
        body.append(
            [sel[0].get("title", method) + " (measured)"]
            + [_cell([r["f1"] for r in sel if r["fraction"] == f]) for f in fractions]
            + [
                _cell([r["precision"] for r in sel if r["fraction"] == f])
                + " / "
                + _cell([r["recall"] for r in sel if r["fraction"] == f])
                for f in fractions
            ]
        )
    paper_fractions = (0.9, 1.0)
    for dataset, loss, f1 in _get(config, "paper", "table4", default=()) or ():
        body.append(
            [f"paper, {dataset}: {loss}"]
            + [f"{f1[paper_fractions.index(f)]:.2f}" if f in paper_fractions else "-"
               for f in fractions]
            + ["-" for _ in fractions]
        )  # fmt: skip
    header = (["Method"] + [f"F1 {_pct(f)}" for f in fractions]
              + [f"precision / recall {_pct(f)}" for f in fractions])  # fmt: skip
    return report.markdown_table(header, body)


def _curves(records, path):
    from matplotlib import figure as mpl_figure
    from matplotlib.backends import backend_agg

    panels = [("segmentation", "dice", "Dice"), ("segmentation", "aji", "AJI"),
              ("detection", "f1", "detection F1")]  # fmt: skip
    panels = [p for p in panels if _rows(records, p[0])]
    if not panels:
        return None
    fig = mpl_figure.Figure(figsize=(4 * len(panels), 3.2))
    backend_agg.FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (task, key, title) in zip(axes, panels):
        rows = _rows(records, task)
        fractions = _fractions(rows)
        for method in _methods(rows):
            sel = [r for r in rows if r["method"] == method]
            mean = [np.mean([r[key] for r in sel if r["fraction"] == f]) for f in fractions]
            std = [np.std([r[key] for r in sel if r["fraction"] == f]) for f in fractions]
            x = [100 * f for f in fractions]
            ax.errorbar(x, mean, yerr=std, marker="o", capsize=3,
                        label="ECE" if "ece" in method else "CE")  # fmt: skip
        ax.set_xlabel("% of nuclei annotated")
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _overlay(workdir, config, records, protocol, path):
    """The first test tile with the CE and the ECE U-Net's predicted masks at the
    lowest fraction (repeat 0), beside the full annotation."""
    from matplotlib import figure as mpl_figure
    from matplotlib.backends import backend_agg

    from tfcell.papers.ece import data as data_lib

    rows = _rows(records, "segmentation")
    if not rows or protocol is None:
        return None
    fraction = min(_fractions(rows))
    setting = f"frac{int(round(100 * fraction)):03d}"
    maps = {}
    for method in ("unet_ce", "unet_ece"):
        npz = os.path.join(workdir, "jobs", setting, "r0", method, "outputs.npz")
        if os.path.exists(npz):
            with np.load(npz) as f:
                if "test_map0" in f.files:
                    maps[method] = f["test_map0"] > 127
    if not maps:
        return None
    s = protocol.settings(config, 0)[0]
    tile = data_lib.load_tiles(s.records.iloc[[int(s.parts["test"][0])]])[0]
    panels = [("annotation (all nuclei)", tile.instances > 0)] + [
        (f"{'ECE' if 'ece' in m else 'CE'} at {100 * fraction:.0f} %", mask)
        for m, mask in maps.items()
    ]
    fig = mpl_figure.Figure(figsize=(4.5 * len(panels), 4.6))
    backend_agg.FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, mask) in zip(axes, panels):
        ax.imshow(tile.image)
        overlay = np.zeros((*mask.shape, 4))
        overlay[mask] = (0.0, 1.0, 0.2, 0.45)
        ax.imshow(overlay)
        ax.set_title(f"{tile.name}: {title}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def _header(config, records, run_info):
    first = records[0] if records else {}
    lines = [f"# {config.title}", "", f"Paper: {config.paper.citation}", ""]
    if any(r.get("synthetic") for r in records):
        lines += [
            "> **SYNTHETIC DATA.** These numbers come from the embedded synthetic images: "
            "they show the code runs end to end and say nothing about the paper's claims.",
            "",
        ]
    split = {
        r["test_set"]: r.get("tiles", []) for r in records if r.get("test_set") in ("val", "test")
    }
    lines += [
        "Split by patient (TCGA barcode): "
        + "; ".join(f"{part} {', '.join(names)}" for part, names in sorted(split.items()))
        + f"; the other {first.get('train_tiles', '?')} tiles train.",
        "",
        f"Data: {first.get('description', '')}. Tiles with true (polygon) instances: "
        f"{first.get('true_instance_tiles', '?')} of {first.get('num_tiles_total', '?')} "
        "(the others: connected components of the binary mask, so touching nuclei merge).",
        "",
        f"Crops of {config.data.crop_size} px, {config.training.crops_per_tile} per tile per "
        f"epoch, batch {config.training.batch_size}, {config.training.epochs} epochs, Adam "
        f"{config.optimizer.learning_rate:g}; ECE annealing at epochs "
        f"{config.loss.exclusivity_epoch:g} and {config.loss.sampling_epoch:g} (temperature "
        f"{config.loss.temperature:g}); {run_info.get('hardware', '')}; whole run "
        f"{run_info.get('elapsed_min', 0.0):.1f} min.",
        "",
    ]
    return lines


def write_report(workdir, config, records, run_info, protocol=None):
    figures = os.path.join(workdir, "figures")
    os.makedirs(figures, exist_ok=True)
    lines = _header(config, records, run_info)
    seg = segmentation_table(records, config)
    if seg:
        lines += ["## Table 3 layout: segmentation (U-Net)", "",
                  "Dice and AJI on the held-out tiles, mean +- std over seeds; the "
                  "supplement's rows (other datasets) beside for reference.", "", seg, ""]  # fmt: skip
    det = detection_table(records, config)
    if det:
        lines += ["## Table 4 layout: detection (YOLO-style)", "",
                  "F1 at IoU 0.5 after NMS at 0.2 (counts summed over the held-out tiles), "
                  "precision / recall beside.", "", det, ""]  # fmt: skip
    for part in sorted({r["test_set"] for r in records if r["test_set"].startswith("test:")}):
        lines += [f"## Further test set `{part[5:]}`", "",
                  segmentation_table(records, config, part), "",
                  detection_table(records, config, part), ""]  # fmt: skip
    if config.report.figures:
        if _curves(records, os.path.join(figures, "fractions.png")):
            lines += ["![fractions](figures/fractions.png)", ""]
        if _overlay(workdir, config, records, protocol, os.path.join(figures, "overlay.png")):
            lines += ["Predicted nuclei on a held-out tile, CE against ECE at the lowest "
                      "fraction:", "", "![overlay](figures/overlay.png)", ""]  # fmt: skip
    lines += [
        "Trained networks: `jobs/frac<pct>/r<seed>/<method>/model.keras`; input contract in "
        "`config.json` (`input_contract`: RGB in [0, 255], any tile size for the U-Net via "
        "`tfcell.evaluation.predict_instances(model, image, tile=crop_size)`).",
        "",
    ]
    path = os.path.join(workdir, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def collect_section(name, config, records, run_info):
    minutes = run_info.get("elapsed_min", float("nan"))
    kind = "synthetic data" if any(r.get("synthetic") for r in records) else "real data"
    parts = [
        f"### `{name}`: {config['title']}\n\n`{config['variant']}` config, {kind}; "
        f"{run_info.get('hardware', '')}, {minutes:.0f} min.\n"
    ]
    seg = segmentation_table(records, config)
    if seg:
        parts.append("Segmentation (Table 3 layout), mean +- std over seeds:\n\n" + seg + "\n")
    det = detection_table(records, config)
    if det:
        parts.append("Detection (Table 4 layout), mean +- std over seeds:\n\n" + det + "\n")
    return "\n".join(parts)


def result_line(config, records, run_info):
    rows = _rows(records, "segmentation")
    if not rows:
        return ""
    low = min(_fractions(rows))
    out = []
    for method, label in (("unet_ece", "ECE"), ("unet_ce", "CE")):
        sel = [r for r in rows if r["method"] == method and r["fraction"] == low]
        if sel:
            out.append(f"{label} Dice {_cell([r['dice'] for r in sel])}, AJI "
                       f"{_cell([r['aji'] for r in sel])}")  # fmt: skip
    kind = "synthetic data" if any(r.get("synthetic") for r in records) else "real data"
    return (
        f"Result at {100 * low:.0f} % of the nuclei: paper (TNBC) ECE Dice 0.80, AJI 0.58; CE "
        f"0.43, 0.24. Measured (`{config['variant']}` config, {kind}): "
        + "; ".join(out)
        + f"; {run_info.get('hardware', '')}, {run_info.get('elapsed_min', float('nan')):.0f} min"
    )
