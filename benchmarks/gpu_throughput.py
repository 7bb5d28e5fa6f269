"""GPU throughput of the reproductions' training path: ResNet-50 at 224 px, mixed precision.

Side by side in one run, on the device the harness would use
(`tfcell.training.get_strategy()`), every model built by the CFAL paper's own
methods (`tfcell.papers.cfal.methods.METHODS`, as the harness builds them):

  (a) ResNet-50 + CCE head (method "ce": softmax logits, cross-entropy),
      training steps on one batch (no input cost);
  (b) ResNet-50 + CFAL head (method "cfal": `GaussianAffinity` head and
      `CFALoss`, the KCRC values of Table IX), the same;
  (c) the input pipeline alone, on the host CPUs: JPEG decode + resize +
      augmentation (`tfcell.data.from_records` with the BoDA jitter
      `PerImageAugmentation`: flips, rotation, colour), as a streaming run
      (`config.data.in_memory=False`) feeds the model;
  (d) (a) fed by (c) through `fit`, end to end;
  (e) (a) fed by decode + resize only, the same augmentation inside the model
      (`config.training.augment_in_model=True`: `TrainingAugmentation` on the
      device).

Every measurement runs `--steps` batches per round, in a shuffled order each
round (machine noise hits all alike); a rate is the median over `--rounds`.
Each model is traced and warmed up before timing; a `fit` is timed from the
end of its second step to its end (its start-up and first batches left out). Ratios: CFAL / CCE step
time; pipeline images/s / CCE model images/s (at least 1: the host keeps the
device fed); (d) and (e) images/s / (a).

Without a GPU it prints one line saying so and exits 0. `--force_cpu` runs it
on the CPU anyway (GPUs hidden), e.g. the test's smoke run, seconds:

    python benchmarks/gpu_throughput.py --force_cpu --image_size=32 --steps=3 \
        --rounds=1 --batch_size=8 --backbone=small_cnn --pipeline_images=32 --data=synthetic

On a GPU machine (minutes):

    python benchmarks/gpu_throughput.py [--batch_size=64 --image_size=224 --steps=50
        --rounds=3 --mixed_precision=True --jit_compile=False --json_out=gpu.json]

Data: PBC JPEGs read in place from ../shared/data/pbc_128 when present (the
first `--pipeline_images` of a seeded shuffle), else synthetic white cells
written as JPEGs to a temporary folder (so decoding is still measured).
"""

import dataclasses
import json
import os
import platform
import random
import statistics
import tempfile
import time

from absl import app, flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfcell.data import (  # noqa: E402
    augmentation,
    model_augmentation,
    paths,
    pipeline,
    records,
    synthetic,
    wbc,
)
from tfcell.experiments import methods  # noqa: E402
from tfcell.papers.cfal import methods as cfal_methods  # noqa: E402
from tfcell.training import strategy as strategy_lib  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch_size", 64, "Global batch size (images per training step).")
flags.DEFINE_integer("image_size", 224, "Square input size (224: the papers' ResNet-50).")
flags.DEFINE_integer("steps", 50, "Timed batches per measurement per round.")
flags.DEFINE_integer("rounds", 3, "Round-robin rounds (a rate is the median over rounds).")
flags.DEFINE_integer("warmup", 3, "Untimed steps per model before timing (tracing).")
flags.DEFINE_string("backbone", "resnet50", "config.model.backbone (small_cnn for smoke runs).")
flags.DEFINE_bool("mixed_precision", True, "Keras mixed_float16 policy.")
flags.DEFINE_enum("jit_compile", "False", ["False", "True", "auto"], "XLA for the step.")
flags.DEFINE_bool("force_cpu", False, "Run without a GPU too (GPUs hidden); for smoke runs.")
flags.DEFINE_integer("pipeline_images", 2048, "Images the input pipeline reads (cycled).")
flags.DEFINE_enum("data", "auto", ["auto", "synthetic"], "auto: PBC when present, else synthetic.")
flags.DEFINE_string("json_out", "", "Optional path for the measured table as JSON.")

SKIP = (
    "gpu_throughput: SKIPPED, no GPU (tf.config.list_physical_devices('GPU') is empty); "
    "--force_cpu runs it on the CPU."
)

