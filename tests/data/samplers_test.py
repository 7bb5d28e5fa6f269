"""Samplers: exact balance per batch, every sample seen each epoch, epoch size."""

import numpy as np
import pytest

from tfcell.data import samplers, synthetic


@pytest.fixture(scope="module")
def cells():
    return synthetic.white_cells(240, image_size=8, imbalance=6, seed=0)


def test_index_batches_balance_and_coverage():
    groups = np.array([0] * 50 + [1] * 7 + [2] * 20)
    ds, report = samplers.balanced_index_batches(groups, per_group=5, seed=0)
    batches = [b.numpy() for b in ds]
    assert len(batches) == 10 == int(ds.cardinality())  # ceil(50 / 5)
    for b in batches:
        assert np.bincount(groups[b], minlength=3).tolist() == [5, 5, 5]
    seen = np.concatenate(batches)
    assert set(seen) == set(range(len(groups)))  # nothing silently dropped
    assert np.bincount(seen[groups[seen] == 0]).min() == 1  # largest group exactly once
    assert report["min_times_seen_per_epoch"].tolist() == [1, 7, 2]
    again = np.concatenate([b.numpy() for b in ds])
    assert set(again) == set(range(len(groups)))  # a second epoch covers everything again


def test_index_batches_deterministic():
    groups = np.arange(40) % 4
    a = [b.numpy().tolist() for b in samplers.balanced_index_batches(groups, 3, seed=1)[0]]
    b = [b.numpy().tolist() for b in samplers.balanced_index_batches(groups, 3, seed=1)[0]]
    assert a == b


def test_domain_balanced_boda_batches(cells):
    ds = samplers.domain_balanced(cells, per_domain=24, image_size=8)
    sizes = cells["domain"].value_counts()
    assert ds.steps_per_epoch == int(np.ceil(sizes.max() / 24))
    for batch in ds:
        assert batch["image"].shape == (72, 8, 8, 3)
        assert np.bincount(batch["domain"].numpy()).tolist() == [24, 24, 24]


def test_class_balanced_from_arrays_covers_all(cells):
    arrays = synthetic.to_arrays(cells)
    ds = samplers.class_balanced(arrays, per_class=4, output="dict")
    labels = []
    for batch in ds:
        assert np.bincount(batch["label"].numpy(), minlength=5).tolist() == [4] * 5
        labels.append(batch["label"].numpy())
    assert len(labels) == ds.steps_per_epoch
    assert (ds.sampling["min_times_seen_per_epoch"] >= 1).all()


def test_domain_class_balanced(cells):
    ds = samplers.domain_balanced(cells, per_domain=2, image_size=8, balance_classes=True)
    pairs = len(ds.sampling)
    batch = next(iter(ds))
    assert batch["image"].shape[0] == 2 * pairs


def test_rejects_bad_per_group():
    with pytest.raises(ValueError, match="per_group"):
        samplers.balanced_index_batches(np.zeros(4), 0)
