"""BoDA trainer and its centroid refresh (Yang et al., ECCV 2022)."""

import keras
import numpy as np
from keras import ops

from tfcell.losses import alignment

# `tfcell.losses.boda` is shadowed by the function of that name in the package
# namespace (`from .boda import *`), so import from the module itself.
from tfcell.losses.boda import boda as boda_fn
from tfcell.losses.boda import boda_centroid_table
from tfcell.training import erm

__all__ = ["BoDATrainer", "BoDACentroidRefresh", "domain_class_counts"]


def domain_class_counts(domains, labels, num_domains, num_classes):
    """`N[d, c]`, the number of training samples of each (domain, class).

    Args:
        domains: integer domain ids of the training records (e.g.
            `records["domain"]`).
        labels: integer class ids of the same records.
        num_domains: int.
        num_classes: int.

    Returns:
        An int64 array `(num_domains, num_classes)`.
    """
    domains = np.asarray(domains, "int64").reshape(-1)
    labels = np.asarray(labels, "int64").reshape(-1)
    if domains.shape != labels.shape:
        raise ValueError(
            f"`domains` and `labels` must have one entry per record, received "
            f"{domains.shape} and {labels.shape}."
        )
    counts = np.zeros((num_domains, num_classes), "int64")
    np.add.at(counts, (domains, labels), 1)
    return counts


