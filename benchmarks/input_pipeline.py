"""Input-pipeline throughput of the reproductions' data stack, first and later epochs.

Every reproduction feeds its model the same way: a `tfcell.data` reader's
record table -> `tfcell.data.cache.decoded_images` (decoded and resized once per
run) -> `tfcell.data.pipeline.from_arrays(..., augment=...)` each epoch. This
measures that stack against two common ways of feeding Keras, on the same real
files, at the same image size and batch size, with the same augmentation
(left-right flip, up-down flip, rotation by 0/90/180/270 degrees, each image
its own draw):

  (a) tfcell, the reproductions' recipe: `decoded_images` + `from_arrays`
      with `augment = tfcell.data.augmentation.RandomDihedral()` (the 8 flips
      and 90-degree turns, uniform = the same distribution as independent
      left-right / up-down flips and a uniform turn; one pixel-index gather
      per batch on the uint8 batch, in a parallel map). Also shown, not in the
      goal ratios: (a2) the first epoch of a resumed run, with the decoded
      images on disk (`cache_dir`); (a3) the previous recipe, the same stack
      with `keras.layers.Pipeline([RandomFlip("horizontal"),
      RandomFlip("vertical"), tfcell.data.augmentation.RandomRot90(rate=0.75)])`
      in the sequential map;
  (b) `keras.utils.image_dataset_from_directory` on a class-folder tree of
      symlinks to the same files, with the same Keras layers in a parallel map;
  (c) a Python generator: PIL open + resize + NumPy flips and `np.rot90`,
      through `tf.data.Dataset.from_generator`, batched and prefetched.

First epoch: building the pipeline plus one pass, so decoding counts (for (a),
`decoded_images` with an empty cache). Later epochs: the mean of the next
passes over the same dataset object ((a) serves them from memory; (b) and (c)
decode again, having no cache). All pipelines run round-robin, first epochs
then each later epoch in turn, with the order rotated every round, so machine
noise hits them alike; a rate is the median over rounds. Before timing, every
file is read once (the OS page cache is warm for all) and every pipeline runs
once on a few batches (graph building is not charged to whoever goes first).
Reading the record table is not timed.

Data: a fixed subset of the shared real data: IDC PNG patches (every 3rd of
`read_idc`, 50x50 px, at 32 px as CFAL IDC resizes them, Sec. IV-B; edge
patches padded by (a) with `pad_small=(50, 50)`, stretched by (b) and (c)), and
PBC JPEGs (the first 200 per class of `pbc_128`, at 128 px).

Run: python benchmarks/input_pipeline.py [--rounds 3] [--later_epochs 2] [--update_docs]
"""

import argparse
import os
import pathlib
import platform
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from tfcell.data import augmentation, cache, idc, paths, pipeline, records, wbc
from tfcell.evaluation import report

GOAL_CACHED, GOAL_FIRST = 2.0, 1.0
NAMES = {
    "a": "(a) tfcell: decoded_images + from_arrays + RandomDihedral",
    "a2": "(a2) tfcell, resumed run (decoded images on disk)",
    "a3": "(a3) tfcell with the previous Keras layers (RandomFlip x2 + RandomRot90)",
    "b": "(b) keras image_dataset_from_directory + same layers",
    "c": "(c) Python generator (PIL + NumPy)",
}


def dihedral_layers(seed=0):
    """Flips and 90-degree turns as Keras layers, for (a3) and (b)."""
    return keras.layers.Pipeline(
        [
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomFlip("vertical", seed=seed + 1),
            augmentation.RandomRot90(rate=0.75, seed=seed + 2),  # 0/90/180/270 uniform
        ]
    )


def idc_subset(root):
    frame = idc.read_idc(root / "idc")
    rows = frame.iloc[::3].to_dict("records")
    return records.make_records(rows, idc.IDC_CLASSES), 32, (50, 50)


def pbc_subset(root, per_class=200):
    frame = wbc.read_acevedo(root / "pbc_128", label_space="native", dedupe=False)
    names = frame.attrs["class_names"]
    frame = frame.sort_values("path").groupby("label", sort=True).head(per_class)
    return records.make_records(frame.to_dict("records"), names), 128, True


