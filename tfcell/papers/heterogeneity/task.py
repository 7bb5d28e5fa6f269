"""One fold job of the heterogeneity paper: train on random crops, predict with
the 5-crop test-time augmentation, report per-subject results.

Goswami et al. Sec. 5.1: cells at 400 x 400, train-time augmentation ending
in a random 299 x 299 crop, and at test time "5-crop" TTA (four corners and
the centre, 299 x 299), the confidences averaged. Here images are stored at
`config.data.image_size` and every network sees `config.data.crop_size`
crops: random ones (after the augmentation) in training, the centre crop for
the validation-loss curve, and the 5 crops at prediction
(`config.evaluation.tta = "five_crop"`; `"centre"` for one centre crop).
"""

import dataclasses

import numpy as np
import tensorflow as tf

from tfcell import training
from tfcell.data import augmentation as augmentation_lib
from tfcell.experiments import tasks

__all__ = ["CroppedSettingData", "HeterogeneityTask", "RandomCrop", "subject_metrics"]


class RandomCrop:
    """Batched crop to `crop_size` (square) after an optional batched augmentation.

    With `random=True` every image gets its own crop position and a zoom
    factor in `[1 - zoom, 1 + zoom]` (the crop box is that much larger or
    smaller before it is resampled to `crop_size`): the paper's RandomCrop and
    the scale part of its affine transform, one bilinear resampling
    (`tf.image.crop_and_resize`). With `random=False` the centre crop, exact
    pixels. Called as `crop(images, seed)` by `tfcell.data.pipeline` (a
    stateless seed per batch, so a seed gives the same batches every run).
    """

    batched = True

    def __init__(self, crop_size, base=None, random=True, zoom=0.0):
        self.crop_size = int(crop_size)
        self.base = base
        self.random = bool(random)
        self.zoom = float(zoom)
        if not 0.0 <= self.zoom < 1.0:
            raise ValueError(f"RandomCrop: zoom must lie in [0, 1); received {zoom!r}.")

    def __call__(self, images, seed):
        images = tf.convert_to_tensor(images)
        height, width = int(images.shape[1]), int(images.shape[2])
        crop = self.crop_size
        if crop > min(height, width):
            raise ValueError(
                f"crop_size {crop} exceeds the stored image size {(height, width)}; "
                "config.data.crop_size must not exceed config.data.image_size."
            )
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)
        if self.base is not None:
            images = self.base(images, seeds[0])
        images = tf.cast(images, tf.float32)
        if not self.random:
            top, left = (height - crop) // 2, (width - crop) // 2
            return images[:, top : top + crop, left : left + crop]
        n = tf.shape(images)[0]
        scale = tf.random.stateless_uniform([n], seeds[1], 1.0 - self.zoom, 1.0 + self.zoom)
        # Normalised box sides: (crop - 1) / (side - 1) maps crop pixel centres
        # onto image pixel centres exactly at scale 1.
        side_y = tf.minimum(scale * (crop - 1) / max(height - 1, 1), 1.0)
        side_x = tf.minimum(scale * (crop - 1) / max(width - 1, 1), 1.0)
        # Whole-pixel offsets (at scale 1 the crop is an exact window of pixels).
        y0 = _pixel_offset(seeds[2], n, side_y, height)
        x0 = _pixel_offset(seeds[3], n, side_x, width)
        boxes = tf.stack([y0, x0, y0 + side_y, x0 + side_x], axis=1)
        return tf.image.crop_and_resize(images, boxes, tf.range(n), (crop, crop))


def _pixel_offset(seed, n, side, size):
    """Uniform whole-pixel offsets of a box of normalised `side`, normalised."""
    span = max(size - 1, 1)
    room = tf.floor((1.0 - side) * span + 1e-4)  # Largest whole-pixel offset.
    offset = tf.floor(tf.random.stateless_uniform([n], seed) * (room + 1.0))
    return tf.minimum(offset, room) / span


