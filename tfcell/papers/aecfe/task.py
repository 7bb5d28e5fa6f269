"""One job of the AE-CFE study: a representation, then a random forest (or the
supervised CNN oracle), trained on one domain and tested on every domain.

```
prepare(setting):   cells = run_cells(...)       # detector stage, once per run
                    parts = setting's parts, only the usable (detected) cells
run_job(forest):    X = detector features | ResNet features
                        | autoencoder codes (one autoencoder per repeat and
                          method, trained on the training 80 % of EVERY
                          domain without labels, cached and shared by the
                          settings of that repeat)
                    check_disjoint(train, every test part)     # asserted
                    forest = RandomForest(max_depth=16).fit(X[train], y[train])
                    accuracy on the 20 % test part of every domain
run_job(oracle):    small CNN on the source domain's training images, tested on
                    every domain's test part (Table 3.3)
```
"""

import json
import os
import time

import keras
import numpy as np
import tensorflow as tf
from sklearn import ensemble

from tfcell import models, training
from tfcell.data import augmentation, pipeline
from tfcell.experiments import tasks
from tfcell.papers.aecfe import cells as cells_lib
from tfcell.papers.aecfe import data as data_lib
from tfcell.papers.aecfe import methods as methods_lib

__all__ = ["AECFEData", "AECFETask", "autoencoder_folder"]


def autoencoder_folder(workdir, repeat, method):
    """Where a run keeps the autoencoder of one repeat and method."""
    return os.path.join(workdir, "autoencoders", f"r{int(repeat)}", method)


class AECFEData:
    """A setting's cells: the run's detector stage and the usable rows of each part."""

    def __init__(self, setting, config, workdir):
        table = setting.table
        self.setting = setting
        self.workdir = workdir
        self.images, self.hashes = table.images, table.hashes
        self.cells = cells_lib.run_cells(config, table.records, table.images, table.hashes, workdir)
        usable = self.cells.usable
        self.parts, self.missed = {}, {}
        for name, rows in setting.parts.items():
            self.parts[name] = rows[usable[rows]]
            self.missed[name] = int((~usable[rows]).sum())
        rows = setting.autoencoder_rows
        self.autoencoder_rows = rows[usable[rows]]
        self.labels = setting.records["label"].to_numpy("int64")
        self.domains = np.asarray(setting.records["domain"].astype(str).to_numpy(), dtype=str)
        self.domain_names = sorted(set(self.domains))
        self.domain_ids = np.array([self.domain_names.index(d) for d in self.domains], "int32")

    @property
    def test_parts(self):
        return self.setting.test_parts


def _features(cells, rows):
    return np.asarray(models.minmax_features(cells.features[rows].astype("float32")))


def _detector_summary(cells):
    s = cells.summary
    return {"dice": s.get("dice", {}), "detection": s.get("detection", {}),
            "on_miss": s.get("on_miss"), "masks": s.get("masks", "")}  # fmt: skip


