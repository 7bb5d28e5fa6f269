"""Inference-mode vs batch-statistics validation accuracy of the CPU backbone.

`tfcell.models.small_cnn` (the CPU stand-in for VGG19) uses BatchNorm; in short
Adam runs its moving statistics lag the weights, so without
`tfcell.training.PreciseBatchNormCallback` its inference-mode validation
accuracy swings from epoch to epoch while the same weights evaluated with batch
statistics do not (issue 8). This benchmark trains the variants side by side
on real PBC white cells (8 classes, a fixed stratified subset, 80/20 stratified
split, Adam 1e-3) and after every epoch records the validation accuracy

- in inference mode (`model(x, training=False)`, what `evaluate`, early
  stopping and every table use), and
- with batch statistics (`model(x, training=True)` over the validation
  batches, no weight update; the BatchNorm moving statistics that this call
  moves are restored afterwards),

plus the training time of each epoch (process CPU time, callback included). Variants:

- `batch`: `small_cnn(norm="batch")` (BatchNorm, momentum 0.9) trained as before.
- `batch_precise`: the same model with `tfcell.training.PreciseBatchNormCallback`:
  before each evaluation its moving statistics are re-estimated as the plain
  average over `--precise_batches` training batches (forward passes only; the
  time is counted in the epoch's).
- `group`: `small_cnn(norm="group")`, GroupNorm with 8 groups: no
  train/inference difference by construction. (`group1`, one group, i.e. a
  LayerNorm over height, width and channels, only with `--variants`.)

Epochs run round-robin (epoch 1 of every variant, then epoch 2, ...) so that
machine noise hits all of them alike.

    python benchmarks/bn_inference.py --seed=0 --seed=1 [--num_images=4000 --image_size=64
        --epochs=6 --variants=batch,batch_precise,group,group1] [--update_docs]
"""

import json
import os
import platform
import statistics
import time

from absl import app, flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn import model_selection  # noqa: E402

import tfcell  # noqa: E402
from tfcell.data import paths, pipeline, wbc  # noqa: E402
from tfcell.evaluation import report  # noqa: E402

# name: (small_cnn keyword arguments, with PreciseBatchNormCallback, description)
VARIANTS = {
    "batch": ({"norm": "batch"}, False, 'small_cnn(norm="batch"), no callback'),
    "batch_precise": (
        {"norm": "batch"},
        True,
        'small_cnn(norm="batch") + PreciseBatchNormCallback',
    ),
    "group": ({"norm": "group", "groups": 8}, False, 'small_cnn(norm="group")'),
    "group1": ({"norm": "group", "groups": 1}, False, 'small_cnn(norm="group", groups=1)'),
}
FLAGS = flags.FLAGS
flags.DEFINE_integer("num_images", 4000, "Fixed stratified PBC subset (0: all 17,092).")
flags.DEFINE_integer("image_size", 64, "Square input size.")
flags.DEFINE_integer("epochs", 6, "Training epochs per variant.")
flags.DEFINE_integer("batch_size", 32, "Training and evaluation batch size.")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
flags.DEFINE_multi_integer("seed", [0], "Seeds (weights, split, shuffling); repeat the flag.")
flags.DEFINE_list(
    "variants", ["batch", "batch_precise", "group"], f"Variants to compare, of {list(VARIANTS)}."
)
flags.DEFINE_integer("precise_batches", 20, "Training batches for precise BN.")
flags.DEFINE_string("json_out", "", "Optional path for the measured curves as JSON.")
flags.DEFINE_bool("update_docs", False, "Write the tables into docs/benchmarks.md.")

DOCS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "benchmarks.md")


