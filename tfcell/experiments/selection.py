"""Model selection that tracks what is compared, and a NaN stop that says where.

Every method of a comparison is selected by the same criterion: after each
epoch, `ValidationSelection` predicts the validation part in inference mode and
computes macro-F1 and accuracy of the margin-free argmax (logged as
`val_macro_f1` and `val_accuracy`, so History, TensorBoard and any other
callback see them); it keeps the weights of the best epoch under
`config.training.selection`, stops after `patience` epochs without
improvement, and restores the best weights at the end of training, whether
training stopped early or ran out of epochs.

Why not `EarlyStopping(monitor="val_loss")`: a loss's value does not track
accuracy across losses (a focal-type weight, for one, rises as the model
improves, so the lowest validation loss can come early), and comparing losses
needs one criterion that tracks what the tables report. docs/papers.md gives
the case that showed it.
"""

import logging
import math

import keras
import numpy as np
from sklearn import metrics as sk_metrics

__all__ = ["SELECTION_METRICS", "NaNLossError", "StopOnNaN", "ValidationSelection"]

logger = logging.getLogger("tfcell.experiments")

SELECTION_METRICS = ("val_macro_f1", "val_accuracy", "none")


class NaNLossError(FloatingPointError):
    """Training produced a non-finite loss; the message names the job and epoch."""


def _scores_to_predictions(scores, num_classes):
    return np.asarray(scores)[:, :num_classes].argmax(axis=1)


class ValidationSelection(keras.callbacks.Callback):
    """Selects the best epoch by validation macro-F1 or accuracy.

    Args:
        predict: `() -> (N, >=C) scores` of the validation part in inference
            mode (e.g. `lambda: model.predict(val_images)`).
        labels: `(N,)` validation labels.
        num_classes: C.
        monitor: "val_macro_f1" or "val_accuracy"; or "none": evaluate and
            log every epoch (validation curves) but select nothing, stop
            nothing and restore nothing: the method's own callbacks decide
            which weights the model ends with (e.g. a
            `tfcell.training.TwoStageSchedule`, which keeps the best epoch by
            training loss, so that the validation fold stays an honest
            estimate). `best_epoch` is then the last epoch.
        patience: epochs without improvement before stopping (0 = never stop).
        min_delta: the smallest improvement that counts.

    Attributes (after training):
        best_epoch: 0-based epoch whose weights the model now holds.
        best_value: its monitored value.
        history: per epoch `{"val_macro_f1", "val_accuracy"}`.
    """

    def __init__(self, predict, labels, num_classes, monitor="val_macro_f1", patience=5,
                 min_delta=0.0):  # fmt: skip
        super().__init__()
        if monitor not in SELECTION_METRICS:
            raise ValueError(
                f"selection monitor must be one of {SELECTION_METRICS}; received {monitor!r}."
            )
        self.predict = predict
        self.labels = np.asarray(labels).reshape(-1)
        self.num_classes = int(num_classes)
        self.monitor = monitor
        self.patience = int(patience)
        self.min_delta = float(min_delta)

    def on_train_begin(self, logs=None):
        self.best_value = -math.inf
        self.best_epoch = -1
        self.best_weights = None
        self.wait = 0
        self.history = []

    def evaluate(self):
        predictions = _scores_to_predictions(self.predict(), self.num_classes)
        labels = list(range(self.num_classes))
        return {
            "val_macro_f1": float(
                sk_metrics.f1_score(
                    self.labels, predictions, labels=labels, average="macro", zero_division=0
                )
            ),
            "val_accuracy": float(np.mean(predictions == self.labels)) if len(self.labels) else 0.0,
        }

    def on_epoch_end(self, epoch, logs=None):
        values = self.evaluate()
        self.history.append(values)
        if logs is not None:
            logs.update(values)
        if self.monitor == "none":
            self.best_value, self.best_epoch = values["val_macro_f1"], epoch
            return
        value = values[self.monitor]
        if value > self.best_value + self.min_delta or self.best_weights is None:
            self.best_value, self.best_epoch = value, epoch
            self.best_weights = self.model.get_weights()
            self.wait = 0
        else:
            self.wait += 1
            if self.patience and self.wait >= self.patience:
                self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)
            self.best_weights = None  # Free the copy.


class StopOnNaN(keras.callbacks.Callback):
    """Stops training at the first non-finite loss and remembers where.

    `keras.callbacks.TerminateOnNaN` stops too but says only the batch; the
    harness raises `NaNLossError` naming the method, setting and epoch (see
    `failure`).

    Args:
        where: a description of the job for the message.
    """

    def __init__(self, where=""):
        super().__init__()
        self.where = where
        self.failure = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or self.failure is not None:
            return
        loss = float(np.asarray(loss))
        if not math.isfinite(loss):
            self.failure = (
                f"{self.where}: the training loss became {loss} at epoch {self._epoch + 1}, "
                f"batch {batch + 1}. Check the inputs (labels in [0, C), finite images), lower "
                "the learning rate, or use float32; the run stops here and resumes from this "
                "job when re-run."
            )
            logger.error(self.failure)
            self.model.stop_training = True

    def check(self):
        if self.failure is not None:
            raise NaNLossError(self.failure)
