"""Tasks: what one job does with a method on a setting.

`ClassificationTask` (every classification paper): decode the setting's images
once, train the method with `fit` on `tf.data` from `tfcell.data.pipeline`,
select the best epoch by validation macro-F1 or accuracy
(`selection.ValidationSelection`; models with BatchNorm get their statistics
re-estimated on training batches before each selection pass,
`tfcell.training.PreciseBatchNormCallback`, config `training.precise_bn`), fit
a temperature on the validation scores
(`tfcell.evaluation.calibration`) so that every method's test probabilities
are on one calibrated scale, and evaluate every test part.

A task is any object with `prepare(setting, config, cache_dir) -> data` (once
per setting, shared by its jobs) and `run_job(job) -> JobResult`; segmentation
and representation + random-forest tasks bring
their own task from their paper package without editing the harness.
"""

import dataclasses
import logging
import os
import time

import keras
import numpy as np
import tensorflow as tf

from tfcell import training
from tfcell.data import model_augmentation
from tfcell.evaluation import calibration, metrics
from tfcell.experiments import methods as methods_lib
from tfcell.experiments import selection

__all__ = ["ClassificationTask", "EpochTimer", "Job", "JobResult", "SettingData", "evaluate_scores"]

logger = logging.getLogger("tfcell.experiments")


class EpochTimer(keras.callbacks.Callback):
    """Wall time of every training epoch (selection pass included)."""

    def on_train_begin(self, logs=None):
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)


