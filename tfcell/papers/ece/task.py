"""One job of the sparse-shot nuclei study: keep a fraction of each training
tile's nuclei, train on random crops, evaluate whole test tiles.

    kept, _ = sparsify_annotations(tile.instances, fraction, seed)   # per tile
    for epoch: crops_per_tile random crops of every training tile (crop_size,
               the supplement's nearest power of two), one of the 8 dihedral
               transforms on image and target together, then blur / noise /
               stain perturbation on the image (p = 0.5 each, supplement Sec. 2)
    targets:   segmentation: kept nucleus pixels = 1, every other pixel 0
               detection:    the grid of the kept nuclei's boxes
                             (`tfcell.models.encode_instances`)
    evaluate:  every test tile whole, with ALL its nuclei: Dice and AJI of the
               instances of the predicted mask (connected components,
               `predict_instances`, overlapping tiles); detection precision,
               recall and F1 at IoU 0.5 after NMS at 0.2, counts summed over tiles.

The model is the one at the end of the schedule (the supplement gives no
selection rule; ECE's annealing defines the schedule); validation tiles are
measured, not used for selection.
"""

import time

import keras
import numpy as np
import tensorflow as tf

from tfcell import training
from tfcell.experiments import methods as methods_lib
from tfcell.experiments import tasks
from tfcell.papers.ece import data as data_lib

__all__ = ["NucleiData", "NucleiTask", "crop_batches"]

_TILE_CACHE = {}


class NucleiData:
    """A setting's tiles, decoded once per process (shared by every fraction)."""

    def __init__(self, setting, config):
        key = tuple(setting.records["name"].astype(str)) + (str(setting.records.attrs.get("root")),)
        if key not in _TILE_CACHE:
            _TILE_CACHE.clear()  # One table at a time.
            _TILE_CACHE[key] = data_lib.load_tiles(setting.records)
        self.tiles = _TILE_CACHE[key]
        self.setting = setting
        self.fraction = float(setting.fraction)

    def part(self, name):
        return [self.tiles[i] for i in self.setting.parts[name]]