# configs/cfal_crc.py, Table IX ("KCRC" column).
CFAL_HP = {"margin": 0.1, "sigma": 130.0, "gamma": 1.0, "beta": 0.9999}
# configs/boda_wbc.py "jitter": the heaviest augmentation of the reproductions.
JITTER = {
    "flips": True, "rotation": 180.0, "brightness": 0.3, "contrast": 0.3, "saturation": 0.3,
    "hue": 0.3, "grayscale": 0.1,
}  # fmt: skip

NAMES = {
    "a": "(a) {net} + CCE head, training step",
    "b": "(b) {net} + CFAL head (affinity + CFALoss), training step",
    "c": "(c) input pipeline alone: JPEG decode + resize + augment (tf.data, host)",
    "d": "(d) (a) fed by (c), fit end to end",
    "e": "(e) (a) fed by decode + resize, augmentation in the model",
}


def _pbc_records(root, count):
    table = wbc.read_acevedo(os.path.join(root, "pbc_128"), label_space="native")
    rows = np.random.default_rng(0).permutation(len(table))[:count]
    return table.iloc[np.sort(rows)].reset_index(drop=True), f"PBC JPEGs ({len(rows)} of {root})"


def _synthetic_records(count, folder):
    cells = synthetic.white_cells(count, image_size=128, num_classes=5, seed=0)
    rows = []
    for i, row in enumerate(cells.itertuples()):
        path = os.path.join(folder, f"cell_{i:05d}.jpg")
        tf.io.write_file(path, tf.io.encode_jpeg(np.asarray(row.image, "uint8"), quality=95))
        rows.append(
            {"path": path, "label": int(row.label), "class_name": row.class_name,
             "domain": str(row.domain), "subject": str(row.subject)}
        )  # fmt: skip
    table = records.make_records(rows, cells.attrs["class_names"])
    return table, f"synthetic white-cell JPEGs ({count}, 128 px, in a temporary folder)"


class _StepTimer(keras.callbacks.Callback):
    """Seconds per step after the first `skip` steps of a `fit` (its start-up,
    iterator creation and the pipeline's first batches left out)."""

    def __init__(self, skip):
        super().__init__()
        self.skip = skip

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.skip - 1:
            self.start = time.perf_counter()

    def on_train_end(self, logs=None):  # After the last step's logs were fetched.
        self.end = time.perf_counter()


