"""The torch k-means backend against scikit-learn's, chunking, seeding, empty clusters, `auto`."""

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits, make_blobs
from sklearn.metrics import normalized_mutual_info_score as nmi

from imbssl.clustering import kmeans as cluster
from imbssl.clustering.kmeans import kmeans, resolve_backend
from imbssl.clustering.kmeans_torch import assign, kmeans_plusplus, lloyd, torch_kmeans


def _sklearn(x, k, n_init=10):
    model = KMeans(n_clusters=k, n_init=n_init, max_iter=300, random_state=0).fit(x)
    return model.labels_, model.inertia_


@pytest.mark.parametrize("k", [5, 10])
def test_on_separated_blobs_inertia_and_partition_match_sklearn(k):
    x, _ = make_blobs(n_samples=1500, centers=k, n_features=16, cluster_std=0.6, random_state=k)
    x = x.astype(np.float32)
    labels, _, inertia = torch_kmeans(torch.from_numpy(x), k, seed=0)
    sk_labels, sk_inertia = _sklearn(x, k)
    assert abs(inertia - sk_inertia) / sk_inertia < 0.01
    assert nmi(labels.numpy(), sk_labels) > 0.99


@pytest.mark.parametrize("k", [5, 10])
def test_on_digits_features_inertia_is_within_one_percent_of_sklearn(k):
    x = load_digits().data.astype(np.float32)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)  # standardised, like backbone features of the demo's data
    _, _, inertia = torch_kmeans(torch.from_numpy(x), k, seed=0)
    _, sk_inertia = _sklearn(x, k)
    assert abs(inertia - sk_inertia) / sk_inertia < 0.01


def test_the_inertia_is_the_sum_of_squared_distances_to_the_returned_centres():
    x = torch.from_numpy(make_blobs(n_samples=300, centers=3, n_features=4, random_state=1)[0].astype(np.float32))
    labels, centres, inertia = torch_kmeans(x, 3, seed=0, n_init=2)
    by_hand = ((x.double() - centres.double()[labels]) ** 2).sum().item()
    assert inertia == pytest.approx(by_hand, rel=1e-5)
    assert torch.equal(labels, torch.cdist(x, centres).argmin(1))  # every point at its nearest centre


def test_chunked_distances_give_the_unchunked_result():
    x = torch.from_numpy(make_blobs(n_samples=500, centers=4, n_features=8, random_state=2)[0].astype(np.float32))
    whole = torch_kmeans(x, 4, seed=3, n_init=2)
    chunked = torch_kmeans(x, 4, seed=3, n_init=2, chunk_rows=7)
    assert torch.equal(whole[0], chunked[0]) and whole[2] == pytest.approx(chunked[2], rel=1e-6)
    x_sq = (x * x).sum(1)
    centres = x[:4]
    for rows in (1, 13, None):
        labels, nearest = assign(x, x_sq, centres, rows)
        assert torch.equal(labels, torch.cdist(x, centres).argmin(1))


def test_the_same_seed_gives_the_same_partition_and_another_seed_may_not():
    x = torch.randn(400, 6, generator=torch.Generator().manual_seed(0))
    a, b = torch_kmeans(x, 5, seed=1, n_init=1), torch_kmeans(x, 5, seed=1, n_init=1)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert any(not torch.equal(a[1], torch_kmeans(x, 5, seed=s, n_init=1)[1]) for s in range(2, 6))


def test_kmeans_plusplus_picks_one_point_of_each_far_apart_group():
    # Four tight groups 100 apart: D^2 seeding puts its 4 centres in 4 different groups.
    groups = torch.tensor([[0.0, 0], [100, 0], [0, 100], [100, 100]])
    x = (groups[:, None, :] + 0.01 * torch.randn(4, 25, 2, generator=torch.Generator().manual_seed(0))).reshape(-1, 2)
    centres = kmeans_plusplus(x, (x * x).sum(1), 4, torch.Generator().manual_seed(0))
    assert sorted(torch.cdist(centres, groups).argmin(1).tolist()) == [0, 1, 2, 3]
    assert all(any(torch.equal(c, p) for p in x) for c in centres)  # centres are data points


def test_an_empty_cluster_takes_the_farthest_point():
    x = torch.tensor([[0.0], [0.1], [0.2], [10.0]])
    # Centre 2 sits where no point is nearest to it: Lloyd moves it onto the farthest point (10).
    start = torch.tensor([[0.0], [0.2], [-50.0]])
    labels, centres, inertia = lloyd(x, (x * x).sum(1), start, max_iter=10, tol=0.0)
    assert sorted(torch.bincount(labels, minlength=3).tolist()) == [1, 1, 2]
    assert 10.0 in centres.flatten().tolist()
    # k = N: every point its own cluster, inertia 0, however many duplicates there are.
    dup = torch.tensor([[1.0, 1.0], [1.0, 1.0], [2.0, 2.0]])
    labels, _, inertia = torch_kmeans(dup, 2, seed=0, n_init=2)
    assert inertia == 0.0 and labels[0] == labels[1] != labels[2]


def test_the_torch_backend_behind_cluster_kmeans():
    x = make_blobs(n_samples=600, centers=3, n_features=5, random_state=4)[0].astype(np.float32)
    result = kmeans(x, 3, seed=0, backend="torch", n_init=3)
    assert result.info["backend"] == "torch" and result.info["version"].startswith("torch")
    sizes = np.bincount(result.assignments)
    assert list(sizes) == sorted(sizes, reverse=True)  # ids by decreasing size, as every backend
    assert nmi(result.assignments, kmeans(x, 3, seed=0, backend="sklearn", n_init=3).assignments) > 0.99


def test_auto_picks_cuml_then_torch_on_a_gpu_then_sklearn(monkeypatch):
    monkeypatch.setattr(cluster, "cuml_unavailable_reason", lambda: "RAPIDS cuML does not import")
    monkeypatch.setattr(cluster, "_cuda_available", lambda: False)
    assert resolve_backend("auto") == "sklearn"
    monkeypatch.setattr(cluster, "_cuda_available", lambda: True)
    assert resolve_backend("auto") == "torch"
    monkeypatch.setattr(cluster, "cuml_unavailable_reason", lambda: None)
    assert resolve_backend("auto") == "cuml"
    assert resolve_backend("torch") == "torch" and resolve_backend("sklearn") == "sklearn"
