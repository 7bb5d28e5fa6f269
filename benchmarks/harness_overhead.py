"""What the experiment harness costs per epoch, against a bare `model.fit`.

One training job through the harness (`tfcell.experiments.tasks.ClassificationTask`:
its `tf.data` pipeline over the decoded-image cache, the selection pass over
the validation part, the NaN stop, the epoch timer, logging) against a bare
`model.fit(x, y, validation_data=(x_val, y_val))` of the same model on the
same cached uint8 arrays, alternating harness and bare runs so that machine
noise hits both alike. Per-epoch times leave out the first epoch (tracing).
Goal: at most 1.05x.

    python benchmarks/harness_overhead.py [--repeats=3 --epochs=4] [--update_docs]

Data: real IDC patches from ../shared/data/idc when present (a fixed,
stratified subset), else synthetic IDC-like patches.
"""

import os
import platform
import statistics

from absl import app, flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import ml_collections  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfcell  # noqa: E402, F401
from tfcell.data import idc, paths, synthetic  # noqa: E402
from tfcell.evaluation import report  # noqa: E402
from tfcell.experiments import methods, settings, tasks  # noqa: E402
from tfcell.training import strategy as strategy_lib  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_images", 3000, "Images (train + val + test).")
flags.DEFINE_integer("image_size", 32, "Square input size.")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_integer("epochs", 4, "Epochs per run (the first is left out).")
flags.DEFINE_integer("repeats", 3, "Alternating harness / bare runs.")
flags.DEFINE_bool("update_docs", False, "Write the table into docs/benchmarks.md.")


def _config():
    config = ml_collections.ConfigDict()
    config.model = {"backbone": "alexnet", "widths": (16, 16, 32), "embedding_dim": 64}
    config.optimizer = {"name": "adam", "learning_rate": 1e-3}
    config.training = {
        "batch_size": FLAGS.batch_size, "epochs": FLAGS.epochs, "patience": 0,
        "selection": "val_macro_f1", "verbose": 0, "tensorboard": False,
        "steps_per_epoch": 0,
    }  # fmt: skip
    return config


def _setting():
    shared = paths.shared_data_root()
    if shared is not None and (shared / "idc").is_dir():
        records = idc.read_idc(shared / "idc")
        source = "real IDC patches"
    else:
        records = synthetic.idc_like(80, image_size=50, seed=0)
        source = "synthetic IDC-like patches"
    records = settings.subsample(records, FLAGS.num_images, 0)
    setting = settings.holdout("patch", records, 0.3, 0.15, 0, by="patch", pad_small=(50, 50))
    return setting, source


def _bare_epoch_times(data, config, method, as_dataset=False):
    keras.utils.set_random_seed(0)
    info = data.info()
    built = method.build(info, {}, config)
    built.model.compile(
        optimizer=methods.make_optimizer(config.optimizer), loss=built.loss, metrics=["accuracy"]
    )
    idx = data.setting.parts
    x = data.images[idx["train"]].astype("float32")
    y = data.setting.labels("train")
    x_val = data.images[idx["val"]].astype("float32")
    y_val = data.setting.labels("val")
    timer = tasks.EpochTimer()
    if as_dataset:  # The fastest bare input: tensors in tf.data, shuffled, prefetched.
        train = (
            tf.data.Dataset.from_tensor_slices((x, y))
            .shuffle(len(y), seed=0)
            .batch(FLAGS.batch_size)
            .prefetch(tf.data.AUTOTUNE)
        )
        val = tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(FLAGS.batch_size)
        built.model.fit(
            train, epochs=FLAGS.epochs, validation_data=val, callbacks=[timer], verbose=0
        )
    else:
        built.model.fit(
            x, y, batch_size=FLAGS.batch_size, epochs=FLAGS.epochs, shuffle=True,
            validation_data=(x_val, y_val), callbacks=[timer], verbose=0,
        )  # fmt: skip
    return timer.times[1:]


def _harness_epoch_times(data, config, method, strategy):
    job = tasks.Job(
        key="bench/r0/ce", name="ce", method=method, hp={}, data=data, config=config,
        seed=0, strategy=strategy, verbose=0,
    )  # fmt: skip
    result = tasks.ClassificationTask().run_job(job)
    return result.records[0]["epoch_times"][1:]


def main(argv):
    del argv
    config = _config()
    setting, source = _setting()
    data = tasks.SettingData(setting, FLAGS.image_size)
    method = methods.LossMethod(
        "Cross-entropy", "softmax",
        lambda hp, w: keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )  # fmt: skip
    strategy = strategy_lib.get_strategy()
    runs = {
        "harness": lambda: _harness_epoch_times(data, config, method, strategy),
        "bare": lambda: _bare_epoch_times(data, config, method),
        "bare_dataset": lambda: _bare_epoch_times(data, config, method, as_dataset=True),
    }
    times = {k: [] for k in runs}
    for r in range(FLAGS.repeats):
        order = list(runs)[r % 3 :] + list(runs)[: r % 3]  # Rotate who goes first.
        for kind in order:
            times[kind] += runs[kind]()
            keras.utils.clear_session()
    harness, bare, bare_ds = (statistics.median(times[k]) for k in runs)
    ratio = harness / bare
    text = "\n".join(
        [
            f"{source}: train {setting.size('train')}, val {setting.size('val')} at "
            f"{FLAGS.image_size} px, AlexNet (16, 16, 32), batch {FLAGS.batch_size}, "
            f"{FLAGS.repeats} alternating runs of {FLAGS.epochs} epochs each (first epoch "
            f"left out); {platform.machine()}, {os.cpu_count()} CPUs, TF {tf.__version__}, "
            f"Keras {keras.__version__}.",
            "",
            "| run | median s/epoch | epochs timed |",
            "|---|---|---|",
            f"| harness job (pipeline, selection pass, callbacks) | {harness:.3f} | "
            f"{len(times['harness'])} |",
            f"| bare `model.fit(x, y)` on the arrays, `validation_data` | {bare:.3f} | "
            f"{len(times['bare'])} |",
            f"| bare `model.fit` on `tf.data.Dataset.from_tensor_slices` of the arrays | "
            f"{bare_ds:.3f} | {len(times['bare_dataset'])} |",
            "",
            f"harness / bare fit: {ratio:.2f}x (goal: at most 1.05x)",
            f"harness / bare fit on tf.data: {harness / bare_ds:.2f}x",
        ]
    )
    print(text)
    if FLAGS.update_docs:
        docs = os.path.join(os.path.dirname(__file__), "..", "docs", "benchmarks.md")
        report.replace_marked_block(docs, "harness_overhead", text)
        print(f"Updated {docs}")


if __name__ == "__main__":
    app.run(main)
