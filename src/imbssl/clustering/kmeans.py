"""k-means behind one function: RAPIDS cuML on a GPU, plain torch (kmeans_torch.py) on a GPU
without RAPIDS, scikit-learn on a CPU.

torch is imported only where a CUDA device is looked for or handed to cuML.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np

from imbssl import UserError

Backend = Literal["auto", "cuml", "torch", "sklearn"]
Normalize = Literal["none", "l2"]
BACKENDS, NORMALIZE = get_args(Backend), get_args(Normalize)


@dataclass
class KMeansSettings:
    """The `clustering` config keys the cluster rule passes (k, backend and k-means' own knobs)."""

    k: int = 5  # number of clusters
    backend: Backend = "auto"  # k-means implementation (auto: cuML where it runs, else torch on a GPU, else sklearn)
    n_init: int = 10  # k-means restarts; the run with the lowest inertia wins
    max_iter: int = 300  # at most this many iterations per k-means run
    # none: k-means on the raw backbone features (the paper says only "k-means" with scikit-learn);
    # l2: on L2-normalised features, k-means on the unit sphere (the assignments use cosine
    # similarity up to the centroids' norms, which are not re-normalised).
    normalize: Normalize = "none"


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
    assert backend in BACKENDS, f"clustering.backend={backend!r}"  # the schema and argparse allow only these
    if backend in ("sklearn", "torch"):
        return backend
    reason = cuml_unavailable_reason()
    if backend == "auto":
        chosen = "cuml" if reason is None else "torch" if _cuda_available() else "sklearn"
        why = "cuML runs here" if reason is None else f"cuML not used: {reason}" + (
            "; torch on the GPU" if chosen == "torch" else "; no CUDA GPU for torch")
        print(f"[imbssl] k-means backend: {chosen} (clustering backend auto: {why})", file=sys.stderr, flush=True)
        return chosen
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