def _dihedral(rng, image, target):
    k = int(rng.integers(4))
    image, target = np.rot90(image, k), np.rot90(target, k)
    if rng.random() < 0.5:
        image, target = image[:, ::-1], target[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(target)


def crop_batches(images, kept_maps, crop, batch_size, crops_per_tile, rng, kind, stride=8):
    """One epoch of `(images, targets)` batches of random crops (NumPy).

    Args:
        images: list of uint8 (H, W, 3) training tiles.
        kept_maps: their sparse instance maps (only the kept nuclei).
        crop: crop side (a multiple of the networks' stride).
        batch_size, crops_per_tile: batches of random crops, `crops_per_tile`
            per tile per epoch.
        rng: `np.random.Generator`.
        kind: "segmentation" (targets: (B, crop, crop) int32, kept nuclei 1) or
            "detection" (targets: the (B, crop/8, crop/8, 6) box grid).
    """
    from tfcell import models

    order = rng.permutation(np.repeat(np.arange(len(images)), crops_per_tile))
    for start in range(0, len(order), batch_size):
        xs, ys = [], []
        for t in order[start : start + batch_size]:
            image, kept = images[t], kept_maps[t]
            h, w = kept.shape
            if h < crop or w < crop:
                raise ValueError(
                    f"A training tile of {h}x{w} px is smaller than config.data.crop_size "
                    f"{crop}; lower the crop size."
                )
            y0, x0 = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
            x, y = _dihedral(rng, image[y0 : y0 + crop, x0 : x0 + crop],
                             kept[y0 : y0 + crop, x0 : x0 + crop])  # fmt: skip
            xs.append(x)
            if kind == "segmentation":
                ys.append((y > 0).astype("int32"))
            else:
                ys.append(models.encode_instances(y, stride))
        yield np.stack(xs).astype("float32"), np.stack(ys)


def _photometric(config, seed):
    """Blur, Gaussian noise (sigma 5) and stain perturbation, p = 0.5 each."""
    from tfcell.data import augmentation_layers as layers

    steps = []
    if config.training.get("augment", True):
        steps = [
            layers.RandomKernelBlur((3, 5, 7), rate=0.5, seed=seed),
            layers.RandomGaussianNoise(5.0, rate=0.5, seed=seed + 1),
            layers.RandomStainPerturbation(rate=0.5, seed=seed + 2),
        ]
    return keras.layers.Pipeline(steps) if steps else None


class NucleiTask:
    """Trains and evaluates one nuclei method on one fraction (see the module docstring)."""

    def prepare(self, setting, config, cache_dir=None):
        return NucleiData(setting, config)

    def run_job(self, job):
        from tfcell.data import nuclei

        config, data, method = job.config, job.data, job.method
        keras.utils.set_random_seed(job.seed)
        train_tiles = data.part("train")
        kept_maps, kept, total = [], 0, 0
        for i, tile in enumerate(train_tiles):
            # The same nuclei are kept for every method of a (fraction, repeat).
            seed = 1000 * job.seed + i + int(round(100 * data.fraction))
            kept_map, _ = nuclei.sparsify_annotations(tile.instances, data.fraction, seed=seed)
            kept_maps.append(kept_map)
            kept += len(np.unique(kept_map)) - 1
            total += len(np.unique(tile.instances)) - 1
        hp = {**job.hp, "seed": job.seed}
        built = method.build(None, hp, config)
        opt = config.optimizer
        optimizer = keras.optimizers.Adam(
            learning_rate=opt.learning_rate, beta_1=opt.beta_1, beta_2=opt.beta_2,
            gradient_accumulation_steps=int(opt.accumulation) if opt.accumulation > 1 else None,
        )  # fmt: skip
        built.model.compile(optimizer=optimizer, loss=built.loss)
        dataset = self._dataset(config, method.kind, [t.image for t in train_tiles], kept_maps,
                                job.seed)  # fmt: skip
        callbacks = [tasks.EpochTimer()]
        if built.callbacks is not None:
            callbacks += list(built.callbacks(built.model, None))
        start = time.perf_counter()
        history = training.fit(
            built.model, dataset, epochs=int(config.training.epochs), callbacks=callbacks,
            verbose=config.training.verbose if job.verbose is None else job.verbose,
        )  # fmt: skip
        train_time = time.perf_counter() - start
        losses = history.history.get("loss", [])
        if not np.all(np.isfinite(losses)):
            raise FloatingPointError(f"{job.name} on {job.key}: non-finite loss {losses}.")
        times = callbacks[0].times
        base = {
            "method": job.name,
            "title": method.title,
            "kind": "single",
            "task": method.kind,
            "fraction": data.fraction,
            "hparams": dict(job.hp),
            "epochs": len(losses),
            "train_history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
            "epoch_time_s": float(np.mean(times[1:] if len(times) > 1 else times)),
            "train_time_s": train_time,
            "num_params": int(built.model.count_params()),
            "train_tiles": len(train_tiles),
            "train_nuclei": int(total),
            "train_nuclei_kept": int(kept),
            "true_instance_tiles": int(sum(t.true_instances for t in data.tiles)),
            "num_tiles_total": len(data.tiles),
        }
        records, outputs = [], {}
        for part in ["val"] + list(data.setting.test_parts):
            tiles = data.part(part)
            if method.kind == "segmentation":
                scores, maps = _segment(built.model, tiles, config)
            else:
                scores, maps = _detect(built.model, tiles, config)
            records.append({**base, "test_set": part, "num_test": len(tiles), **scores})
            if part == "test" and maps is not None:
                outputs["test_map0"] = maps
        return tasks.JobResult(records, outputs, built.model)

    def _dataset(self, config, kind, images, kept_maps, seed):
        crop = int(config.data.crop_size)
        batch = int(config.training.batch_size)
        per_tile = int(config.training.crops_per_tile)
        photometric = _photometric(config, seed)
        epoch = [0]

        def generate():
            rng = np.random.default_rng([seed, epoch[0]])
            epoch[0] += 1
            yield from crop_batches(images, kept_maps, crop, batch, per_tile, rng, kind)

        target = (
            tf.TensorSpec((None, crop, crop), tf.int32)
            if kind == "segmentation"
            else tf.TensorSpec((None, crop // 8, crop // 8, 6), tf.float32)
        )
        steps = -(-len(images) * per_tile // batch)
        dataset = tf.data.Dataset.from_generator(
            generate,
            output_signature=(tf.TensorSpec((None, crop, crop, 3), tf.float32), target),
        ).apply(tf.data.experimental.assert_cardinality(steps))
        if photometric is not None:
            # In the tf.data graph (an eager call per batch cost more than the step).
            dataset = dataset.map(lambda x, y: (photometric(x, training=True), y))
        return dataset.prefetch(2)


def _segment(model, tiles, config):
    from tfcell.evaluation import segmentation

    crop = int(config.data.crop_size)
    dice, aji, first = [], [], None
    for tile in tiles:
        probability, instances = segmentation.predict_instances(
            model, tile.image, tile=crop, overlap=crop // 8,
            min_size=int(config.evaluation.min_size),
        )  # fmt: skip
        dice.append(segmentation.dice(tile.instances > 0, probability > 0.5))
        aji.append(segmentation.aggregated_jaccard_index(tile.instances, instances))
        if first is None:
            first = np.round(probability * 255).astype("uint8")
    return {
        "dice": float(np.mean(dice)) if dice else float("nan"),
        "aji": float(np.mean(aji)) if aji else float("nan"),
        "dice_per_tile": [float(d) for d in dice],
        "aji_per_tile": [float(a) for a in aji],
        "tiles": [t.name for t in tiles],
    }, first


def _detect(model, tiles, config):
    from tfcell import models
    from tfcell.data import nuclei
    from tfcell.evaluation import detection

    tp = fp = fn = 0
    first = None
    for tile in tiles:
        h, w = tile.instances.shape
        ph, pw = (-h) % 8, (-w) % 8
        image = np.pad(tile.image, ((0, ph), (0, pw), (0, 0)), mode="reflect")
        ((boxes, scores),) = models.detect(
            model, image[None].astype("float32"),
            iou_threshold=float(config.evaluation.nms_threshold),
            score_threshold=float(config.evaluation.score_threshold),
        )  # fmt: skip
        boxes = np.clip(np.asarray(boxes, "float64"), 0, [h, w, h, w])
        true = nuclei.instances_from_mask(tile.instances)["boxes"]
        s = detection.detection_scores(boxes, scores, true, float(config.evaluation.iou_threshold))
        tp, fp, fn = tp + s["tp"], fp + s["fp"], fn + s["fn"]
        if first is None:
            first = np.concatenate([boxes, np.asarray(scores, "float64")[:, None]], axis=1)
    out = detection.precision_recall_f1(tp, fp, fn)
    return {**{k: float(v) for k, v in out.items()}, "tp": int(tp), "fp": int(fp),
            "fn": int(fn), "tiles": [t.name for t in tiles]}, first  # fmt: skip


# The harness's `methods.Built` is what `NucleiMethod.build` returns.
Built = methods_lib.Built
