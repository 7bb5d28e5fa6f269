"""Callbacks that feed the training loop's state to losses (epoch-annealed ECE),
keep BatchNorm statistics in step with the weights (precise BN) and run a
two-stage learning-rate schedule (Goswami et al.)."""

import itertools
import math
import warnings

import keras
import numpy as np
import tensorflow as tf

__all__ = [
    "EpochVariableCallback",
    "PreciseBatchNormCallback",
    "TwoStageSchedule",
    "batch_norm_layers",
]


class EpochVariableCallback(keras.callbacks.Callback):
    """Writes the current epoch into a loss's `epoch` variable at each epoch start.

    Losses whose schedule depends on the epoch (`ExclusiveCrossentropyLoss`'s
    two annealed thresholds) hold the epoch in a non-trainable
    `keras.Variable`; the compiled train step reads it, so assigning it
    here changes the loss without retracing. The epoch written is the
    absolute one that `fit` reports (it includes `initial_epoch`).

    Args:
        target: an object with an `epoch` `keras.Variable` (a loss), a
            `keras.Variable` itself, or None to use `model.loss` (the
            compiled loss, or every value of a dict/list of losses that has
            an `epoch` variable).

    Example:
    ```python
    loss = tfcell.losses.ExclusiveCrossentropyLoss()
    model.compile(optimizer="adam", loss=loss)
    model.fit(ds, epochs=300, callbacks=[tfcell.training.EpochVariableCallback(loss)])
    ```
    """

    def __init__(self, target=None):
        super().__init__()
        self.target = target

    def _variables(self):
        if self.target is not None:
            candidates = [self.target]
        else:
            loss = getattr(self.model, "loss", None)
            if isinstance(loss, dict):
                candidates = list(loss.values())
            elif isinstance(loss, (list, tuple)):
                candidates = list(loss)
            else:
                candidates = [loss]
        variables = []
        for candidate in candidates:
            if isinstance(candidate, keras.Variable):
                variables.append(candidate)
            elif isinstance(getattr(candidate, "epoch", None), keras.Variable):
                variables.append(candidate.epoch)
        if not variables:
            raise ValueError(
                "EpochVariableCallback found no epoch variable: pass a loss with an "
                "`epoch` keras.Variable (e.g. ExclusiveCrossentropyLoss) or the "
                f"variable itself; received target={self.target!r}."
            )
        return variables

    def on_epoch_begin(self, epoch, logs=None):
        for variable in self._variables():
            variable.assign(float(epoch))


def batch_norm_layers(model):
    """The trainable `BatchNormalization` layers of `model`, nested models included.

    Only trainable ones: a frozen BatchNorm runs in inference mode even under
    `training=True` and keeps its statistics.
    """
    found, stack, seen = [], [model], set()
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, keras.layers.BatchNormalization):
            if layer.trainable:
                found.append(layer)
        stack.extend(reversed(getattr(layer, "layers", None) or []))
    return found


def _images(batch):
    """The images of a batch: `(images, labels, ...)`, `{"image": ...}` or images."""
    if isinstance(batch, (tuple, list)):
        batch = batch[0]
    if isinstance(batch, dict):
        if "image" not in batch:
            raise ValueError(
                "PreciseBatchNormCallback needs image batches; a dict batch must have an "
                f"'image' key, received keys {sorted(batch)}. Pass a tfcell.data.pipeline "
                "dataset (tuple or dict output)."
            )
        batch = batch["image"]
    return batch


