"""One CFAL comparison run: every method on every setting and repeat, the
ensembles, then `report.md` and `done`.

What `reproductions/cfal_crc.py` and `reproductions/cfal_idc.py` share. A run
writes into its workdir:

    config.json                     the full config
    results.jsonl                   one line per (setting, repeat, method) evaluation
    <setting>/<method>/model.keras  every network (repeat k > 0 in .../r<k>/; config
                                    save_model_repeats: -1 all, n the first n)
    tensorboard/...                 TensorBoard logs (config.training.tensorboard)
    run.json                        hardware and wall time of the whole run
    figures/*.png, report.md, done
"""

import json
import logging
import os
import platform
import time

import keras
import numpy as np
import tensorflow as tf

from tfcell.evaluation import ensembles, metrics, report
from tfcell.experiments import data as data_lib
from tfcell.experiments import methods as methods_lib
from tfcell.training import strategy as strategy_lib

__all__ = ["EpochTimer", "evaluate_scores", "run", "start_workdir", "train_method"]

logger = logging.getLogger("tfcell.experiments")


class EpochTimer(keras.callbacks.Callback):
    """Wall time of every training epoch (Table X), validation included."""

    def on_train_begin(self, logs=None):
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def _optimizer(config):
    opt = config.optimizer
    if opt.name == "adam":
        return keras.optimizers.Adam(learning_rate=opt.learning_rate)
    if opt.name == "sgd":
        return keras.optimizers.SGD(
            learning_rate=opt.learning_rate, momentum=opt.get("momentum", 0.9)
        )
    raise ValueError(f"config.optimizer.name must be 'adam' or 'sgd'; received {opt.name!r}.")


def evaluate_scores(y_true, probabilities, num_classes):
    """Metrics, class-wise AUROC and the normalised confusion matrix of one model."""
    predictions = np.asarray(probabilities).argmax(axis=1)
    out = metrics.classification_metrics(y_true, predictions, num_classes)
    out["auroc"] = metrics.classwise_auroc(y_true, probabilities)
    out["confusion"] = metrics.normalized_confusion_matrix(y_true, predictions, num_classes)
    return out


def train_method(name, setting, config, seed, strategy, workdir=None, hp=None, verbose=None):
    """Trains one method on one setting; returns `(model, record, probabilities)`."""
    hp = dict(config.loss[name]) if hp is None else hp
    keras.utils.set_random_seed(seed)
    train_cfg = config.training
    size = config.data.image_size
    with strategy.scope():
        model, loss, method = methods_lib.build_model(name, hp, setting.class_counts(), config)
        model.compile(
            optimizer=_optimizer(config),
            loss=loss,
            metrics=[metrics.ScoresAccuracy(setting.num_classes)],
        )
    timer = EpochTimer()
    callbacks = [
        timer,
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=train_cfg.patience, restore_best_weights=True
        ),
    ]
    if workdir and train_cfg.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=workdir, write_graph=False))
    make = data_lib.make_dataset
    start = time.perf_counter()
    history = model.fit(
        make(setting.train, train_cfg.batch_size, size, True, seed, train_cfg.augment),
        validation_data=make(setting.val, train_cfg.batch_size, size),
        epochs=train_cfg.epochs,
        steps_per_epoch=train_cfg.get("steps_per_epoch") or None,
        callbacks=callbacks,
        shuffle=False,  # The dataset shuffles itself.
        verbose=train_cfg.verbose if verbose is None else verbose,
    )
    train_time = time.perf_counter() - start
    scores = model.predict(make(setting.test, train_cfg.batch_size, size), verbose=0)
    probs = ensembles.to_probabilities(
        scores, method.head, setting.num_classes, method.probability_scale(hp)
    )
    record = {
        "method": name,
        "title": method.title,
        "kind": "single",
        "hparams": hp,
        "epochs": len(history.history["loss"]),
        "epoch_times": timer.times,
        # The first epoch includes tracing and compilation; Table X is a steady-state time.
        "epoch_time_s": float(np.mean(timer.times[1:] if len(timer.times) > 1 else timer.times)),
        "train_time_s": train_time,
        "num_params": int(model.count_params()),
        **evaluate_scores(setting.test.y, probs, setting.num_classes),
    }
    return model, record, probs


