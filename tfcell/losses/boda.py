"""BoDA: balanced domain-class distribution alignment (Yang et al., ECCV 2022).

A batch statistic (a mean over the batch's positive sample-centroid pairs), so
it is a plain function applied in `tfcell.training.BoDATrainer.train_step`,
not a `keras.losses.Loss` (see HOUSE_STYLE.md on MirroredStrategy scaling).
"""

from keras import ops

__all__ = ["boda", "boda_centroid_table"]


def boda_centroid_table(counts):
    """The (domain, class) pairs that get a centroid: those with `counts > 0`.

    Ordered domain-major, classes ascending within a domain, as the authors'
    `centroid_envs` / `centroid_classes` (`np.unique` per environment).

    Args:
        counts: array-like `(num_domains, num_classes)` of training counts.

    Returns:
        `(centroid_domains, centroid_labels)`, two Python lists of ints.
    """
    domains, labels = [], []
    for d, row in enumerate(counts):
        for c, n in enumerate(row):
            if n > 0:
                domains.append(d)
                labels.append(c)
    if not domains:
        raise ValueError(
            "`counts` has no positive entry, so BoDA has no centroid. Pass the "
            "per-(domain, class) training counts, shape (num_domains, num_classes)."
        )
    return domains, labels


def _euclidean(a, b):
    """`||a_k - b_i||` `(M, N)`, with a zero (not NaN) gradient at distance 0."""
    sq = (
        ops.sum(ops.square(a), axis=-1, keepdims=True)
        + ops.transpose(ops.sum(ops.square(b), axis=-1, keepdims=True))
        - 2.0 * ops.matmul(a, ops.transpose(b))
    )
    positive = sq > 0
    safe = ops.where(positive, sq, ops.ones_like(sq))
    return ops.where(positive, ops.sqrt(safe), ops.zeros_like(sq))


def boda(
    features,
    labels,
    domains,
    centroids,
    centroid_domains,
    centroid_labels,
    counts,
    nu=0.5,
    temperature=1.0,
):
    """BoDA loss of a batch against the (domain, class) centroids.

    Each sample is pulled towards the centroids of its class in the other
    domains and pushed from every other (domain, class) centroid, with the
    distances balanced by the sample's own domain-class count and calibrated
    by the ratio of the counts.

    ```
    dist[k, i] = ||mu_k - z_i||                       # Euclidean, not squared
    n_i = N[d_i, y_i];  n_k = N[d_k, c_k]             # counts clamped at 1
    logit[k, i] = -dist[k, i] / n_i * (n_k / n_i) ** nu / temperature
    own[k, i] = (c_k == y_i) and (d_k == d_i)
    log_p[k, i] = logit[k, i] - log(sum(exp(logit[j, i]) for j if not own[j, i]))
    pos[k, i] = (c_k == y_i) and (d_k != d_i)
    boda = -sum(log_p * pos) / max(sum(pos), 1)
    ```

    Args:
        features: batch features `z` `(N, D)`.
        labels: integer class ids `(N,)`.
        domains: integer domain ids `(N,)`.
        centroids: `(M, D)` centroids `mu_k`, one per existing (domain, class).
        centroid_domains: integer `(M,)`, the domain of each centroid.
        centroid_labels: integer `(M,)`, the class of each centroid.
        counts: `(num_domains, num_classes)` training counts `N[d, c]`.
        nu: float, the calibration exponent. Paper default 0.5.
        temperature: float, divides the logits. Paper default 1.0.

    Returns:
        A scalar tensor; 0 when the batch has no positive pair (e.g. one
        domain only, or a class present in a single domain).

    Note:
        The loss is the authors' code: the mean over all positive
        (sample, centroid) pairs of the batch. The poster writes a per-sample
        average over the other domains (`1 / (|D| - 1)`), then a sum over
        samples; the two agree (up to the constant batch size) when every
        class exists in every domain. Counts are clamped at 1 and the
        normaliser gets no `+1e-12`-style epsilon: the log-sum-exp is taken
        stably instead, and is finite even when the sample's own centroid is
        the only one.

    Reference:
    - [Yang et al., 2022](https://arxiv.org/abs/2203.09513), Sec. 3;
      YyzHarry/multi-domain-imbalance @2efbfef, `mdlt/learning/algorithms.py`,
      `BoDA.update`
    - [Umer et al., 2023], the poster's BoDA equation (WBC domain
      generalisation)
    """
    if nu < 0:
        raise ValueError(f"`nu` must be >= 0 (paper default 0.5), received {nu}.")
    if temperature <= 0:
        raise ValueError(f"`temperature` must be > 0 (paper default 1.0), received {temperature}.")
    features = ops.convert_to_tensor(features)
    dtype = features.dtype
    centroids = ops.cast(centroids, dtype)
    labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
    domains = ops.reshape(ops.cast(domains, "int32"), (-1,))
    centroid_labels = ops.reshape(ops.cast(centroid_labels, "int32"), (-1,))
    centroid_domains = ops.reshape(ops.cast(centroid_domains, "int32"), (-1,))
    counts = ops.cast(counts, dtype)
    num_classes = ops.shape(counts)[1]

    flat_counts = ops.reshape(counts, (-1,))
    n_i = ops.maximum(ops.take(flat_counts, domains * num_classes + labels), 1.0)
    n_k = ops.maximum(ops.take(flat_counts, centroid_domains * num_classes + centroid_labels), 1.0)

    dist = _euclidean(centroids, features)  # (M, N)
    n_i_row = ops.expand_dims(n_i, 0)
    calibration = ops.power(ops.expand_dims(n_k, 1) / n_i_row, nu)
    logits = -dist / n_i_row * calibration / temperature

    same_class = ops.equal(ops.expand_dims(centroid_labels, 1), ops.expand_dims(labels, 0))
    same_domain = ops.equal(ops.expand_dims(centroid_domains, 1), ops.expand_dims(domains, 0))
    others = ops.cast(ops.logical_not(ops.logical_and(same_class, same_domain)), dtype)
    positives = ops.cast(ops.logical_and(same_class, ops.logical_not(same_domain)), dtype)

    # log sum_{k not own} exp(logit_k), shifted by the largest such logit; a
    # column whose only centroid is the sample's own gets log(1) = 0 (its
    # positives are empty too), never log(0).
    has_other = ops.cast(ops.max(others, axis=0, keepdims=True) > 0, dtype)
    floor = ops.min(logits) - 1.0
    shift = ops.max(ops.where(others > 0, logits, floor), axis=0, keepdims=True)
    shift = ops.stop_gradient(shift * has_other)
    sum_exp = ops.sum(ops.exp(logits - shift) * others, axis=0, keepdims=True)
    log_norm = shift + ops.log(sum_exp + (1.0 - has_other))
    log_prob = logits - log_norm
    return -ops.sum(log_prob * positives) / ops.maximum(ops.sum(positives), 1.0)
