"""The AE-CFE report's figures: the latent codes before and after the domain term
(Fig. 3.14) and reconstructed cells per domain.

Both read what the autoencoders of the first run saved
(`autoencoders/r0/<method>/codes.npz`, `examples.npz`); nothing is retrained.
"""

import importlib.util
import os

import numpy as np
import threadpoolctl

__all__ = ["embed", "embedding_figure", "reconstruction_figure", "report_figures"]

_BEFORE_AFTER = (("ae_rf", "before: AE-RF"), ("ae_cfe", "after: AE-CFE"))


def _figure(rows, cols, size):
    from matplotlib import figure as mpl_figure
    from matplotlib.backends import backend_agg

    fig = mpl_figure.Figure(figsize=size)
    backend_agg.FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False)


def _load(workdir, method, name, repeat=0):
    path = os.path.join(workdir, "autoencoders", f"r{repeat}", method, name)
    if not os.path.exists(path):
        return None
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def embed(codes, method="tsne", seed=0):
    """2-d embedding of codes: `(points, method used)`. "umap" needs umap-learn
    (an optional extra); without it, t-SNE is used and named."""
    if method == "umap" and importlib.util.find_spec("umap") is not None:
        import umap  # Optional extra: pip install umap-learn.

        return umap.UMAP(n_components=2, random_state=seed).fit_transform(codes), "UMAP"
    from sklearn import manifold

    perplexity = float(min(30.0, max(2.0, (len(codes) - 1) / 3.0)))
    tsne = manifold.TSNE(2, perplexity=perplexity, init="pca", random_state=seed)
    # One OpenMP thread: on a busy 2-core machine the default threads spin against
    # each other (90 points took 44 s; with one thread 0.3 s, 1,500 points 10 s).
    with threadpoolctl.threadpool_limits(1):
        return tsne.fit_transform(codes), "t-SNE"


def _draw(workdir, config):
    """`{method: rows}`: the same seeded draw of usable cells for every method."""
    loaded = {m: _load(workdir, m, "codes.npz") for m, _ in _BEFORE_AFTER}
    loaded = {m: v for m, v in loaded.items() if v is not None}
    if not loaded:
        return None, None
    first = next(iter(loaded.values()))
    usable = np.flatnonzero(first["usable"])
    domains = first["domains"][usable]
    names = sorted(set(domains))
    per_domain = max(5, int(config.report.embedding_points) // max(len(names), 1))
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.permutation(usable[domains == d])[:per_domain] for d in names])
    return loaded, np.sort(rows)


def embedding_figure(workdir, config, class_names, path):
    """Fig. 3.14: the codes of AE-RF (before) and AE-CFE (after), coloured by
    domain (top) and by class (bottom). Returns `(path, method)` or None."""
    loaded, rows = _draw(workdir, config)
    if not loaded:
        return None
    fig, axes = _figure(2, len(loaded), (5.0 * len(loaded), 9.0))
    used = None
    for col, (method, title) in enumerate(t for t in _BEFORE_AFTER if t[0] in loaded):
        saved = loaded[method]
        points, used = embed(saved["codes"][rows], config.report.embedding, seed=0)
        domains, labels = saved["domains"][rows], saved["labels"][rows]
        for row, (values, kind) in enumerate(((domains, "domain"), (labels, "class"))):
            ax = axes[row][col]
            for k, value in enumerate(sorted(set(values.tolist()))):
                sel = values == value
                label = value if kind == "domain" else class_names[int(value)]
                ax.scatter(*points[sel].T, s=5, color=f"C{k % 10}", label=label)
            ax.set_title(f"{title}: coloured by {kind} ({used})", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.legend(fontsize=6, markerscale=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path, used


def reconstruction_figure(workdir, path):
    """Test cells of every domain (first column) and their reconstructions by
    each autoencoder of the first run. Returns `path` or None."""
    methods = [m for m in ("ae_rf", "nd_ae_da", "aae_da", "ae_cfe")
               if _load(workdir, m, "examples.npz") is not None]  # fmt: skip
    examples = {m: _load(workdir, m, "examples.npz") for m in methods}
    examples = {m: e for m, e in examples.items() if len(e.get("rows", ()))}
    if not examples:
        return None
    first = next(iter(examples.values()))
    count = len(first["rows"])
    fig, axes = _figure(count, 1 + len(examples), (1.4 * (1 + len(examples)), 1.4 * count))
    for i in range(count):
        panels = [("cell", first["originals"][i])]
        panels += [(m, e["reconstructions"][i]) for m, e in examples.items()]
        for j, (title, image) in enumerate(panels):
            ax = axes[i][j]
            ax.imshow(image)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=7)
            if j == 0:
                ax.set_ylabel(str(first["domains"][i]), fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def report_figures(workdir, config, records, figures_dir):
    """The report's figure lines (markdown)."""
    lines = []
    class_names = records[0]["class_names"] if records else []
    found = embedding_figure(workdir, config, class_names, os.path.join(figures_dir, "latent.png"))
    if found:
        _, used = found
        asked = config.report.embedding
        note = (
            " (UMAP asked for; umap-learn is not installed)"
            if asked == "umap" != used.lower()
            else ""
        )
        lines += [f"Latent codes of the first run's cells, {used}{note}, before (AE-RF) and "
                  "after (AE-CFE) the domain term (thesis Fig. 3.14: UMAP):", "",
                  "![latent](figures/latent.png)", ""]  # fmt: skip
    if reconstruction_figure(workdir, os.path.join(figures_dir, "reconstructions.png")):
        lines += ["Test cells of each domain and their reconstructions (image decoder):", "",
                  "![reconstructions](figures/reconstructions.png)", ""]  # fmt: skip
    return lines
