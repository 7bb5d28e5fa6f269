"""benchmarks/multi_worker.py: a tiny side-by-side run (one process, then two
loopback workers) prints the table with a finite ratio."""

import os
import re
import subprocess
import sys

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "multi_worker.py")

pytestmark = pytest.mark.multi_worker


def test_tiny_run_prints_step_times_and_ratio():
    result = subprocess.run(
        [sys.executable, SCRIPT, "--rounds=1", "--epochs=2", "--num_examples=64", "--size=8",
         "--width=4", "--batch_size=16"],
        capture_output=True, text=True, timeout=400,
        env={k: v for k, v in os.environ.items() if k != "TF_CONFIG"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    row = re.search(r"\| per_sample \| 16 \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|", result.stdout)
    assert row, result.stdout
    one, two, ratio = (float(g) for g in row.groups())
    assert one > 0 and two > 0
    assert abs(ratio - two / one) < 0.02 * ratio + 0.01
