"""Calibrated class probabilities from any head: logits, temperature scaling, ECE.

Every `tfcell.models.build_classifier` head outputs `(N, C)` per-class scores
whose argmax is the prediction; `to_logits` turns them into logits (whose
softmax is the head's own probability reading), `fit_temperature` fits Guo et
al.'s temperature on validation data, and `probabilities` applies it:

```python
logits = to_logits(model.predict(x_val), head, C, scale)     # float64 (N, C)
T = fit_temperature(logits, y_val)                           # argmin_T NLL(softmax(logits / T))
p = probabilities(to_logits(model.predict(x_test), head, C, scale), T)
expected_calibration_error(p, y_test)                        # 15 equal-width bins
served = tfcell.models.with_probabilities(model, head, T, scale)   # the same inside Keras
```

Heads: "softmax" (logits as they are), "cosine" (`scale * cos`; for the
A-Softmax scores of `CosineHead(sphereface_margin=m)` use scale 1) and
"affinity" (`log d = -||f - w||^2 / sigma`, so softmax gives `d / sum(d)`).
"""

import logging
import math

import keras
import numpy as np
from keras import ops
from scipy import optimize, special

__all__ = [
    "HEADS",
    "TemperatureScaling",
    "expected_calibration_error",
    "fit_temperature",
    "probabilities",
    "to_logits",
]

HEADS = ("softmax", "cosine", "affinity")

logger = logging.getLogger("tfcell.evaluation")

# Affinities exp(-d^2 / sigma) underflow to 0 far from every prototype; their
# log is clipped here (float64's smallest normal number, log = -708.4), so a
# row of zeros gives equal logits (the uniform vector) and the order of the
# positive affinities is kept.
_AFFINITY_FLOOR = float(np.finfo("float64").tiny)
# Search interval of the temperature (Guo et al. report T in about [1, 3]).
_MIN_TEMPERATURE, _MAX_TEMPERATURE = 1e-2, 1e2


def to_logits(scores, head, num_classes, scale=1.0):
    """Logits `(N, C)` from a head's output; softmax of them is its probability reading.

    ```python
    "softmax":  logits = scores
    "cosine":   logits = scale * cos            # the margin-free logits of the loss
    "affinity": logits = log(max(d, tiny))      # = -||f - w||^2 / sigma
    ```

    Args:
        scores: head output `(N, C)`; columns past `num_classes` are dropped.
        head: "softmax" | "cosine" | "affinity".
        num_classes: C.
        scale: the cosine loss's scale s (ignored by the other heads); 1 for
            the A-Softmax scores of `CosineHead(sphereface_margin=m)`, which
            are log-likelihoods already.

    Returns:
        float64 `(N, C)` logits.
    """
    scores = np.asarray(scores, "float64")
    if scores.ndim != 2 or scores.shape[1] < num_classes:
        raise ValueError(
            f"to_logits: scores must be (N, C) with C = {num_classes}; received shape "
            f"{scores.shape}. Pass model.predict(x) of a tfcell classifier."
        )
    scores = scores[:, :num_classes]
    if head == "softmax":
        return scores
    if head == "cosine":
        return float(scale) * scores
    if head == "affinity":
        return np.log(np.maximum(scores, _AFFINITY_FLOOR))
    raise ValueError(f"to_logits: head must be one of {HEADS}; received head={head!r}.")