def class_folders(frame, folder):
    """A `<class>/<file>` tree of symlinks, for image_dataset_from_directory."""
    for path, name in zip(frame["path"], frame["class_name"]):
        target = folder / name / os.path.basename(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(path)
    return folder


def pil_dataset(frame, size, batch_size, seed):
    files = frame["path"].to_numpy(str)
    labels = frame["label"].to_numpy("int32")
    rng = np.random.default_rng(seed)

    def images():
        for i in rng.permutation(len(files)):
            with Image.open(files[i]) as image:
                pixels = np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR))
            if rng.random() < 0.5:
                pixels = pixels[:, ::-1]
            if rng.random() < 0.5:
                pixels = pixels[::-1]
            yield np.ascontiguousarray(np.rot90(pixels, rng.integers(4))), labels[i]

    signature = (
        tf.TensorSpec((size, size, 3), tf.uint8),
        tf.TensorSpec((), tf.int32),
    )
    dataset = tf.data.Dataset.from_generator(images, output_signature=signature)
    dataset = dataset.batch(batch_size).map(lambda x, y: (tf.cast(x, tf.float32), y))
    return dataset.prefetch(tf.data.AUTOTUNE)


def keras_dataset(folder, size, batch_size, layers, seed):
    dataset = keras.utils.image_dataset_from_directory(
        folder, image_size=(size, size), batch_size=batch_size, seed=seed, verbose=False
    )
    dataset = dataset.map(lambda x, y: (layers(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def tfcell_dataset(frame, size, pad_small, batch_size, augment, seed, cache_dir=None):
    images = cache.decoded_images(frame, size, pad_small=pad_small, cache_dir=cache_dir)
    return pipeline.from_arrays(
        images, frame["label"].to_numpy(), batch_size=batch_size, augment=augment, seed=seed
    )


def one_epoch(dataset):
    count = 0
    for images, _ in dataset:
        count += int(images.shape[0])
    return count


class Candidates:
    """Each candidate: `fresh()` builds its pipeline from nothing (first epoch)."""

    def __init__(self, frame, size, pad_small, batch_size, folder, cache_dir):
        layers = {key: dihedral_layers() for key in ("a3", "b")}
        dihedral = augmentation.RandomDihedral()
        self.build = {
            "a": lambda s: tfcell_dataset(frame, size, pad_small, batch_size, dihedral, s),
            "a2": lambda s: tfcell_dataset(
                frame, size, pad_small, batch_size, dihedral, s, cache_dir
            ),
            "a3": lambda s: tfcell_dataset(frame, size, pad_small, batch_size, layers["a3"], s),
            "b": lambda s: keras_dataset(folder, size, batch_size, layers["b"], s),
            "c": lambda s: pil_dataset(frame, size, batch_size, s),
        }

    def fresh(self, key, seed):
        cache.clear_memory_cache()  # (a): decode again; (a2): load from disk
        return self.build[key](seed)


def measure(frame, size, pad_small, batch_size, rounds, later_epochs, workdir):
    folder = class_folders(frame, workdir / "folders")
    cache_dir = workdir / "decoded"
    for path in frame["path"]:  # Warm the page cache for everyone.
        with open(path, "rb") as f:
            f.read()
    candidates = Candidates(frame, size, pad_small, batch_size, folder, cache_dir)
    tiny = Candidates(frame.head(4 * batch_size), size, pad_small, batch_size,
                      class_folders(frame.head(4 * batch_size), workdir / "tiny"),
                      workdir / "tiny_decoded")  # fmt: skip
    for key in NAMES:  # Untimed warm-up: tracing, layer builds.
        one_epoch(tiny.fresh(key, 0))
    cache.decoded_images(frame, size, pad_small=pad_small, cache_dir=cache_dir)  # for (a2)
    n = len(frame)
    first = {key: [] for key in NAMES}
    later = {key: [] for key in NAMES}
    keys = list(NAMES)
    later_keys = [k for k in keys if k != "a2"]  # (a2)'s later epochs are (a)'s
    for r in range(rounds):
        order = keys[r % len(keys) :] + keys[: r % len(keys)]
        datasets = {}
        for key in order:
            start = time.perf_counter()
            datasets[key] = candidates.fresh(key, seed=r)
            count = one_epoch(datasets[key])
            first[key].append(count / (time.perf_counter() - start))
            assert count == n, (key, count, n)
        seconds = {key: 0.0 for key in later_keys}
        for _ in range(later_epochs):
            for key in order:
                if key in seconds:
                    start = time.perf_counter()
                    one_epoch(datasets[key])
                    seconds[key] += time.perf_counter() - start
        for key, elapsed in seconds.items():
            later[key].append(later_epochs * n / elapsed)
        datasets.clear()
    return (
        {key: float(np.median(v)) for key, v in first.items()},
        {key: float(np.median(v)) if v else float("nan") for key, v in later.items()},
    )


def verdict(name, ratio, goal):
    met = "met" if ratio >= goal else "**NOT met**"
    return f"{name}: {ratio:.2f}x (goal >= {goal:g}x: {met})"


def section(title, frame, size, batch_size, first, later):
    lines = [
        f"**{title}**: {len(frame)} files at {size}x{size} px, batch {batch_size}.",
        "",
        "| pipeline | first epoch (images/s) | later epochs (images/s) |",
        "|---|---|---|",
    ]
    lines += [
        f"| {NAMES[k]} | {first[k]:.0f} | {'as (a)' if k == 'a2' else f'{later[k]:.0f}'} |"
        for k in NAMES
    ]
    lines += [
        "",
        "- " + verdict("cached epochs / PIL generator", later["a"] / later["c"], GOAL_CACHED),
        "- " + verdict("first epoch / PIL generator", first["a"] / first["c"], GOAL_FIRST),
        f"- cached epochs / image_dataset_from_directory: {later['a'] / later['b']:.2f}x",
        f"- first epoch / image_dataset_from_directory: {first['a'] / first['b']:.2f}x",
        f"- resumed run's first epoch / PIL generator: {first['a2'] / first['c']:.2f}x",
        f"- previous recipe (a3), Keras layers: cached / PIL generator "
        f"{later['a3'] / later['c']:.2f}x, first epoch / PIL generator "
        f"{first['a3'] / first['c']:.2f}x; (a) / (a3) cached {later['a'] / later['a3']:.1f}x",
        "",
    ]
    return lines


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3, help="Round-robin rounds (median).")
    parser.add_argument("--later_epochs", type=int, default=2, help="Cached epochs per round.")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--data", choices=("idc", "pbc", "both"), default="both")
    parser.add_argument("--update_docs", action="store_true", help="Write docs/benchmarks.md.")
    args = parser.parse_args()
    root = paths.shared_data_root()
    if root is None:
        raise SystemExit("../shared/data is absent; set TFCELL_SHARED_DATA.")
    sets = {"idc": ("IDC PNG patches", idc_subset), "pbc": ("PBC JPEGs", pbc_subset)}
    chosen = list(sets) if args.data == "both" else [args.data]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0]
    lines = [
        f"{args.rounds} round-robin rounds (median), first epoch = build + one pass "
        f"(decoding included), later epochs = mean of {args.later_epochs} passes; "
        "flips + 0/90/180/270-degree turns; "
        f"{platform.machine()}, {cpus} CPUs, TF {tf.__version__}, Keras {keras.__version__}.",
        "",
    ]
    for name in chosen:
        title, subset = sets[name]
        frame, size, pad_small = subset(pathlib.Path(root))
        with tempfile.TemporaryDirectory() as workdir:
            first, later = measure(
                frame, size, pad_small, args.batch_size, args.rounds, args.later_epochs,
                pathlib.Path(workdir),
            )  # fmt: skip
        block = section(title, frame, size, args.batch_size, first, later)
        print("\n".join(block), flush=True)
        lines += block
    lines[0] += (
        f" Load average (1 min) at start / end: {load:.1f} / {os.getloadavg()[0]:.1f}"
        " (other jobs share the machine; the round-robin spreads their effect)."
    )
    text = "\n".join(lines).rstrip()
    if args.update_docs:
        docs = os.path.join(os.path.dirname(__file__), "..", "docs", "benchmarks.md")
        report.replace_marked_block(docs, "input_pipeline", text)
        print(f"Updated {docs}")


if __name__ == "__main__":
    main()
