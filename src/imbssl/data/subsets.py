"""Imbalance profiles and their balanced counterparts, written as index files. No torch needed.

Two profiles (`subsets.profile`) of imbalance factor p over classes c = 0..C-1 with n_c images:
exponential (Cui et al. 2019, CIFAR-LT) keeps floor(n_c * p**(-c/(C-1))); step (Buda et al. 2018)
keeps all images of the first ceil(C/2) classes and floor(n_c / p) of the other floor(C/2).
A third, `given`, takes a long-tailed train list as it is (ImageNet-LT): imbalanced-given is the
train list's images, balanced-given the same number spread evenly over the classes, drawn from
everything stored (the list and dataset.extra_train_list).

A subset is a list of indices into the train split. Subsets are drawn with their own seed
(`subsets.seed`), so training seeds never change which images a subset holds.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from dataclasses import dataclass, field
from typing import Iterable, Literal, Sequence, get_args

import numpy as np

from imbssl import UserError
from imbssl.core.artifacts import read_subset, write_subset


Profile = Literal["exponential", "step", "given"]
PROFILES = get_args(Profile)
GIVEN = "given"  # the factor part of the subset names of subsets.profile: given


def _check_factor(factor: float) -> None:
    if factor < 1:
        raise UserError(f"subsets.imbalance_factors: {factor} < 1; an imbalance factor must be >= 1")


def exponential_counts(class_counts: list[int], factor: float) -> list[int]:
    """Class c keeps floor(n_c * factor**(-c/(C-1))) images: the head keeps all, the tail 1/factor."""
    _check_factor(factor)
    num_classes = len(class_counts)
    if num_classes < 2:
        return list(class_counts)
    # math.floor of a float product: exact enough here (CIFAR-10 gives 20,431 and 12,406).
    return [math.floor(n * factor ** (-c / (num_classes - 1))) for c, n in enumerate(class_counts)]


def step_counts(class_counts: list[int], factor: float) -> list[int]:
    """Buda et al. 2018's step imbalance: the first ceil(C/2) classes keep all their images, the
    other floor(C/2) keep floor(n_c / factor)."""
    _check_factor(factor)
    head = math.ceil(len(class_counts) / 2)
    return [n if c < head else math.floor(n / factor) for c, n in enumerate(class_counts)]


def _profile_counts(class_counts: list[int], factor: float, profile: str) -> list[int]:
    if profile == "exponential":
        return exponential_counts(class_counts, factor)
    if profile == "step":
        return step_counts(class_counts, factor)
    raise ValueError(f"unknown imbalance profile {profile!r}: use one of {', '.join(PROFILES)}")


def _largest_factor(class_counts: list[int], profile: str) -> int:
    """The largest whole factor with which every class that has images keeps at least one."""
    num_classes = len(class_counts)
    if profile == "step":
        bounds = [n for c, n in enumerate(class_counts) if c >= math.ceil(num_classes / 2) and n > 0]
    else:  # floor(n_c * p**(-c/(C-1))) >= 1  <=>  p <= n_c**((C-1)/c)
        bounds = [n ** ((num_classes - 1) / c) for c, n in enumerate(class_counts) if c > 0 and n > 0]
    limit = max(1, math.floor(min(bounds, default=1)))
    while limit > 1 and _emptied(class_counts, _profile_counts(class_counts, limit, profile)):
        limit -= 1  # float rounding at the bound
    return limit


def _emptied(class_counts: list[int], counts: list[int]) -> list[int]:
    return [c for c, (have, keep) in enumerate(zip(class_counts, counts)) if have > 0 and keep == 0]


def empty_class_error(class_counts: list[int], factor: float, profile: str = "exponential") -> str | None:
    """The one-line reason why `factor` under `profile` would leave a class with no images, or None."""
    emptied = _emptied(class_counts, _profile_counts(class_counts, factor, profile))
    if not emptied:
        return None
    shown = ", ".join(map(str, emptied[:5])) + (f" and {len(emptied) - 5} more" if len(emptied) > 5 else "")
    return (f"subsets.imbalance_factors: {factor:g} with subsets.profile: {profile} leaves {len(emptied)} of "
            f"{len(class_counts)} classes with 0 images ({'class' if len(emptied) == 1 else 'classes'} {shown}); use imbalance factors of at most "
            f"{_largest_factor(class_counts, profile)} with this profile, so that every class keeps an image")


def imbalanced_counts(class_counts: list[int], factor: float, profile: str = "exponential") -> list[int]:
    """Images per class of the imbalanced-p{factor} subset; an error if a class would keep none."""
    message = empty_class_error(class_counts, factor, profile)
    if message is not None:
        raise UserError(message)
    return _profile_counts(class_counts, factor, profile)


def balanced_counts(total: int, class_counts: list[int]) -> list[int]:
    """`total` images spread evenly over classes, the remainder to the first classes."""
    num_classes = len(class_counts)
    base, extra = divmod(total, num_classes)
    counts = [base + (1 if c < extra else 0) for c in range(num_classes)]
    short = [c for c, (want, have) in enumerate(zip(counts, class_counts)) if want > have]
    if short:
        raise UserError(f"a balanced subset of {total} images needs more images than classes {short} have")
    return counts


def draw(labels: np.ndarray, counts: list[int], seed: int | list[int]) -> np.ndarray:
    """Pick counts[c] distinct images of each class c at random; returns sorted indices."""
    rng = np.random.default_rng(seed)
    chosen = []
    for c, k in enumerate(counts):
        members = np.flatnonzero(labels == c)
        chosen.append(rng.choice(members, size=k, replace=False))
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def class_counts_of(labels: np.ndarray, num_classes: int) -> list[int]:
    return np.bincount(labels, minlength=num_classes).tolist()


def subset_names(imbalance_factors: list[float], profile: str = "exponential") -> list[str]:
    if profile == GIVEN:
        return [f"imbalanced-{GIVEN}", f"balanced-{GIVEN}", "full"]
    names = []
    for p in imbalance_factors:
        names += [f"imbalanced-p{p:g}", f"balanced-p{p:g}"]
    return names + ["full"]


def given_balanced_error(listed_counts: list[int], available: list[int]) -> str | None:
    """Why a balanced twin of the given train list cannot be drawn (a class with too few images
    stored), or None."""
    total = sum(listed_counts)
    want = balanced_counts(total, [total] * len(available))
    short = [c for c, (need, have) in enumerate(zip(want, available)) if need > have]
    if not short:
        return None
    worst = min(short, key=lambda c: available[c])
    return (f"subsets.profile: given: the balanced twin of the train list ({total:,} images over "
            f"{len(available)} classes) needs {want[worst]} images of every class, but {len(short)} classes have "
            f"fewer stored (class {worst}: {available[worst]}); add their other images with "
            f"dataset.extra_train_list (e.g. the rest of ImageNet's train split)")


def build_given_subsets(labels: np.ndarray, num_classes: int, listed: np.ndarray | None,
                        seed: int) -> dict[str, np.ndarray]:
    """subsets.profile: given: the train list as the imbalanced set, its balanced twin, and full."""
    listed = np.ones(len(labels), bool) if listed is None else np.asarray(listed, bool)
    available = class_counts_of(labels, num_classes)
    imbalanced = np.flatnonzero(listed)
    message = given_balanced_error(class_counts_of(labels[imbalanced], num_classes), available)
    if message is not None:
        raise UserError(message)
    balanced = balanced_counts(len(imbalanced), available)
    return {f"imbalanced-{GIVEN}": imbalanced, f"balanced-{GIVEN}": draw(labels, balanced, seed=[seed, 2, 0]),
            "full": np.arange(len(labels))}


def build_subsets(labels: np.ndarray, num_classes: int, imbalance_factors: list[float], seed: int,
                  profile: str = "exponential", listed: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """All subsets of the pipeline: imbalanced-pX (of `profile`), balanced-pX (same total) and full;
    with profile `given`, those of `build_given_subsets`."""
    if profile == GIVEN:
        return build_given_subsets(labels, num_classes, listed, seed)
    available = class_counts_of(labels, num_classes)
    subsets: dict[str, np.ndarray] = {}
    for p in imbalance_factors:
        imbalanced = imbalanced_counts(available, p, profile)
        # Independent streams per subset, all derived from the one subsets.seed.
        stream = int(round(p * 1000))
        subsets[f"imbalanced-p{p:g}"] = draw(labels, imbalanced, seed=[seed, 1, stream])
        balanced = balanced_counts(sum(imbalanced), available)
        subsets[f"balanced-p{p:g}"] = draw(labels, balanced, seed=[seed, 2, stream])
    subsets["full"] = np.arange(len(labels))
    return subsets


def subset_order_key(subset: str) -> tuple:
    """Paper order: imbalanced-p10, balanced-p10, imbalanced-p100, balanced-p100, ..., full last."""
    if subset == "full":
        return (2, 0.0, 0)
    kind, factor = subset_kind_and_factor(subset)
    try:
        p = math.inf if factor == GIVEN else float(factor.removeprefix("p"))
    except ValueError:
        return (3, 0.0, subset)  # unknown names after the known ones, alphabetically
    return (1, p, 0 if kind == "imbalanced" else 1)


def subset_kind_and_factor(subset: str) -> tuple[str, str]:
    """imbalanced-p100 -> ("imbalanced", "p100"), balanced-given -> ("balanced", "given"),
    full -> ("full", "")."""
    kind, _, factor = subset.partition("-")
    return kind, factor


def order_subsets(subsets) -> list[str]:
    return sorted(set(subsets), key=subset_order_key)


def subset_class_counts(subset_csvs: Sequence[str | os.PathLike], num_classes: int = 0) -> dict[str, np.ndarray]:
    """Images per class of each subset file (at least `num_classes` entries), keyed by subset name
    (the file stem), in paper order."""
    labels = {Path(path).stem: read_subset(path)[1] for path in subset_csvs}
    num_classes = max([num_classes, *(int(y.max()) + 1 for y in labels.values() if len(y))])
    return {name: np.bincount(labels[name], minlength=num_classes) for name in order_subsets(labels)}


def grouping_subset(subset: str, available: Iterable[str]) -> str:
    """The subset whose class counts define `subset`'s head/medium/tail: a balanced-pX subset is
    grouped by its imbalanced-pX twin (when that is available), any other by itself."""
    if subset.startswith("balanced-"):
        twin = "imbalanced-" + subset.removeprefix("balanced-")
        if twin in set(available):
            return twin
    return subset


def eval_subset_name(subset: str) -> str:
    """The balanced set of the same size on which a model trained on `subset` is linearly evaluated."""
    if subset.startswith("imbalanced-"):
        return "balanced-" + subset.removeprefix("imbalanced-")
    return subset


@dataclass
class SubsetSettings:
    """The `subsets` config section (the subsets rule's params)."""

    imbalance_factors: list[float] = field(default_factory=lambda: [10.0, 100.0])  # p: the tail keeps 1/p
    # exponential (Cui et al. 2019) | step (Buda et al. 2018) | given (an image list's train list as it is)
    profile: Profile = "exponential"
    seed: int = 0  # of the draw; training seeds never change the subsets


def subset_factor(name: str) -> float | None:
    """The imbalance factor a subset's name carries (imbalanced-p100 and balanced-p100: 100.0);
    None for full and the given lists."""
    _, factor = subset_kind_and_factor(name)
    try:
        return float(factor.removeprefix("p")) if factor.startswith("p") else None
    except ValueError:
        return None


def write_one(train_data: str | os.PathLike, name: str, out: str | os.PathLike, settings: SubsetSettings) -> None:
    """The subsets rule: the one subset `name` of a train split, as `write_all` draws it (each
    factor from its own random stream), so that adding an imbalance factor adds files and rewrites
    none of the others. `settings.imbalance_factors` is not read: the name gives the factor."""
    from imbssl.data.store import load_split

    split = load_split(train_data)
    factor = subset_factor(name)
    subsets = build_subsets(split.labels, split.num_classes, [] if factor is None else [factor], settings.seed,
                            settings.profile, split.listed)
    if name not in subsets:
        raise UserError(f"subset {name}: not a subset of subsets.profile: {settings.profile} "
                        f"(its subsets: {', '.join(subsets)})")
    write_subset(Path(out), subsets[name], split.labels)


def write_all(train_data: str | os.PathLike, out_dir: str | os.PathLike, settings: SubsetSettings) -> None:
    """Every subset of a train split at once, as out_dir/{name}.csv (`imbssl subsets --out-dir`; the
    rule writes one per job with `write_one`, the same files)."""
    from imbssl.data.store import load_split

    split = load_split(train_data)
    subsets = build_subsets(split.labels, split.num_classes, settings.imbalance_factors, settings.seed,
                            settings.profile, split.listed)
    for name, indices in subsets.items():
        write_subset(Path(out_dir) / f"{name}.csv", indices, split.labels)
