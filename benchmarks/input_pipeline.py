"""Input-pipeline throughput: decode + resize to 224 + train-time augmentation.

Measures images/s on the native-size PBC JPEGs (../shared/data/pbc_native_sample,
400 images at ~360x363, repeated) side by side in one run for

  (a) tfcell.data.from_records (tf.io decode in parallel) with the fastest of
      its augmentation modes below, all applying the same set:
      - `PerImageAugmentation(fuse_resize=True)`: per image in the parallel
        decode map, resize + flips + rotation as ONE projective resampling of
        the decoded image, brightness + contrast as one affine map;
      - `PerImageAugmentation()` (default): resize, then one tf.image op per
        augmentation;
      - `BatchAugmentation()`: vectorised over the batch after `batch`, one
        ImageProjectiveTransformV3 call with (B, 8) transforms;
  (a') the same pipeline with the batched Keras layers of (b),
  (b) keras.utils.image_dataset_from_directory with the same augmentation layers,
  (c) a plain Python generator: PIL load + resize + per-image augmentation
      (flips, rotation, brightness, contrast), as the CFAL authors feed Keras.

Timed: iteration only (after one warm-up batch). Building the pipelines, which
includes from_records' one-off header validation of the files, is not timed.

Run: python benchmarks/input_pipeline.py [--repeats 3] [--batch_size 32]
"""

import argparse
import os
import pathlib
import platform
import time

import keras
import numpy as np
from PIL import Image, ImageEnhance

from tfcell.data import augmentation, paths, pipeline, records
from tfcell.evaluation import report

SIZE = 224


def keras_layers(seed=0):
    """The same train-time set for (a) and (b): flips, rotation, brightness, contrast."""
    return keras.layers.Pipeline(
        [
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomFlip("vertical", seed=seed + 1),
            keras.layers.RandomRotation(0.5, fill_mode="reflect", seed=seed + 2),
            keras.layers.RandomBrightness(0.1, value_range=(0, 255), seed=seed + 3),
            keras.layers.RandomContrast(0.2, value_range=(0, 255), seed=seed + 4),
        ]
    )


def table(root):
    names = sorted(p.name for p in root.iterdir() if p.is_dir())
    rows = [
        {"path": str(f), "label": names.index(f.parent.name), "class_name": f.parent.name,
         "domain": "pbc", "subject": ""}
        for f in sorted(root.glob("*/*.jpg"))
    ]  # fmt: skip
    return records.make_records(rows, names)


def one_pass(batches):
    """images/s of one full pass over `batches()` (iteration only)."""
    count, start = 0, time.perf_counter()
    for images, _ in batches():
        count += int(images.shape[0])
    return count / (time.perf_counter() - start)


def resnet50_train_rate(batch_size, steps):
    """Images/s a ResNet-50 (random init, 224 px, 8 classes) trains at here:
    what the pipeline has to keep up with."""
    model = keras.applications.ResNet50(weights=None, input_shape=(SIZE, SIZE, 3), classes=8)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).uniform(0, 255, (batch_size, SIZE, SIZE, 3)).astype("float32")
    y = np.zeros((batch_size,), "int32")
    model.train_on_batch(x, y)  # Trace.
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return steps * batch_size / (time.perf_counter() - start)


