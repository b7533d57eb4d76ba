import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import make_blobs

from imbssl import UserError
from imbssl.core import checkpoint
from imbssl.clustering.kmeans import KMeansSettings, cuml_unavailable_reason, kmeans, order_by_size
from imbssl.clustering.partitions import cluster_subset, contingency, partition_random_like, random_partition
from imbssl.reporting.figures import PlotSettings, figure3
from imbssl.reporting.tables import write_cluster_table

torch.set_num_threads(1)


def blobs(n=300, centers=4, seed=0):
    x, y = make_blobs(n_samples=n, centers=centers, n_features=8, cluster_std=0.5, random_state=seed)
    return x.astype(np.float32), y


def test_sklearn_kmeans_recovers_separable_blobs():
    from sklearn.metrics import normalized_mutual_info_score

    x, y = blobs()
    result = kmeans(x, k=4, seed=0, backend="sklearn")
    assert normalized_mutual_info_score(y, result.assignments) == pytest.approx(1.0)
    assert result.centroids.shape == (4, 8)
    assert result.info["backend"] == "sklearn"
    assert result.info["version"]
    # Inertia is the sum of squared distances to the assigned centroids.
    expected = ((x - result.centroids[result.assignments]) ** 2).sum()
    assert result.inertia == pytest.approx(expected, rel=1e-4)


def test_clusters_are_numbered_by_decreasing_size():
    x, _ = make_blobs(n_samples=[50, 100, 250], n_features=4, cluster_std=0.3, random_state=1)
    result = kmeans(x.astype(np.float32), k=3, seed=0, backend="sklearn")
    assert np.bincount(result.assignments).tolist() == [250, 100, 50]


def test_order_by_size_renumbers_assignments_and_centroids_together():
    assignments = np.array([0, 1, 1, 2, 2, 2])
    centroids = np.array([[0.0], [1.0], [2.0]])
    new_assignments, new_centroids = order_by_size(assignments, centroids)
    assert new_assignments.tolist() == [2, 1, 1, 0, 0, 0]
    assert new_centroids.ravel().tolist() == [2.0, 1.0, 0.0]


def test_auto_picks_sklearn_without_cuda_or_cuml_and_says_why(capsys):
    if cuml_unavailable_reason() is None or torch.cuda.is_available():
        pytest.skip("a CUDA device is present: auto picks cuML or torch here")
    x, _ = blobs(n=60, centers=2)
    assert kmeans(torch.from_numpy(x), k=2, seed=0, backend="auto").info["backend"] == "sklearn"
    err = capsys.readouterr().err  # the job log says which backend ran and why
    assert f"k-means backend: sklearn (clustering backend auto: cuML not used: {cuml_unavailable_reason()}" in err


def test_cuml_where_it_cannot_run_names_the_setting():
    if cuml_unavailable_reason() is None:
        pytest.skip("cuML can run here")
    x, _ = blobs(n=60, centers=2)
    with pytest.raises(UserError, match="clustering.backend"):
        kmeans(x, k=2, seed=0, backend="cuml")


def test_more_clusters_than_images_is_a_user_error():
    # (An unknown backend never gets here: the schema and argparse's choices refuse it.)
    x, _ = blobs(n=10, centers=2)
    with pytest.raises(UserError, match="clustering.k"):
        kmeans(x, k=11, seed=0, backend="sklearn")


def test_kmeans_is_deterministic_for_a_seed():
    x, _ = blobs(n=200, centers=6, seed=3)  # overlapping enough that seeds could disagree
    a = kmeans(x, k=5, seed=7, backend="sklearn", n_init=2)
    b = kmeans(x, k=5, seed=7, backend="sklearn", n_init=2)
    assert np.array_equal(a.assignments, b.assignments)
    assert np.array_equal(a.centroids, b.centroids)
    assert a.inertia == b.inertia


def test_random_partition_has_the_given_sizes_and_covers_each_index_once():
    sizes = [7, 0, 3, 10]
    parts = random_partition(sizes, 20, seed=0)
    assert parts.shape == (20,)
    assert np.bincount(parts, minlength=4).tolist() == sizes
    assert not np.array_equal(parts, random_partition(sizes, 20, seed=1))
    assert np.array_equal(parts, random_partition(sizes, 20, seed=0))
    with pytest.raises(UserError, match="sum to 21"):
        random_partition(sizes, 21, seed=0)


def test_contingency_counts_by_hand():
    table = contingency(np.array([0, 0, 1, 1, 1]), np.array([2, 0, 2, 2, 1]), k=2, num_classes=3)
    assert table.tolist() == [[1, 0, 1], [0, 1, 2]]