class AECFETask:
    """Runs the jobs of `tfcell.papers.aecfe` (see the module docstring)."""

    def __init__(self):
        self._codes = {}  # In-memory autoencoder codes when a run keeps no files.

    def prepare(self, setting, config, cache_dir=None):
        workdir = os.path.dirname(os.path.abspath(cache_dir)) if cache_dir else None
        return AECFEData(setting, config, workdir)

    # ---------------------------------------------------------- representations
    def _autoencoder(self, job):
        """`(codes of every row (N, D) (NaN where not usable), info)` of the
        repeat's autoencoder for `job.name`, trained on first use."""
        data, setting = job.data, job.data.setting
        key = (data.workdir, setting.repeat, job.name, id(data.cells))
        if key in self._codes:
            return self._codes[key]
        folder = (
            autoencoder_folder(data.workdir, setting.repeat, job.name) if data.workdir else None
        )
        if folder and os.path.exists(os.path.join(folder, "done")):
            with np.load(os.path.join(folder, "codes.npz")) as f:
                codes = f["codes"]
            with open(os.path.join(folder, "info.json")) as f:
                info = json.load(f)
            self._codes[key] = codes, info
            return codes, info
        codes, info, trainer, examples = self._train_autoencoder(job)
        if folder:
            os.makedirs(folder, exist_ok=True)
            trainer.autoencoder.save(os.path.join(folder, "model.keras"))
            usable = data.cells.usable
            np.savez(os.path.join(folder, "codes.npz"), codes=codes, usable=usable,
                     labels=data.labels, domains=data.domains)  # fmt: skip
            np.savez(os.path.join(folder, "examples.npz"), **examples)
            with open(os.path.join(folder, "info.json"), "w") as f:
                json.dump(info, f, indent=2, sort_keys=True)
            with open(os.path.join(folder, "done"), "w") as f:
                f.write("done\n")
        self._codes.clear()  # One autoencoder at a time in memory.
        self._codes[key] = codes, info
        return codes, info

    def _train_autoencoder(self, job):
        data, config = job.data, job.config
        cells, rows = data.cells, data.autoencoder_rows
        source = config.autoencoder.source_domain
        if source not in data.domain_names:
            raise ValueError(
                f"config.autoencoder.source_domain={source!r} is not a domain of the run "
                f"({data.domain_names})."
            )
        keras.utils.set_random_seed(job.seed)
        trainer = methods_lib.build_autoencoder(
            job.hp, config, cells.features.shape[1:], len(data.domain_names),
            data.domain_names.index(source),
        )  # fmt: skip
        batches = (
            tf.data.Dataset.from_tensor_slices(
                {
                    "features": _features(cells, rows),
                    "image": cells.crops[rows].astype("float32") / 255.0,
                    "domain": data.domain_ids[rows],
                }
            )
            .shuffle(len(rows), seed=job.seed, reshuffle_each_iteration=True)
            # Whole batches only: a last, smaller batch would trace the step again
            # (seconds per autoencoder); a reshuffled remainder is left out each epoch.
            .batch(min(int(config.autoencoder.batch_size), len(rows)), drop_remainder=True)
            .prefetch(2)
        )
        timer = tasks.EpochTimer()
        start = time.perf_counter()
        history = training.fit(
            trainer, batches, epochs=int(config.autoencoder.epochs), callbacks=[timer], shuffle=False,
            verbose=config.training.verbose if job.verbose is None else job.verbose,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        losses = history.history.get("loss", [])
        if not np.all(np.isfinite(losses)):
            raise FloatingPointError(f"{job.name} on {job.key}: non-finite autoencoder loss.")
        usable = np.flatnonzero(cells.usable)
        codes = np.full((len(cells.usable), int(job.hp["latent_dim"])), np.nan, "float32")
        codes[usable] = models.aecfe_encode(trainer, _features(cells, usable))
        info = {
            "epochs": len(losses),
            "train_cells": int(len(rows)),
            "train_time_s": seconds,
            "epoch_time_s": float(
                np.mean(timer.times[1:] if len(timer.times) > 1 else timer.times)
            ),
            "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
            "hparams": dict(job.hp),
            "source_domain": source,
        }
        return codes, info, trainer, self._examples(job, trainer)

    def _examples(self, job, trainer):
        """A few test cells per domain and their reconstructions (PNG in the report)."""
        data = job.data
        per_domain = int(job.config.report.examples_per_domain)
        rows = []
        for part in data.test_parts:
            rows.extend(data.parts[part][:per_domain])
        rows = np.asarray(rows, "int64")
        if not len(rows):
            return {"rows": rows}
        out = trainer.autoencoder.predict(_features(data.cells, rows), verbose=0)
        return {
            "rows": rows,
            "domains": data.domains[rows],
            "labels": data.labels[rows],
            "originals": data.cells.crops[rows],
            "reconstructions": np.round(255 * np.asarray(out["image"])).astype("uint8"),
        }

    def _representation(self, job):
        data, kind = job.data, job.method.representation
        if kind == methods_lib.DETECTOR:
            return data.cells.vectors, {}
        if kind == methods_lib.RESNET:
            return cells_lib.resnet_features(job.config, data.images, data.hashes, data.workdir), {}
        return self._autoencoder(job)

    # -------------------------------------------------------------------- jobs
    def run_job(self, job):
        data = job.data
        train = data.parts["train"]
        tests = {p: data.parts[p] for p in data.test_parts}
        # Table 3.2 must never train and test on the same images.
        data_lib.check_disjoint(train, tests, data.hashes, job.key)
        if not len(train):
            raise ValueError(f"{job.key}: no usable training cell in {data.setting.source}.")
        if job.method.representation == methods_lib.ORACLE:
            return self._oracle(job, train, tests)
        features, info = self._representation(job)
        forest_cfg = job.config.forest
        forest = ensemble.RandomForestClassifier(
            n_estimators=int(forest_cfg.n_estimators), max_depth=int(forest_cfg.max_depth),
            random_state=int(job.seed), n_jobs=int(forest_cfg.n_jobs),
        )  # fmt: skip
        start = time.perf_counter()
        forest.fit(features[train], data.labels[train])
        seconds = time.perf_counter() - start

        def probabilities(rows):
            out = np.zeros((len(rows), data.setting.num_classes), "float32")
            if len(rows):
                out[:, forest.classes_] = forest.predict_proba(features[rows])
            return out

        extra = {
            "representation": job.method.representation,
            "feature_dim": int(features.shape[1]),
            "forest_time_s": seconds,
            "train_time_s": seconds + float(info.get("train_time_s", 0.0)),
            "epoch_time_s": float(info.get("epoch_time_s", float("nan"))),
            "epochs": info.get("epochs", 0),
        }
        if info:
            extra["autoencoder"] = {k: v for k, v in info.items() if k != "hparams"}
        return self._result(job, train, tests, probabilities, extra, None)

    def _oracle(self, job, train, tests):
        data, config = job.data, job.config
        keras.utils.set_random_seed(job.seed)
        model = methods_lib.build_oracle(config, data.images.shape[1:], data.setting.num_classes)
        batches = pipeline.from_arrays(
            data.images[train], data.labels[train], batch_size=int(config.oracle.batch_size),
            shuffle=True, augment=augmentation.RandomDihedral(), seed=job.seed,
            num_classes=data.setting.num_classes,
        )  # fmt: skip
        timer = tasks.EpochTimer()
        callbacks = [timer]
        if training.batch_norm_layers(model):
            callbacks.append(training.PreciseBatchNormCallback(batches))
        start = time.perf_counter()
        history = training.fit(
            model, batches, epochs=int(config.oracle.epochs), callbacks=callbacks, shuffle=False,
            verbose=config.training.verbose if job.verbose is None else job.verbose,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        losses = history.history.get("loss", [])
        if not np.all(np.isfinite(losses)):
            raise FloatingPointError(f"{job.name} on {job.key}: non-finite loss {losses}.")

        def probabilities(rows):
            if not len(rows):
                return np.zeros((0, data.setting.num_classes), "float32")
            logits = training.predict(model, data.images[rows].astype("float32"), batch_size=128)
            return np.asarray(keras.ops.softmax(logits, axis=-1))

        extra = {
            "representation": methods_lib.ORACLE,
            "train_time_s": seconds,
            "epochs": len(losses),
            "epoch_time_s": float(
                np.mean(timer.times[1:] if len(timer.times) > 1 else timer.times)
            ),
            "train_history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
        }
        return self._result(job, train, tests, probabilities, extra, model)

    def _result(self, job, train, tests, probabilities, extra, model):
        data, setting = job.data, job.data.setting
        num_classes = setting.num_classes
        majority = int(np.bincount(data.labels[train], minlength=num_classes).argmax())
        base = {
            "method": job.name,
            "title": job.method.title,
            "kind": "oracle" if model is not None else "forest",
            "hparams": dict(job.hp),
            "source": setting.source,
            "num_train_cells": int(len(train)),
            "missed_train": data.missed["train"],
            "detector": _detector_summary(data.cells),
            **extra,
        }
        records, outputs = [], {"train_rows": train}
        for part, rows in tests.items():
            labels = data.labels[rows]
            p = probabilities(rows)
            outputs[f"{part}_rows"] = rows
            outputs[f"{part}_labels"] = labels
            outputs[f"{part}_probabilities"] = p
            scores = tasks.evaluate_scores(labels, p, num_classes) if len(rows) else {}
            records.append(
                {
                    **base,
                    "test_set": part,
                    "target": part.split(":", 1)[1],
                    "num_test": int(len(rows)),
                    "missed_test": data.missed[part],
                    "majority_accuracy": float(np.mean(labels == majority)) if len(rows) else None,
                    **scores,
                }
            )
        return tasks.JobResult(records, outputs, model)
