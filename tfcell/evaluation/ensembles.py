"""Ensembles of networks' class probabilities.

CFAL paper, Sec. III-C: each network's head output is first turned into class
probabilities (`to_probabilities`: `tfcell.evaluation.calibration.to_logits`,
then a softmax at the network's validation temperature when one is given), then
combined by one of three rules:

    average      mean of the probability vectors, argmax
    maximum      per sample, the decision of the single most confident network
    vote         each network votes its argmax; most votes wins

The paper excludes SphereFace and combines CFAL, ArcFace, CosFace and focal.

Goswami et al. (2020), Sec. 5.2: the ensemble of the 7 fold models.

    theta        per sample, the most confident network's decision if its
                 confidence is more than theta, else the argmax of the
                 harmonic mean of the probability vectors (`theta_ensemble`)

`ensemble(probabilities, "theta")` uses the paper's best theta = 0.95 (Table 3);
`ensemble(probabilities, "theta_0.98")` any other theta, so that a config can
list both of the paper's values as rules.

`predict_fold_ensemble(model_paths, images, theta, crop_size)` is the whole
method on new images in one call: it loads the saved `.keras` fold models,
predicts with the 5-crop test-time augmentation (Sec. 5.1), and combines them
with `theta_ensemble`.

```python
predictions, scores = tfcell.evaluation.predict_fold_ensemble(
    [f"workdir/fold{k}/model.keras" for k in range(7)], images, theta=0.95, crop_size=299)
```
"""

import os

import numpy as np

from tfcell import models
from tfcell.data import augmentation
from tfcell.evaluation import calibration

__all__ = [
    "ENSEMBLE_RULES",
    "average_ensemble",
    "ensemble",
    "max_confidence_ensemble",
    "predict_fold_ensemble",
    "theta_ensemble",
    "to_probabilities",
    "vote_ensemble",
]

ENSEMBLE_RULES = ("average", "maximum", "vote", "theta")

# Goswami et al., Table 3: theta = 0.95 gives the best weighted F1 (95.26%).
DEFAULT_THETA = 0.95
# Probabilities are clipped below at this value before the harmonic mean's
# reciprocals, so that an exact 0 gives a harmonic mean of about M * 1e-12
# (its limit, 0, to 12 decimals) instead of a division by zero.
_HARMONIC_EPSILON = 1e-12
# How far a row of model outputs may sum from 1 and still count as
# probabilities (float16 / float32 softmax outputs sum to 1 within this).
_SUM_TOLERANCE = 1e-3


def to_probabilities(scores, head, num_classes, scale=1.0, temperature=None):
    """Class probabilities from a head's output (`calibration.to_logits` + softmax).

    ```python
    probs = calibration.probabilities(
        calibration.to_logits(scores, head, num_classes, scale), temperature or 1.0)
    ```

    Args:
        scores: head output `(N, C)` (columns past C are dropped).
        head: "softmax" (softmax of the logits), "cosine" (softmax of
            `scale * cos`, the margin-free logits the margin loss was trained
            on; scale 1 for A-Softmax scores) or "affinity" (softmax of the
            log-affinities, i.e. the affinities normalised to sum to 1; a
            sample with every affinity 0 gets the uniform vector).
        num_classes: C.
        scale: the cosine loss's scale `s` (ignored for other heads).
        temperature: None (T = 1) or the validation temperature of
            `calibration.fit_temperature`, so that the ensemble averages and
            compares calibrated probabilities.

    Returns:
        `(N, C)` float64 probabilities, rows summing to 1.
    """
    logits = calibration.to_logits(scores, head, num_classes, scale)
    return calibration.probabilities(logits, 1.0 if temperature is None else temperature)


def _stack(probabilities):
    stacked = np.stack([np.asarray(p, "float64") for p in probabilities])  # (M, N, C)
    if stacked.ndim != 3 or stacked.shape[0] < 1:
        raise ValueError(
            f"Ensembles take a list of (N, C) probability arrays; received shape {stacked.shape}."
        )
    return stacked


def average_ensemble(probabilities):
    """Mean probability vector; returns `(predictions (N,), scores (N, C))`."""
    mean = _stack(probabilities).mean(axis=0)
    return mean.argmax(axis=1), mean


def max_confidence_ensemble(probabilities):
    """The most confident network decides each sample.

    Returns `(predictions, scores)` where `scores` is that network's probability
    vector (ties between networks go to the first in the list).
    """
    stacked = _stack(probabilities)
    best = stacked.max(axis=2).argmax(axis=0)  # (N,)
    scores = stacked[best, np.arange(stacked.shape[1])]
    return scores.argmax(axis=1), scores