def main(argv):
    del argv
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus and not FLAGS.force_cpu:
        print(SKIP)
        return 0
    if FLAGS.force_cpu and gpus:
        tf.config.set_visible_devices([], "GPU")
    if FLAGS.pipeline_images < FLAGS.batch_size:
        raise app.UsageError(
            f"--pipeline_images ({FLAGS.pipeline_images}) must be at least --batch_size "
            f"({FLAGS.batch_size}): the pipeline drops incomplete batches."
        )
    if FLAGS.force_cpu or not gpus:
        device = f"CPU forced ({os.cpu_count()} cores)"
    else:
        details = tf.config.experimental.get_device_details(gpus[0])
        device = f"{len(gpus)} GPU(s), {details.get('device_name', 'GPU')}"
    jit = {"False": False, "True": True, "auto": "auto"}[FLAGS.jit_compile]
    policy = "mixed_float16" if FLAGS.mixed_precision else "float32"
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(0)
    n, size = FLAGS.batch_size, FLAGS.image_size

    tmp = tempfile.TemporaryDirectory(prefix="tfcell-gpu-throughput-")
    root = paths.shared_data_root()
    if FLAGS.data == "auto" and root is not None and os.path.isdir(os.path.join(root, "pbc_128")):
        table, source = _pbc_records(root, FLAGS.pipeline_images)
    else:
        table, source = _synthetic_records(FLAGS.pipeline_images, tmp.name)
    num_classes = len(table.attrs["class_names"])
    counts = np.bincount(table["label"].to_numpy(), minlength=num_classes)

    def stream(augment):
        return pipeline.from_records(
            table, size, batch_size=n, shuffle=True, augment=augment, seed=0,
            validate=None, drop_remainder=True,
        ).repeat()  # fmt: skip

    jitter = augmentation.PerImageAugmentation(**JITTER)
    strategy = strategy_lib.get_strategy()
    info = methods.DataInfo(
        num_classes, tuple(int(c) for c in np.maximum(counts, 1)), (size, size, 3)
    )
    config = ml_collections.ConfigDict(
        {"model": {"backbone": FLAGS.backbone, "weights": "", "embedding_dim": 64,
                   "widths": (16, 32, 64)}}
    )  # fmt: skip

    def build(method, augment=None):
        hp = CFAL_HP if method == "cfal" else {}
        with strategy.scope():
            layer = model_augmentation.in_model_augmentation(augment, seed=0) if augment else None
            built = cfal_methods.METHODS[method].build(
                dataclasses.replace(info, augmentation=layer), hp, config
            )
            # The in-model rotation has no XLA kernel: that model runs without XLA.
            xla = jit if layer is None or layer.supports_jit else False
            built.model.compile(
                optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss=built.loss,
                jit_compile=xla,
            )  # fmt: skip
        return built.model

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (n, size, size, 3)).astype("float32")
    y = rng.integers(0, num_classes, (n,)).astype("int32")
    fixed = tf.data.Dataset.from_tensors((x, y)).repeat()
    models = {"a": build("ce"), "b": build("cfal"), "e": build("ce", jitter)}
    models["d"] = models["a"]  # The same network, fed by the pipeline.
    feeds = {"a": fixed, "b": fixed, "d": stream(jitter), "e": stream(None)}

    skip = 2  # Steps of each timed fit left out (start-up, first batches).

    def fit(key):
        def run(steps):
            timer = _StepTimer(skip)
            models[key].fit(
                feeds[key], steps_per_epoch=skip + steps, epochs=1, verbose=0, callbacks=[timer]
            )
            return (timer.end - timer.start) / steps

        return run

    iterators = {}

    def pipeline_only(steps):
        iterator = iterators.setdefault("c", iter(feeds["d"]))
        start = time.perf_counter()
        for _ in range(steps):
            batch = next(iterator)
        batch[0].numpy()  # The last batch is ready on the host.
        return (time.perf_counter() - start) / steps

    measure = {k: fit(k) for k in ("a", "b", "d", "e")}
    measure["c"] = pipeline_only
    for run in measure.values():  # Trace, build the pipelines' state, warm up.
        run(FLAGS.warmup)
    times = {k: [] for k in measure}
    order = list(measure)
    for _ in range(FLAGS.rounds):
        random.shuffle(order)
        for key in order:
            times[key].append(measure[key](FLAGS.steps))
    tmp.cleanup()

    step = {k: statistics.median(v) for k, v in times.items()}
    rate = {k: n / s for k, s in step.items()}
    net = {"resnet50": "ResNet-50"}.get(FLAGS.backbone, FLAGS.backbone)
    lines = [
        f"{net}, {size}x{size} px, batch {n}, {policy}, XLA {FLAGS.jit_compile}, "
        f"{FLAGS.steps} batches x {FLAGS.rounds} round(s) per measurement (round-robin, "
        f"medians); {device}, {type(strategy).__name__}; data: {source}; "
        f"{platform.machine()}, TF {tf.__version__}, Keras {keras.__version__}.",
        "",
        "| measurement | step (ms) | images/s |",
        "|---|---|---|",
    ]
    for key in ("a", "b", "c", "d", "e"):
        lines.append(f"| {NAMES[key].format(net=net)} | {1000 * step[key]:.1f} | {rate[key]:.0f} |")
    ratios = {
        "CFAL / CCE step time": step["b"] / step["a"],
        "pipeline images/s / CCE model images/s (>= 1: the host keeps up)": rate["c"] / rate["a"],
        "end to end (d) / model alone (a) images/s": rate["d"] / rate["a"],
        "augmentation in the model (e) / (a) images/s": rate["e"] / rate["a"],
    }
    if jit is True:
        lines.append("(e) ran without XLA: its rotation (ImageProjectiveTransformV3) has none.")
    lines += ["", "| ratio | value |", "|---|---|"]
    lines += [f"| {name} | {value:.3f} |" for name, value in ratios.items()]
    print("\n".join(lines))
    if FLAGS.json_out:
        rows = [
            {"measurement": NAMES[k].format(net=net), "step_ms": 1000 * step[k],
             "images_per_s": rate[k]}
            for k in ("a", "b", "c", "d", "e")
        ]  # fmt: skip
        with open(FLAGS.json_out, "w") as f:
            json.dump({"rows": rows, "ratios": ratios, "setup": lines[0]}, f, indent=2)
    return 0


if __name__ == "__main__":
    app.run(main)
