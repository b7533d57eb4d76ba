"""The hidden uniform prior, measured: normalised entropies by hand, the cluster-sizes job against a
k-means run by hand on the same features, the prior table and figure from forged files, and the
collapse flag from the training loop to the tables."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from imbssl.clustering.sizes import normalised_entropy, sorted_sizes
from imbssl.core.artifacts import ClusterSizes, PrototypeUsage, read_cluster_sizes, write_cluster_sizes, \
    write_model, write_prototype_usage
from imbssl.reporting.plotting import PlotSettings
from imbssl.reporting.prior import figure_prior_clusters, prior_table, write_prior_table
from imbssl.training.loop import COLLAPSE_EPOCHS, collapse_epoch

from helpers.forge import forge_model, forge_result


def test_normalised_entropy_by_hand():
    assert normalised_entropy([5, 5, 5, 5]) == pytest.approx(1.0)
    assert normalised_entropy([10, 0, 0, 0]) == pytest.approx(0.0)
    # p = (3/4, 1/4): H = -(3/4 ln 3/4 + 1/4 ln 1/4) = 0.5623; / ln 2
    assert normalised_entropy([3, 1]) == pytest.approx(0.562335 / math.log(2), rel=1e-5)
    assert normalised_entropy([7]) == 1.0  # a single bin: nothing to spread
    assert sorted_sizes(np.array([2, 0, 2, 2, 1]), 4) == [3, 1, 1, 0]


def test_the_cluster_sizes_job_is_k_means_of_the_models_features_with_k_the_classes(digits_data, tmp_path):
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    from imbssl.clustering.prior import PriorClusterSettings, measure_cluster_sizes
    from imbssl.core.artifacts import read_model, read_subset
    from imbssl.data.store import load_split
    from imbssl.evaluation.features import extract
    from imbssl.methods.registry import build_method
    from imbssl.models.backbones import build_backbone, restore_backbone

    train, _, subsets = digits_data
    torch.manual_seed(0)
    method = build_method("simsiam", build_backbone("resnet10", 4, 16), proj_dim=16, pred_hidden_dim=8)
    split = load_split(train)
    model = forge_model(method, tmp_path / "m", "simsiam", "resnet10", 4, 16, mean=split.mean, std=split.std)
    out = tmp_path / "sizes.json"
    sizes = measure_cluster_sizes(str(model), str(train), str(subsets / "imbalanced-p100.csv"), "imbalanced-p100",
                                  "simsiam", 3, str(out), PriorClusterSettings(backend="sklearn", n_init=2,
                                                                               normalize="none"))
    assert read_cluster_sizes(out) == sizes and not sizes.collapsed
    # By hand: the same features, scikit-learn's k-means with K = 10 classes and the same seed.
    indices, labels = read_subset(subsets / "imbalanced-p100.csv")
    features = extract(restore_backbone(read_model(model), torch.device("cpu")),
                       torch.from_numpy(split.images[indices]).permute(0, 3, 1, 2).contiguous(), split.mean,
                       split.std).numpy()
    assignments = KMeans(n_clusters=10, n_init=2, max_iter=300, random_state=3).fit(features).labels_
    assert sizes.k == 10 and sizes.n == len(indices) == 352
    assert sizes.cluster_sizes == sorted(np.bincount(assignments, minlength=10).tolist(), reverse=True)
    assert sizes.class_sizes == sorted(np.bincount(labels, minlength=10).tolist(), reverse=True)
    assert sizes.class_sizes[0] > 10 * sizes.class_sizes[-1]  # imbalanced-p100 of the digits
    assert sizes.cluster_entropy == pytest.approx(normalised_entropy(sizes.cluster_sizes))
    assert sizes.class_entropy == pytest.approx(normalised_entropy(sizes.class_sizes))
    assert sizes.nmi == pytest.approx(normalized_mutual_info_score(labels, assignments))
    # A model whose training ended collapsed is flagged in its cluster sizes (for the prior table's †).
    saved = read_model(model)
    saved.meta.collapsed_from_epoch = 2
    write_model(model, saved.backbone, saved.method_state, saved.meta)
    again = measure_cluster_sizes(str(model), str(train), str(subsets / "imbalanced-p100.csv"), "imbalanced-p100",
                                  "simsiam", 3, str(out), PriorClusterSettings(backend="sklearn", n_init=2,
                                                                               normalize="none"))
    assert again.collapsed and again.cluster_sizes == sizes.cluster_sizes


def _sizes(path, subset, method, seed, clusters, classes, collapsed=False):
    write_cluster_sizes(path, ClusterSizes(subset, method, seed, len(clusters), sum(classes), clusters, classes,
                                           normalised_entropy(clusters), normalised_entropy(classes), 0.5 + seed / 10,
                                           "sklearn", collapsed=collapsed))
    return path


def test_prior_table_by_hand(tmp_path):
    classes = [8, 2]
    files = [_sizes(tmp_path / "a.json", "imbalanced-p4", "simclr", 0, [5, 5], classes),
             _sizes(tmp_path / "b.json", "imbalanced-p4", "simclr", 1, [7, 3], classes),
             _sizes(tmp_path / "c.json", "imbalanced-p4", "msn", 0, [9, 1], classes),
             _sizes(tmp_path / "d.json", "balanced-p4", "msn", 0, [5, 5], [5, 5])]
    usage = tmp_path / "u.json"
    write_prototype_usage(usage, PrototypeUsage("msn", "uniform", 0.25, 4, 10, [6, 4, 0, 0], [2.5] * 4,
                                                subset="imbalanced-p4", seed=0))
    table = prior_table(files, [usage])
    assert list(zip(table.subset, table.method)) == [("imbalanced-p4", "SimCLR"), ("imbalanced-p4", "MSN"),
                                                     ("balanced-p4", "MSN")]
    simclr = table.iloc[0]
    both = [normalised_entropy([5, 5]), normalised_entropy([7, 3])]
    assert simclr.cluster_entropy_mean == pytest.approx(np.mean(both))
    assert simclr.cluster_entropy_std == pytest.approx(np.std(both, ddof=1))
    assert simclr.class_entropy == pytest.approx(normalised_entropy([8, 2])) and simclr.seeds == 2
    assert simclr.nmi_mean == pytest.approx(0.55) and math.isnan(simclr.usage_entropy_mean)
    msn = table.iloc[1]
    assert msn.usage_entropy_mean == pytest.approx(normalised_entropy([6, 4, 0, 0]))
    assert msn.prototypes_used_mean == pytest.approx(0.5)
    write_prior_table(files, [usage], tmp_path / "p.csv", tmp_path / "p.md", "title")
    md = (tmp_path / "p.md").read_text()
    assert "| imbalanced-p4 | 10 | 0.722 | SimCLR |" in md and "| 50% |" in md
    assert list(table.collapsed) == [0, 0, 0] and "†" not in md


def test_a_collapsed_model_is_marked_in_the_prior_table(tmp_path):
    classes = [8, 2]
    files = [_sizes(tmp_path / "a.json", "imbalanced-p4", "dino", 0, [5, 5], classes, collapsed=True),
             _sizes(tmp_path / "b.json", "imbalanced-p4", "dino", 1, [7, 3], classes),
             _sizes(tmp_path / "c.json", "imbalanced-p4", "simclr", 0, [9, 1], classes)]
    table = write_prior_table(files, [], tmp_path / "p.csv", tmp_path / "p.md")
    assert dict(zip(table.method, table.collapsed)) == {"SimCLR": 0, "DINO": 1}  # seeds that collapsed
    md = (tmp_path / "p.md").read_text()
    assert "| imbalanced-p4 | 10 | 0.722 | DINO † |" in md and "| SimCLR |" in md and "† the training" in md
    assert (tmp_path / "p.csv").read_text().splitlines()[0].endswith(",collapsed")
    outs = [tmp_path / "f.png", tmp_path / "f.pdf"]
    figure_prior_clusters(files, outs, "t", PlotSettings(dpi=40))
    assert outs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and outs[1].read_bytes()[:5] == b"%PDF-"


def test_collapse_is_the_last_epochs_with_a_vanishing_output_std():
    healthy, dead = 0.1, 1e-6
    rows = [{"epoch": e + 1, "out_std": v} for e, v in enumerate([healthy, dead, dead, healthy] + [dead] * 3)]
    assert COLLAPSE_EPOCHS == 3 and collapse_epoch(rows) == 5  # the run ended collapsed from epoch 5
    assert collapse_epoch(rows[:3]) is None  # two low epochs are not a collapse yet
    assert collapse_epoch(rows[:4]) is None  # it recovered


def test_uniform_targets_count_as_collapse_as_a_vanishing_std_does():
    # DINO's other collapse: embeddings still differ, every target is the uniform distribution.
    rows = [{"epoch": e + 1, "out_std": 0.01, "target_entropy": v} for e, v in enumerate([0.6, 0.995, 0.999, 1.0])]
    assert collapse_epoch(rows) == 2
    assert collapse_epoch([dict(r, target_entropy=0.9) for r in rows]) is None


def test_uniform_predictions_count_as_collapse_as_uniform_targets_do():
    # SwAV's uniform collapse: every image predicts the uniform distribution (its loss sits at log K).
    rows = [{"epoch": e + 1, "out_std": 0.03, "prediction_entropy": v} for e, v in enumerate([0.7, 0.99, 0.999, 1.0])]
    assert collapse_epoch(rows) == 2
    assert collapse_epoch([dict(r, prediction_entropy=0.98) for r in rows]) is None


def test_dino_target_entropy_is_one_for_uniform_targets_and_near_zero_for_sharp_ones():
    from imbssl.methods.dino import target_entropy
    k = 64
    same = torch.ones(4, k)  # every score equal: each target uniform
    assert target_entropy(same, torch.zeros(k), 0.04).item() == pytest.approx(1.0)
    sharp = torch.eye(k)[:4] * 10  # one score far above the others: targets one-hot at 0.04
    assert target_entropy(sharp, torch.zeros(k), 0.04).item() < 1e-3
    half = torch.zeros(1, 2)  # by hand: two equal scores of two outputs, entropy log 2 / log 2
    assert target_entropy(half, torch.zeros(2), 0.1).item() == pytest.approx(1.0)


def test_a_collapsed_run_is_warned_about_flagged_in_model_and_result_and_marked_in_the_table(tmp_path, capsys):
    from imbssl.data.augment import AugmentConfig, BatchAugment
    from imbssl.methods.registry import Method, MethodConfig, output_std
    from imbssl.reporting.tables import write_table
    from imbssl.training.loop import TrainSettings, train_loop

    class Collapsing(Method):
        name = "collapsing"
        config_section = "collapsing"

        def __init__(self):
            super().__init__(torch.nn.Linear(1, 1), MethodConfig(warmup_epochs=0))
            self.backbone.output_dim = 1

        def loss(self, views, index=None):
            z = self.backbone(views[0].mean(dim=(1, 2, 3), keepdim=False)[:, None]) * 0 + 1  # one output for all
            return z.sum() * 0 + self.backbone.weight.sum() ** 2, {"out_std": output_std(torch.cat([z, z], 1))}

    images = torch.randint(0, 256, (8, 3, 4, 4), dtype=torch.uint8)
    aug = BatchAugment(AugmentConfig(), [0.5] * 3, [0.25] * 3, 4)
    rows = train_loop(Collapsing(), images, TrainSettings(epochs=4, batch_size=4, checkpoint_every=0, knn_every=0),
                      aug, tmp_path, 0, "x")
    assert collapse_epoch(rows) == 1
    err = capsys.readouterr().err
    assert err.count("warning: collapsing collapsed") == 1 and "from epoch 1" in err
    # The result files say so, and the table marks the cell.
    results = [forge_result(tmp_path / f"{m}.json", "full", m, 0, 50.0, collapsed=(m == "SimCLR"))
               for m in ("SimSiam", "SimCLR")]
    summary = write_table(results, ["SimSiam", "SimCLR"], tmp_path / "t.csv", tmp_path / "t.md")
    assert summary.set_index("method").collapsed.to_dict() == {"SimSiam": 0, "SimCLR": 1}
    md = (tmp_path / "t.md").read_text()
    assert "| full | 100 | 50.00 ± 0.00 | 50.00 ± 0.00 † |" in md and "† the training" in md
