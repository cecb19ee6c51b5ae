"""Numbers: "is this a finite number", and the paired statistics the gate decides with.

Every comparison the gate makes (a variant against the float model, against the deployed
model) is paired: both models see the same examples. What matters is the 2x2 table of
per-example outcomes
                         variant right   variant wrong
    reference right           a               b
    reference wrong           c               d
whose point estimate of the drop is (b - c) / n. Its confidence interval is Newcombe's
square-and-add interval for paired proportions (Newcombe 1998, Statistics in Medicine 17,
2635-2650, method 10), built from the two Wilson score intervals (scipy's) and the
continuity-adjusted correlation of the paired outcomes. Unlike the exact conditional
McNemar interval it does not collapse to a point when no example is discordant, so a small
eval split gives the wide interval it should. The exact McNemar p-value (is the variant
different from the reference at all) is scipy's binomial test on the discordant pairs.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Dict, Sequence, Tuple

import numpy as np
from scipy import stats as _scipy_stats


def is_finite(x) -> bool:
    """True for a real, finite int or float (numpy scalars included); False for None,
    NaN, infinities, booleans and anything that is not a number."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, float, np.integer, np.floating)):
        return False
    return math.isfinite(float(x))


def wilson_interval(k: int, n: int, confidence: float) -> Tuple[float, float]:
    """The two-sided Wilson score interval of k successes in n trials (scipy's)."""
    ci = _scipy_stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


@dataclass(frozen=True)
class PairedDrop:
    """reference - variant on the same examples, with its two-sided interval."""

    n: int
    both_right: int  # a
    lost: int  # b: the reference right, the variant wrong
    gained: int  # c: the reference wrong, the variant right
    both_wrong: int  # d
    drop: float  # (b - c) / n
    low: float
    high: float
    confidence: float
    mcnemar_p: float  # exact, two-sided: H0 "lost and gained are equally likely"

    def to_dict(self) -> Dict[str, float]:
        return asdict(self)


def paired_drop(table: Sequence[int], confidence: float = 0.95) -> PairedDrop:
    """The drop reference - variant from the paired table [a, b, c, d] (module docstring)."""
    a, b, c, d = (int(v) for v in table)
    n = a + b + c + d
    if n <= 0:
        raise ValueError("a paired comparison needs at least one example")
    p1, p2 = (a + b) / n, (a + c) / n  # the reference's and the variant's accuracy
    l1, u1 = wilson_interval(a + b, n, confidence)
    l2, u2 = wilson_interval(a + c, n, confidence)
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    phi = 0.0
    if margins > 0:
        cross = a * d - b * c
        if cross > n / 2:
            phi = (cross - n / 2) / math.sqrt(margins)
        elif cross < 0:
            phi = cross / math.sqrt(margins)
    drop = p1 - p2
    low = drop - math.sqrt(max(0.0, (p1 - l1) ** 2 + (u2 - p2) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2)))
    high = drop + math.sqrt(max(0.0, (p2 - l2) ** 2 + (u1 - p1) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1)))
    discordant = b + c
    p_value = float(_scipy_stats.binomtest(b, discordant, 0.5).pvalue) if discordant else 1.0
    return PairedDrop(n=n, both_right=a, lost=b, gained=c, both_wrong=d, drop=drop,
                      low=max(-1.0, low), high=min(1.0, high), confidence=confidence, mcnemar_p=p_value)


def examples_to_resolve(bound: float, reference_accuracy: float, confidence: float, limit: int = 10_000_000) -> int:
    """The fewest eval examples at which a variant that agrees with the reference on every
    example has an interval upper bound within `bound` (doubling, then bisection): below
    it, "pass only when the upper bound is within the bound" can bless nothing."""

    def resolves(n: int) -> bool:
        right = int(round(reference_accuracy * n))
        return paired_drop([right, 0, 0, n - right], confidence).high <= bound

    if bound <= 0:
        return limit
    low, high = 1, 2
    while not resolves(high):
        low, high = high, high * 2
        if high > limit:
            return limit
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if resolves(mid) else (mid, high)
    return high