def probabilities(logits, temperature=1.0):
    """Softmax of `logits / temperature`, float64 `(N, C)`, rows summing to 1.

    Stable for any finite logits (the row maximum is subtracted first).
    """
    temperature = _check_temperature(temperature)
    logits = np.asarray(logits, "float64") / temperature
    if logits.ndim != 2:
        raise ValueError(f"probabilities: logits must be (N, C); received shape {logits.shape}.")
    logits = logits - logits.max(axis=1, keepdims=True) if logits.size else logits
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(logits, labels):
    """Guo et al.'s temperature: the T > 0 minimising the NLL of softmax(logits / T).

    The NLL is convex in 1 / T, so a bounded scalar search over log T in
    `[log 0.01, log 100]` finds its minimum. Degenerate validation sets give
    T = 1 (the logits unchanged) and log why: no sample, one class, every
    prediction correct (the NLL then falls without bound as T -> 0, so the
    set says nothing about over-confidence), or an NLL that does not depend
    on T. A T that is no better than 1 is also replaced by 1.

    Args:
        logits: validation logits `(N, C)` (`to_logits`).
        labels: integer labels `(N,)` (or one-hot `(N, C)`).

    Returns:
        A finite Python float T > 0.

    Reference:
    - [Guo et al., 2017](https://arxiv.org/abs/1706.04599), Sec. 4.2.
    """
    logits = np.asarray(logits, "float64")
    if logits.ndim != 2:
        raise ValueError(f"fit_temperature: logits must be (N, C); received {logits.shape}.")
    num, num_classes = logits.shape
    if num == 0:
        logger.warning("fit_temperature: no validation samples; using T = 1.")
        return 1.0
    labels = _labels(labels, num, num_classes)
    if not np.all(np.isfinite(logits)):
        raise ValueError(
            f"fit_temperature: {int((~np.isfinite(logits)).sum())} logits are NaN or inf; "
            "check the model's predictions (to_logits clips affinities, never giving -inf)."
        )
    if num_classes == 1:
        logger.warning("fit_temperature: one class, the NLL is 0 for every T; using T = 1.")
        return 1.0
    margins = logits[np.arange(num), labels] - np.max(
        np.where(np.eye(num_classes, dtype=bool)[labels], -np.inf, logits), axis=1
    )
    if np.all(margins > 0):
        logger.warning(
            "fit_temperature: every validation prediction is correct, so the NLL keeps "
            "falling as T -> 0; the set cannot measure over-confidence. Using T = 1."
        )
        return 1.0

    def nll(log_t):
        return _nll(logits, labels, math.exp(log_t))

    result = optimize.minimize_scalar(
        nll,
        bounds=(math.log(_MIN_TEMPERATURE), math.log(_MAX_TEMPERATURE)),
        method="bounded",
        options={"xatol": 1e-6},
    )
    temperature = math.exp(float(result.x))
    base = _nll(logits, labels, 1.0)
    best = _nll(logits, labels, temperature)
    if not (math.isfinite(temperature) and math.isfinite(best)) or not best < base - 1e-12:
        logger.warning(
            "fit_temperature: no temperature improves the NLL (%.6g at T = 1); using T = 1.",
            base,
        )
        return 1.0
    if min(abs(temperature - _MIN_TEMPERATURE), abs(temperature - _MAX_TEMPERATURE)) < 1e-3:
        logger.warning(
            "fit_temperature: T = %.4g is at the search bound [%g, %g].",
            temperature,
            _MIN_TEMPERATURE,
            _MAX_TEMPERATURE,
        )
    return temperature


def expected_calibration_error(probabilities, labels, num_bins=15):
    """Expected calibration error over equal-width confidence bins (Guo et al.).

    ```python
    conf_i = max_c p[i, c]; correct_i = argmax_c p[i, c] == y_i
    bin b = (b / B, (b + 1) / B]                    # B = num_bins
    ECE = sum_b |bin b| / N * |mean_{i in b} correct_i - mean_{i in b} conf_i|
    ```

    Args:
        probabilities: `(N, C)` rows summing to 1.
        labels: integer labels `(N,)` (or one-hot `(N, C)`).
        num_bins: B (Guo et al.: 15).

    Returns:
        A float in [0, 1]; NaN for an empty set.
    """
    probs = np.asarray(probabilities, "float64")
    if probs.ndim != 2:
        raise ValueError(
            f"expected_calibration_error: probabilities must be (N, C); received {probs.shape}."
        )
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
        raise ValueError(f"`num_bins` must be a positive integer. Received num_bins={num_bins!r}.")
    if len(probs) == 0:
        return float("nan")
    labels = _labels(labels, len(probs), probs.shape[1])
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype("float64")
    bins = np.clip(np.ceil(confidence * num_bins).astype(int) - 1, 0, num_bins - 1)
    ece = 0.0
    for b in range(num_bins):
        members = bins == b
        if members.any():
            gap = abs(correct[members].mean() - confidence[members].mean())
            ece += members.mean() * gap
    return float(ece)


