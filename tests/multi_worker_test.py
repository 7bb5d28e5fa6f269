"""Two worker processes on loopback ports (`MultiWorkerMirroredStrategy` from
TF_CONFIG) train what one process trains, and the harness run by both
resumes after a worker is killed (tests/experiments/multi_worker_harness_test.py).
At the top level of tests/ (not a numerical directory), so CI runs it once.
Every process is started and stopped by
the test (`LocalCluster` kills what is left when the block ends)."""

import json
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfcell import training
from tfcell.testing import multi_worker_program as program
from tfcell.testing import two_cpu_strategy
from tfcell.testing.multi_worker import LocalCluster

pytestmark = pytest.mark.multi_worker


def _program(*args):
    return [sys.executable, "-m", "tfcell.testing.multi_worker_program", *args]


def _weights(path):
    with np.load(path) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


def _reference(case, strategy):
    with strategy.scope():
        model = program.build(case)
    model.fit(program.dataset(case), epochs=program.EPOCHS, verbose=0, shuffle=False)
    return model.get_weights()


def _max_difference(a, b):
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


def test_two_workers_train_what_one_process_trains(tmp_path):
    # One cluster launch trains both cases, one after the other.
    command = _program("fit", "--case=per_sample,coral", f"--out={tmp_path}")
    with LocalCluster(2, command) as cluster:
        cluster.wait(timeout=300)
    for case in ("per_sample", "coral"):
        out = tmp_path / case
        workers = [_weights(out / f"weights{i}.npz") for i in (0, 1)]
        timing = json.loads((out / "timing0.json").read_text())
        assert timing["replicas"] == 2
        assert timing["strategy"] in ("MultiWorkerMirroredStrategy", "CollectiveAllReduceStrategy")
        # The workers hold the same (all-reduced) weights.
        assert _max_difference(workers[0], workers[1]) == 0.0
        one_device = _reference(case, tf.distribute.get_strategy())
        if case == "per_sample":
            # A per-sample loss over the same global batches: one process, one device.
            assert _max_difference(workers[0], one_device) < 1e-5
        else:
            # CORAL is a batch statistic, computed per replica and averaged
            # (HOUSE_STYLE): two workers equal one process with two replicas (two
            # logical CPUs) on the same global batches, and differ from one device
            # on the whole batch.
            assert _max_difference(workers[0], _reference(case, two_cpu_strategy())) < 1e-5
            assert _max_difference(workers[0], one_device) > 1e-3


def test_cluster_helper_reports_a_failing_worker(tmp_path):
    from tfcell.testing.multi_worker import WorkerFailed

    command = [sys.executable, "-c", "import os, sys; sys.exit(3 if '{index}' == '1' else 0)"]
    with LocalCluster(2, command, log_dir=str(tmp_path)) as cluster:
        with pytest.raises(WorkerFailed, match=r"worker\(s\) \[1\] failed"):
            cluster.wait(timeout=60)


def test_training_module_exports():
    # The one call every harness task uses.
    assert training.fit.__module__ == "tfcell.training.loop"
