"""Throughput of the embedded synthetic data generators (images/s).

The data issue asks for "thousands of images per second on 2 cores at 64 px".
Each generator makes `--num_images` images at `--image_size` px, `--repeats`
times; the table gives the best and median images/s, measured in one run.

    python benchmarks/synthetic_data.py [--num_images=2000 --update_docs]
"""

import os
import platform
import statistics
import time

from absl import app, flags

from tfcell.data import synthetic
from tfcell.evaluation import report

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_images", 2000, "Images per call.")
flags.DEFINE_integer("image_size", 64, "Square image size in px.")
flags.DEFINE_integer("repeats", 3, "Timed calls per generator.")
flags.DEFINE_bool("update_docs", False, "Write the table into docs/benchmarks.md.")


def generators(n, size):
    return {
        "white_cells": lambda seed: synthetic.white_cells(n, image_size=size, seed=seed),
        "tissue_tiles": lambda seed: synthetic.tissue_tiles(n, image_size=size, seed=seed),
        # idc_like draws patches per patient: about 40 per patient on average.
        "idc_like": lambda seed: synthetic.idc_like(
            num_patients=max(1, n // 40), image_size=size, seed=seed
        ),
        "nuclei_scenes": lambda seed: synthetic.nuclei_scenes(n, image_size=size, seed=seed),
    }


def main(argv):
    del argv
    n, size = FLAGS.num_images, FLAGS.image_size
    lines = [
        f"{n} images per call at {size} px (idc_like: about {n}), best and median of "
        f"{FLAGS.repeats} calls, {platform.machine()}, {os.cpu_count()} CPUs.",
        "",
        "| generator | images | best images/s | median images/s |",
        "|---|---|---|---|",
    ]
    for name, make in generators(n, size).items():
        make(0)  # Warm-up (imports, caches).
        rates, count = [], 0
        for seed in range(1, FLAGS.repeats + 1):
            start = time.perf_counter()
            frame = make(seed)
            rates.append(len(frame) / (time.perf_counter() - start))
            count = len(frame)
        lines.append(f"| {name} | {count} | {max(rates):.0f} | {statistics.median(rates):.0f} |")
    text = "\n".join(lines)
    print(text)
    if FLAGS.update_docs:
        docs = os.path.join(os.path.dirname(__file__), "..", "docs", "benchmarks.md")
        report.replace_marked_block(docs, "synthetic_data", text)
        print(f"Updated {docs}")


if __name__ == "__main__":
    app.run(main)
