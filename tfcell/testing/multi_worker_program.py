"""The program each worker of a `LocalCluster` runs in the multi-worker tests
and `benchmarks/multi_worker.py`:

    python -m tfcell.testing.multi_worker_program fit --case=per_sample --out=DIR
    python -m tfcell.testing.multi_worker_program fit --case=coral --out=DIR
    python -m tfcell.testing.multi_worker_program harness --workdir=DIR
    python -m tfcell.testing.multi_worker_program matrix --cases_file=tests/registry_test.py --out=DIR

`fit` trains one small model with `tfcell.training.fit` under the strategy of
`tfcell.training.get_strategy()` (`MultiWorkerMirroredStrategy` when
`TF_CONFIG` names several workers) and writes `weights<index>.npz` and
`timing<index>.json` (a test program: every worker writes, so the test can
compare them). `harness` runs a two-method, two-setting protocol of
synthetic white cells (`toy_protocol`) through the experiment harness; there, as in every
reproduction, only the chief writes the workdir. `matrix` fits one step of
every case of the registry matrix (every public loss and trainer) and writes
each case's weights. Without `TF_CONFIG` both
run in one process, as the reference.

The data and models are the functions below, so the test builds the same
single-process reference from them.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

GLOBAL_BATCH = 16
NUM_EXAMPLES = 96
EPOCHS = 2


def data(num_examples=NUM_EXAMPLES, size=8, seed=0):
    """Images (N, size, size, 3), labels (N,) in {0, 1, 2}, domains (N,) in {0, 1}."""
    rng = np.random.RandomState(seed)
    labels = rng.randint(0, 3, num_examples).astype("int32")
    domains = rng.randint(0, 2, num_examples).astype("int32")
    images = rng.normal(size=(num_examples, size, size, 3)).astype("float32")
    images += labels[:, None, None, None] * 0.5 + domains[:, None, None, None] * 0.3
    return images, labels, domains


def dataset(case, batch_size=GLOBAL_BATCH, num_examples=NUM_EXAMPLES, size=8):
    """The unshuffled global batches of `case` ("per_sample": (image, label)
    tuples; "coral": dict batches with domains)."""
    import tensorflow as tf

    images, labels, domains = data(num_examples, size)
    if case == "per_sample":
        return tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)
    return tf.data.Dataset.from_tensor_slices(
        {"image": images, "label": labels, "domain": domains}
    ).batch(batch_size)


def build(case, size=8, width=8):
    """The compiled model of `case`, built in the current strategy scope."""
    import keras

    from tfcell import training

    keras.utils.set_random_seed(7)
    featurizer = keras.Sequential(
        [
            keras.Input((size, size, 3)),
            keras.layers.Conv2D(width, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(width, activation="relu"),
        ]
    )
    classifier = keras.Sequential([keras.Input((width,)), keras.layers.Dense(3)])
    optimizer = keras.optimizers.SGD(0.05, momentum=0.9)
    if case == "per_sample":
        model = keras.Sequential([featurizer, classifier])
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        return model
    model = training.CORALTrainer(featurizer, classifier, num_domains=2, penalty_weight=1.0)
    model.compile(optimizer=optimizer)
    return model


def _fit(args):
    from tfcell import training

    strategy = training.get_strategy()
    for case in args.case.split(","):
        _fit_case(args, case, strategy)


def _fit_case(args, case, strategy):
    import tensorflow as tf

    from tfcell import training

    with strategy.scope():
        model = build(case, size=args.size, width=args.width)
    train = dataset(case, args.batch_size, args.num_examples, args.size)
    if args.epochs > 1 and args.steps_per_epoch:
        train = train.repeat()
    import keras

    epoch_times, steps = [], []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start, self.steps = time.perf_counter(), 0

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1

        def on_epoch_end(self, epoch, logs=None):
            epoch_times.append(time.perf_counter() - self.start)
            steps.append(self.steps)

    start = time.perf_counter()
    history = training.fit(
        model, train, epochs=args.epochs, verbose=0, shuffle=False,
        steps_per_epoch=args.steps_per_epoch or None, callbacks=[Timer()],
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    _, index, _ = training.task_info()
    out = os.path.join(args.out, case) if "," in args.case else args.out
    os.makedirs(out, exist_ok=True)
    np.savez(
        os.path.join(out, f"weights{index}.npz"),
        *[np.asarray(w) for w in model.get_weights()],
    )
    with open(os.path.join(out, f"timing{index}.json"), "w") as f:
        json.dump(
            {
                "seconds": elapsed,
                "epochs": args.epochs,
                "epoch_seconds": epoch_times,
                "steps_per_epoch": steps,
                "global_batch": args.batch_size,
                "replicas": int(strategy.num_replicas_in_sync),
                "strategy": type(strategy).__name__,
                "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
                "tf": tf.__version__,
            },
            f,
        )
    print(f"fit {case} done: {type(strategy).__name__}, {elapsed:.2f} s", flush=True)


# ----------------------------------------------------------------- harness
def toy_protocol():
    """Two methods (compiled cross-entropy, CORAL trainer) x three leave-one-
    hospital-out settings of synthetic white cells."""
    from tfcell import training
    from tfcell.data import synthetic
    from tfcell.experiments import methods, protocol, settings, tasks

    class Toy(protocol.Protocol):
        docs_marker = "toy:measured"

        def __init__(self):
            super().__init__()
            self.task = tasks.ClassificationTask()

        def settings(self, config, repeat):
            records = synthetic.white_cells(
                config.data.num_images, image_size=config.data.image_size, num_classes=3,
                domains=3, subjects_per_domain=3, seed=config.seed + repeat,
            )  # fmt: skip
            every = settings.leave_one_domain_out(
                records, 0.2, config.seed + repeat, synthetic=True, description="toy cells"
            )
            return every[: config.data.get("max_settings") or None]

        def methods(self, config):
            return {
                "erm": methods.TrainerMethod(
                    "ERM", lambda f, c, info, hp: training.ERMTrainer(f, c)
                ),
                "coral": methods.TrainerMethod(
                    "CORAL",
                    lambda f, c, info, hp: training.CORALTrainer(
                        f, c, num_domains=info.num_domains, penalty_weight=1.0
                    ),
                ),
            }

        def write_report(self, workdir_path, config, records, run_info):
            path = os.path.join(workdir_path, "report.md")
            with open(path, "w") as f:
                f.write(f"# toy\n\n{len(records)} records\n")
            return path

    return Toy()


def toy_config(epochs=2, max_settings=2):
    import ml_collections

    config = ml_collections.ConfigDict()
    config.protocol = "tfcell.testing.multi_worker_program:toy_protocol"
    config.seed = 0
    config.num_repeats = 1
    config.save_model_repeats = -1
    # Two of the three leave-one-hospital-out settings (4 jobs), each training on
    # two hospitals, so CORAL has a pair of domains.
    config.data = {"num_images": 90, "image_size": 16, "max_settings": max_settings}
    config.model = {"backbone": "small_cnn", "widths": (4,), "embedding_dim": 8}
    config.loss = {"erm": {}, "coral": {}}
    config.optimizer = {"name": "adam", "learning_rate": 1e-3}
    config.training = {
        "batch_size": 16, "epochs": epochs, "patience": 5, "selection": "val_accuracy",
        "verbose": 0, "tensorboard": False, "steps_per_epoch": 0,
    }  # fmt: skip
    config.sweep = {"enabled": False}
    return config


def _harness(args):
    import logging

    from tfcell.experiments import runner

    logging.getLogger("tfcell").setLevel(logging.INFO)
    path = runner.run(toy_protocol(), toy_config(args.epochs), args.workdir)
    print(f"harness done: report {path}", flush=True)


# ------------------------------------------------------------------ matrix
def load_cases(path):
    """`(LOSS_CASES, TRAINER_CASES, N)` of a registry-matrix file (tests/registry_test.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tfcell_registry_cases", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.LOSS_CASES, module.TRAINER_CASES, module.N, module._data


def matrix_step(kind, name, cases_file, strategy, force_loop=True):
    """One SGD step of registry case `name` under `strategy`; its weights.

    Each case is built after `keras.utils.set_random_seed(0)`, so every process
    starts from the same weights."""
    import keras
    import tensorflow as tf

    from tfcell import training

    loss_cases, trainer_cases, n, trainer_data = load_cases(cases_file)
    keras.utils.set_random_seed(0)
    callbacks = []
    with strategy.scope():
        if kind == "loss":
            model, loss, x, y, callbacks = loss_cases[name]()
            model.compile(optimizer=keras.optimizers.SGD(0.01), loss=loss)
            data = tf.data.Dataset.from_tensor_slices((x, y)).batch(n)
        else:
            model = trainer_cases[name]()
            model.compile(optimizer=keras.optimizers.SGD(0.01))
            data = tf.data.Dataset.from_tensor_slices(trainer_data()).batch(n)
    history = training.fit(
        model, data, epochs=1, verbose=0, shuffle=False, callbacks=callbacks,
        force_loop=force_loop,
    )  # fmt: skip
    return [np.asarray(w) for w in model.get_weights()], history.history


def _matrix(args):
    from tfcell import training

    strategy = training.get_strategy()
    loss_cases, trainer_cases, _, _ = load_cases(args.cases_file)
    _, index, _ = training.task_info()
    os.makedirs(args.out, exist_ok=True)
    summary = {}
    losses = [n for n in loss_cases if not args.losses or n in args.losses.split(",")]
    for kind, names in (("loss", losses), ("trainer", trainer_cases)):
        for name in names:
            weights, history = matrix_step(kind, name, args.cases_file, strategy)
            np.savez(os.path.join(args.out, f"{kind}-{name}-{index}.npz"), *weights)
            summary[f"{kind}-{name}"] = {k: [float(v) for v in vs] for k, vs in history.items()}
            print(f"{kind} {name}: loss {summary[f'{kind}-{name}'].get('loss')}", flush=True)
    with open(os.path.join(args.out, f"matrix{index}.json"), "w") as f:
        json.dump({"replicas": int(strategy.num_replicas_in_sync), "cases": summary}, f)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit")
    fit.add_argument(
        "--case", required=True,
        help="per_sample, coral, or both comma-separated (then <out>/<case>/ each)",
    )  # fmt: skip
    fit.add_argument("--out", required=True)
    fit.add_argument("--epochs", type=int, default=EPOCHS)
    fit.add_argument("--batch_size", type=int, default=GLOBAL_BATCH)
    fit.add_argument("--num_examples", type=int, default=NUM_EXAMPLES)
    fit.add_argument("--size", type=int, default=8)
    fit.add_argument("--width", type=int, default=8)
    fit.add_argument("--steps_per_epoch", type=int, default=0)
    matrix = sub.add_parser("matrix")
    matrix.add_argument("--cases_file", required=True)
    matrix.add_argument("--out", required=True)
    matrix.add_argument("--losses", default="", help="Comma-separated loss cases (all: empty).")
    harness = sub.add_parser("harness")
    harness.add_argument("--workdir", required=True)
    harness.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args(argv)
    if args.command == "fit":
        _fit(args)
    elif args.command == "matrix":
        _matrix(args)
    else:
        _harness(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