class PreciseBatchNormCallback(keras.callbacks.Callback):
    """Re-estimates BatchNorm moving statistics before each evaluation ("precise BN").

    A BatchNorm's moving mean and variance are an exponential average over the
    last few training batches, computed with the weights of those batches. In
    short Adam runs (the CPU configs) the weights move faster than that average
    follows, so inference-mode accuracy swings from epoch to epoch although the
    same weights with batch statistics do not (`tfcell.models.small_cnn` on PBC:
    0.83, 0.81, 0.60, 0.85 against 0.86, 0.91, 0.90, 0.94). Before every
    evaluation, this callback sets each trainable BatchNorm's statistics to the
    plain average of the batch means and variances over `num_batches` training
    batches, computed with the current weights (forward passes only, no weight
    update):

        for each BatchNorm layer l:
            l.moving_mean = mean_k(batch_mean_k(l)); l.moving_variance = mean_k(batch_var_k(l))

    It runs when `fit` evaluates (`on_test_begin`, so `val_*` logs, early
    stopping and checkpoints see the new statistics), at the end of epochs without
    validation and at the end of training, each time only if the weights changed
    since the last estimate. Its cost is `num_batches` compiled forward passes.

    Works with compiled models and with the `tfcell.training` trainers: each
    batch's images are `batch[0]` of a tuple or `batch["image"]` of a dict, and
    the model is called as `model(images, training=True)`. BatchNorm layers of
    nested models are found through `.layers`; layers that `model(...)` does not
    reach (e.g. a domain discriminator's) keep their statistics.

    Args:
        data: the training batches: a `tf.data.Dataset` (or any re-iterable)
            yielding `(images, labels)` tuples, dict batches with "image", or
            image tensors; usually the dataset given to `fit`.
        num_batches: batches to average over (fvcore's precise BN defaults to
            200; 20 batches of 32 images sufficed for `small_cnn` on PBC,
            `benchmarks/bn_inference.py`).

    Example:
    ```python
    train = tfcell.data.pipeline.from_arrays(x, y, batch_size=32)
    model.fit(train, validation_data=val, epochs=6,
              callbacks=[tfcell.training.PreciseBatchNormCallback(train)])
    ```

    Reference:
        - [Wu & Johnson, 2021](https://arxiv.org/abs/2105.07576), Sec. 3 ("precise BN")
    """

    def __init__(self, data, num_batches=20):
        super().__init__()
        if not isinstance(num_batches, int) or num_batches < 1:
            raise ValueError(
                f"PreciseBatchNormCallback: num_batches must be a positive int; received "
                f"{num_batches!r}. Use e.g. 20."
            )
        self.data = data
        self.num_batches = num_batches
        self._stale = False
        self._forward = None
        self._forward_model = None

    def _batches(self):
        if isinstance(self.data, tf.data.Dataset):
            return self.data.take(self.num_batches)
        return itertools.islice(iter(self.data), self.num_batches)

    def update(self):
        """Re-estimates the statistics now; returns the number of batches used."""
        layers = batch_norm_layers(self.model)
        self._stale = False
        if not layers:
            return 0
        if self._forward is None or self._forward_model is not self.model:
            # Traced (below) while every momentum is 0, so each call sets the moving
            # statistics to that batch's; fit's own train function keeps its momentum.
            model = self.model
            self._forward = tf.function(
                lambda images: model(images, training=True), reduce_retracing=True
            )
            self._forward_model = model
        momenta = [layer.momentum for layer in layers]
        saved = [(bn.moving_mean.numpy(), bn.moving_variance.numpy()) for bn in layers]
        sums = [[np.zeros_like(m), np.zeros_like(v)] for m, v in saved]
        count = 0
        try:
            for layer in layers:
                layer.momentum = 0.0
            for batch in self._batches():
                self._forward(_images(batch))
                for layer, total in zip(layers, sums):
                    total[0] += layer.moving_mean.numpy()
                    total[1] += layer.moving_variance.numpy()
                count += 1
        finally:
            for layer, momentum in zip(layers, momenta):
                layer.momentum = momentum
            if count == 0:
                for layer, (mean, variance) in zip(layers, saved):
                    layer.moving_mean.assign(mean)
                    layer.moving_variance.assign(variance)
        if count == 0:
            raise ValueError(
                "PreciseBatchNormCallback: `data` yielded no batch; pass the training "
                "dataset (a tf.data.Dataset or another re-iterable of batches)."
            )
        for layer, (mean, variance) in zip(layers, sums):
            layer.moving_mean.assign(mean / count)
            layer.moving_variance.assign(variance / count)
        return count

    def on_train_begin(self, logs=None):
        self._stale = False

    def on_train_batch_end(self, batch, logs=None):
        self._stale = True

    def on_test_begin(self, logs=None):
        if self._stale:
            self.update()

    def on_epoch_end(self, epoch, logs=None):
        if self._stale:
            self.update()

    def on_train_end(self, logs=None):
        if self._stale:
            self.update()


