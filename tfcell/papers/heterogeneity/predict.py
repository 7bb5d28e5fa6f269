"""The ensemble of a saved run on new cell images, in one call.

```python
from tfcell.papers.heterogeneity import predict
labels, scores = predict.predict_images("workdirs/heterogeneity_cnmc", ["cell1.bmp", ...])
```

loads the fold models `jobs/fold<k>/r<repeat>/<method>/model.keras` of the
run, brings the images to the run's stored size (`config.json`: the input
contract), predicts each with the 5-crop TTA and combines the fold models
with the theta ensemble (`tfcell.evaluation.predict_fold_ensemble`).
"""

import glob
import json
import os
import re

import numpy as np

__all__ = ["fold_model_paths", "predict_images", "run_contract"]


def run_contract(workdir):
    """The run's input contract (`image_size`, `crop_size`, `value_range`,
    `class_names`) from its `config.json`."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"No config.json in {workdir!r}: pass the --workdir of a finished "
            "reproductions/heterogeneity_cnmc.py run."
        )
    with open(path) as f:
        config = json.load(f)
    return dict(config["input_contract"])


def fold_model_paths(workdir, method="heterogeneity", repeat=0):
    """The saved fold models of `method`, in fold order."""
    pattern = os.path.join(workdir, "jobs", "fold*", f"r{int(repeat)}", method, "model.keras")
    paths = glob.glob(pattern)
    if not paths:
        raise FileNotFoundError(
            f"No fold models match {pattern!r}; was the run finished with "
            f"save_model_repeats covering repeat {repeat} and method {method!r}?"
        )

    def fold(path):
        return int(re.search(r"fold(\d+)", path).group(1))

    return sorted(paths, key=fold)


def _load(images, size, pad_small):
    """File paths -> uint8 (N, size, size, 3) as the run decoded its images."""
    if isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[1:3] != (size, size):
            raise ValueError(
                f"predict_images: an array must be (N, {size}, {size}, 3) in [0, 255] (the "
                f"run's stored size); received shape {images.shape}. Pass file paths to "
                "have them decoded and resized as in the run."
            )
        return images
    import pandas as pd

    from tfcell.data import cache

    paths = [os.fspath(p) for p in images]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"predict_images: no such image file(s) {missing[:3]}.")
    table = pd.DataFrame({"path": paths, "label": 0})
    return cache.decoded_images(table, size, pad_small=pad_small)


def predict_images(workdir, images, method="heterogeneity", theta=0.95, repeat=0, batch_size=32):
    """Predicts new cells with a saved run's fold ensemble (5-crop TTA, theta rule).

    Args:
        workdir: the run's `--workdir`.
        images: file paths, or a uint8/float array (N, S, S, 3) in [0, 255] at
            the run's stored size S (`run_contract(workdir)["image_size"]`).
        method: whose fold models to use (default the full L_H).
        theta: the ensemble threshold (the paper: 0.95 or 0.98).
        repeat: the repeat whose models to use.
        batch_size: prediction batch size.

    Returns:
        `(labels (N,), scores (N, C))`; `run_contract(workdir)["class_names"]`
        names the columns.
    """
    from tfcell.evaluation import ensembles

    contract = run_contract(workdir)
    size = int(contract["image_size"])
    pad_small = contract.get("pad_small", True)
    pad_small = tuple(pad_small) if isinstance(pad_small, list) else pad_small
    array = _load(images, size, pad_small)
    return ensembles.predict_fold_ensemble(
        fold_model_paths(workdir, method, repeat), np.asarray(array, "float32"), theta=theta,
        crop_size=int(contract["crop_size"]), batch_size=batch_size,
    )  # fmt: skip