def vote_ensemble(probabilities):
    """Majority vote of the networks' argmax decisions.

    Note: the paper does not say how ties are broken; here the class with the
    higher mean probability wins. The returned scores,
    `(votes + mean_probability) / (M + 1)`, rank first by votes and then by mean
    probability, sum to 1 and serve the class-wise AUROC of Table VI.
    """
    stacked = _stack(probabilities)
    num_models, _, num_classes = stacked.shape
    votes = np.eye(num_classes)[stacked.argmax(axis=2)].sum(axis=0)  # (N, C)
    scores = (votes + stacked.mean(axis=0)) / (num_models + 1)
    return scores.argmax(axis=1), scores


def theta_ensemble(probabilities, theta=DEFAULT_THETA):
    """Goswami et al.'s ensemble: the most confident model if above theta, else the harmonic mean.

    Per sample, the confidence of a model is its largest class probability. If
    the largest confidence over all models is more than `theta`, that model's
    decision and probability vector are the ensemble's (the paper's
    "max-voting"); otherwise the ensemble's vector is the harmonic mean over
    the models of their probability vectors, normalised to sum to 1, and its
    argmax the decision.

    ```python
    confidence = p.max(axis=2)                          # (M, N)
    best = confidence.argmax(axis=0)                    # (N,), ties -> first model
    harmonic = M / sum_m(1 / max(p[m], 1e-12))          # (N, C), per class
    scores[n] = p[best[n], n]              if confidence[best[n], n] > theta
                harmonic[n] / sum(harmonic[n])          otherwise
    predictions = scores.argmax(axis=1)
    ```

    Args:
        probabilities: the models' class probabilities, a list of M arrays
            `(N, C)` or one array `(M, N, C)`, rows summing to 1 (convert
            logits or head scores first, e.g. with `to_probabilities`).
        theta: the confidence threshold in [0, 1]; the paper uses 0.95 and
            0.98 (Table 3, Sec. A.1). 0 always takes the most confident model
            (`max_confidence_ensemble`), 1 always the harmonic mean.

    Returns:
        `(predictions (N,), scores (N, C))`, float64 scores with rows summing
        to 1: the deciding model's vector for the samples above theta, the
        normalised harmonic mean for the others.

    Note: the paper takes the most confident model when its confidence "is
    more than" theta and the harmonic mean when it "is below" theta (Sec. 5.2)
    or "if none of them is more than theta" (Sec. A.1); a confidence equal to
    theta is read as "not more than", so the comparison is strict (`>`) and
    such a sample gets the harmonic mean.

    Note: "the harmonic mean of all the seven confidence scores" is read as
    the per-class harmonic mean of the 7 probability vectors (as in the
    project's `REFERENCE_FORMULAS.md`), decided by its argmax; for two classes
    this is not the same as thresholding the harmonic mean of one class's
    probability at 0.5. The normalisation to sum 1 does not change the argmax;
    it makes the scores comparable with the other rules' (e.g. for AUROC).

    Note: the paper does not say how exact zeros enter the harmonic mean.
    Probabilities are clipped below at 1e-12 before the reciprocal, so a class
    that some model gives probability 0 gets a harmonic mean of about
    M * 1e-12 (the limit, 0, to 12 decimals) and the output stays finite.
    Ties between equally confident models go to the first in the list.

    Reference:
    - Goswami et al., 2020, "Heterogeneity loss to handle intersubject and
      intrasubject variability in cancer" (ICLR 2020 AI4AH workshop), Sec. 5.2
      and A.1
    """
    stacked = _checked_probabilities(probabilities, "theta_ensemble")
    theta = _check_theta(theta, "theta_ensemble")
    num_models, num_samples, _ = stacked.shape
    samples = np.arange(num_samples)
    confidence = stacked.max(axis=2)  # (M, N)
    best = confidence.argmax(axis=0)  # (N,)
    confident = confidence[best, samples] > theta
    harmonic = num_models / (1.0 / np.maximum(stacked, _HARMONIC_EPSILON)).sum(axis=0)
    harmonic = harmonic / harmonic.sum(axis=1, keepdims=True)
    scores = np.where(confident[:, None], stacked[best, samples], harmonic)
    return scores.argmax(axis=1), scores


