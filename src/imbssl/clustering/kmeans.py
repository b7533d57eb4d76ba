"""k-means behind one function (RAPIDS cuML on a GPU, scikit-learn otherwise), random partitions
of the same sizes (the "+D" ablation), and how clusters line up with classes.

Class labels are used here for reporting only (NMI, ARI, the cluster x class table); the
clusters themselves come from the features alone.

torch is imported only where a CUDA device is looked for or handed to cuML, so the reporting
side (figures, tables) never needs it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from imbssl import UserError
from imbssl.core.atomic import atomic_path, write_json

BACKENDS = ("auto", "cuml", "torch", "sklearn")
NORMALIZE = ("none", "l2")


@dataclass
class KMeansSettings:
    """The `clustering` config keys the cluster rule passes (k, backend and k-means' own knobs)."""

    k: int = 5
    backend: str = "auto"  # auto | cuml | torch | sklearn
    n_init: int = 10  # k-means restarts; the run with the lowest inertia wins
    max_iter: int = 300
    # none: k-means on the raw backbone features (the paper says only "k-means" with scikit-learn);
    # l2: on L2-normalised features, k-means on the unit sphere (the assignments use cosine
    # similarity up to the centroids' norms, which are not re-normalised).
    normalize: str = "none"

    def __post_init__(self) -> None:
        if self.normalize not in NORMALIZE:
            raise UserError(f"clustering.normalize={self.normalize!r}: use one of {', '.join(NORMALIZE)}")


@dataclass
class KMeansResult:
    assignments: np.ndarray  # (N,) int64, cluster 0 the largest
    centroids: np.ndarray  # (k, D) float32, in the same order
    inertia: float  # sum of squared distances to the assigned centroid
    info: dict[str, Any] = field(default_factory=dict)  # backend, version, seconds


# ---------------------------------------------------------------------------------------------
# Backends


def cuml_unavailable_reason() -> str | None:
    """Why cuML cannot run here, or None when it can (it imports and a CUDA device is visible)."""
    try:
        import cuml  # noqa: F401
        import cupy  # noqa: F401
    except ImportError as err:
        return f"RAPIDS cuML does not import ({err})"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device is visible"
    return None


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_backend(backend: str) -> str:
    """The backend that will run: `auto` takes cuML where it can run, else torch on a GPU, else
    scikit-learn."""
    if backend not in BACKENDS:
        raise UserError(f"clustering.backend={backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend in ("sklearn", "torch"):
        return backend
    reason = cuml_unavailable_reason()
    if backend == "auto":
        return "cuml" if reason is None else "torch" if _cuda_available() else "sklearn"
    if reason:
        raise UserError(
            f"clustering.backend=cuml but {reason}: install RAPIDS cuML on a machine with a CUDA GPU "
            f"(https://docs.rapids.ai/install) or set clustering.backend to auto or sklearn"
        )
    return "cuml"


def to_numpy(features: Any) -> np.ndarray:
    """float32 host array of a numpy array or a (CPU or CUDA) torch tensor."""
    if hasattr(features, "detach"):  # torch tensor
        features = features.detach().float().cpu().numpy()
    return np.ascontiguousarray(features, dtype=np.float32)


def to_cupy(features: Any):
    """A CuPy view of a CUDA torch tensor through DLPack (no copy, no trip through the host);
    host arrays are copied to the GPU once."""
    import cupy

    if getattr(features, "is_cuda", False):
        return cupy.from_dlpack(features.detach().float().contiguous())
    return cupy.asarray(to_numpy(features))


def _kmeans_sklearn(features, k: int, seed: int, n_init: int, max_iter: int):
    import sklearn
    from sklearn.cluster import KMeans

    model = KMeans(n_clusters=k, n_init=n_init, max_iter=max_iter, random_state=seed).fit(to_numpy(features))
    return model.labels_, model.cluster_centers_, float(model.inertia_), sklearn.__version__


def _kmeans_torch(features, k: int, seed: int, n_init: int, max_iter: int):
    """kmeans_torch on the GPU when there is one (a CUDA tensor stays where it is), else the CPU."""
    import torch

    from imbssl.clustering.kmeans_torch import torch_kmeans

    x = features if isinstance(features, torch.Tensor) else torch.from_numpy(to_numpy(features))
    if not x.is_cuda and _cuda_available():
        x = x.cuda()
    labels, centres, inertia = torch_kmeans(x, k, seed, n_init, max_iter)
    return labels.cpu().numpy(), centres.cpu().numpy(), inertia, f"torch {torch.__version__} on {x.device.type}"


def _kmeans_cuml(features, k: int, seed: int, n_init: int, max_iter: int):  # pragma: no cover (needs cuML)
    import cuml
    import cupy

    model = cuml.KMeans(n_clusters=k, n_init=n_init, max_iter=max_iter, random_state=seed, output_type="cupy")
    model.fit(to_cupy(features))
    return (cupy.asnumpy(model.labels_), cupy.asnumpy(model.cluster_centers_), float(model.inertia_),
            cuml.__version__)


def order_by_size(assignments: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Renumber clusters by decreasing size (ties: lower old id first), so that ids mean the same
    thing whatever the backend's internal numbering."""
    k = len(centroids)
    order = np.argsort(-np.bincount(assignments, minlength=k), kind="stable")  # new id -> old id
    new_id = np.empty(k, np.int64)
    new_id[order] = np.arange(k)
    return new_id[assignments], centroids[order]


def kmeans(features, k: int, seed: int, backend: str = "auto", n_init: int = 10, max_iter: int = 300) -> KMeansResult:
    """k-means of (N, D) `features` (numpy, or a torch tensor: CUDA tensors go to cuML without a
    copy). Deterministic for a seed on a given backend."""
    n = len(features)
    if not 1 <= k <= n:
        raise UserError(f"clustering.k={k}: k-means needs 1 <= k <= the number of images ({n})")
    chosen = resolve_backend(backend)
    run = {"cuml": _kmeans_cuml, "torch": _kmeans_torch, "sklearn": _kmeans_sklearn}[chosen]
    started = time.perf_counter()
    labels, centroids, inertia, version = run(features, k, seed, n_init, max_iter)
    seconds = time.perf_counter() - started
    assignments, centroids = order_by_size(np.asarray(labels, np.int64), np.asarray(centroids, np.float32))
    return KMeansResult(assignments, centroids, inertia, {"backend": chosen, "version": version, "seconds": seconds})


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
    if how != "l2":
        raise UserError(f"clustering.normalize={how!r}: use one of {', '.join(NORMALIZE)}")
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


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


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
    out_dir = Path(out_dir)
    k = int(summary["k"])
    indices, labels, assignments = (np.asarray(a, np.int64) for a in (indices, labels, assignments))
    _write_csv(pd.DataFrame({"index": indices, "cluster": assignments}), out_dir / "assignments.csv")
    for j in range(k):
        members = assignments == j
        _write_csv(pd.DataFrame({"index": indices[members], "label": labels[members]}), out_dir / f"cluster{j}.csv")
    table = pd.DataFrame(contingency(assignments, labels, k, len(classes)), columns=classes)
    table.insert(0, "cluster", np.arange(k))
    _write_csv(table, out_dir / "contingency.csv")
    if projection is not None:
        _write_csv(pd.DataFrame({"index": indices, "x": projection[:, 0], "y": projection[:, 1],
                                 "cluster": assignments, "label": labels}), out_dir / "pca.csv")
    full = {**summary, "n": int(len(indices)), **cluster_metrics(assignments, labels, k)}
    write_json(out_dir / "summary.json", full)
    return out_dir / "summary.json"


def read_assignments(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(indices, clusters) of an assignments.csv, in subset order."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"cluster assignments {path} do not exist: run the cluster rule first")
    table = pd.read_csv(path)
    return table["index"].to_numpy(np.int64), table["cluster"].to_numpy(np.int64)


# ---------------------------------------------------------------------------------------------
# Whole jobs (one CLI command each)


def load_features(path: str | os.PathLike, device: str) -> tuple[Any, np.ndarray]:
    """(features tensor on `device`, train-split indices) of a features file:
    a checkpoint dict {"features": (N, D) float32, "index": (N,) int64}."""
    from imbssl.core import checkpoint

    state = checkpoint.load(path, map_location=device)
    if "features" not in state or "index" not in state:
        raise UserError(f"features file {path} lacks 'features' or 'index': rerun the features rule")
    return state["features"], state["index"].cpu().numpy().astype(np.int64)


def cluster_subset(
    features: str, subset: str, out_dir: str, seed: int, settings: KMeansSettings,
    subset_name: str, train_data: str,
) -> Path:
    """k-means of a subset's base features; writes out_dir/{assignments,cluster*,contingency,pca}.csv
    and summary.json. Features go to the GPU only when cuML runs (and then straight from the file)."""
    from imbssl.data.store import class_names
    from imbssl.data.subsets import read_csv, require_subset_order

    backend = resolve_backend(settings.backend)
    feats, feat_index = load_features(features, "cuda" if backend == "cuml" else "cpu")
    indices, labels = read_csv(subset)
    require_subset_order(feat_index, indices, features, subset, "features")
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
    import json

    from imbssl.data.store import class_names
    from imbssl.data.subsets import read_csv, require_subset_order

    indices, labels = read_csv(subset)
    assignments = Path(clusters_dir) / "assignments.csv"
    cluster_index, assigned = read_assignments(assignments)
    require_subset_order(cluster_index, indices, assignments, subset, "cluster")
    kmeans_summary = json.loads((Path(clusters_dir) / "summary.json").read_text())
    k = int(kmeans_summary["k"])
    parts = random_partition(np.bincount(assigned, minlength=k).tolist(), len(indices), seed)
    # `normalize` is that of the k-means partition whose sizes this one copies.
    summary = {"subset": subset_name, "seed": seed, "kind": "random", "k": k,
               "normalize": kmeans_summary.get("normalize"), "inertia": None,
               "backend": "random", "version": f"numpy {np.__version__}", "seconds": 0.0}
    return write_partition(out_dir, indices, labels, parts, summary, class_names(train_data))
