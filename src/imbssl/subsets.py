"""Imbalance profiles and their balanced counterparts, written as index files. No torch needed.

A subset is a list of indices into the train split. Subsets are drawn with their own seed
(`subsets.seed`), so training seeds never change which images a subset holds.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from . import UserError
from .atomic import write_text


def exponential_counts(class_counts: list[int], factor: float) -> list[int]:
    """Class c keeps floor(n_c * factor**(-c/(C-1))) images: the head keeps all, the tail 1/factor."""
    if factor < 1:
        raise UserError(f"subsets.imbalance_factors: {factor} < 1; an imbalance factor must be >= 1")
    num_classes = len(class_counts)
    if num_classes < 2:
        return list(class_counts)
    # math.floor of a float product: exact enough here (CIFAR-10 gives 20,431 and 12,406).
    return [math.floor(n * factor ** (-c / (num_classes - 1))) for c, n in enumerate(class_counts)]


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


def subset_names(imbalance_factors: list[float]) -> list[str]:
    names = []
    for p in imbalance_factors:
        names += [f"imbalanced-p{p:g}", f"balanced-p{p:g}"]
    return names + ["full"]


def build_subsets(labels: np.ndarray, num_classes: int, imbalance_factors: list[float], seed: int) -> dict[str, np.ndarray]:
    """All subsets of the pipeline: imbalanced-pX, balanced-pX (same total) and full."""
    available = class_counts_of(labels, num_classes)
    subsets: dict[str, np.ndarray] = {}
    for p in imbalance_factors:
        imbalanced = exponential_counts(available, p)
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
    kind, _, factor = subset.partition("-p")
    try:
        p = float(factor)
    except ValueError:
        return (3, 0.0, subset)  # unknown names after the known ones, alphabetically
    return (1, p, 0 if kind == "imbalanced" else 1)


def order_subsets(subsets) -> list[str]:
    return sorted(set(subsets), key=subset_order_key)


def eval_subset_name(subset: str) -> str:
    """The balanced set of the same size on which a model trained on `subset` is linearly evaluated."""
    if subset.startswith("imbalanced-"):
        return "balanced-" + subset.removeprefix("imbalanced-")
    return subset


def require_subset_order(index: np.ndarray, subset_indices: np.ndarray, file: str | os.PathLike,
                         subset: str | os.PathLike, rule: str) -> None:
    """`file` (features, cluster assignments, ...) must list exactly the images of `subset`, in its
    order, since rows are matched by position; else a one-line error names the rule to rerun."""
    if not np.array_equal(np.asarray(index), np.asarray(subset_indices)):
        raise UserError(f"{file} does not list the images of subset {subset} in its order: rerun the {rule} rule")


def write_csv(path: str | os.PathLike, indices: np.ndarray, labels: np.ndarray) -> None:
    lines = ["index,label"] + [f"{i},{labels[i]}" for i in indices]
    write_text(path, "\n".join(lines) + "\n")


def read_csv(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Returns (indices, labels) of a subset file."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"subset file {path} does not exist: run the subsets rule first")
    table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.int64, ndmin=2)
    return table[:, 0], table[:, 1]


def write_all(train_data: str | os.PathLike, imbalance_factors: list[float], seed: int, out_dir: str | os.PathLike) -> None:
    """The subsets rule: every subset of a train split as out_dir/{name}.csv."""
    from .data import load_split

    split = load_split(train_data)
    for name, indices in build_subsets(split.labels, split.num_classes, imbalance_factors, seed).items():
        write_csv(Path(out_dir) / f"{name}.csv", indices, split.labels)
