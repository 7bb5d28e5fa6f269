"""Figures written as PNG files through matplotlib's object API.

No `pyplot` and no `matplotlib.use`: `import tfcell` and every plot leave the
user's matplotlib backend and pyplot state alone (a notebook keeps its inline
backend). Each figure is a `matplotlib.figure.Figure` drawn on its own Agg
canvas, so no display is needed and nothing is left open in pyplot.
"""

import textwrap

import numpy as np
from matplotlib import figure as mpl_figure
from matplotlib.backends import backend_agg

__all__ = ["plot_confusion_matrix"]


def plot_confusion_matrix(matrix, class_names, path, title=None):
    """Saves a row-normalised confusion matrix (as Figs. 4, 5 of the CFAL paper).

    Args:
        matrix: `(C, C)` array, rows = true class, normalised to sum to 1.
        class_names: C names for the axes.
        path: the PNG file to write.
        title: optional title.

    Returns:
        `path`.
    """
    matrix = np.asarray(matrix, "float64")
    size = max(3.0, 0.6 * len(class_names) + 1.5)
    fig = mpl_figure.Figure(figsize=(size, size))
    backend_agg.FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=1.0)
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, labels=class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, labels=class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(
                j,
                i,
                f"{matrix[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if matrix[i, j] > 0.5 else "black",
            )
    if title:
        # Wrapped to the figure's width, so long method names are not clipped.
        ax.set_title(textwrap.fill(title, width=max(20, int(7 * size))), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
