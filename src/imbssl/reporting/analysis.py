"""Statistics over result files (no torch): head/medium/tail groups and the per-class metrics of a
run, and paired differences between two runs over seeds.

Groups (`analysis` config section, `AnalysisSettings`): a subset's classes are grouped by their
number of training images in that pretraining subset, either into thirds by count (`thirds`: the
classes sorted by count, largest first, ties by class index, split as evenly as possible with the
extra classes in the head, so 10 classes give 4 / 3 / 3) or by thresholds (`thresholds`: head >
`head_above`, tail < `tail_below`, medium between; ImageNet-LT's many/medium/few-shot split is
> 100 / 20-100 / < 20, Liu et al. 2019). A balanced-pX subset is grouped by the counts of its
imbalanced-pX twin so that the two are compared class for class; a subset whose grouping counts are
all equal (a balanced `full`) has no head or tail, and its group metrics are n/a.

Per run and probe (linear, kNN): the accuracy of a group is the mean of its classes' accuracies
(each class counts once, as in the long-tail literature); balancedness is the standard deviation
(ddof 0, over classes) of the per-class accuracy, lower is more even; worst is the lowest per-class
accuracy. Classes without test images have no accuracy and are left out of all three.

A claimed improvement (SimSiam+C+D over SimSiam, say) is the mean over seeds of the per-seed
difference, with a Student-t confidence interval: runs of the same seed share their subset and
their evaluation seed, so pairing by seed removes that shared variation from the comparison.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Mapping, Sequence, get_args

import numpy as np

from imbssl import UserError

GROUPS = ("head", "medium", "tail")
Grouping = Literal["thirds", "thresholds"]
GROUPINGS = get_args(Grouping)


@dataclass
class AnalysisSettings:
    groups: Grouping = "thirds"  # thirds of the classes by training images, or thresholds
    head_above: int = 100  # thresholds: head = more images than this (ImageNet-LT many-shot, > 100)
    tail_below: int = 20  # thresholds: tail = fewer images than this (ImageNet-LT few-shot, < 20)


def settings_error(settings: AnalysisSettings) -> str | None:
    """Why the settings can never give three groups, in one line, or None."""
    if settings.groups == "thresholds" and settings.tail_below > settings.head_above:
        return (f"analysis.tail_below ({settings.tail_below}) is above analysis.head_above ({settings.head_above}): a "
                f"class could be head and tail at once; set tail_below <= head_above")
    return None


def is_uniform(counts: Sequence[int]) -> bool:
    """All classes have the same number of images: there is no head or tail to speak of."""
    return len(set(int(c) for c in counts)) <= 1


def class_groups(counts: Sequence[int], settings: AnalysisSettings) -> list[str]:
    """The group (head, medium or tail) of each class, from its training images `counts[c]`."""
    message = settings_error(settings)
    if message:
        raise UserError(message)
    counts = [int(c) for c in counts]
    if settings.groups == "thresholds":
        return ["head" if n > settings.head_above else "tail" if n < settings.tail_below else "medium"
                for n in counts]
    order = sorted(range(len(counts)), key=lambda c: (-counts[c], c))
    groups = [""] * len(counts)
    for name, members in zip(GROUPS, np.array_split(np.array(order, dtype=int), len(GROUPS))):
        for c in members:
            groups[c] = name
    return groups


def empty_groups_error(counts: Sequence[int], settings: AnalysisSettings, where: str) -> str | None:
    """One line naming the groups that `counts` (the classes of `where`) leave empty, or None."""
    message = settings_error(settings)
    if message:
        return message
    groups = class_groups(counts, settings)
    empty = [g for g in GROUPS if g not in groups]
    if not empty:
        return None
    if settings.groups == "thirds":
        return (f"analysis.groups: thirds needs at least 3 classes, {where} has {len(counts)}; "
                f"use analysis.groups: thresholds")
    return (f"analysis.groups: thresholds head > {settings.head_above} / tail < {settings.tail_below} images leave "
            f"{' and '.join(empty)} empty on {where} (its classes have {min(counts)} to {max(counts)} training "
            f"images); change analysis.head_above / analysis.tail_below or use analysis.groups: thirds")


def _present(values: Sequence[float | None]) -> np.ndarray:
    return np.array([v for v in values if v is not None and not math.isnan(v)], dtype=float)


def run_metrics(per_class: Sequence[float | None], groups: Sequence[str] | None) -> dict[str, float]:
    """Head / medium / tail accuracy (NaN without `groups`, or for a group with no tested class),
    balancedness (std over classes, ddof 0) and worst-class accuracy of one run's per-class
    accuracies; None entries (no test images) are left out."""
    if groups is not None and len(groups) != len(per_class):
        raise UserError(f"{len(per_class)} per-class accuracies for {len(groups)} grouped classes: the result "
                        f"file and the subset disagree on the classes; rerun its evaluate job")
    present = _present(per_class)
    metrics = {}
    for name in GROUPS:
        members = [] if groups is None else _present([a for a, g in zip(per_class, groups) if g == name])
        metrics[name] = float(members.mean()) if len(members) else math.nan
    metrics["balancedness"] = float(present.std(ddof=0)) if len(present) else math.nan
    metrics["worst"] = float(present.min()) if len(present) else math.nan
    return metrics


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
