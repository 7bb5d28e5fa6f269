"""Training-step cost of each tfcell loss head relative to plain cross-entropy.

The CFAL paper (Table X) measured 1.64x per epoch for CFAL over CCE (AlexNet on
IDC) and 1.16x (VGG19 on CRC); tfcell's goal is at most 1.05x for every loss.

Every head sits on the same small CNN backbone, with the same batch, optimizer
and input. Steps are timed round-robin (each round runs every head for a few
steps, in a shuffled order) so that machine noise hits all heads alike; the
table reports each head's median step time divided by the CCE head's median
measured in the same run.

`--compare_unchecked` adds, for every tfcell loss, a copy traced without the
per-batch label / finiteness check (`tfcell.losses._checks`), and reports the
checked / unchecked ratio measured in the same round-robin: the cost of the
check alone.

    python benchmarks/loss_overhead.py [--batch_size=64 --image_size=64 --rounds=15]
        [--compare_unchecked]
"""

import json
import os
import platform
import random
import statistics
import time

from absl import app, flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfcell  # noqa: E402
from tfcell.evaluation import report  # noqa: E402
from tfcell.losses import _checks  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch_size", 64, "Images per training step.")
flags.DEFINE_integer("image_size", 64, "Square input size.")
flags.DEFINE_integer("num_classes", 9, "Classes (CRC has 9).")
flags.DEFINE_integer("rounds", 15, "Round-robin rounds.")
flags.DEFINE_integer("steps_per_round", 5, "Timed steps per head per round.")
flags.DEFINE_string("json_out", "", "Optional path for the measured table as JSON.")
flags.DEFINE_bool("update_docs", False, "Write the table into docs/benchmarks.md.")
flags.DEFINE_bool(
    "compare_unchecked", False, "Also time each tfcell loss traced without its batch check."
)


def backbone(image_size):
    inputs = keras.Input((image_size, image_size, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    for filters in (32, 64, 128):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(64, activation="relu")(x)
    return inputs, x


def heads(num_classes, class_weights):
    """(name, head layer factory, loss) for every loss head, CCE first."""
    L, H = tfcell.losses, tfcell.layers
    dense = lambda: keras.layers.Dense(num_classes, activation="softmax")  # noqa: E731
    return [
        ("cce", dense, keras.losses.SparseCategoricalCrossentropy()),
        ("cb_crossentropy", dense, L.ClassBalancedCrossentropyLoss(class_weights=class_weights)),
        ("cb_focal", dense, L.ClassBalancedFocalLoss(gamma=2.0, class_weights=class_weights)),
        ("affinity", lambda: H.GaussianAffinity(num_classes, sigma=130.0), L.AffinityLoss(0.1)),
        (
            "cfal",
            lambda: H.GaussianAffinity(num_classes, sigma=130.0),
            L.CFALoss(margin=0.1, gamma=1.0, class_weights=class_weights),
        ),
        (
            "cb_arcface",
            lambda: H.CosineHead(num_classes),
            L.ArcFaceLoss(margin=0.1, scale=15.0, class_weights=class_weights),
        ),
        (
            "cb_cosface",
            lambda: H.CosineHead(num_classes),
            L.CosFaceLoss(margin=0.35, scale=20.0, class_weights=class_weights),
        ),
        (
            "cb_sphereface",
            lambda: H.CosineHead(num_classes),
            L.SphereFaceLoss(margin=0.35, scale=20.0, class_weights=class_weights),
        ),
        (
            "cb_asoftmax",  # A-Softmax: (N, C, C) scores in the head, radius ||x||.
            lambda: H.CosineHead(num_classes, sphereface_margin=4.0),
            L.SphereFaceLoss(scale=None, class_weights=class_weights),
        ),
    ]


def _unchecked(check_batch):
    """`tfcell.losses._checks.check_batch` replaced by "no check" while tracing."""

    def skip(y_true, y_pred, num_classes, name):
        return None

    return skip if check_batch is not None else None


def main(argv):
    del argv
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    n, c, size = FLAGS.batch_size, FLAGS.num_classes, FLAGS.image_size
    x = tf.constant(rng.uniform(0, 255, (n, size, size, 3)).astype("float32"))
    y = tf.constant(rng.integers(0, c, (n,)).astype("int32"))
    counts = np.bincount(rng.integers(0, c, 5000), minlength=c)
    class_weights = tfcell.losses.class_balanced_weights(counts, 0.9999)

    steps = {}
    variants = [(False, h) for h in heads(c, list(np.asarray(class_weights, "float64")))]
    if FLAGS.compare_unchecked:
        variants += [(True, h) for h in heads(c, list(np.asarray(class_weights, "float64")))[1:]]
    checked = _checks.check_batch
    for unchecked, (name, make_head, loss) in variants:
        inputs, features = backbone(size)
        model = keras.Model(inputs, make_head()(features))
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss=loss)
        # The check is decided at trace time: trace without it for "_unchecked".
        _checks.check_batch = _unchecked(checked) if unchecked else checked
        try:
            for _ in range(3):  # Trace and warm up.
                model.train_on_batch(x, y)
        finally:
            _checks.check_batch = checked
        steps[name + ("_unchecked" if unchecked else "")] = (model, [])

    names = list(steps)
    for _ in range(FLAGS.rounds):
        random.shuffle(names)
        for name in names:
            model, times = steps[name]
            for _ in range(FLAGS.steps_per_round):
                start = time.perf_counter()
                model.train_on_batch(x, y)
                times.append(time.perf_counter() - start)

    base = statistics.median(steps["cce"][1])
    rows = []
    lines = [
        f"Batch {n}, {size}x{size} px, {c} classes, small CNN backbone, "
        f"{FLAGS.rounds * FLAGS.steps_per_round} timed steps per head (round-robin), "
        f"{platform.machine()}, {os.cpu_count()} CPUs, TF {tf.__version__}, "
        f"Keras {keras.__version__}.",
        "",
        "| head | median step (ms) | ratio to CCE |",
        "|---|---|---|",
    ]
    for name in steps:
        median = statistics.median(steps[name][1])
        rows.append({"head": name, "median_step_ms": 1000 * median, "ratio": median / base})
        lines.append(f"| {name} | {1000 * median:.1f} | {median / base:.3f} |")
    if FLAGS.compare_unchecked:
        lines += ["", "| head | checked / unchecked (batch check cost) |", "|---|---|"]
        for name in steps:
            if name + "_unchecked" in steps:
                ratio = statistics.median(steps[name][1]) / statistics.median(
                    steps[name + "_unchecked"][1]
                )
                rows.append({"head": name, "check_ratio": ratio})
                lines.append(f"| {name} | {ratio:.3f} |")
    text = "\n".join(lines)
    print(text)
    if FLAGS.json_out:
        with open(FLAGS.json_out, "w") as f:
            json.dump(rows, f, indent=2)
    if FLAGS.update_docs:
        docs = os.path.join(os.path.dirname(__file__), "..", "docs", "benchmarks.md")
        report.replace_marked_block(docs, "loss_overhead", text)
        print(f"Updated {docs}")


if __name__ == "__main__":
    app.run(main)