def load_pbc(num_images, image_size, seed):
    """A fixed stratified PBC subset, split 80/20 stratified: (x_tr, y_tr, x_va, y_va, names)."""
    root = paths.shared_data_root()
    if root is None:
        raise SystemExit("../shared/data is absent (set TFCELL_SHARED_DATA to point at it).")
    records = wbc.read_acevedo(os.path.join(root, "pbc_128"), label_space="native")
    index = np.arange(len(records))
    labels = records["label"].to_numpy()
    if num_images and num_images < len(records):
        index, _ = model_selection.train_test_split(
            index, train_size=num_images, random_state=0, stratify=labels
        )
    train, val = model_selection.train_test_split(
        index, test_size=0.2, random_state=seed, stratify=labels[index]
    )
    images = pipeline.preload_images(records["path"].to_numpy()[index], image_size)
    position = {row: i for i, row in enumerate(index)}
    take = lambda rows: images[[position[r] for r in rows]]  # noqa: E731
    return take(train), labels[train], take(val), labels[val], records.attrs["class_names"]


def build(backbone_kwargs, image_size, num_classes, seed):
    keras.utils.set_random_seed(seed)
    backbone = tfcell.models.small_cnn((image_size, image_size, 3), **backbone_kwargs)
    model = tfcell.models.build_classifier(backbone, num_classes, "softmax", 64)
    model.compile(
        optimizer=keras.optimizers.Adam(FLAGS.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def accuracies(model, forward, val_ds, labels):
    """(inference-mode accuracy, batch-statistics accuracy); no state left changed."""
    saved = [v.numpy() for v in model.non_trainable_variables]
    inference, batch_stat = [], []
    for images, _ in val_ds:
        inference.append(np.argmax(forward(images, False).numpy(), -1))
        batch_stat.append(np.argmax(forward(images, True).numpy(), -1))
    # training=True moved the BatchNorm moving statistics: put them back.
    for variable, value in zip(model.non_trainable_variables, saved):
        variable.assign(value)
    return (
        float(np.mean(np.concatenate(inference) == labels)),
        float(np.mean(np.concatenate(batch_stat) == labels)),
    )


def run_seed(seed):
    x_tr, y_tr, x_va, y_va, class_names = load_pbc(FLAGS.num_images, FLAGS.image_size, seed)
    train_ds = pipeline.from_arrays(x_tr, y_tr, FLAGS.batch_size, shuffle=True, seed=seed)
    val_ds = pipeline.from_arrays(x_va, y_va, FLAGS.batch_size, shuffle=False)
    runs = {}
    for name in FLAGS.variants:
        backbone_kwargs, precise, _ = VARIANTS[name]
        model = build(backbone_kwargs, FLAGS.image_size, len(class_names), seed)
        forward = tf.function(lambda x, training, model=model: model(x, training=training))
        callbacks = []
        if precise:
            callbacks.append(
                tfcell.training.PreciseBatchNormCallback(train_ds, FLAGS.precise_batches)
            )
        runs[name] = {"model": model, "forward": forward, "callbacks": callbacks, "curve": []}
    for epoch in range(FLAGS.epochs):
        for name, run in runs.items():
            # Process CPU time: the 2 shared cores are throttled and used by others,
            # which wall time would count against whichever variant ran then.
            start = time.process_time()
            # The callback re-estimates at the end of fit, so its cost is timed.
            history = run["model"].fit(
                train_ds,
                initial_epoch=epoch,
                epochs=epoch + 1,
                verbose=0,
                callbacks=run["callbacks"],
            )
            seconds = time.process_time() - start
            inference, batch_stat = accuracies(run["model"], run["forward"], val_ds, y_va)
            run["curve"].append(
                {
                    "epoch": epoch + 1,
                    "inference": inference,
                    "batch_stat": batch_stat,
                    "loss": float(history.history["loss"][-1]),
                    "seconds": seconds,
                }
            )
            print(
                f"seed {seed} epoch {epoch + 1} {name:14s} inference {inference:.3f} "
                f"batch-stat {batch_stat:.3f} loss {history.history['loss'][-1]:.3f} "
                f"{seconds:.1f} CPU s",
                flush=True,
            )
    return {name: run["curve"] for name, run in runs.items()}, len(x_tr), len(x_va)


def tables(results, n_train, n_val):
    seeds = sorted(results)
    names = list(results[seeds[0]])
    lines = [
        f"PBC (pbc_128, 8 classes), {n_train} train / {n_val} validation images "
        f"(fixed stratified subset, stratified 80/20), {FLAGS.image_size}x{FLAGS.image_size} px, "
        f"batch {FLAGS.batch_size}, Adam {FLAGS.learning_rate:g}, {FLAGS.epochs} epochs, "
        f"seed(s) {', '.join(map(str, seeds))}; {platform.machine()}, {os.cpu_count()} CPUs, "
        f"TF {tf.__version__}, Keras {keras.__version__}. Validation accuracy after each "
        "epoch in inference mode (inf) and with batch statistics (bs, training=True "
        "forward, moving statistics restored).",
        "",
    ]
    for seed in seeds:
        header = "| epoch | " + " | ".join(f"{n} inf | {n} bs" for n in names) + " |"
        lines += [f"Seed {seed}:", "", header, "|---" * (1 + 2 * len(names)) + "|"]
        for e in range(FLAGS.epochs):
            cells = []
            for name in names:
                point = results[seed][name][e]
                cells += [f"{point['inference']:.3f}", f"{point['batch_stat']:.3f}"]
            lines.append(f"| {e + 1} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "| variant | max \\|inf - bs\\| | mean \\|inf - bs\\| | min (inf - bs) | final inf acc "
        "| best inf acc | median epoch (CPU s, from epoch 2) | epoch time vs batch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    summary = {}
    base = None
    for name in names:
        points = [p for seed in seeds for p in results[seed][name]]
        signed = [p["inference"] - p["batch_stat"] for p in points]
        gaps = [abs(g) for g in signed]
        finals = [results[seed][name][-1]["inference"] for seed in seeds]
        bests = [max(p["inference"] for p in results[seed][name]) for seed in seeds]
        # Epoch 1 includes tracing and compilation: time the later ones.
        timed = [p for p in points if p["epoch"] > 1] or points
        seconds = statistics.median(p["seconds"] for p in timed)
        base = seconds if base is None else base
        summary[name] = {
            "max_gap": max(gaps),
            "mean_gap": float(np.mean(gaps)),
            "min_signed_gap": min(signed),
            "final_inference": float(np.mean(finals)),
            "best_inference": float(np.mean(bests)),
            "median_epoch_s": seconds,
        }
        lines.append(
            f"| {name}: {VARIANTS[name][2]} | {max(gaps):.3f} | {np.mean(gaps):.3f} | "
            f"{min(signed):+.3f} | "
            f"{np.mean(finals):.3f} | {np.mean(bests):.3f} | {seconds:.1f} | "
            f"{seconds / base:.2f}x |"
        )
    return "\n".join(lines), summary


def main(argv):
    del argv
    unknown = [n for n in FLAGS.variants if n not in VARIANTS]
    if unknown:
        raise app.UsageError(f"--variants: unknown {unknown}; known: {sorted(VARIANTS)}.")
    results, n_train, n_val = {}, 0, 0
    for seed in FLAGS.seed:
        results[seed], n_train, n_val = run_seed(seed)
    text, summary = tables(results, n_train, n_val)
    print(text)
    if FLAGS.json_out:
        with open(FLAGS.json_out, "w") as f:
            json.dump({"curves": results, "summary": summary}, f, indent=2)
    if FLAGS.update_docs:
        with open(DOCS) as f:
            has_block = "<!-- bn_inference:start -->" in f.read()
        if not has_block:
            with open(DOCS, "a") as f:
                f.write(
                    "\n## BatchNorm at inference (`benchmarks/bn_inference.py`)\n\n"
                    "Validation accuracy of the CPU backbone (`tfcell.models.small_cnn`) "
                    "after every\nepoch, in inference mode (inf) and with batch statistics "
                    "(bs), for BatchNorm\nalone, BatchNorm with "
                    "`tfcell.training.PreciseBatchNormCallback` and GroupNorm.\nTarget: "
                    "inference within about a point of batch statistics, with training as\n"
                    "good and about as fast.\n\n"
                    "```bash\npython benchmarks/bn_inference.py --seed=0 --seed=1 "
                    "--update_docs\n```\n\n"
                    "<!-- bn_inference:start -->\n<!-- bn_inference:end -->\n"
                )
        report.replace_marked_block(DOCS, "bn_inference", text)
        print(f"Wrote {DOCS}")


if __name__ == "__main__":
    app.run(main)