@keras.saving.register_keras_serializable(package="tfcell")
class TemperatureScaling(keras.layers.Layer):
    """Head scores -> calibrated probabilities, inside a Keras model.

    ```python
    probs = softmax(to_logits(scores, head, num_classes, scale) / temperature)
    ```

    The same numbers as `probabilities(to_logits(...), temperature)`,
    computed in float64 and returned in the layer's dtype. The temperature
    is a non-trainable weight `temperature` (saved with the model; assign it
    to re-calibrate).

    Args:
        head: "softmax" | "cosine" | "affinity" (as `to_logits`).
        num_classes: C.
        temperature: T > 0, usually `fit_temperature(...)`.
        scale: the cosine loss's scale s (1 for A-Softmax scores).
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        inputs: head scores `(N, C)` (columns past C are dropped).

    Returns:
        `(N, C)` probabilities.

    Example:
    ```python
    T = tfcell.evaluation.fit_temperature(to_logits(model.predict(x_val), "cosine", 9, 30.0), y_val)
    served = tfcell.models.with_probabilities(model, "cosine", T, scale=30.0)
    ```

    Reference:
    - [Guo et al., 2017](https://arxiv.org/abs/1706.04599), Sec. 4.2.
    """

    def __init__(self, head, num_classes, temperature=1.0, scale=1.0, **kwargs):
        super().__init__(**kwargs)
        if head not in HEADS:
            raise ValueError(
                f"TemperatureScaling: head must be one of {HEADS}; received head={head!r}."
            )
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(
                f"`num_classes` must be a positive integer. Received num_classes={num_classes!r}."
            )
        self.head = head
        self.num_classes = num_classes
        self.temperature = _check_temperature(temperature)
        if isinstance(scale, bool) or not isinstance(scale, (int, float, np.floating)):
            raise ValueError(f"`scale` must be a number. Received scale={scale!r}.")
        self.scale = float(scale)
        self.temperature_variable = None

    def build(self, input_shape):
        self.temperature_variable = self.add_weight(
            name="temperature",
            shape=(),
            initializer=keras.initializers.Constant(self.temperature),
            trainable=False,
        )

    def call(self, inputs):
        scores = ops.cast(inputs, "float64")[..., : self.num_classes]
        if self.head == "cosine":
            scores = self.scale * scores
        elif self.head == "affinity":
            scores = ops.log(ops.maximum(scores, _AFFINITY_FLOOR))
        logits = scores / ops.cast(self.temperature_variable, "float64")
        return ops.cast(ops.softmax(logits, axis=-1), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.num_classes)

    def get_config(self):
        config = super().get_config()
        temperature = self.temperature
        if self.temperature_variable is not None:
            temperature = float(ops.convert_to_numpy(self.temperature_variable))
        config.update(
            {
                "head": self.head,
                "num_classes": self.num_classes,
                "temperature": temperature,
                "scale": self.scale,
            }
        )
        return config


def _nll(logits, labels, temperature):
    scaled = logits / temperature
    return float(
        np.mean(special.logsumexp(scaled, axis=1) - scaled[np.arange(len(labels)), labels])
    )


def _check_temperature(temperature):
    if isinstance(temperature, bool) or not isinstance(
        temperature, (int, float, np.integer, np.floating)
    ):
        raise ValueError(f"`temperature` must be a number. Received temperature={temperature!r}.")
    temperature = float(temperature)
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(
            f"`temperature` must be finite and > 0. Received temperature={temperature}. "
            "Use fit_temperature on validation logits."
        )
    return temperature


def _labels(labels, num, num_classes):
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == num_classes and num_classes > 1:
        labels = labels.argmax(axis=1)
    labels = labels.reshape(-1)
    if len(labels) != num:
        raise ValueError(f"{num} rows of scores but {len(labels)} labels; pass one per sample.")
    if labels.size and (
        not np.all(np.isfinite(labels.astype("float64")))
        or labels.min() < 0
        or labels.max() >= num_classes
    ):
        raise ValueError(
            f"Labels must be class ids in [0, {num_classes}); received labels in "
            f"[{labels.min()}, {labels.max()}]."
        )
    return labels.astype("int64")
