"""The three centre terms of Goswami et al.'s heterogeneity loss (Eqs. 3-5).

There is deliberately no `HeterogeneityLoss(keras.losses.Loss)`: every term is
a batch statistic (a sum over the classes / subjects present in the batch of
per-group means, and a sum over pairs of present subjects), none is a mean of
per-sample values, and all need the learned centres (state). A `Loss.call`
returning one number is not rescaled under `MirroredStrategy` (see
HOUSE_STYLE.md), and per-sample values such as `d_i / n_{y_i}` would be
averaged by the reduction instead of summed. The form is therefore
`tfcell.training.HeterogeneityTrainer`, whose `train_step` adds
`l1 * class + l2 * subject + l3 * subject_class` to the cross-entropy and
divides the batch-statistic terms by the number of replicas.
"""

from keras import ops

from tfcell.losses import class_balanced

__all__ = ["heterogeneity_terms"]


def _sum_of_group_means(sq_dist, ids, num_groups):
    """`sum_{g present} mean_{i in g} sq_dist[i]`, with fixed shapes (XLA-friendly)."""
    one_hot = ops.one_hot(ids, num_groups, dtype=sq_dist.dtype)  # (N, G)
    sums = ops.matmul(sq_dist[None, :], one_hot)[0]  # (G,)
    counts = ops.sum(one_hot, axis=0)
    # Absent groups have sums == 0; dividing by max(count, 1) drops them.
    return ops.sum(sums / ops.maximum(counts, 1.0)), counts


def heterogeneity_terms(features, labels, subjects, class_centers, subject_centers, subject_labels):
    """Class, subject and subject-class centre terms of the heterogeneity loss.

    ```python
    # Eq. 3: classes present in the batch
    class_term = sum(mean(||x - c1[c]||^2 for x in M_c) for c in classes if M_c)
    # Eq. 4: subjects present in the batch
    subject_term = sum(mean(||x - c2[s]||^2 for x in M_s) for s in subjects if M_s)
    # Eq. 5: ordered pairs of distinct subjects, both present in the batch
    subject_class_term = sum(
        d2 if subject_labels[si] == subject_labels[sj] else 1 / (1 + d2)
        for si in present for sj in present if si != sj
        with d2 = ||c2[si] - c2[sj]||^2
    )
    ```

    Eq. 5 is evaluated over pairs of batch samples weighted by
    `1 / (n_si * n_sj)`, which counts each ordered pair of present subjects
    exactly once, keeps every shape fixed (batch x batch, not subjects x
    subjects) and needs no boolean masking.

    Args:
        features: `(N, h)` deep features (the paper: Inception-v3's last layer).
        labels: class ids of the samples, `(N,)`, `(N, 1)` or one-hot `(N, C)`.
        subjects: subject ids of the samples, `(N,)` or `(N, 1)`, in
            `[0, num_subjects)`.
        class_centers: `(C, h)` class centres `c1`.
        subject_centers: `(S, h)` subject centres `c2`.
        subject_labels: `(S,)` class id of every subject.

    Returns:
        `(class_term, subject_term, subject_class_term)`, three scalars in the
        dtype of `features` (computed in float32 or wider).

    Reference:
    - Goswami et al., 2020, "Heterogeneity loss to handle intersubject and
      intrasubject variability in cancer" (ICLR 2020 AI4AH workshop), Eqs. 3-5
    """
    features = ops.convert_to_tensor(features)
    out_dtype = features.dtype
    compute_dtype = "float64" if out_dtype == "float64" else "float32"
    x = ops.cast(features, compute_dtype)
    c1 = ops.cast(class_centers, compute_dtype)
    c2 = ops.cast(subject_centers, compute_dtype)
    num_classes = c1.shape[0]
    num_subjects = c2.shape[0]
    labels = class_balanced.to_class_ids(labels, num_classes)
    subjects = class_balanced.to_class_ids(subjects, num_subjects)
    subject_labels = ops.reshape(ops.cast(subject_labels, "int32"), (-1,))

    # Eq. 3
    d_class = ops.sum(ops.square(x - ops.take(c1, labels, axis=0)), axis=-1)
    class_term, _ = _sum_of_group_means(d_class, labels, num_classes)

    # Eq. 4
    c2_of_sample = ops.take(c2, subjects, axis=0)  # (N, h)
    d_subject = ops.sum(ops.square(x - c2_of_sample), axis=-1)
    subject_term, counts = _sum_of_group_means(d_subject, subjects, num_subjects)

    # Eq. 5 over sample pairs (i, j) with s_i != s_j, weight 1 / (n_si * n_sj).
    diff = c2_of_sample[:, None, :] - c2_of_sample[None, :, :]
    d2 = ops.sum(ops.square(diff), axis=-1)  # (N, N)
    class_of_subject = ops.take(subject_labels, subjects, axis=0)
    same_class = ops.cast(
        ops.equal(class_of_subject[:, None], class_of_subject[None, :]), compute_dtype
    )
    pair_value = same_class * d2 + (1.0 - same_class) / (1.0 + d2)
    n = ops.take(counts, subjects, axis=0)  # every sample's own subject count, >= 1
    different = ops.cast(ops.not_equal(subjects[:, None], subjects[None, :]), compute_dtype)
    weights = different / (n[:, None] * n[None, :])
    subject_class_term = ops.sum(weights * pair_value)

    return (
        ops.cast(class_term, out_dtype),
        ops.cast(subject_term, out_dtype),
        ops.cast(subject_class_term, out_dtype),
    )