def ensemble(probabilities, rule):
    """Dispatches to one of `ENSEMBLE_RULES`.

    "theta" is `theta_ensemble` at the paper's theta = 0.95; "theta_<value>"
    (e.g. "theta_0.98") is `theta_ensemble` at that theta.
    """
    rules = {
        "average": average_ensemble,
        "maximum": max_confidence_ensemble,
        "vote": vote_ensemble,
        "theta": theta_ensemble,
    }
    if isinstance(rule, str) and rule.startswith("theta_"):
        try:
            theta = float(rule[len("theta_") :])
        except ValueError:
            theta = None
        if theta is None or not 0.0 <= theta <= 1.0:
            raise ValueError(
                f"ensemble: rule {rule!r} is not 'theta_<value>' with a value in [0, 1]; "
                "write e.g. 'theta_0.98', or 'theta' for the paper's 0.95."
            )
        return theta_ensemble(probabilities, theta)
    if rule not in rules:
        raise ValueError(
            f"ensemble: rule must be one of {ENSEMBLE_RULES} or 'theta_<value>' "
            f"(e.g. 'theta_0.98'); received {rule!r}."
        )
    return rules[rule](probabilities)


def predict_fold_ensemble(model_paths, images, theta=DEFAULT_THETA, crop_size=None, batch_size=32):
    """Goswami et al.'s ensemble on new images, from the saved fold models.

    Loads each `.keras` model with `tfcell.models.load_model` (without its
    loss and optimizer), predicts `images` with the 5-crop test-time
    augmentation when `crop_size` is given, turns each model's outputs into
    class probabilities and combines the models with `theta_ensemble`.

    ```python
    for path in model_paths:
        model = tfcell.models.load_model(path, compile=False)
        crops = [images] if crop_size is None else five_crop(images, crop_size)
        p[m] = mean_k(probabilities(model.predict(crops[k])))    # (N, C)
    return theta_ensemble(p, theta)
    ```

    A model's outputs count as probabilities when every row is non-negative
    and sums to 1 (within 1e-3; a softmax head or `with_probabilities`);
    otherwise they are taken as logits and go through a softmax (a plain
    classifier or a `HeterogeneityTrainer`, whose `predict` gives logits).

    Args:
        model_paths: the saved models' `.keras` files, one per fold (the
            paper: 7); a list, not a single path.
        images: `(N, H, W, C)` images, preprocessed as the models were trained
            (e.g. float pixels in [0, 255] for the tfcell pipelines).
        theta: the confidence threshold of `theta_ensemble` (paper: 0.95 or
            0.98).
        crop_size: None (no test-time augmentation: each model predicts the
            whole images), or an int or `(h, w)`: each model predicts the four
            corner crops and the centre crop of that size
            (`tfcell.data.augmentation.five_crop`) and its probabilities are
            averaged over the 5 crops (the paper: 299 for Inception-v3 on
            400 x 400 cells, Sec. 5.1).
        batch_size: batch size of `model.predict`.

    Returns:
        `(predictions (N,), scores (N, C))` as `theta_ensemble`.

    Note: the paper averages the "confidence scores" of the 5 crops (Sec.
    5.1), so each crop's outputs are turned into probabilities before the
    average (`five_crop_predict` alone would average the logits of a logit
    model). Models are loaded one at a time and released after predicting.

    Reference:
    - Goswami et al., 2020, "Heterogeneity loss to handle intersubject and
      intrasubject variability in cancer" (ICLR 2020 AI4AH workshop), Sec. 5.1
      (5-crop TTA) and Sec. 5.2 (the ensemble)
    """
    where = "predict_fold_ensemble"
    if isinstance(model_paths, (str, bytes, os.PathLike)):
        raise ValueError(
            f"{where}: model_paths must be a list of .keras files, one per model; received "
            f"the single path {model_paths!r}. Pass [path] for one model."
        )
    model_paths = [os.fspath(p) for p in model_paths]
    if not model_paths:
        raise ValueError(f"{where}: model_paths is empty; pass one .keras file per fold model.")
    missing = [p for p in model_paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(
            f"{where}: no such model file(s) {missing}; pass the saved `.keras` files of the run."
        )
    theta = _check_theta(theta, where)  # Fails before any model is loaded.
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"{where}: batch_size must be a positive int; received {batch_size!r}.")
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(
            f"{where}: images must be a batch (N, H, W, C); received shape {images.shape}. "
            "Add a batch axis for a single image (images[None])."
        )

    probabilities = []
    for path in model_paths:
        predictor = _ProbabilityPredictor(models.load_model(path, compile=False), path)
        if crop_size is None:
            p = predictor.predict(images, batch_size=batch_size, verbose=0)
        else:
            p = augmentation.five_crop_predict(predictor, images, crop_size, batch_size)
        if probabilities and p.shape[1] != probabilities[0].shape[1]:
            raise ValueError(
                f"{where}: {path} predicts {p.shape[1]} classes but {model_paths[0]} predicts "
                f"{probabilities[0].shape[1]}; every fold model must score the same classes."
            )
        probabilities.append(p)
        del predictor
    return theta_ensemble(probabilities, theta)