@keras.saving.register_keras_serializable(package="tfcell")
class BoDATrainer(erm.Trainer):
    """BoDA: CE + macro (CORAL) alignment + balanced domain-class alignment.

    Keeps one centroid `mu[d, c]` per (domain, class) pair that exists in the
    training data (`counts > 0`), as non-trainable weights. They are
    recomputed by a full pass over the training data with
    `refresh_centroids(dataset)`, which `BoDACentroidRefresh` calls every
    `feat_update_freq` steps: the first refresh replaces them, later ones blend
    `mu = (1 - momentum) * mu_new + momentum * mu_old`.

    ```
    loss = mean(CE)
           + macro_weight * mean over domain pairs present of coral(z_a, z_b)
           + boda_weight * [step >= start_step] * boda(z, y, d, mu, ..., nu, temperature)
    ```

    Args:
        featurizer: a built `keras.Model` mapping images to features `(N, D)`.
        classifier: a built `keras.Model` mapping features to class logits.
        counts: `(num_domains, num_classes)` training counts `N[d, c]`
            (`domain_class_counts(records["domain"], records["label"], ...)`).
        nu: float, calibration exponent. Default 0.5.
        temperature: float. Default 1.0.
        boda_weight: float. Default 0.1.
        macro_weight: float, weight of the CORAL macro alignment. Default 1.0.
        start_step: int, the BoDA term is used from this optimizer step on.
            Default 500.
        momentum: float, weight of the old centroids after the first refresh.
            Default 0.2 (`mu = 0.8 * new + 0.2 * old`).
        **kwargs: forwarded to `keras.Model`.

    Note:
        As in the authors' code, the macro alignment applies from step 0 and
        the BoDA term from `start_step`; the centroids are zero until the
        first refresh (step `feat_update_freq` = 120 < 500). CE is the mean
        over the mixed batch (the code: mean of per-domain means, the same for
        balanced batches). Domains with fewer than 2 samples in the batch are
        left out of the CORAL pairs (the code would divide by zero).

    Reference:
    - [Yang et al., 2022](https://arxiv.org/abs/2203.09513);
      YyzHarry/multi-domain-imbalance @2efbfef, `mdlt/learning/algorithms.py`,
      `BoDA`, `hparams_registry.py`
    """

    penalty_names = ("macro", "boda")

    def __init__(
        self,
        featurizer,
        classifier,
        counts,
        nu=0.5,
        temperature=1.0,
        boda_weight=0.1,
        macro_weight=1.0,
        start_step=500,
        momentum=0.2,
        **kwargs,
    ):
        super().__init__(featurizer, classifier, **kwargs)
        counts = np.asarray(counts, "int64")
        if counts.ndim != 2 or np.any(counts < 0):
            raise ValueError(
                "`counts` must be a non-negative (num_domains, num_classes) table, "
                f"received shape {counts.shape}."
            )
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"`momentum` must lie in [0, 1) (default 0.2), received {momentum}.")
        self.counts = counts.tolist()
        self.nu = float(nu)
        self.temperature = float(temperature)
        self.boda_weight = float(boda_weight)
        self.macro_weight = float(macro_weight)
        self.start_step = int(start_step)
        self.momentum = float(momentum)
        self.num_domains, self.num_classes = counts.shape
        domains, labels = boda_centroid_table(counts)
        self.centroid_domains = np.asarray(domains, "int32")
        self.centroid_labels = np.asarray(labels, "int32")
        feature_dim = erm._feature_dim(featurizer, "BoDATrainer")
        self.centroids = self.add_weight(
            name="centroids",
            shape=(len(domains), feature_dim),
            initializer="zeros",
            trainable=False,
        )
        self.centroids_ready = self.add_weight(
            name="centroids_ready", shape=(), initializer="zeros", trainable=False
        )

    def batch_penalties(self, batch, features, logits):
        macro = alignment.pairwise_domain_penalty(
            features, batch["domain"], self.num_domains, penalty_fn=alignment.coral, min_samples=2
        )
        active = ops.cast(self.optimizer.iterations >= self.start_step, features.dtype)
        term = boda_fn(
            features,
            batch["label"],
            batch["domain"],
            ops.stop_gradient(ops.cast(self.centroids, features.dtype)),
            self.centroid_domains,
            self.centroid_labels,
            np.asarray(self.counts, "float32"),
            nu=self.nu,
            temperature=self.temperature,
        )
        return {"macro": self.macro_weight * macro, "boda": self.boda_weight * active * term}

    def compute_centroids(self, dataset):
        """Mean features per centroid over `dataset` (eval mode), and the counts seen."""
        dim = int(self.centroids.shape[-1])
        sums = np.zeros((self.num_domains, self.num_classes, dim), "float64")
        seen = np.zeros((self.num_domains, self.num_classes), "float64")
        for data in dataset:
            batch = erm.unpack_batch(data)
            feats = ops.convert_to_numpy(self.featurizer(batch["image"], training=False))
            d = ops.convert_to_numpy(batch["domain"])
            y = ops.convert_to_numpy(batch["label"])
            np.add.at(sums, (d, y), feats.astype("float64"))
            np.add.at(seen, (d, y), 1.0)
        rows = (self.centroid_domains, self.centroid_labels)
        n = seen[rows]
        return sums[rows] / np.maximum(n, 1.0)[:, None], n

    def refresh_centroids(self, dataset):
        """Recomputes the centroids over `dataset`: replace, then momentum blend.

        A centroid with no sample in `dataset` keeps its value.
        """
        new, n = self.compute_centroids(dataset)
        old = ops.convert_to_numpy(self.centroids).astype("float64")
        factor = self.momentum if float(ops.convert_to_numpy(self.centroids_ready)) > 0 else 0.0
        blended = (1.0 - factor) * new + factor * old
        value = np.where((n > 0)[:, None], blended, old)
        self.centroids.assign(value.astype(self.centroids.dtype))
        self.centroids_ready.assign(1.0)
        return value

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "counts": self.counts,
                "nu": self.nu,
                "temperature": self.temperature,
                "boda_weight": self.boda_weight,
                "macro_weight": self.macro_weight,
                "start_step": self.start_step,
                "momentum": self.momentum,
            }
        )
        return config


class BoDACentroidRefresh(keras.callbacks.Callback):
    """Calls `BoDATrainer.refresh_centroids(dataset)` every `every` steps.

    Before the optimizer step `s` (`model.optimizer.iterations`), when
    `s > 0` and `s % every == 0`, as the authors' `update_feature_stats`
    (first at step `every`, never at step 0).

    Args:
        dataset: the training data as dict batches (one full pass per refresh;
            pass an unshuffled, un-augmented, finite dataset).
        every: int, `feat_update_freq`. Default 120.

    Note:
        With `steps_per_execution > 1` Keras calls batch callbacks once per
        execution; a refresh then happens at the first callback at or after
        each multiple of `every`.
    """

    def __init__(self, dataset, every=120):
        super().__init__()
        if every < 1:
            raise ValueError(f"`every` must be >= 1 (default 120), received {every}.")
        self.dataset = dataset
        self.every = int(every)
        self._last_refresh = 0

    def on_train_batch_begin(self, batch, logs=None):
        step = int(ops.convert_to_numpy(self.model.optimizer.iterations))
        due = step // self.every
        if step > 0 and due > self._last_refresh // self.every:
            self.model.refresh_centroids(self.dataset)
            self._last_refresh = step
