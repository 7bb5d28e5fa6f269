"""benchmarks/gpu_throughput.py: the one-line skip without a GPU, and a CPU
smoke run (tiny images, a small CNN, three steps) that prints the table and
the ratios."""

import os
import subprocess
import sys

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "gpu_throughput.py")


def _run(*args, hide_gpus=False):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if hide_gpus:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return subprocess.run(
        [sys.executable, SCRIPT, *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_skips_with_one_line_without_a_gpu():
    result = _run(hide_gpus=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines() == [
        "gpu_throughput: SKIPPED, no GPU (tf.config.list_physical_devices('GPU') is empty); "
        "--force_cpu runs it on the CPU."
    ]


def test_cpu_smoke_run_prints_the_table_and_ratios():
    # float32: CPUs emulate float16 convolutions (about 50x slower); the mixed
    # path itself is tested in tests/experiments/mixed_precision_test.py.
    result = _run(
        "--force_cpu", "--image_size=32", "--steps=3", "--rounds=1", "--warmup=1",
        "--batch_size=8", "--backbone=small_cnn", "--pipeline_images=32", "--data=synthetic",
        "--nomixed_precision",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "| measurement | step (ms) | images/s |" in out
    for key in ("(a)", "(b)", "(c)", "(d)", "(e)"):
        rows = [line for line in out.splitlines() if line.startswith(f"| {key} ")]
        assert len(rows) == 1, (key, out)
        images_per_s = float(rows[0].rstrip(" |").rsplit("|", 1)[1])
        assert images_per_s > 0, rows[0]
    for ratio in ("CFAL / CCE step time", "pipeline images/s / CCE model images/s"):
        assert f"| {ratio}" in out, out
    assert "synthetic white-cell JPEGs" in out and "CPU forced" in out
