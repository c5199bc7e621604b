"""The statistics that report and check share: Student-t intervals and Welch's test.

One definition each, so that a report's interval and a budget's ``upper_ci`` are the same number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy import stats

CONFIDENCE = 0.95


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


def welch_p_value(values: Sequence[float], reference: Sequence[float], greater: bool) -> float:
    """One-sided Welch t-test: the p-value of ``values`` having a greater (or, with
    ``greater=False``, a smaller) mean than ``reference``."""
    test = stats.ttest_ind(values, reference, equal_var=False,
                           alternative="greater" if greater else "less")
    return float(test.pvalue)