class CroppedSettingData(tasks.SettingData):
    """`SettingData` whose networks see `crop_size` crops of the stored images.

    `dataset` crops every batch (random crops after the augmentation when
    training, the centre crop otherwise); `predict` returns, for the 5-crop
    TTA, the log of the probabilities averaged over the 5 crops (so softmax
    of the returned scores is the paper's averaged confidence), or the centre
    crop's logits.
    """

    def __init__(self, setting, image_size, crop_size, cache_dir=None, tta="five_crop", zoom=0.0):
        super().__init__(setting, image_size, cache_dir, in_memory=True)
        if tta not in ("five_crop", "centre"):
            raise ValueError(
                f"config.evaluation.tta must be 'five_crop' or 'centre'; received {tta!r}."
            )
        if int(crop_size) > int(image_size):
            raise ValueError(
                f"config.data.crop_size {crop_size} exceeds config.data.image_size {image_size}."
            )
        self.crop_size = int(crop_size)
        self.tta = tta
        self.zoom = float(zoom)

    @property
    def image_shape(self):
        return (self.crop_size, self.crop_size, 3)

    def dataset(
        self, part, batch_size, output="tuple", training=False, seed=0, augment=None,
        sampler=None, per_group=None,
    ):  # fmt: skip
        from tfcell.data import pipeline

        if training and sampler not in (None, "shuffle"):
            raise ValueError(
                "The heterogeneity paper samples plain shuffled batches (config.training."
                f"sampler='shuffle'); received {sampler!r}."
            )
        idx = self.setting.parts[part]
        base = None
        if training and augment is not None:
            base = augment
            if getattr(augment, "per_image", False):
                # In memory the batch is the unit: the same operations, vectorised.
                from tfcell.data.fast_augmentation import BatchAugmentation

                base = BatchAugmentation(**vars(augment))
        crop = RandomCrop(self.crop_size, base, random=training, zoom=self.zoom)
        return pipeline.from_arrays(
            self.images[idx], self.setting.labels(part), batch_size=batch_size,
            shuffle=training, augment=crop, seed=seed, output=output,
            domains=None if self.domains is None else self.domains[idx],
            subjects=None if self.subjects is None else self.subjects[idx],
            id_maps=self.id_maps,
        )  # fmt: skip

    def _crops(self, images):
        size = self.crop_size
        height, width = images.shape[1:3]
        if self.tta == "centre":
            top, left = (height - size) // 2, (width - size) // 2
            return [(top, left)]
        top, left = (height - size) // 2, (width - size) // 2
        return [(0, 0), (0, width - size), (height - size, 0), (height - size, width - size),
                (top, left)]  # fmt: skip

    def predict(self, model, part, batch_size):
        images = self.images[self.setting.parts[part]]
        size = self.crop_size
        outputs = []
        for top, left in self._crops(images):
            dataset = (
                tf.data.Dataset.from_tensor_slices(images[:, top : top + size, left : left + size])
                .batch(batch_size)
                .map(lambda x: tf.cast(x, tf.float32), num_parallel_calls=tf.data.AUTOTUNE)
                .prefetch(tf.data.AUTOTUNE)
            )
            outputs.append(np.asarray(training.predict(model, dataset), "float64"))
        if len(outputs) == 1:
            return outputs[0]
        probabilities = np.mean([_softmax(o) for o in outputs], axis=0)
        return np.log(np.maximum(probabilities, 1e-12))


def _softmax(logits):
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def subject_metrics(patients, labels, predictions):
    """Per-patient accuracy and its spread (mean, std, min over patients, and
    how many patients fall below 0.5): the subject-level view of a result."""
    patients = np.asarray(patients).astype(str)
    correct = np.asarray(labels) == np.asarray(predictions)
    per = {p: float(correct[patients == p].mean()) for p in sorted(set(patients.tolist()))}
    values = np.array(list(per.values())) if per else np.zeros(0)
    return {
        "subject_accuracy": per,
        "num_subjects": len(per),
        "subject_accuracy_mean": float(values.mean()) if len(values) else float("nan"),
        "subject_accuracy_std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        "subject_accuracy_min": float(values.min()) if len(values) else float("nan"),
        "subjects_below_half": int((values < 0.5).sum()),
    }


class HeterogeneityTask(tasks.ClassificationTask):
    """`ClassificationTask` on crops with TTA, a validation-loss curve and
    per-patient results (see the module docstring)."""

    def prepare(self, setting, config, cache_dir=None):
        return CroppedSettingData(
            setting, config.data.image_size, config.data.crop_size, cache_dir,
            tta=config.evaluation.tta, zoom=config.training.get("zoom", 0.0),
        )  # fmt: skip

    def fit_kwargs(self, job, batch_size):
        """The validation fold as `validation_data` (centre crops), so History
        holds the validation L_H and its terms per epoch (Fig. A1)."""
        if not job.config.training.get("validation_loss", True):
            return {}
        return {"validation_data": job.data.dataset("val", batch_size, job.method.batches)}

    def run_job(self, job):
        setting = job.data.setting
        if hasattr(job.method, "with_subject_labels"):
            from tfcell import training

            train = setting.parts["train"]
            labels = training.subject_labels_from(
                job.data.subjects[train], setting.labels("train"), job.data.id_maps["subject"]
            )
            job = dataclasses.replace(
                job,
                method=job.method.with_subject_labels(
                    labels, job.config.schedule, job.config.centers.get("learning_rate", 0.0)
                ),
            )
        result = super().run_job(job)
        patients = setting.records["patient"].astype(str).to_numpy()
        for record in result.records:
            part = record["test_set"]
            scores = result.outputs[f"{part}_scores"]
            labels = result.outputs[f"{part}_labels"]
            record["tta"] = job.data.tta
            record.update(
                subject_metrics(patients[setting.parts[part]], labels, scores.argmax(axis=1))
            )
        return result


# Keep the crop order in one place: `tfcell.data.augmentation.five_crop` is the
# library's definition; `CroppedSettingData._crops` must agree with it (tested).
FIVE_CROP = augmentation_lib.five_crop
