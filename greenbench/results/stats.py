"""The statistics that report and check share: Student-t intervals and Welch's test.

One definition each, so that a report's interval and a budget's ``upper_ci`` are the same number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

from scipy import stats

CONFIDENCE = 0.95


@lru_cache(maxsize=256)  # one scipy call per sample size, not per configuration
def t_quantile(n: int, confidence: float = CONFIDENCE) -> float:
    """The two-sided Student-t quantile for a mean of ``n`` values (``n - 1`` degrees)."""
    return float(stats.t.ppf(0.5 + confidence / 2, n - 1))


def confidence_half_width(sd: float, n: int, confidence: float = CONFIDENCE) -> float:
    """Half-width of the Student-t interval of a mean of ``n`` values; NaN for ``n < 2``.

    >>> round(confidence_half_width(1.0, 4), 4)
    1.5912
    >>> confidence_half_width(1.0, 1)
    nan
    """
    if n < 2 or not math.isfinite(sd):
        return math.nan
    return t_quantile(n, confidence) * sd / math.sqrt(n)


def ratio_interval(mean: float, sd: float, n: int, reference_mean: float, reference_sd: float,
                   reference_n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The interval of ``mean / reference_mean``, two independent means: the delta method on
    the log of the ratio, with the Student-t quantile of the smaller sample. NaNs when a side
    has fewer than 2 values or a mean is not above 0.

    >>> [round(end, 4) for end in ratio_interval(50.0, 1.0, 3, 100.0, 2.0, 3)]
    [0.4661, 0.5364]
    """
    if n < 2 or reference_n < 2 or not (mean > 0 and reference_mean > 0):
        return math.nan, math.nan
    se = math.sqrt((sd / mean) ** 2 / n + (reference_sd / reference_mean) ** 2 / reference_n)
    t = t_quantile(min(n, reference_n), confidence)
    ratio = mean / reference_mean
    return ratio * math.exp(-t * se), ratio * math.exp(t * se)


def welch_p_value(values: Sequence[float], reference: Sequence[float], greater: bool) -> float:
    """One-sided Welch t-test: the p-value of ``values`` having a greater (or, with
    ``greater=False``, a smaller) mean than ``reference``."""
    test = stats.ttest_ind(values, reference, equal_var=False,
                           alternative="greater" if greater else "less")
    return float(test.pvalue)
