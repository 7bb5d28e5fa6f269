"""Class-balanced and domain-balanced batches as tf.data, with no silent drops.

Each group (class, domain, or domain x class) gets its own stream of row
indices: a shuffled permutation of the group, reshuffled and repeated without
end. A batch takes exactly `per_group` indices from every group's stream (BoDA:
24 per domain), so every batch holds every group in equal numbers.

Every sample is seen: an epoch is `ceil(largest group / per_group)` batches.
The largest group is then covered exactly once per epoch; a smaller group's
stream runs through whole permutations, so each of its samples is seen at least
`floor(draws / size)` >= 1 times (it is oversampled, never dropped). The
epoch size is returned as `dataset.steps_per_epoch` (also
`dataset.cardinality()`), and `dataset.sampling` reports each group's size and
how many draws it gets per epoch.
"""

import math

import numpy as np
import pandas as pd
import tensorflow as tf

from tfcell.data import pipeline

__all__ = ["balanced_index_batches", "class_balanced", "domain_balanced"]


def balanced_index_batches(group_ids, per_group, seed=0):
    """A finite dataset of index batches, `per_group` rows from every group.

    Args:
        group_ids: (N,) group id of every row (any hashable values).
        per_group: rows of each group per batch.
        seed: shuffle seed (group g's stream uses `seed + g`).

    Returns:
        `(dataset, report)`: the dataset yields int64 vectors of length
        `per_group * num_groups`, `ceil(max group size / per_group)` of them per
        epoch; `report` is a DataFrame (group, size, draws_per_epoch,
        min_times_seen_per_epoch).
    """
    group_ids = np.asarray(group_ids)
    if group_ids.size == 0:
        raise ValueError("balanced_index_batches received no rows.")
    if per_group < 1:
        raise ValueError(f"per_group must be >= 1; received {per_group}.")
    groups = sorted(set(group_ids.tolist()))
    members = [np.flatnonzero(group_ids == g).astype("int64") for g in groups]
    steps = math.ceil(max(len(m) for m in members) / per_group)
    streams = []
    for k, rows in enumerate(members):
        stream = tf.data.Dataset.from_tensor_slices(rows)
        # shuffle-then-repeat: each pass is a fresh full permutation of the group.
        stream = stream.shuffle(len(rows), seed=seed + k, reshuffle_each_iteration=True).repeat()
        streams.append(stream.batch(per_group))
    dataset = tf.data.Dataset.zip(tuple(streams)).map(lambda *parts: tf.concat(parts, 0))
    dataset = dataset.take(steps)
    dataset = dataset.map(lambda x: tf.ensure_shape(x, [per_group * len(groups)]))
    draws = steps * per_group
    report = pd.DataFrame(
        {
            "group": groups,
            "size": [len(m) for m in members],
            "draws_per_epoch": draws,
            "min_times_seen_per_epoch": [draws // len(m) for m in members],
        }
    )
    return dataset, report


def _balanced(source, group_ids, per_group, seed, image_size, output, augment, **kwargs):
    index, report = balanced_index_batches(group_ids, per_group, seed)
    if isinstance(source, pd.DataFrame):
        dataset = pipeline.from_records(
            source,
            image_size,
            augment=augment,
            seed=seed,
            output=output,
            index_batches=index,
            **kwargs,
        )
    else:
        dataset = pipeline.from_arrays(
            source,
            None,
            augment=augment,
            seed=seed,
            output=output,
            image_size=image_size,
            index_batches=index,
            **kwargs,
        )
    dataset.steps_per_epoch = int(len(index))
    dataset.sampling = report
    return dataset


def _column(source, name):
    if isinstance(source, pd.DataFrame):
        return source[name].astype(str).to_numpy() if name != "label" else source[name].to_numpy()
    return np.asarray(source[name])


def class_balanced(
    source, per_class, seed=0, image_size=None, output="tuple", augment=None, **kwargs
):
    """Batches with `per_class` samples of every class.

    Args:
        source: a record table, or a dict of arrays (`tfcell.data.synthetic.to_arrays`).
        per_class: samples of each class per batch.
        seed: sampling seed.
        image_size: resize target (required for files).
        output, augment, **kwargs: as in `tfcell.data.from_records` / `from_arrays`.

    Returns:
        A finite `tf.data.Dataset` (one epoch) with `steps_per_epoch` and `sampling`.
    """
    return _balanced(
        source, _column(source, "label"), per_class, seed, image_size, output, augment, **kwargs
    )


def domain_balanced(
    source,
    per_domain=24,
    seed=0,
    image_size=None,
    output="dict",
    augment=None,
    balance_classes=False,
    **kwargs,
):
    """Batches with `per_domain` samples of every domain (BoDA: 24).

    With `balance_classes=True` the groups are (domain, class) pairs present in
    the data, and `per_domain` counts samples per pair.

    Returns:
        A finite `tf.data.Dataset` (one epoch) with `steps_per_epoch` and `sampling`.
    """
    domains = _column(source, "domain")
    groups = domains
    if balance_classes:
        labels = _column(source, "label")
        groups = np.array([f"{d}|{c}" for d, c in zip(domains, labels)])
    return _balanced(source, groups, per_domain, seed, image_size, output, augment, **kwargs)
