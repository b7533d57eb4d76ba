import json

import pytest

import torch

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
    result = json.loads(out.read_text())
    assert result["n"] == result["eval_n"] == 352 and result["test_n"] == 360
    assert 0 <= result["top1"] <= 100 and len(result["per_class"]) == 10
    # a backbone of one epoch is still far better than chance (10%) on digits
    assert result["top1"] > 20
