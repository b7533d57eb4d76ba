"""How evenly a set of counts spreads (torch-free): the measure behind the hidden uniform prior.

The normalised entropy of counts n_1..n_K is H(n / N) / log K: 1 when every count is equal, lower
the more the counts concentrate. A method with a uniform cluster prior spreads its features over
clusters more evenly than the classes are spread (cluster entropy above class entropy on an
imbalanced subset, Assran et al. 2022).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def normalised_entropy(counts: Sequence[int | float]) -> float:
    """H(p) / log K of the distribution p = counts / sum(counts) over K = len(counts) bins (0 log 0
    = 0); 1.0 for a single bin (nothing to spread)."""
    counts = np.asarray(counts, dtype=float)
    if len(counts) < 2:
        return 1.0
    total = counts.sum()
    if total <= 0:
        return math.nan
    p = counts[counts > 0] / total
    return float(-(p * np.log(p)).sum() / math.log(len(counts)))


def sorted_sizes(labels: np.ndarray, k: int) -> list[int]:
    """Images per cluster (or class) of `labels` in 0..k-1, largest first."""
    return sorted(np.bincount(np.asarray(labels, np.int64), minlength=k).tolist(), reverse=True)