class _ProbabilityPredictor:
    """A loaded model whose `predict` returns class probabilities.

    `five_crop_predict` only calls `model.predict(x, batch_size=, verbose=)`,
    so wrapping the model here makes it average each crop's probabilities.
    """

    def __init__(self, model, path):
        self.model = model
        self.path = path

    def predict(self, x, batch_size=32, verbose=0):
        outputs = self.model.predict(x, batch_size=batch_size, verbose=verbose)
        if isinstance(outputs, (list, tuple, dict)):
            raise ValueError(
                f"predict_fold_ensemble: the model in {self.path} has several outputs; expected "
                "one (N, C) array of logits or probabilities. Save the classifier alone."
            )
        outputs = np.asarray(outputs, "float64")
        if outputs.ndim != 2 or outputs.shape[1] < 2:
            raise ValueError(
                f"predict_fold_ensemble: the model in {self.path} outputs shape {outputs.shape}; "
                "expected (N, C) logits or probabilities with C >= 2 (a one-unit sigmoid head "
                "is not supported: use a C-way softmax or logits head)."
            )
        if _are_probabilities(outputs):
            return outputs
        return calibration.probabilities(outputs)


def _are_probabilities(x):
    """Every row non-negative and summing to 1 (within `_SUM_TOLERANCE`)."""
    return bool(
        x.size
        and np.all(np.isfinite(x))
        and np.all(x >= 0)
        and np.all(np.abs(x.sum(axis=1) - 1.0) <= _SUM_TOLERANCE)
    )


def _check_theta(theta, where):
    if (
        isinstance(theta, bool)
        or not isinstance(theta, (int, float, np.floating, np.integer))
        or not 0.0 <= float(theta) <= 1.0
    ):
        raise ValueError(
            f"{where}: theta must be a number in [0, 1] (the paper: 0.95 or 0.98); "
            f"received {theta!r}."
        )
    return float(theta)


def _checked_probabilities(probabilities, where):
    """`(M, N, C)` float64 from a list of `(N, C)` probability arrays, or errors that say how to fix."""
    how = "pass a list of M arrays (N, C), one per model, or one array (M, N, C)"
    if isinstance(probabilities, np.ndarray) or hasattr(probabilities, "shape"):
        array = np.asarray(probabilities, "float64")
        if array.ndim != 3:
            raise ValueError(
                f"{where}: probabilities has shape {array.shape}; expected (M, N, C): {how}."
            )
        arrays = list(array)
    else:
        arrays = [np.asarray(p, "float64") for p in probabilities]
    if not arrays:
        raise ValueError(f"{where}: received no models' probabilities; {how}.")
    for i, p in enumerate(arrays):
        if p.ndim != 2 or p.shape[1] < 1:
            raise ValueError(
                f"{where}: probabilities[{i}] has shape {p.shape}; expected (N, C) class "
                f"probabilities of one model: {how}."
            )
        if p.shape != arrays[0].shape:
            raise ValueError(
                f"{where}: probabilities[{i}] has shape {p.shape} but probabilities[0] has "
                f"{arrays[0].shape}; every model must score the same N samples over the same "
                "C classes, in the same order."
            )
        if p.size and not _are_probabilities(p):
            row_sums = p.sum(axis=1)
            bad_rows = (
                ~np.isfinite(p).all(axis=1)
                | (p < 0).any(axis=1)
                | (np.abs(row_sums - 1.0) > _SUM_TOLERANCE)
            )
            bad = int(np.argmax(bad_rows))
            raise ValueError(
                f"{where}: probabilities[{i}] is not a probability array: row {bad} is "
                f"{p[bad].tolist()} (sum {row_sums[bad]:.6g}); expected finite, non-negative "
                "rows summing to 1. Convert logits or head scores first, e.g. with "
                "`to_probabilities` or a softmax."
            )
    return np.stack(arrays)
