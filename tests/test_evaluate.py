import json

import numpy as np
import pytest
import torch

from imbssl.data import load_split
from imbssl.subsets import write_csv

from imbssl.evaluate import EvalSettings, evaluate_checkpoint, linear_probe, per_class_accuracy
from imbssl.knn import knn_predict


def test_knn_by_hand():
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    queries = torch.tensor([[1.0, 0.05], [0.1, 1.0]])
    assert knn_predict(bank, labels, queries, 2, k=1).tolist() == [0, 1]
    # k=3: query 2 is close to class 1 (one vote, weight e^(~1/t)) vs two far class-0 votes
    assert knn_predict(bank, labels, queries, 2, k=3, temperature=0.1).tolist() == [0, 1]


def test_linear_probe_separates_separable_features():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 16, generator=g) * 3
    y = torch.arange(400) % 4
    x = centers[y] + torch.randn(400, 16, generator=g)
    pred = linear_probe(x[:300], y[:300], x[300:], 4, EvalSettings(epochs=20, batch_size=32))
    assert (pred == y[300:]).float().mean() > 0.95


def test_per_class_accuracy_by_hand():
    pred = torch.tensor([0, 0, 1, 1, 1])
    labels = torch.tensor([0, 1, 1, 1, 2])
    assert per_class_accuracy(pred, labels, 3) == pytest.approx([1.0, 2 / 3, 0.0])


def test_evaluate_checkpoint_writes_a_result(digits_data, tmp_path):
    from imbssl.augment import AugmentConfig
    from imbssl.methods.simsiam import SimSiamConfig
    from imbssl.models import ModelConfig
    from imbssl.train import TrainSettings, pretrain

    train, test, subsets = digits_data
    model = pretrain("simsiam", SimSiamConfig(proj_dim=16, pred_hidden_dim=8), str(train), str(test),
                     str(subsets / "imbalanced-p100.csv"), str(tmp_path / "m"),
                     settings=TrainSettings(epochs=1, batch_size=64, knn_every=0),
                     model=ModelConfig("resnet10", 4), augment=AugmentConfig())
    out = tmp_path / "r.json"
    evaluate_checkpoint(str(model), str(train), str(test), str(subsets / "balanced-p100.csv"),
                        str(subsets / "imbalanced-p100.csv"), "imbalanced-p100", "SimSiam", 0, str(out),
                        EvalSettings(epochs=5))
    returned = evaluate_checkpoint(str(model), str(train), str(test), str(subsets / "balanced-p100.csv"),
                                   str(subsets / "imbalanced-p100.csv"), "imbalanced-p100", "SimSiam", 0,
                                   str(tmp_path / "again.json"), EvalSettings(epochs=5))
    result = json.loads(out.read_text())
    assert result["n"] == result["eval_n"] == 352 and result["test_n"] == 360
    assert 0 <= result["top1"] <= 100 and len(result["per_class"]) == 10
    # a backbone of one epoch is still far better than chance (10%) on digits
    assert result["top1"] > 20
    assert result["knn_top1"] > 20
    # What the run was, from the arguments and the model file.
    assert (result["subset"], result["method"], result["seed"]) == ("imbalanced-p100", "SimSiam", 0)
    assert result["classes"] == load_split(test).classes and result["pretrain_epochs"] == 1
    assert result["settings"]["epochs"] == 5
    # top-1 is the per-class accuracies weighted by the test split's class counts.
    counts = np.bincount(load_split(test).labels, minlength=10)
    assert result["top1"] == pytest.approx(sum(a * c for a, c in zip(result["per_class"], counts)) / counts.sum())
    # The same seed gives the same numbers; the returned dict is what was written.
    assert {k: v for k, v in returned.items() if k != "seconds"} == \
        {k: v for k, v in result.items() if k != "seconds"}


def test_probe_and_knn_learn_from_the_eval_subset_not_the_test_split_or_pretrain_subset(tmp_path):
    """The eval subset holds classes 0 and 1 only; the pretraining subset and the test split are all
    class 2. A probe or kNN fitted on the eval subset never predicts class 2 (its logit only falls
    from zero): top-1 is 0. Fitted on the test split or the pretraining subset, it would be 100."""
    from imbssl.methods import build_method
    from imbssl.models import build_backbone
    from imbssl.train import save_model

    rng = np.random.default_rng(0)
    images = lambda n: rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
    stats = dict(classes=np.asarray(["a", "b", "c"]), mean=np.full(3, 0.5, np.float32),
                 std=np.full(3, 0.25, np.float32))
    train_labels = np.array([0, 1] * 6 + [2] * 6)
    np.savez(tmp_path / "train.npz", images=images(18), labels=train_labels, **stats)
    np.savez(tmp_path / "test.npz", images=images(6), labels=np.full(6, 2), **stats)
    write_csv(tmp_path / "eval.csv", np.arange(12), train_labels)
    write_csv(tmp_path / "pretrain.csv", np.arange(12, 18), train_labels)
    torch.manual_seed(0)
    method = build_method("simsiam", build_backbone("resnet10", 4), proj_dim=16, pred_hidden_dim=8)
    model = save_model(method, tmp_path, method="simsiam", arch="resnet10", width=4, image_size=16,
                       mean=[0.5] * 3, std=[0.25] * 3, epochs=0)
    result = evaluate_checkpoint(str(model), str(tmp_path / "train.npz"), str(tmp_path / "test.npz"),
                                 str(tmp_path / "eval.csv"), str(tmp_path / "pretrain.csv"), "x", "SimSiam", 0,
                                 str(tmp_path / "r.json"), EvalSettings(epochs=3, batch_size=4, knn_k=5))
    assert (result["n"], result["eval_n"], result["test_n"]) == (6, 12, 6)
    assert result["top1"] == 0.0 and result["knn_top1"] == 0.0
    assert result["per_class"] == [0.0, 0.0, 0.0]
