"""Ensembles over networks trained with different losses (CFAL paper, Sec. III-C).

Each network's head output is first turned into class probabilities
(`to_probabilities`: `tfcell.evaluation.calibration.to_logits`, then a softmax
at the network's validation temperature when one is given), then combined by
one of three rules:

    average      mean of the probability vectors, argmax
    maximum      per sample, the decision of the single most confident network
    vote         each network votes its argmax; most votes wins

The paper excludes SphereFace and combines CFAL, ArcFace, CosFace and focal.
"""

import numpy as np

from tfcell.evaluation import calibration

__all__ = [
    "ENSEMBLE_RULES",
    "average_ensemble",
    "ensemble",
    "max_confidence_ensemble",
    "to_probabilities",
    "vote_ensemble",
]

ENSEMBLE_RULES = ("average", "maximum", "vote")


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


def ensemble(probabilities, rule):
    """Dispatches to one of `ENSEMBLE_RULES`."""
    rules = {
        "average": average_ensemble,
        "maximum": max_confidence_ensemble,
        "vote": vote_ensemble,
    }
    if rule not in rules:
        raise ValueError(f"ensemble: rule must be one of {ENSEMBLE_RULES}; received {rule!r}.")
    return rules[rule](probabilities)