def pil_generator(frame, batch_size, seed=0):
    rng = np.random.default_rng(seed)
    files = frame["path"].to_numpy()
    labels = frame["label"].to_numpy()
    order = rng.permutation(len(files))
    for start in range(0, len(order), batch_size):
        images = []
        for i in order[start : start + batch_size]:
            image = Image.open(files[i]).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)
            if rng.random() < 0.5:
                image = image.transpose(Image.FLIP_LEFT_RIGHT)
            if rng.random() < 0.5:
                image = image.transpose(Image.FLIP_TOP_BOTTOM)
            image = image.rotate(rng.uniform(-180, 180), resample=Image.BILINEAR)
            image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.9, 1.1))
            image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.8, 1.2))
            images.append(np.asarray(image, "float32"))
        yield np.stack(images), labels[order[start : start + batch_size]]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3, help="Passes per pipeline.")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--resnet50_steps", type=int, default=2, help="0 skips ResNet-50.")
    parser.add_argument("--update_docs", action="store_true", help="Write docs/benchmarks.md.")
    args = parser.parse_args()
    root = paths.shared_data_root()
    if root is None:
        raise SystemExit("../shared/data is absent; set TFCELL_SHARED_DATA.")
    root = pathlib.Path(root) / "pbc_native_sample"
    frame = table(root)
    bs = args.batch_size

    ops = dict(rotation=180.0, brightness=0.1, contrast=0.2)
    tfcell_modes = {
        "(a) tfcell, PerImageAugmentation": augmentation.PerImageAugmentation(**ops),
        "(a) tfcell, PerImageAugmentation fused": augmentation.PerImageAugmentation(
            **ops, fuse_resize=True
        ),
        "(a) tfcell, BatchAugmentation": augmentation.BatchAugmentation(**ops),
        "(a') tfcell from_records, Keras layers": keras_layers(),
    }
    datasets = {
        name: pipeline.from_records(frame, SIZE, batch_size=bs, augment=aug)
        for name, aug in tfcell_modes.items()
    }
    batches = {name: (lambda ds=ds: ds) for name, ds in datasets.items()}
    keras_aug = keras_layers()
    keras_ds = keras.utils.image_dataset_from_directory(
        root, image_size=(SIZE, SIZE), batch_size=bs, seed=0, verbose=False
    ).map(lambda x, y: (keras_aug(x), y))
    keras_ds = keras_ds.prefetch(-1)
    batches["(b) keras image_dataset_from_directory"] = lambda: keras_ds
    batches["(c) Python generator (PIL)"] = lambda: pil_generator(frame, bs)

    # Round-robin passes (one warm-up pass each, untimed), so load changes hit
    # every pipeline alike; each pipeline's rate is the median of its passes.
    for make in batches.values():
        for _ in zip(range(2), make()):
            pass
    rates = {name: [] for name in batches}
    for _ in range(args.repeats):
        for name, make in batches.items():
            rates[name].append(one_pass(make))
    results = {name: float(np.median(r)) for name, r in rates.items()}
    a_name = max((n for n in results if n.startswith("(a)")), key=results.get)
    a, a2 = results[a_name], results["(a') tfcell from_records, Keras layers"]
    b, c = results["(b) keras image_dataset_from_directory"], results["(c) Python generator (PIL)"]
    lines = [
        f"{len(frame)} PBC JPEGs (native ~360x363), {args.repeats} round-robin passes per "
        f"pipeline (median), batch {bs}, decode + resize to {SIZE}x{SIZE} + flips, rotation, "
        f"brightness, contrast; {platform.machine()}, {os.cpu_count()} CPUs. Building the "
        "pipelines (incl. the one-off header check of the files) is not timed.",
        "",
        "| pipeline | images/s |",
        "|---|---|",
    ]
    lines += [f"| {name} | {rate:.1f} |" for name, rate in results.items()]
    if args.resnet50_steps:
        rate = resnet50_train_rate(8, args.resnet50_steps)
        lines.append(
            f"| ResNet-50 training consumes (batch 8, 224 px, this machine) | {rate:.1f} |"
        )
    lines += [
        "",
        f"(a) = {a_name}. Ratios: a/c = {a / c:.2f}, a/b = {a / b:.2f}, a'/b = {a2 / b:.2f}"
        + (f", a / ResNet-50 = {a / rate:.0f}" if args.resnet50_steps else "")
        + ".",
    ]
    text = "\n".join(lines)
    print(text)
    if args.update_docs:
        docs = os.path.join(os.path.dirname(__file__), "..", "docs", "benchmarks.md")
        report.replace_marked_block(docs, "input_pipeline", text)
        print(f"Updated {docs}")


if __name__ == "__main__":
    main()