@pytest.fixture
def clustered(tmp_path):
    """A features file and subset file for 90 images in 3 separable groups; the k-means output."""
    x, y = make_blobs(n_samples=[50, 30, 10], n_features=16, cluster_std=0.4, random_state=2)
    indices = np.arange(90) * 3 + 1  # indices into a (pretend) train split
    labels = y  # here the classes are the blobs, so NMI must be 1
    subset = tmp_path / "imbalanced-p10.csv"
    subset.write_text("index,label\n" + "".join(f"{i},{c}\n" for i, c in zip(indices, labels)))
    features = tmp_path / "features.pt"
    checkpoint.save({"features": torch.from_numpy(x.astype(np.float32)), "index": torch.from_numpy(indices)},
                    features)
    train = tmp_path / "train.npz"  # the prepared split: only its class names are read here
    np.savez(train, classes=np.asarray(["ant", "bee", "cat"]))
    settings = KMeansSettings(k=3, backend="sklearn", n_init=3)
    out = tmp_path / "kmeans"
    cluster_subset(str(features), str(subset), str(out), 0, settings, "imbalanced-p10", str(train))
    return features, subset, out, indices, labels, settings, train


def test_cluster_subset_writes_every_file(clustered):
    _, _, out, indices, labels, _, _ = clustered
    summary = json.loads((out / "summary.json").read_text())
    assert summary["k"] == 3 and summary["n"] == 90
    assert summary["sizes"] == [50, 30, 10]
    assert summary["nmi"] == pytest.approx(1.0) and summary["ari"] == pytest.approx(1.0)
    assert summary["backend"] == "sklearn" and summary["subset"] == "imbalanced-p10"
    for key in ("inertia", "version", "seconds"):
        assert summary[key] is not None
    assignments = pd.read_csv(out / "assignments.csv")
    assert assignments["index"].tolist() == indices.tolist()
    # Each cluster file is a subset file holding exactly that cluster's images.
    members = [pd.read_csv(out / f"cluster{j}.csv") for j in range(3)]
    assert [len(m) for m in members] == [50, 30, 10]
    assert sorted(np.concatenate([m["index"] for m in members]).tolist()) == indices.tolist()
    table = pd.read_csv(out / "contingency.csv").set_index("cluster")
    assert list(table.columns) == ["ant", "bee", "cat"]  # the prepared split's class names
    assert table.to_numpy().sum() == 90 and (table.to_numpy().max(axis=1) == [50, 30, 10]).all()
    pca = pd.read_csv(out / "pca.csv")
    assert list(pca.columns) == ["index", "x", "y", "cluster", "label"] and len(pca) == 90


def test_cluster_subset_is_deterministic_for_a_seed(clustered, tmp_path):
    features, subset, out, *_, settings, train = clustered
    again = tmp_path / "again"
    cluster_subset(str(features), str(subset), str(again), 0, settings, "imbalanced-p10", str(train))
    for name in ("assignments.csv", "contingency.csv", "pca.csv", "cluster0.csv"):
        assert (again / name).read_bytes() == (out / name).read_bytes()


def test_cluster_subset_rejects_features_of_another_subset(clustered, tmp_path):
    features, _, _, indices, labels, settings, train = clustered
    other = tmp_path / "other.csv"
    other.write_text("index,label\n" + "".join(f"{i + 1},{c}\n" for i, c in zip(indices, labels)))
    with pytest.raises(UserError, match="rerun the features rule"):
        cluster_subset(str(features), str(other), str(tmp_path / "x"), 0, settings, "other", str(train))


def test_random_partition_like_has_the_kmeans_sizes(clustered, tmp_path):
    _, subset, out, indices, _, _, train = clustered
    random_dir = tmp_path / "random"
    partition_random_like(str(out), str(subset), str(random_dir), 0, "imbalanced-p10", str(train))
    summary = json.loads((random_dir / "summary.json").read_text())
    assert summary["sizes"] == [50, 30, 10] and summary["kind"] == "random"
    assert summary["nmi"] < 0.5  # a random split does not follow the groups
    assignments = pd.read_csv(random_dir / "assignments.csv")
    assert assignments["index"].tolist() == indices.tolist()
    assert not (random_dir / "pca.csv").exists()


