"""Repeated-run statistics: mean +- std and paired t-tests against a baseline.

The CFAL paper reports paired t-tests at p = 0.05 against cross-entropy
(Sec. V-A); runs are paired by repeat index (same seed, same split).
"""

import math

import numpy as np
from scipy import stats

__all__ = ["format_mean_std", "mean_std", "paired_t_test"]


def mean_std(values):
    """`(mean, std)` of repeated measurements; std is the sample std (ddof=1),
    0.0 for a single value, and both NaN for none."""
    values = np.asarray([v for v in values if v is not None], "float64")
    if values.size == 0:
        return float("nan"), float("nan")
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return float(values.mean()), std


def format_mean_std(values, digits=3, scale=1.0):
    """ "0.830 +- 0.012" (or "0.830" for one value, "-" for none)."""
    values = [float(v) * scale for v in values if v is not None]
    mean, std = mean_std(values)
    if math.isnan(mean):
        return "-"
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} +- {std:.{digits}f}"


def paired_t_test(values, baseline, alpha=0.05):
    """Two-sided paired t-test of `values` against `baseline` (same repeats).

    Args:
        values: one measurement per repeat for the method.
        baseline: the baseline's measurement for the same repeats, in order.
        alpha: significance level (the paper's 0.05).

    Returns:
        A dict: `t`, `p` (NaN when fewer than two pairs or all differences are
        equal), `mean_difference`, `significant` (p < alpha) and `better`
        (significant and the mean difference is positive).
    """
    values = np.asarray(values, "float64")
    baseline = np.asarray(baseline, "float64")
    if values.shape != baseline.shape:
        raise ValueError(
            f"paired_t_test needs one baseline value per repeat; received "
            f"{values.shape} values and {baseline.shape} baseline values."
        )
    difference = values - baseline
    mean_difference = float(difference.mean()) if difference.size else float("nan")
    if difference.size < 2 or np.allclose(difference, difference[0]):
        t, p = float("nan"), float("nan")
    else:
        t, p = stats.ttest_rel(values, baseline)
        t, p = float(t), float(p)
    significant = bool(p < alpha) if not math.isnan(p) else False
    return {
        "t": t,
        "p": p,
        "mean_difference": mean_difference,
        "significant": significant,
        "better": significant and mean_difference > 0,
    }
