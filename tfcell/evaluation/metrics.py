"""Classification metrics of the CFAL paper (Tables IV-VI, XIII, XIV; Figs. 4, 5).

Plain NumPy / scikit-learn on integer labels and per-class scores, so every
model, head and ensemble is scored by the same code.
"""

import warnings

import keras
import numpy as np
from sklearn import metrics as skm

__all__ = [
    "ScoresAccuracy",
    "classification_metrics",
    "per_class_metrics",
    "classwise_auroc",
    "normalized_confusion_matrix",
]


def _labels(y_true):
    y_true = np.asarray(y_true)
    if y_true.ndim == 2 and y_true.shape[1] > 1:  # One-hot.
        return y_true.argmax(axis=1)
    return y_true.reshape(-1).astype("int64")


def classification_metrics(y_true, y_pred, num_classes):
    """Macro precision, recall and F1, accuracy and balanced accuracy.

    Args:
        y_true: integer labels `(N,)` (or one-hot `(N, C)`).
        y_pred: predicted integer labels `(N,)`.
        num_classes: C; every class counts in the macro averages, present or not
            (a class never predicted has precision 0, not a warning).

    Returns:
        A dict of floats: `precision`, `recall`, `f1` (macro over C classes),
        `accuracy` and `balanced_accuracy` (fractions in [0, 1]).
    """
    y_true, y_pred = _labels(y_true), np.asarray(y_pred).reshape(-1)
    labels = list(range(num_classes))
    precision, recall, f1, _ = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="macro", zero_division=0
    )
    present = np.unique(y_true)
    per_class_recall = skm.recall_score(
        y_true, y_pred, labels=present, average=None, zero_division=0
    )
    return {
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "accuracy": float(np.mean(y_true == y_pred)),
        "balanced_accuracy": float(np.mean(per_class_recall)),
    }


def per_class_metrics(y_true, y_pred, num_classes):
    """F1-micro, F1-macro over the classes present, and per-class recall.

    A test domain may lack classes (BCCD has 3 basophils, JTSC 1; INT-20 lacks
    some of the 13): `f1` of `classification_metrics` counts every class of
    the label space (an absent class never predicted scores 0), while
    `f1_macro_present` averages over the classes present in `y_true` (the
    BoDA poster's F1-macro, sklearn's default label set when nothing
    predicts an absent class). `f1_micro` equals accuracy for single-label
    predictions. `f1_weighted` is the per-class F1 averaged with the
    classes' support as weights (sklearn `average="weighted"`: the C-NMC
    challenge's and the heterogeneity-loss paper's weighted-F1).

    Returns:
        A dict: `f1_micro`, `f1_macro_present`, `f1_weighted`,
        `recall_per_class` (a list of C values, None for a class absent from
        `y_true`) and `support_per_class`.
    """
    y_true, y_pred = _labels(y_true), np.asarray(y_pred).reshape(-1)
    present = sorted(set(y_true.tolist()))
    recall = skm.recall_score(
        y_true, y_pred, labels=list(range(num_classes)), average=None, zero_division=0
    )
    support = np.bincount(y_true, minlength=num_classes)
    return {
        "f1_micro": float(
            skm.f1_score(y_true, y_pred, labels=list(range(num_classes)), average="micro")
        ),
        "f1_macro_present": float(
            skm.f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)
        ),
        "f1_weighted": float(
            skm.f1_score(
                y_true, y_pred, labels=list(range(num_classes)), average="weighted",
                zero_division=0,
            )
        ),
        "recall_per_class": [
            float(r) if support[c] else None for c, r in enumerate(recall.tolist())
        ],
        "support_per_class": [int(n) for n in support.tolist()],
    }


def classwise_auroc(y_true, probabilities):
    """One-vs-rest AUROC per class (Table VI).

    Args:
        y_true: integer labels `(N,)`.
        probabilities: per-class scores `(N, C)` (any monotone score works).

    Returns:
        A list of C floats; NaN for a class absent from `y_true` or present alone.
    """
    y_true = _labels(y_true)
    probabilities = np.asarray(probabilities)
    out = []
    for c in range(probabilities.shape[1]):
        positives = y_true == c
        if positives.all() or not positives.any():
            out.append(float("nan"))
        else:
            out.append(float(skm.roc_auc_score(positives, probabilities[:, c])))
    return out


def normalized_confusion_matrix(y_true, y_pred, num_classes):
    """Confusion matrix normalised over true classes (rows sum to 1; Figs. 4, 5).

    A class absent from `y_true` gives a row of zeros.
    """
    matrix = skm.confusion_matrix(
        _labels(y_true), np.asarray(y_pred).reshape(-1), labels=list(range(num_classes))
    ).astype("float64")
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)


@keras.saving.register_keras_serializable(package="tfcell")
class ScoresAccuracy(keras.metrics.Mean):
    """Deprecated: use `metrics=["accuracy"]`, which now gives the same number.

    The accuracy of the argmax over the first `num_classes` head columns. It
    existed for the feature-norm column that `CosineHead(return_norms=True)`
    appended; every head now outputs `(N, C)`, so Keras' "accuracy"
    (`sparse_categorical_accuracy` for integer labels) serves every head. Kept
    so that saved models and configs that name it still load.

    Args:
        num_classes: C.
        name: metric name.
    """

    def __init__(self, num_classes, name="accuracy", dtype=None):
        warnings.warn(
            "tfcell.evaluation.ScoresAccuracy is deprecated: compile with "
            'metrics=["accuracy"], which gives the same number for every tfcell head.',
            DeprecationWarning,
            stacklevel=2,
        )
        super().__init__(name=name, dtype=dtype)
        self.num_classes = num_classes

    def update_state(self, y_true, y_pred, sample_weight=None):
        ops = keras.ops
        predicted = ops.argmax(y_pred[:, : self.num_classes], axis=-1)
        y_true = ops.convert_to_tensor(y_true)
        if len(y_true.shape) == 2 and y_true.shape[-1] not in (None, 1):
            y_true = ops.argmax(y_true, axis=-1)
        y_true = ops.reshape(ops.cast(y_true, predicted.dtype), (-1,))
        correct = ops.cast(ops.equal(predicted, y_true), self.dtype)
        return super().update_state(correct, sample_weight=sample_weight)

    def get_config(self):
        return {"num_classes": self.num_classes, "name": self.name, "dtype": self.dtype}