def test_figure3_and_cluster_table_from_files(clustered, tmp_path):
    _, subset, out, *_, train = clustered
    partition_random_like(str(out), str(subset), str(tmp_path / "random"), 0, "imbalanced-p10", str(train))
    pngs = [tmp_path / "fig3.png", tmp_path / "fig3.pdf"]
    figure3(out / "pca.csv", out / "contingency.csv", pngs, PlotSettings(dpi=50), summary_file=out / "summary.json")
    assert pngs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pngs[1].read_bytes()[:4] == b"%PDF"
    table = write_cluster_table([tmp_path / "random" / "summary.json", out / "summary.json"],
                                tmp_path / "clusters.csv", tmp_path / "clusters.md")
    assert table["kind"].tolist() == ["kmeans", "random"]
    assert table["sizes"].tolist() == ["50 / 30 / 10"] * 2
    written = pd.read_csv(tmp_path / "clusters.csv")
    assert list(written.columns) == ["subset", "seed", "kind", "k", "n", "normalize", "sizes", "expert_steps", "nmi",
                                     "ari", "backend"]
    assert "| imbalanced-p10 |" in (tmp_path / "clusters.md").read_text()


def test_l2_normalize_clusters_by_direction_not_by_length(tmp_path):
    """Two directions, each at lengths 1 and 20: raw k-means splits by length, k-means on
    L2-normalised features by direction; the summary records which input k-means saw."""
    rng = np.random.default_rng(0)
    directions = np.array([[1.0, 0.5], [0.5, 1.0]])
    direction = np.repeat([0, 1], 40)
    length = np.tile(np.repeat([1.0, 20.0], 20), 2)
    x = directions[direction] * length[:, None] + rng.normal(0, 0.02, (80, 2))
    indices = np.arange(80)
    subset = tmp_path / "s.csv"
    subset.write_text("index,label\n" + "".join(f"{i},{d}\n" for i, d in zip(indices, direction)))
    features = tmp_path / "features.pt"
    checkpoint.save({"features": torch.from_numpy(x.astype(np.float32)), "index": torch.from_numpy(indices)},
                    features)
    train = tmp_path / "train.npz"
    np.savez(train, classes=np.asarray(["a", "b"]))
    nmi = {}
    for how in ("none", "l2"):
        cluster_subset(str(features), str(subset), str(tmp_path / how), 0,
                       KMeansSettings(k=2, backend="sklearn", n_init=3, normalize=how), "s", str(train))
        summary = json.loads((tmp_path / how / "summary.json").read_text())
        assert summary["normalize"] == how
        nmi[how] = summary["nmi"]
    assert nmi["l2"] == pytest.approx(1.0) and nmi["none"] < 0.1
    partition_random_like(str(tmp_path / "l2"), str(subset), str(tmp_path / "random"), 0, "s", str(train))
    assert json.loads((tmp_path / "random" / "summary.json").read_text())["normalize"] == "l2"


def _summary(path, subset, kind, sizes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"subset": subset, "seed": 0, "kind": kind, "k": len(sizes), "n": sum(sizes),
                                "normalize": "none", "sizes": sizes, "nmi": 0.5, "ari": 0.25, "backend": "sklearn"}))
    return path


def _metrics(path, steps_per_epoch, epochs):
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = "".join(f"{e},0.1,{e * steps_per_epoch},-0.5\n" for e in range(1, epochs + 1))
    path.write_text("epoch,lr,steps,loss\n" + rows)
    return path


def test_cluster_table_reports_expert_steps_and_warns_below_the_minimum(tmp_path, capsys):
    summaries = [_summary(tmp_path / "km.json", "imbalanced-p100", "kmeans", [900, 300, 100]),
                 _summary(tmp_path / "rd.json", "imbalanced-p100", "random", [900, 300, 100])]
    # batch 256 for 10 epochs: 900 images -> 3 steps per epoch; 300 -> 1; 100 (< batch) -> 1
    metrics = [_metrics(tmp_path / f"{kind}{j}.csv", spe, 10)
               for kind in ("km", "rd") for j, spe in enumerate([3, 1, 1])]
    table = write_cluster_table(summaries, tmp_path / "c.csv", tmp_path / "c.md", metrics, min_expert_steps=20)
    assert table["expert_steps"].tolist() == ["30 / 10 / 10"] * 2
    assert table["normalize"].tolist() == ["none"] * 2
    md = (tmp_path / "c.md").read_text()
    warnings = [line for line in md.splitlines() if line.startswith("**Warning:**")]
    assert len(warnings) == 4  # clusters 1 and 2 of both partitions
    assert ("expert 2 of imbalanced-p100/kmeans/seed0 (100 images) took 10 optimizer steps, fewer than "
            "clustering.min_expert_steps = 20") in md
    logged = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[imbssl] warning:")]
    assert len(logged) == 4
    write_cluster_table(summaries, tmp_path / "c.csv", tmp_path / "c.md", metrics, min_expert_steps=10)
    assert "Warning" not in (tmp_path / "c.md").read_text()
    with pytest.raises(UserError, match="5 expert metrics files for 6 clusters"):
        write_cluster_table(summaries, tmp_path / "c.csv", tmp_path / "c.md", metrics[:5])
