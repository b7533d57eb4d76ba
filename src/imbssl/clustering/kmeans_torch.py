"""k-means in plain torch, for a GPU without RAPIDS (the seed paper's own code moved from
scikit-learn to a torch GPU k-means) or the CPU: the `torch` backend of cluster.kmeans.

The algorithm is scikit-learn's `KMeans(algorithm="lloyd")`, written for large inputs:
- greedy k-means++ seeding (2 + floor(ln k) candidates per centre, the one that lowers the
  potential most wins), `n_init` restarts, the lowest inertia kept;
- Lloyd iterations until the centres move less than `tol` x the mean per-feature variance
  (scikit-learn's tolerance) or `max_iter`, then a last assignment to the final centres;
- an empty cluster takes the point farthest from its centre, as scikit-learn relocates it;
- distances ||x||^2 - 2 x.c + ||c||^2 in float32, computed over row chunks so that no N x k
  matrix is ever held (1M x 2048 features with k = 100 need chunk x k floats at a time); centre
  sums and inertia are accumulated in float64.
Every random draw comes from a generator seeded with `seed`: the same seed gives the same result
on the same device.
"""

from __future__ import annotations

import math

import torch

CHUNK_ELEMENTS = 2**25  # distance entries (rows x centres) computed at once: 128 MiB of float32


def _chunks(n: int, k: int, chunk_rows: int | None) -> tuple[range, int]:
    """The chunk starts over n rows and the chunk length (distances to k centres at once)."""
    rows = chunk_rows or max(1, CHUNK_ELEMENTS // max(k, 1))
    return range(0, n, rows), rows


def squared_distances(x: torch.Tensor, x_sq: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """(rows, k) squared distances, clamped at 0 (the expansion can round below it)."""
    c_sq = (centres * centres).sum(1)
    return (x_sq[:, None] - 2.0 * (x @ centres.T) + c_sq[None, :]).clamp_min_(0)


def assign(x: torch.Tensor, x_sq: torch.Tensor, centres: torch.Tensor,
           chunk_rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centre of every row and its squared distance, chunk by chunk."""
    starts, rows = _chunks(len(x), len(centres), chunk_rows)
    labels = torch.empty(len(x), dtype=torch.int64, device=x.device)
    nearest = torch.empty(len(x), dtype=torch.float32, device=x.device)
    for start in starts:
        part = slice(start, start + rows)
        nearest[part], labels[part] = squared_distances(x[part], x_sq[part], centres).min(1)
    return labels, nearest


def _closest_to(x: torch.Tensor, x_sq: torch.Tensor, points: torch.Tensor, chunk_rows: int | None) -> torch.Tensor:
    """(len(points), N) squared distances of every row to each of a few points."""
    starts, rows = _chunks(len(x), len(points), chunk_rows)
    return torch.cat([squared_distances(x[s:s + rows], x_sq[s:s + rows], points).T for s in starts], dim=1)


def kmeans_plusplus(x: torch.Tensor, x_sq: torch.Tensor, k: int, generator: torch.Generator,
                    chunk_rows: int | None = None) -> torch.Tensor:
    """Greedy k-means++ (Arthur & Vassilvitskii 2007; scikit-learn's `_kmeans_plusplus`)."""
    n = len(x)
    trials = 2 + int(math.log(k))
    first = torch.randint(n, (1,), generator=generator, device=x.device)
    centres = [x[first]]
    closest = _closest_to(x, x_sq, x[first], chunk_rows)[0].double()
    for _ in range(1, k):
        cumulative = torch.cumsum(closest, 0)
        draws = torch.rand(trials, generator=generator, device=x.device, dtype=torch.float64) * cumulative[-1]
        candidates = torch.searchsorted(cumulative, draws).clamp_(max=n - 1)
        distances = torch.minimum(closest[None, :], _closest_to(x, x_sq, x[candidates], chunk_rows).double())
        best = int(distances.sum(1).argmin())
        closest = distances[best]
        centres.append(x[candidates[best:best + 1]])
    return torch.cat(centres)


def _centre_sums(x: torch.Tensor, labels: torch.Tensor, k: int, chunk_rows: int | None) -> torch.Tensor:
    """(k, D) float64 sums of each cluster's rows, over row chunks (no float64 copy of x)."""
    sums = torch.zeros(k, x.shape[1], dtype=torch.float64, device=x.device)
    starts, rows = _chunks(len(x), k, chunk_rows)
    for start in starts:
        sums.index_add_(0, labels[start:start + rows], x[start:start + rows].double())
    return sums


def lloyd(x: torch.Tensor, x_sq: torch.Tensor, centres: torch.Tensor, max_iter: int, tol: float,
          chunk_rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Lloyd iterations from `centres`; returns (labels, centres, inertia) after a final assignment."""
    k = len(centres)
    for _ in range(max_iter):
        labels, nearest = assign(x, x_sq, centres, chunk_rows)
        counts = torch.bincount(labels, minlength=k)
        updated = (_centre_sums(x, labels, k, chunk_rows) / counts.clamp_min(1)[:, None]).float()
        empty = torch.nonzero(counts == 0).flatten()
        if len(empty):  # relocate each empty cluster to one of the points farthest from their centres
            updated[empty] = x[nearest.topk(len(empty)).indices]
        shift = float(((updated - centres).double() ** 2).sum())
        centres = updated
        if shift <= tol:
            break
    labels, nearest = assign(x, x_sq, centres, chunk_rows)
    return labels, centres, float(nearest.double().sum())


def torch_kmeans(features: torch.Tensor, k: int, seed: int, n_init: int = 10, max_iter: int = 300,
                 tol: float = 1e-4, chunk_rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """k-means of (N, D) `features` on their device: (labels, centres, inertia) of the best of
    `n_init` runs. `chunk_rows` overrides the row chunk (tests)."""
    x = features.detach().float().contiguous()
    x_sq = (x * x).sum(1)
    absolute_tol = tol * float(x.double().var(0, unbiased=False).mean()) if len(x) > 1 else 0.0
    generator = torch.Generator(device=x.device).manual_seed(seed)
    best = None
    for _ in range(n_init):
        centres = kmeans_plusplus(x, x_sq, k, generator, chunk_rows)
        labels, centres, inertia = lloyd(x, x_sq, centres, max_iter, absolute_tol, chunk_rows)
        if best is None or inertia < best[2]:
            best = (labels, centres, inertia)
    return best