def _base(setting, repeat, seed):
    return {
        "setting": setting.name,
        "repeat": repeat,
        "seed": seed,
        "synthetic": setting.synthetic,
        "num_train": len(setting.train),
        "num_val": len(setting.val),
        "num_test": len(setting.test),
        "class_names": list(setting.class_names),
    }


def run(config, workdir, settings_fn):
    """Runs the comparison and writes everything; returns the report path.

    Args:
        config: an `ml_collections.ConfigDict` from `configs/cfal_*.py`.
        workdir: output folder (created).
        settings_fn: `(config, repeat) -> list[data.Setting]` (e.g. `data.idc_settings`).
    """
    from tfcell.experiments import cfal_report

    start_workdir(workdir, config)
    writer = report.ResultsWriter(workdir)
    strategy = strategy_lib.get_strategy()
    logger.info(
        "strategy %s with %d replica(s)", type(strategy).__name__, strategy.num_replicas_in_sync
    )
    start = time.perf_counter()
    announced = False
    for repeat in range(config.num_repeats):
        seed = config.seed + repeat
        for setting in settings_fn(config, repeat):
            if setting.synthetic and not announced:
                data_lib.print_banner()
                announced = True
            print(
                f"[{setting.name} repeat {repeat + 1}/{config.num_repeats}] {setting.description}: "
                f"train {len(setting.train)}, val {len(setting.val)}, test {len(setting.test)}",
                flush=True,
            )
            probabilities = {}
            for name in list(config.methods) + list(config.ablation):
                if name in probabilities:
                    continue
                logdir = os.path.join(workdir, "tensorboard", setting.name, f"r{repeat}", name)
                model, record, probs = train_method(name, setting, config, seed, strategy, logdir)
                probabilities[name] = probs
                if config.save_model_repeats < 0 or repeat < config.save_model_repeats:
                    folder = os.path.join(workdir, setting.name, name)
                    if repeat:
                        folder = os.path.join(folder, f"r{repeat}")
                    os.makedirs(folder, exist_ok=True)
                    model.save(os.path.join(folder, "model.keras"))
                writer.write({**_base(setting, repeat, seed), **record})
                print(
                    f"  {name:14s} f1 {record['f1']:.3f} acc {record['accuracy']:.3f} "
                    f"({record['epochs']} epochs, {record['epoch_time_s']:.1f} s/epoch)",
                    flush=True,
                )
                del model
                keras.utils.clear_session()
            members = [m for m in config.ensemble.members if m in probabilities]
            for rule in config.ensemble.rules if len(members) > 1 else ():
                _, scores = ensembles.ensemble([probabilities[m] for m in members], rule)
                writer.write(
                    {
                        **_base(setting, repeat, seed),
                        "method": f"ensemble_{rule}",
                        "title": f"Ensemble: {rule}",
                        "kind": "ensemble",
                        "members": members,
                        **evaluate_scores(setting.test.y, scores, setting.num_classes),
                    }
                )
    elapsed = time.perf_counter() - start
    write_json(
        os.path.join(workdir, "run.json"), {"hardware": hardware(), "elapsed_min": elapsed / 60}
    )
    path = cfal_report.write_report(workdir, config, elapsed=elapsed, hardware=hardware())
    report.write_done(workdir)
    return path


def hardware():
    gpus = tf.config.list_physical_devices("GPU")
    return (
        f"{len(gpus)} GPU(s)" if gpus else f"CPU ({os.cpu_count()} cores visible)"
    ) + f", {platform.system()}, TF {tf.__version__}, Keras {keras.__version__}"


def start_workdir(workdir, config):
    """Clears a workdir's stale `results.jsonl` and `done`, writes `config.json`."""
    os.makedirs(workdir, exist_ok=True)
    for stale in (report.RESULTS_FILE, report.DONE_FILE):
        if os.path.exists(os.path.join(workdir, stale)):
            os.remove(os.path.join(workdir, stale))
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True))


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(report._jsonable(obj), f, indent=2, sort_keys=True)
