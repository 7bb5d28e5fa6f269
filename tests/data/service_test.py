"""tf.data service: a dispatcher and a worker started by the command line's
code on loopback, datasets (the harness's TFRecord batches included) served
through them, every wait bounded, the servers stopped by the test."""

import hashlib
import os
import threading

import numpy as np
import pytest
import tensorflow as tf

from tfcell.data import augmentation, service, synthetic
from tfcell.experiments import settings, tasks

TIMEOUT_S = 60


@pytest.fixture
def cluster(tmp_path):
    """A fault-tolerant dispatcher (journal in tmp_path) and one worker, on free ports."""
    journal = tmp_path / "journal"
    dispatcher = service.main(["dispatcher", "--port", "0", "--work_dir", str(journal)], join=False)
    worker = service.main(["worker", "--dispatcher", dispatcher.target, "--port", "0"], join=False)
    try:
        yield dispatcher.target
    finally:
        worker._stop()
        dispatcher._stop()


def _bounded(function):
    """`function()`, failing the test instead of hanging when the service stalls."""
    result = {}

    def run():
        try:
            result["value"] = function()
        except BaseException as error:  # Re-raised in the test's thread.
            result["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(TIMEOUT_S)
    if thread.is_alive():
        pytest.fail(f"the tf.data service did not answer within {TIMEOUT_S} s")
    if "error" in result:
        raise result["error"]
    return result["value"]


def _rows(dataset, keys=("image", "label")):
    rows = []
    for batch in dataset:
        for values in zip(*(np.asarray(batch[k]) for k in keys)):
            digest = hashlib.sha1(np.ascontiguousarray(values[0]).tobytes()).hexdigest()
            rows.append((digest, *map(int, values[1:])))
    return sorted(rows)


@pytest.mark.parametrize("mode", ["distributed_epoch", "parallel_epochs"])
def test_distribute_serves_the_source_elements(cluster, tmp_path, mode):
    source = (
        tf.data.Dataset.range(40)
        .map(lambda i: {"image": tf.fill([4, 4, 3], tf.cast(i, tf.float32)), "label": i % 3})
        .batch(6)
    )
    source.id_maps = {"domain": {"a": 0}}
    served = service.distribute(source, cluster, processing_mode=mode)
    assert served.id_maps == source.id_maps
    for _ in range(2):  # A new job every epoch (iteration).
        assert _bounded(lambda: _rows(served)) == _rows(source)
    assert os.listdir(tmp_path / "journal")  # --work_dir: the dispatcher journals its state.


def test_harness_streams_tfrecord_training_batches_through_the_service(cluster, tmp_path):
    frame = synthetic.white_cells(40, image_size=16, num_classes=3, domains=2)
    setting = settings.holdout("toy", frame, 0.25, 0.25, 0, synthetic=True)
    local = tasks.SettingData(setting, 12, tmp_path / "cache", storage="tfrecord")
    remote = tasks.SettingData(setting, 12, tmp_path / "cache", storage="tfrecord", service=cluster)
    keys = ("image", "label", "domain", "subject")
    train = remote.dataset("train", 8, "dict", training=True, seed=3)
    expected = _rows(local.dataset("train", 8, "dict", training=True, seed=3), keys)
    assert _bounded(lambda: _rows(train, keys)) == expected
    # The per-image augmentation runs on the worker; every image still comes once.
    augmented = remote.dataset(
        "train", 8, "dict", True, 3, augmentation.PerImageAugmentation(rotation=0.0)
    )
    labels = _bounded(lambda: sorted(int(y) for b in augmented for y in b["label"]))
    assert labels == sorted(setting.labels("train").tolist())


def test_distribute_and_harness_errors(tmp_path):
    source = tf.data.Dataset.range(3)
    with pytest.raises(ValueError, match="processing_mode must be one of"):
        service.distribute(source, "grpc://localhost:5050", processing_mode="dynamic")
    with pytest.raises(ValueError, match="dispatcher's address"):
        service.distribute(source, "")
    frame = synthetic.white_cells(20, image_size=8, num_classes=2, domains=2)
    setting = settings.holdout("toy", frame, 0.25, 0.25, 0, synthetic=True)
    with pytest.raises(ValueError, match="storage='memory'.*every decoded image"):
        tasks.SettingData(setting, 8, tmp_path, service="grpc://localhost:5050")
    with pytest.raises(SystemExit):
        service.main(["worker", "--port", "0"], join=False)  # --dispatcher is required.
