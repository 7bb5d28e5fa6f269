"""Step time of one process against two workers (`MultiWorkerMirroredStrategy`
on loopback ports), side by side in one run.

Both train the same model (`tfcell.testing.multi_worker_program`: a small CNN,
per-sample cross-entropy or the CORAL trainer) on the same global batches with
`tfcell.training.fit`: one process on one device, then two worker processes of
one replica each that split every global batch and all-reduce the gradients.
It reports the steady-state seconds per step (epochs after the first, which
holds tracing) and the ratio two-workers / one-process. On one machine the two
workers share its cores and talk over loopback, so the ratio measures the
collective overhead of the strategy.run loop, not a speed-up; across machines
each worker brings its own cores. Rounds alternate (one process, two workers,
one process, ...) so machine noise hits both alike.

    python benchmarks/multi_worker.py [--case=per_sample|coral --rounds=2 --epochs=4
        --num_examples=1024 --size=32 --width=32 --batch_size=64]
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile

from absl import app, flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfcell.testing.multi_worker import LocalCluster  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum("case", "per_sample", ["per_sample", "coral"], "Loss: per-sample CE or CORAL.")
flags.DEFINE_integer("rounds", 2, "Alternating rounds of (one process, two workers).")
flags.DEFINE_integer("epochs", 4, "Epochs per run (the first is left out: tracing).")
flags.DEFINE_integer("num_examples", 1024, "Training examples.")
flags.DEFINE_integer("size", 32, "Image side (px).")
flags.DEFINE_integer("width", 32, "Convolution width.")
flags.DEFINE_integer("batch_size", 64, "GLOBAL batch size (each worker gets half).")
flags.DEFINE_integer("timeout", 600, "Seconds per run.")
flags.DEFINE_integer(
    "worker_threads",
    0,
    "TF intra-op threads per worker (TF_NUM_INTRAOP_THREADS); 0: TF's default. On one "
    "machine, cores / workers keeps the two workers from oversubscribing the cores.",
)
flags.DEFINE_bool("update_docs", False, "Write the table into docs/scaling.md.")

DOCS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "scaling.md")


def _args(out):
    return [
        "-m", "tfcell.testing.multi_worker_program", "fit", f"--case={FLAGS.case}",
        f"--out={out}", f"--epochs={FLAGS.epochs}", f"--num_examples={FLAGS.num_examples}",
        f"--size={FLAGS.size}", f"--width={FLAGS.width}", f"--batch_size={FLAGS.batch_size}",
    ]  # fmt: skip


def _step_seconds(path):
    with open(path) as f:
        timing = json.load(f)
    times, steps = timing["epoch_seconds"][1:], timing["steps_per_epoch"][1:]
    return sum(times) / sum(steps), timing["replicas"]


def _one_process(out):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    subprocess.run([sys.executable, *_args(out)], env=env, check=True, timeout=FLAGS.timeout,
                   stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)  # fmt: skip
    return _step_seconds(os.path.join(out, "timing0.json"))


def _two_workers(out):
    env = {}
    if FLAGS.worker_threads:
        env = {"TF_NUM_INTRAOP_THREADS": str(FLAGS.worker_threads),
               "TF_NUM_INTEROP_THREADS": str(FLAGS.worker_threads)}  # fmt: skip
    with LocalCluster(2, [sys.executable, *_args(out)], env=env, log_dir=out) as cluster:
        cluster.wait(timeout=FLAGS.timeout)
    return _step_seconds(os.path.join(out, "timing0.json"))


def main(argv):
    del argv
    root = tempfile.mkdtemp(prefix="tfcell-mw-bench-")
    one, two = [], []
    for r in range(FLAGS.rounds):
        seconds, replicas = _one_process(os.path.join(root, f"one{r}"))
        assert replicas == 1, replicas
        one.append(seconds)
        seconds, replicas = _two_workers(os.path.join(root, f"two{r}"))
        assert replicas == 2, replicas
        two.append(seconds)
        print(f"round {r + 1}: one process {one[-1] * 1e3:.1f} ms/step, two workers "
              f"{two[-1] * 1e3:.1f} ms/step", flush=True)  # fmt: skip
    ratios = [b / a for a, b in zip(one, two)]
    import platform

    import tensorflow as tf

    threads = (
        f", {FLAGS.worker_threads} intra-op thread(s) per worker" if FLAGS.worker_threads else ""
    )
    lines = [
        "| case | global batch | one process (ms/step) | two workers (ms/step) | ratio |",
        "|---|---|---|---|---|",
        f"| {FLAGS.case} | {FLAGS.batch_size} | {statistics.median(one) * 1e3:.1f} | "
        f"{statistics.median(two) * 1e3:.1f} | {statistics.median(ratios):.2f} |",
        "",
        f"Ratio two workers / one process per round: {[round(x, 2) for x in ratios]}; medians "
        f"of {FLAGS.rounds} alternating rounds, epochs 2-{FLAGS.epochs} of "
        f"{FLAGS.num_examples} images of {FLAGS.size} px, CNN width {FLAGS.width}; "
        f"{os.cpu_count()} CPU cores shared by both workers{threads}; {platform.machine()}, "
        f"TF {tf.__version__}. Command: `python benchmarks/multi_worker.py --case={FLAGS.case} "
        f"--rounds={FLAGS.rounds} --epochs={FLAGS.epochs} --num_examples={FLAGS.num_examples} "
        f"--size={FLAGS.size} --width={FLAGS.width} --batch_size={FLAGS.batch_size} "
        f"--worker_threads={FLAGS.worker_threads}`.",
    ]
    text = "\n".join(lines)
    print()
    print(text)
    if FLAGS.update_docs:
        from tfcell.evaluation import report

        report.replace_marked_block(DOCS, f"multi_worker_{FLAGS.case}", text)
        print(f"\nWritten into {DOCS}")


if __name__ == "__main__":
    app.run(main)
