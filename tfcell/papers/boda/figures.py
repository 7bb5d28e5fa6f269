"""The BoDA report's figures: confusion matrices on the unseen domain and the
feature-space (t-SNE) figure of ERM vs BoDA."""

import os

import numpy as np

from tfcell.evaluation import plots

__all__ = ["confusions", "feature_figure"]


def _mean_confusion(rows):
    return np.nanmean(np.stack([np.asarray(r["confusion"], "float64") for r in rows]), axis=0)


def confusions(rows, test_set, figures):
    """Mean row-normalised confusion of ERM and BoDA over `rows` (the records of
    the unseen domain `test_set`); returns the markdown image lines."""
    lines = []
    for method in ("erm", "boda"):
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        name = f"confusion_unseen_{method}.png"
        plots.plot_confusion_matrix(
            _mean_confusion(mine), mine[0]["class_names"], os.path.join(figures, name),
            title=f"{mine[0].get('title', method)} on {test_set[5:]} (mean over folds)",
        )  # fmt: skip
        lines.append(f"![{method}](figures/{name})")
    return lines


def feature_figure(workdir, config, protocol, path, methods=("erm", "boda"), setting="cv_fold0"):
    """t-SNE of the penultimate features (the featurizer's output) of the source
    validation images and the unseen domain, for each of `methods`, coloured by
    domain and by class: one PNG of 2 x len(methods) panels. Returns the path,
    or None when the models or data are missing."""
    from matplotlib import figure as mpl_figure
    from matplotlib.backends import backend_agg
    from sklearn import manifold

    from tfcell import models as models_lib

    found = [
        m for m in methods
        if os.path.exists(os.path.join(workdir, "jobs", setting, "r0", m, "model.keras"))
    ]  # fmt: skip
    if len(found) < 1:
        return None
    settings = {s.name: s for s in protocol.settings(config, 0)}
    if setting not in settings:
        return None
    s = settings[setting]
    data = protocol.task.prepare(s, config, None)
    parts = ["val"] + [p for p in s.test_parts if p != "test:sources" and "extra_" not in p]
    rng = np.random.default_rng(0)
    per_part = max(10, int(config.report.feature_points) // len(parts))
    rows = np.concatenate(
        [rng.permutation(s.parts[p])[:per_part] for p in parts if len(s.parts[p])]
    )
    images = np.asarray(data.images[rows], "float32")
    domains = s.records["domain"].astype(str).to_numpy()[rows]
    labels = s.records["label"].to_numpy()[rows]
    fig = mpl_figure.Figure(figsize=(5.0 * len(found), 9.0))
    backend_agg.FigureCanvasAgg(fig)
    for col, method in enumerate(found):
        model = models_lib.load_model(
            os.path.join(workdir, "jobs", setting, "r0", method, "model.keras")
        )
        features = np.asarray(model.featurizer.predict(images, batch_size=128, verbose=0))
        perplexity = float(min(30.0, max(5.0, (len(features) - 1) / 3.0)))
        embedded = manifold.TSNE(
            2, perplexity=perplexity, init="pca", random_state=0
        ).fit_transform(features)
        for row, (values, names, title) in enumerate(
            (
                (domains, sorted(set(domains)), "domain"),
                (labels, list(range(len(s.class_names))), "class"),
            )
        ):
            ax = fig.add_subplot(2, len(found), row * len(found) + col + 1)
            for k, value in enumerate(names):
                sel = values == value
                if sel.any():
                    label = value if title == "domain" else s.class_names[value]
                    ax.scatter(*embedded[sel].T, s=4, label=label, color=f"C{k % 10}")
            ax.set_title(f"{method}: coloured by {title}")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.legend(fontsize=6, markerscale=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
