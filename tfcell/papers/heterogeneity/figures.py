"""The heterogeneity report's figures: per-stage training and validation curves
(Fig. A1) and a t-SNE of the features on one validation fold (Fig. 2)."""

import json
import os

import numpy as np

__all__ = ["stage_curves", "tsne_figure"]


def _figure(rows, cols, size):
    from matplotlib import figure as mpl_figure
    from matplotlib.backends import backend_agg

    fig = mpl_figure.Figure(figsize=size)
    backend_agg.FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False)


def stage_curves(records, config, path, method="heterogeneity"):
    """Fig. A1: training accuracy, validation accuracy, training L_H and
    validation L_H per epoch of every fold model of `method`, stage 1 solid
    and stage 2 dashed. Returns `path`, or None without histories."""
    jobs = {}
    for r in records:
        if r.get("kind", "single") == "single" and r["method"] == method:
            jobs[(r["repeat"], r["setting"])] = r.get("train_history", {})
    jobs = {k: h for k, h in sorted(jobs.items()) if "stage" in h and "loss" in h}
    if not jobs:
        return None
    panels = [("accuracy", "training accuracy"), ("val_accuracy", "validation accuracy"),
              ("loss", "training L_H"), ("val_loss", "validation L_H")]  # fmt: skip
    fig, axes = _figure(1, len(panels), (4 * len(panels), 3.2))
    colours = [f"C{i % 10}" for i in range(len(jobs))]
    for (key, title), ax in zip(panels, axes[0]):
        for colour, ((_, setting), h) in zip(colours, jobs.items()):
            if key not in h:
                continue
            y = np.asarray(h[key], "float64")
            stage = np.asarray(h["stage"])
            x = np.arange(1, len(y) + 1)
            for s, style in ((1, "-"), (2, "--")):
                sel = stage == s
                if sel.any():
                    ax.plot(x[sel], y[sel], style, color=colour, lw=1.2,
                            label=setting if s == 1 else None)  # fmt: skip
        ax.set_title(title)
        ax.set_xlabel("epoch")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def tsne_figure(workdir, config, path, methods=("ce", "heterogeneity")):
    """Fig. 2: t-SNE of the pooled features (the featurizer's output) of one
    fold's validation images (`config.report.tsne_setting`), for each of
    `methods`, coloured by class (top) and by patient (bottom). Reads the
    saved models and the run's data. Returns `path`, or None when missing."""
    from sklearn import manifold

    from tfcell import models as models_lib
    from tfcell.experiments import protocol as protocol_lib

    setting_name = config.report.tsne_setting
    found = [
        m for m in methods
        if os.path.exists(os.path.join(workdir, "jobs", setting_name, "r0", m, "model.keras"))
    ]  # fmt: skip
    if not found:
        return None
    protocol = protocol_lib.load_protocol(config.protocol)
    settings = {s.name: s for s in protocol.settings(config, 0)}
    if setting_name not in settings:
        return None
    setting = settings[setting_name]
    data = protocol.task.prepare(setting, config, None)
    rng = np.random.default_rng(0)
    rows = rng.permutation(setting.parts["val"])[: int(config.report.tsne_points)]
    size = data.crop_size
    top = (data.image_size - size) // 2
    images = np.asarray(data.images[rows], "float32")[:, top : top + size, top : top + size]
    labels = setting.records["label"].to_numpy()[rows]
    patients = setting.records["patient"].astype(str).to_numpy()[rows]
    fig, axes = _figure(2, len(found), (4.2 * len(found), 8))
    for col, method in enumerate(found):
        model = models_lib.load_model(
            os.path.join(workdir, "jobs", setting_name, "r0", method, "model.keras"), compile=False
        )
        featurizer = getattr(model, "featurizer", None)
        if featurizer is None:
            continue
        features = np.asarray(featurizer.predict(images, batch_size=64, verbose=0), "float64")
        perplexity = float(min(30, max(5, (len(rows) - 1) // 3)))
        embedded = manifold.TSNE(
            2, perplexity=perplexity, init="pca", random_state=0
        ).fit_transform(features)
        title = _title(config, method)
        for row, (colour_by, name) in enumerate(((labels, "class"), (patients, "patient"))):
            ax = axes[row][col]
            codes = np.unique(colour_by, return_inverse=True)[1]
            ax.scatter(embedded[:, 0], embedded[:, 1], c=codes, s=6,
                       cmap="coolwarm" if name == "class" else "tab20")  # fmt: skip
            ax.set_title(f"{title}: by {name}")
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _title(config, method):
    try:
        from tfcell.papers.heterogeneity import methods

        return methods.METHODS[method].title
    except (ImportError, KeyError):
        return json.dumps(method)