class TwoStageSchedule(keras.callbacks.Callback):
    """Two-stage training: a high learning rate until the loss stops improving,
    then the best checkpoint resumed at a low one (Goswami et al., Sec. 5.1).

    ```python
    lr = stage1_lr                                  # set at the start of fit
    for each epoch:
        logs["stage"], logs["learning_rate"] = stage, lr
        if logs[monitor] improves on best by > min_delta: best, best_weights = it, weights
        elif patience epochs without improvement (or stage 1 ran stage1_max_epochs):
            weights = best_weights                  # the stage's best checkpoint
            if stage == 1: stage, lr, best = 2, stage2_lr, inf   # resume from it
            else: stop training
    at the end of fit: weights = best_weights of the current stage
    ```

    Works with any compiled Keras model whose optimizer has a settable
    learning rate (a float or variable, not a `LearningRateSchedule`); the
    new rate is assigned to the optimizer's variable, so the compiled train
    step is not retraced. Weights are saved in memory (`model.get_weights()`,
    BatchNorm statistics and trainer centres included). Each epoch's logs get
    `stage` (1 or 2) and `learning_rate`, so `History` holds them and a
    report can split the curves by stage; the attributes `stage_start`,
    `stage_end` (first and last epoch of each stage, inclusive),
    `best_epoch` and `best_value` (per stage) say the same after `fit`.

    Args:
        stage1_lr: learning rate of stage 1 (paper: 1e-3, Adam).
        stage2_lr: learning rate of stage 2 (paper: 1e-5).
        monitor: the log to watch; the paper watches the training loss
            (`"loss"`); `"val_loss"` or another metric also works.
        patience: epochs without improvement that end a stage (the paper:
            "before the loss started diverging", no number given).
        min_delta: smallest change that counts as an improvement.
        mode: `"min"` (losses) or `"max"` (accuracies).
        stop_after_stage2: stop `fit` when stage 2's patience runs out (else
            keep training at `stage2_lr` until `epochs`).
        stage1_max_epochs: optional epoch budget of stage 1: stage 2 starts
            after this many stage-1 epochs even if the loss still improves
            (None: only the loss decides, as in the paper). For short CPU
            schedules, where the training loss rarely stops falling within
            the budget and stage 2 would otherwise never run.

    Note:
        The paper does not say whether its checkpoint held the optimizer
        state; here only the model weights are restored, the optimizer's
        moments carry on. Stage 2 keeps its own best (its first epoch is
        compared with nothing), and `fit` ends with that best. Calling `fit`
        again starts over at stage 1.

    Example:
    ```python
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    schedule = tfcell.training.TwoStageSchedule(patience=5)
    history = trainer.fit(train, validation_data=val, epochs=200, callbacks=[schedule])
    history.history["stage"], schedule.stage_start   # {1: 0, 2: 37}
    ```

    Reference:
    - Goswami et al., 2020, "Heterogeneity loss to handle intersubject and
      intrasubject variability in cancer" (ICLR 2020 AI4AH workshop), Sec. 5.1
    """

    def __init__(
        self,
        stage1_lr=1e-3,
        stage2_lr=1e-5,
        monitor="loss",
        patience=3,
        min_delta=0.0,
        mode="min",
        stop_after_stage2=True,
        stage1_max_epochs=None,
    ):
        super().__init__()
        if stage1_max_epochs is not None and (
            not isinstance(stage1_max_epochs, int) or stage1_max_epochs < 1
        ):
            raise ValueError(
                "TwoStageSchedule: stage1_max_epochs must be a positive int or None; "
                f"received {stage1_max_epochs!r}."
            )
        self.stage1_max_epochs = stage1_max_epochs
        for name, value in (("stage1_lr", stage1_lr), ("stage2_lr", stage2_lr)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(
                    f"TwoStageSchedule: {name} must be a positive float; received {value!r} "
                    "(the paper: stage1_lr=1e-3, stage2_lr=1e-5)."
                )
        if not isinstance(patience, int) or patience < 1:
            raise ValueError(
                f"TwoStageSchedule: patience must be a positive int; received {patience!r}."
            )
        if float(min_delta) < 0:
            raise ValueError(f"TwoStageSchedule: min_delta must be >= 0; received {min_delta!r}.")
        if mode not in ("min", "max"):
            raise ValueError(f"TwoStageSchedule: mode must be 'min' or 'max'; received {mode!r}.")
        self.stage1_lr = float(stage1_lr)
        self.stage2_lr = float(stage2_lr)
        self.monitor = monitor
        self.patience = patience
        self.min_delta = float(min_delta)
        self.mode = mode
        self.stop_after_stage2 = bool(stop_after_stage2)
        self._reset()

    def _reset(self):
        self.stage = 1
        self.stage_start = {}
        self.stage_end = {}
        self.best_epoch = {}
        self.best_value = {}
        self._wait = 0
        self._best = math.inf if self.mode == "min" else -math.inf
        self._best_weights = None

    def _set_learning_rate(self, value):
        optimizer = self.model.optimizer
        try:
            optimizer.learning_rate = value
        except (TypeError, ValueError, AttributeError) as error:
            raise ValueError(
                "TwoStageSchedule sets the optimizer's learning rate; compile with a "
                "float learning rate (e.g. keras.optimizers.Adam(1e-3)), not a "
                f"LearningRateSchedule; received {type(optimizer).__name__}."
            ) from error

    def _improved(self, value):
        if self.mode == "min":
            return value < self._best - self.min_delta
        return value > self._best + self.min_delta

    def on_train_begin(self, logs=None):
        self._reset()
        self._set_learning_rate(self.stage1_lr)

    def on_epoch_begin(self, epoch, logs=None):
        self.stage_start.setdefault(self.stage, epoch)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        logs["stage"] = self.stage
        logs["learning_rate"] = float(
            keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        )
        self.stage_end[self.stage] = epoch
        value = logs.get(self.monitor)
        if value is None:
            warnings.warn(
                f"TwoStageSchedule: `{self.monitor}` is not in the logs "
                f"({sorted(logs)}); epoch {epoch} does not count.",
                stacklevel=2,
            )
            return
        value = float(value)
        budget_spent = (
            self.stage == 1
            and self.stage1_max_epochs is not None
            and epoch - self.stage_start[1] + 1 >= self.stage1_max_epochs
        )
        if self._improved(value):
            self._best, self._wait = value, 0
            self._best_weights = self.model.get_weights()
            self.best_epoch[self.stage], self.best_value[self.stage] = epoch, value
            if not budget_spent:
                return
        else:
            self._wait += 1
        if self._wait < self.patience and not budget_spent:
            return
        if self.stage == 1:
            # Resume from the stage-1 checkpoint at the low rate.
            if self._best_weights is not None:  # None: no finite loss yet.
                self.model.set_weights(self._best_weights)
            self.stage = 2
            self._wait = 0
            self._best = math.inf if self.mode == "min" else -math.inf
            self._set_learning_rate(self.stage2_lr)
        elif self.stop_after_stage2:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self._best_weights is not None:
            self.model.set_weights(self._best_weights)
