"""Statistics over result files (no torch): paired differences between two runs over seeds.

A claimed improvement (SimSiam+C+D over SimSiam, say) is the mean over seeds of the per-seed
difference, with a Student-t confidence interval: runs of the same seed share their subset and
their evaluation seed, so pairing by seed removes that shared variation from the comparison.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np


@dataclass(frozen=True)
class PairedDifference:
    """mean of a - b over the seeds both have, and its two-sided t-interval (None with < 2 pairs)."""

    pairs: int
    mean: float
    ci_low: float | None
    ci_high: float | None
    seeds: tuple[int, ...]


def paired_difference(a: Mapping[int, float], b: Mapping[int, float], confidence: float = 0.95) -> PairedDifference:
    """Differences a[s] - b[s] over the seeds s present in both (seed -> value maps).

    Interval: mean +/- t_{(1+confidence)/2, n-1} * sd / sqrt(n), sd the sample standard
    deviation (ddof 1) of the n differences. With one pair there is no spread to measure: the
    interval is None (n/a); with none the mean is NaN.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    seeds = tuple(sorted(set(a) & set(b)))
    diffs = np.array([a[s] - b[s] for s in seeds], dtype=float)
    if len(diffs) == 0:
        return PairedDifference(0, math.nan, None, None, seeds)
    mean = float(diffs.mean())
    if len(diffs) < 2:
        return PairedDifference(1, mean, None, None, seeds)
    from scipy import stats

    half = float(stats.t.ppf((1 + confidence) / 2, df=len(diffs) - 1)) * float(diffs.std(ddof=1)) / math.sqrt(len(diffs))
    return PairedDifference(len(diffs), mean, mean - half, mean + half, seeds)
