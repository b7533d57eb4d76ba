"""Partitions of a subset into the parts its experts train on: k-means clusters of the base
features, or a random partition of the same sizes (the "+D" ablation); and how parts line up with
classes.

Class labels are used here for reporting only (NMI, ARI, the cluster x class table); the clusters
themselves come from the features alone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from imbssl import UserError
from imbssl.clustering.kmeans import KMeansSettings, kmeans, resolve_backend, to_numpy
from imbssl.core.artifacts import (atomic_csv, read_assignments, read_cluster_summary, read_features, read_subset,
                                   require_same_images, write_assignments, write_cluster_summary, write_subset_rows)


def random_partition(sizes: list[int], n: int, seed: int) -> np.ndarray:
    """Part id of each of `n` items: a uniformly random partition with exactly `sizes[j]` items in part j."""
    sizes = np.asarray(sizes, np.int64)
    if (sizes < 0).any() or sizes.sum() != n:
        raise UserError(f"random partition: part sizes {sizes.tolist()} must be >= 0 and sum to {n} images")
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(len(sizes)), sizes))


# ---------------------------------------------------------------------------------------------
# Cluster-vs-class metrics (reporting only)


def contingency(assignments: np.ndarray, labels: np.ndarray, k: int, num_classes: int) -> np.ndarray:
    """(k, num_classes) counts: row j, column c = images of class c in cluster j."""
    flat = np.asarray(assignments, np.int64) * num_classes + np.asarray(labels, np.int64)
    return np.bincount(flat, minlength=k * num_classes).reshape(k, num_classes)


def cluster_metrics(assignments: np.ndarray, labels: np.ndarray, k: int) -> dict[str, Any]:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    return {
        "sizes": np.bincount(assignments, minlength=k).tolist(),
        "nmi": float(normalized_mutual_info_score(labels, assignments)),
        "ari": float(adjusted_rand_score(labels, assignments)),
    }


def normalize_features(features, how: str):
    """The k-means input: `features` as they are (none) or each row scaled to unit L2 norm (l2).
    Works on numpy arrays and (CPU or CUDA) torch tensors alike."""
    if how == "none":
        return features
    if hasattr(features, "detach"):  # torch tensor, possibly on the GPU for cuML
        return features / features.norm(dim=1, keepdim=True).clamp_min(1e-12)
    features = np.asarray(features, np.float32)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def pca_2d(features, seed: int) -> np.ndarray:
    """(N, 2) projection on the first two principal components, for Figure 3."""
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=seed).fit_transform(to_numpy(features))


# ---------------------------------------------------------------------------------------------
# Output files


def write_partition(
    out_dir: str | os.PathLike,
    indices: np.ndarray,
    labels: np.ndarray,
    assignments: np.ndarray,
    summary: dict[str, Any],
    classes: list[str],
    projection: np.ndarray | None = None,
) -> Path:
    """Write one partition of a subset, every file atomically, summary.json last:

    - assignments.csv (index,cluster): `index` into the train split, rows in subset order;
    - cluster{j}.csv (index,label): the images of part j, in the subset-file format, so an expert
      trains on it with `imbssl pretrain --subset .../cluster{j}.csv`;
    - contingency.csv: cluster x class counts (reporting only);
    - pca.csv (index,x,y,cluster,label) when a 2-D projection is given (Figure 3);
    - summary.json: `summary` plus k, n, sizes, nmi, ari.
    """
    import pandas as pd

    out_dir = Path(out_dir)
    k = int(summary["k"])
    indices, labels, assignments = (np.asarray(a, np.int64) for a in (indices, labels, assignments))
    write_assignments(out_dir / "assignments.csv", indices, assignments)
    for j in range(k):
        members = assignments == j
        write_subset_rows(out_dir / f"cluster{j}.csv", indices[members], labels[members])
    table = pd.DataFrame(contingency(assignments, labels, k, len(classes)), columns=classes)
    table.insert(0, "cluster", np.arange(k))
    atomic_csv(table, out_dir / "contingency.csv")
    if projection is not None:
        atomic_csv(pd.DataFrame({"index": indices, "x": projection[:, 0], "y": projection[:, 1],
                                 "cluster": assignments, "label": labels}), out_dir / "pca.csv")
    write_cluster_summary(out_dir / "summary.json",
                          {**summary, "n": int(len(indices)), **cluster_metrics(assignments, labels, k)})
    return out_dir / "summary.json"


# ---------------------------------------------------------------------------------------------
# Whole jobs (one CLI command each)


def cluster_subset(
    features: str, subset: str, out_dir: str, seed: int, settings: KMeansSettings,
    subset_name: str, train_data: str,
) -> Path:
    """k-means of a subset's base features; writes out_dir/{assignments,cluster*,contingency,pca}.csv
    and summary.json. Features go to the GPU only when cuML runs (and then straight from the file)."""
    from imbssl.data.store import class_names

    backend = resolve_backend(settings.backend)
    feats, feat_index = read_features(features, "cuda" if backend == "cuml" else "cpu")
    indices, labels = read_subset(subset)
    require_same_images(feat_index, indices, features, subset, "features")
    feats = normalize_features(feats, settings.normalize)  # what k-means (and Figure 3's PCA) sees
    result = kmeans(feats, settings.k, seed, backend, settings.n_init, settings.max_iter)
    summary = {"subset": subset_name, "seed": seed, "kind": "kmeans", "k": settings.k,
               "normalize": settings.normalize, "inertia": result.inertia, "n_init": settings.n_init,
               "max_iter": settings.max_iter, **result.info}
    return write_partition(out_dir, indices, labels, result.assignments, summary,
                           class_names(train_data), projection=pca_2d(feats, seed))


def partition_random_like(
    clusters_dir: str, subset: str, out_dir: str, seed: int, subset_name: str, train_data: str,
) -> Path:
    """The "+D" ablation: a random partition of the subset with the sizes of the k-means clusters
    in `clusters_dir` (a cluster_subset output); written like a k-means partition (no PCA)."""
    from imbssl.data.store import class_names

    indices, labels = read_subset(subset)
    assignments = Path(clusters_dir) / "assignments.csv"
    cluster_index, assigned = read_assignments(assignments)
    require_same_images(cluster_index, indices, assignments, subset, "cluster")
    kmeans_summary = read_cluster_summary(Path(clusters_dir) / "summary.json")
    k = int(kmeans_summary["k"])
    parts = random_partition(np.bincount(assigned, minlength=k).tolist(), len(indices), seed)
    # `normalize` is that of the k-means partition whose sizes this one copies.
    summary = {"subset": subset_name, "seed": seed, "kind": "random", "k": k,
               "normalize": kmeans_summary.get("normalize"), "inertia": None,
               "backend": "random", "version": f"numpy {np.__version__}", "seconds": 0.0}
    return write_partition(out_dir, indices, labels, parts, summary, class_names(train_data))