class SettingData:
    """A setting's images, decoded and resized once, and datasets over its parts.

    Args:
        setting: a `settings.Setting`.
        image_size: int, the square size images are brought to.
        cache_dir: where decoded arrays (and TFRecord shards) are kept on disk
            (the workdir's `cache/`), or None for memory only.
        in_memory: True (default): `storage="memory"`; False: `storage="files"`.
        storage: where every epoch's images come from (config `data.storage`;
            default from `in_memory`):
            "memory": decode the whole table once
            (`tfcell.data.cache.decoded_images`) and serve every epoch from that
            array (`pipeline.from_arrays`).
            "files", for sets that do not fit in memory (NCT-CRC-HE-100K at
            224 px is 15 GB): stream and decode every epoch from the files
            (`pipeline.from_records`).
            "tfrecord": on first use, write each part once, padded and resized
            to `image_size` (PNG, lossless: the pixels of "memory"), as sharded
            TFRecords under `cache_dir/tfrecords/<setting name>/<part>-*`
            (`tfcell.data.tfrecords`; reused while complete and unchanged),
            and stream every epoch from them (shuffled files and a record
            buffer, `read_shards`); predictions come in part order.
        service: a tf.data service dispatcher, "grpc://host:port" (config
            `data.service`), that decodes and augments the training batches
            (`tfcell.data.service.distribute`); needs storage "files" or
            "tfrecord". None: everything local.
        service_mode: its processing mode (config `data.service_mode`).
    """

    STORAGES = ("memory", "files", "tfrecord")

    def __init__(
        self, setting, image_size, cache_dir=None, in_memory=True, storage=None, service=None,
        service_mode="distributed_epoch",
    ):  # fmt: skip
        from tfcell.data import cache

        storage = storage or ("memory" if in_memory else "files")
        if storage not in self.STORAGES:
            raise ValueError(
                f"config.data.storage must be one of {self.STORAGES}; received {storage!r}."
            )
        if storage == "tfrecord" and cache_dir is None:
            raise ValueError(
                "config.data.storage='tfrecord' writes shards under the workdir's cache/; "
                "SettingData received cache_dir=None. Pass a cache_dir."
            )
        if service and storage == "memory":
            raise ValueError(
                f"config.data.service={service!r} sends the dataset's graph to the tf.data "
                "service workers, and with config.data.storage='memory' that graph holds "
                "every decoded image. Set config.data.storage='tfrecord' (or 'files')."
            )
        if service and training.is_multi_worker():
            raise ValueError(
                f"config.data.service={service!r} with several training workers (TF_CONFIG): "
                "each worker would read its own service job and keep half of it, so an epoch "
                "would not see every image once. Use the service with one training process "
                "(MirroredStrategy over its GPUs), or several workers with "
                "config.data.storage='tfrecord' (split by file) and no service."
            )
        self.setting = setting
        self.image_size = int(image_size)
        self.storage = storage
        self.in_memory = storage == "memory"
        self.cache_dir = cache_dir
        self.service, self.service_mode = service or None, service_mode
        self._shards = {}
        self.images = None
        if self.in_memory:
            self.images = cache.decoded_images(
                setting.records, self.image_size, pad_small=setting.pad_small,
                cache_dir=cache_dir,
            )  # fmt: skip
        self.id_maps = setting.id_maps()
        records = setting.records
        self.domains = records["domain"].astype(str).to_numpy() if "domain" in records else None
        self.subjects = records["subject"].astype(str).to_numpy() if "subject" in records else None

    @property
    def image_shape(self):
        return (self.image_size, self.image_size, 3)

    def info(self):
        s = self.setting
        train = s.parts["train"]
        num_domains = max(len(self.id_maps.get("domain", {})), 1)
        domain_ids = np.zeros(len(train), "int64")
        if self.domains is not None:
            domain_ids = np.array([self.id_maps["domain"][d] for d in self.domains[train]])
        table = np.zeros((num_domains, s.num_classes), "int64")
        np.add.at(table, (domain_ids, s.labels("train")), 1)
        return methods_lib.DataInfo(
            num_classes=s.num_classes,
            class_counts=tuple(int(c) for c in s.class_counts("train")),
            image_shape=self.image_shape,
            num_domains=num_domains,
            num_subjects=max(len(self.id_maps.get("subject", {})), 1),
            domain_class_counts=tuple(tuple(int(c) for c in row) for row in table),
        )

    def dataset(
        self, part, batch_size, output="tuple", training=False, seed=0, augment=None,
        sampler=None, per_group=None,
    ):  # fmt: skip
        """`tf.data` batches of one part (`tfcell.data.pipeline.from_arrays`).

        With `training` and `sampler` "domain_balanced" or "class_balanced"
        (`tfcell.data.samplers`), every batch holds `per_group` images of every
        domain (or class) of the part (default `batch_size // groups`); an
        epoch is the sampler's (the largest group seen once). "shuffle" or
        None: plain shuffled batches of `batch_size`.
        """
        from tfcell.data import pipeline, tfrecords
        from tfcell.data import service as data_service

        idx = self.setting.parts[part]
        if training and sampler not in (None, "shuffle"):
            return self._balanced(part, idx, batch_size, output, seed, augment, sampler, per_group)
        if self.storage == "tfrecord":
            dataset = tfrecords.read_shards(
                *self._tfrecords(part), self.image_size, batch_size, output=output,
                shuffle=training, seed=seed, augment=augment if training else None,
                pad_small=self.setting.pad_small,
            )  # fmt: skip
        elif self.storage == "files":
            dataset = pipeline.from_records(
                self.setting.table(part), self.image_size, batch_size=batch_size,
                shuffle=training, augment=augment if training else None, seed=seed,
                output=output, pad_small=self.setting.pad_small, validate=None,
                id_maps=self.id_maps,
            )  # fmt: skip
        else:
            dataset = pipeline.from_arrays(
                self.images[idx], self.setting.labels(part), batch_size=batch_size,
                shuffle=training, augment=augment if training else None, seed=seed,
                output=output, domains=None if self.domains is None else self.domains[idx],
                subjects=None if self.subjects is None else self.subjects[idx],
                id_maps=self.id_maps,
            )  # fmt: skip
        if training and self.service:
            # After decode, augmentation and batch (the TF guide): whole batches travel.
            dataset = data_service.distribute(
                dataset, self.service, processing_mode=self.service_mode
            )
        return dataset

    def _tfrecords(self, part):
        """(directory, prefix) of the part's shards, written on first use."""
        from tfcell.data import decode, tfrecords

        if part not in self._shards:
            directory = os.path.join(self.cache_dir, "tfrecords", self.setting.name)
            prefix = "".join(c if c.isalnum() or c in "._=+-" else "_" for c in part)
            metadata = tfrecords.write_shards(
                self.setting.table(part), directory, prefix, image_size=self.image_size,
                class_names=self.setting.class_names, id_maps=self.id_maps,
                pad_small=self.setting.pad_small, reuse=True,
            )  # fmt: skip
            if metadata["skipped"]:
                bad = "\n".join(
                    f"  {path}: {reason}"
                    for reason, paths in metadata["skipped"].items()
                    for path in paths[:10]
                )
                raise decode.ImageError(
                    f"{self.setting.name} part {part!r}: image file(s) cannot be read:\n{bad}\n"
                    "Remove or replace them, or re-read the folder with the tfcell reader, "
                    "which skips and counts bad files."
                )
            self._shards[part] = (directory, prefix)
        return self._shards[part]

    def _balanced(self, part, idx, batch_size, output, seed, augment, sampler, per_group):
        from tfcell.data import samplers

        if sampler not in ("domain_balanced", "class_balanced"):
            raise ValueError(
                "config.training.sampler must be 'shuffle', 'domain_balanced' or "
                f"'class_balanced'; received {sampler!r}."
            )
        if not self.in_memory:
            raise ValueError(
                f"config.training.sampler={sampler!r} draws every batch from the decoded images "
                f"by index, which config.data.storage={self.storage!r} (streamed) cannot do. "
                "Set config.data.storage='memory' (config.data.in_memory=True) or "
                "config.training.sampler='shuffle'."
            )
        labels = self.setting.labels(part)
        if sampler == "domain_balanced":
            if self.domains is None:
                raise ValueError("sampler='domain_balanced' needs a `domain` column.")
            groups = len(set(self.domains[idx].tolist()))
        else:
            groups = len(set(labels.tolist()))
        per = int(per_group) if per_group else max(1, int(batch_size) // max(groups, 1))
        source = {"images": self.images[idx], "label": labels}
        if self.domains is not None:
            source["domain"] = self.domains[idx]
        if self.subjects is not None:
            source["subject"] = self.subjects[idx]
        make = samplers.domain_balanced if sampler == "domain_balanced" else samplers.class_balanced
        return make(source, per, seed=seed, output=output, augment=augment, id_maps=self.id_maps)

    def predict(self, model, part, batch_size):
        """Inference-mode scores of a part, in part order."""
        if self.in_memory:
            dataset = (
                tf.data.Dataset.from_tensor_slices(self.images[self.setting.parts[part]])
                .batch(batch_size)
                .map(lambda x: tf.cast(x, tf.float32), num_parallel_calls=tf.data.AUTOTUNE)
                .prefetch(tf.data.AUTOTUNE)
            )
        else:  # Unshuffled: part order (the shards' round-robin read, too).
            dataset = self.dataset(part, batch_size).map(lambda x, y: x)
        return np.asarray(training.predict(model, dataset))


def evaluate_scores(y_true, probabilities, num_classes):
    """Metrics (`metrics.classification_metrics` and `metrics.per_class_metrics`),
    class-wise AUROC and the normalised confusion matrix of one model."""
    predictions = np.asarray(probabilities).argmax(axis=1)
    out = metrics.classification_metrics(y_true, predictions, num_classes)
    out.update(metrics.per_class_metrics(y_true, predictions, num_classes))
    out["auroc"] = metrics.classwise_auroc(y_true, probabilities)
    out["confusion"] = metrics.normalized_confusion_matrix(y_true, predictions, num_classes)
    return out


@dataclasses.dataclass
class Job:
    """One (setting, repeat, method) to run."""

    key: str
    name: str  # The method's name.
    method: object  # methods.Method
    hp: dict
    data: SettingData
    config: object
    seed: int
    strategy: object
    folder: str = None  # The job's folder (models, TensorBoard logs); None: keep nothing.
    augment: object = None
    verbose: int = None


@dataclasses.dataclass
class JobResult:
    records: list  # One per test part.
    outputs: dict  # Arrays saved with the job (scores, labels, calibrated probabilities).
    model: object = None


class ClassificationTask:
    """Trains and evaluates one classification method (see the module docstring)."""

    # The config.training options it reads beyond the basics (the runner
    # refuses them for a task without them): XLA, and the augmentation in the
    # network instead of tf.data (`LossMethod` and `TrainerMethod` place it).
    training_options = ("jit_compile", "augment_in_model")

    def prepare(self, setting, config, cache_dir=None):
        """The data every job on `setting` shares: decoded once (`SettingData`)."""
        data = config.data
        return SettingData(
            setting, data.image_size, cache_dir, in_memory=data.get("in_memory", True),
            storage=data.get("storage"), service=data.get("service"),
            service_mode=data.get("service_mode", "distributed_epoch"),
        )  # fmt: skip

    def fit_kwargs(self, job, batch_size):
        """Further keyword arguments of `fit` (e.g. `validation_data`, for a
        validation loss curve); none by default."""
        return {}

    def run_job(self, job):
        config, data, setting = job.config, job.data, job.data.setting
        train_cfg = config.training
        keras.utils.set_random_seed(job.seed)
        info = data.info()
        with job.strategy.scope():
            augmentation = None
            if train_cfg.get("augment_in_model", False):
                # The tf.data augmentation runs in the network, on the accelerator.
                augmentation = model_augmentation.in_model_augmentation(job.augment, job.seed)
                info = dataclasses.replace(info, augmentation=augmentation)
                job = dataclasses.replace(job, augment=None)
            built = job.method.build(info, dict(job.hp), config)
            compile_kwargs = {"optimizer": methods_lib.make_optimizer(config.optimizer)}
            if built.loss is not None:
                compile_kwargs.update(loss=built.loss, metrics=["accuracy"])
            jit_compile = _jit_compile(job, built.model, augmentation)
            built.model.compile(**compile_kwargs, jit_compile=jit_compile)
        batch_size = train_cfg.batch_size
        val_labels = setting.labels("val")
        selector = selection.ValidationSelection(
            lambda: data.predict(built.model, "val", batch_size),
            val_labels,
            setting.num_classes,
            monitor=train_cfg.selection,
            patience=train_cfg.patience,
        )
        nan_stop = selection.StopOnNaN(f"{job.name} on {job.key}")
        timer = EpochTimer()
        train = data.dataset(
            "train", batch_size, job.method.batches, True, job.seed, job.augment,
            sampler=train_cfg.get("sampler"), per_group=train_cfg.get("per_domain"),
        )  # fmt: skip
        callbacks = [nan_stop, timer]
        precise_bn = bool(
            train_cfg.get("precise_bn", True) and training.batch_norm_layers(built.model)
        )
        if precise_bn:
            # Before the selection pass: BatchNorm statistics re-estimated with the
            # epoch's final weights, so inference-mode validation tracks the weights.
            callbacks.append(
                training.PreciseBatchNormCallback(
                    train, num_batches=int(train_cfg.get("precise_bn_batches", 20))
                )
            )
        callbacks.append(selector)
        if built.callbacks is not None:
            callbacks += list(built.callbacks(built.model, _CallbackData(data, job, batch_size)))
        if job.folder and train_cfg.get("tensorboard"):
            callbacks.append(
                keras.callbacks.TensorBoard(
                    log_dir=os.path.join(job.folder, "tensorboard"), write_graph=False
                )
            )
        steps = train_cfg.get("steps_per_epoch") or None
        if steps:
            train = train.repeat()
        start = time.perf_counter()
        history = training.fit(
            built.model,
            train,
            epochs=train_cfg.epochs,
            steps_per_epoch=steps,
            callbacks=callbacks,
            shuffle=False,  # The dataset reshuffles itself every epoch (seeded).
            verbose=train_cfg.verbose if job.verbose is None else job.verbose,
            **self.fit_kwargs(job, batch_size),
        )
        train_time = time.perf_counter() - start
        nan_stop.check()
        # Calibration: one temperature per model, fitted on the validation part.
        val_scores = data.predict(built.model, "val", batch_size)
        val_logits = calibration.to_logits(val_scores, built.head, setting.num_classes, built.scale)
        temperature = calibration.fit_temperature(val_logits, val_labels)
        outputs = {"val_scores": val_scores, "val_labels": val_labels}
        base = {
            "method": job.name,
            "title": job.method.title,
            "kind": "single",
            "hparams": dict(job.hp),
            "epochs": len(history.history.get("loss", [])),
            "best_epoch": selector.best_epoch + 1,
            "selection": train_cfg.selection,
            "val_selection_value": selector.best_value,
            "val_history": selector.history,
            # The trainer's per-epoch training metrics (loss, CE, each penalty).
            "train_history": {
                k: [float(v) for v in values] for k, values in history.history.items()
            },
            "epoch_times": timer.times,
            # The first epoch includes tracing; a steady-state time leaves it out.
            "epoch_time_s": float(
                np.mean(timer.times[1:] if len(timer.times) > 1 else timer.times)
            ),
            "train_time_s": train_time,
            "num_params": int(built.model.count_params()),
            "temperature": temperature,
            "head": built.head,
            "precise_bn": precise_bn,
        }
        records = []
        for part in setting.test_parts:
            scores = data.predict(built.model, part, batch_size)
            logits = calibration.to_logits(scores, built.head, setting.num_classes, built.scale)
            probabilities = calibration.probabilities(logits, temperature)
            labels = setting.labels(part)
            outputs[f"{part}_scores"] = scores
            outputs[f"{part}_labels"] = labels
            outputs[f"{part}_probabilities"] = probabilities
            records.append(
                {
                    **base,
                    "test_set": part,
                    "num_test": len(labels),
                    "ece": calibration.expected_calibration_error(probabilities, labels),
                    **evaluate_scores(labels, probabilities, setting.num_classes),
                }
            )
        return JobResult(records, outputs, built.model)


def _layers(layer):
    """`layer` and every layer nested in it (submodels, a trainer's networks)."""
    yield layer
    for child in getattr(layer, "layers", ()):
        yield from _layers(child)


def _jit_compile(job, model, augmentation):
    """`config.training.jit_compile` (False | True | "auto"), checked against the
    network: the in-model augmentation must be in it, and compile with XLA."""
    value = job.config.training.get("jit_compile", False)
    if value not in (False, True, "auto"):
        raise ValueError(
            f"config.training.jit_compile must be False, True or 'auto'; received {value!r}."
        )
    if augmentation is None:
        return value
    if not any(layer is augmentation for layer in _layers(model)):
        raise ValueError(
            f"{job.name}: config.training.augment_in_model=True, but its method "
            f"({type(job.method).__name__}) did not put DataInfo.augmentation in the network "
            "(LossMethod and TrainerMethod do). Set config.training.augment_in_model=False."
        )
    if value is True and not augmentation.supports_jit:
        raise ValueError(
            "config.training.jit_compile=True with augment_in_model=True: the augmentation's "
            "flips/rotation (ImageProjectiveTransformV3) have no XLA kernel. Use "
            "jit_compile='auto' (XLA where it compiles), augment_in_model=False, or a "
            "RandomDihedral augmentation (exact flips and quarter turns, XLA-ready)."
        )
    return value


class _CallbackData:
    """What a method's callback factory may use: unshuffled training batches."""

    def __init__(self, data, job, batch_size):
        self._data, self._job, self._batch_size = data, job, batch_size

    def train_dataset(self, shuffle=False):
        return self._data.dataset(
            "train", self._batch_size, self._job.method.batches, shuffle, self._job.seed
        )
