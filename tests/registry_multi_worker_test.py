"""The registry matrix on two workers: every trainer of tfcell and the losses
with their own machinery (tests/registry_test.py's cases) fit one step under
MultiWorkerMirroredStrategy on two loopback worker processes, through
`tfcell.training.fit`, and land on the weights of one process with two
replicas (two logical CPUs) on the same global batch. Batch statistics are
per replica in both, so the comparison holds for them too.

The losses: CFAL (affinity head), SphereFace with norms (a head with two
outputs), the centre loss with Wen's centre update (a layer updating its own
variables), exclusive cross-entropy and the detection loss (an epoch variable
set by a callback). The other compiled losses take the same Keras
`compute_loss` path as CFAL (`python -m tfcell.testing.multi_worker_program
matrix --cases_file=tests/registry_test.py --out=DIR` runs them all; kept out
of CI for time). At the top level of tests/ (not a numerical directory): it
runs once in CI."""

import json
import os
import sys

import numpy as np
import pytest

from tfcell.testing import multi_worker_program as program
from tfcell.testing import two_cpu_strategy
from tfcell.testing.multi_worker import LocalCluster

pytestmark = pytest.mark.multi_worker

CASES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "registry_test.py")
LOSSES = (
    "CFALoss", "SphereFaceLoss_norms", "CenterLoss_wen", "ExclusiveCrossentropyLoss",
    "DetectionLoss",
)  # fmt: skip


def test_every_loss_and_trainer_on_two_workers_equals_two_replicas(tmp_path):
    command = [
        sys.executable, "-m", "tfcell.testing.multi_worker_program", "matrix",
        f"--cases_file={CASES_FILE}", f"--out={tmp_path}", f"--losses={','.join(LOSSES)}",
    ]  # fmt: skip
    with LocalCluster(2, command, log_dir=str(tmp_path / "logs")) as cluster:
        cluster.wait(timeout=400)
    summary = json.loads((tmp_path / "matrix0.json").read_text())
    assert summary["replicas"] == 2
    loss_cases, trainer_cases, _, _ = program.load_cases(CASES_FILE)
    assert set(LOSSES) <= set(loss_cases)
    expected = [("loss", n) for n in LOSSES] + [("trainer", n) for n in trainer_cases]
    assert sorted(summary["cases"]) == sorted(f"{k}-{n}" for k, n in expected)
    failures = []
    for kind, name in expected:
        workers = []
        for index in (0, 1):
            with np.load(tmp_path / f"{kind}-{name}-{index}.npz") as data:
                workers.append([data[f"arr_{i}"] for i in range(len(data.files))])
        reference, _ = program.matrix_step(
            kind, name, CASES_FILE, two_cpu_strategy(), force_loop=False
        )
        assert np.isfinite(summary["cases"][f"{kind}-{name}"]["loss"]).all(), name
        for a, b, r in zip(workers[0], workers[1], reference):
            if not np.array_equal(a, b):
                failures.append(f"{name}: the two workers differ")
            if not np.allclose(a, r, atol=1e-5, rtol=1e-5):
                failures.append(f"{name}: max |two workers - two replicas| {np.abs(a - r).max()}")
    assert not failures, "\n".join(failures)
