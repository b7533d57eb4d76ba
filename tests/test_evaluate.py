from pathlib import Path

import numpy as np
import pytest
import torch

from imbssl.data.store import load_split
from imbssl.core.artifacts import read_result
from imbssl.evaluation.evaluate import evaluate_checkpoint
from imbssl.evaluation.linear import (EvalSettings, augmented_linear_probe, linear_probe, per_class_accuracy, probe_augmentation)
from imbssl.core.artifacts import write_subset as write_csv
from imbssl.evaluation.knn import knn_predict


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
    pred = linear_probe(x[:300], y[:300], x[300:], 4, EvalSettings(epochs=20, batch_size=32, feature_norm="l2"))
    assert (pred == y[300:]).float().mean() > 0.95


def test_per_class_accuracy_by_hand():
    pred = torch.tensor([0, 0, 1, 1, 1])
    labels = torch.tensor([0, 1, 1, 1, 2])
    assert per_class_accuracy(pred, labels, 3) == pytest.approx([1.0, 2 / 3, 0.0])
    # a class with no test images has no accuracy (None), even when it is predicted
    assert per_class_accuracy(torch.tensor([3, 0, 1]), torch.tensor([0, 0, 1]), 4) == [0.5, 1.0, None, None]


def test_evaluate_checkpoint_writes_a_result_in_either_protocol(digits_data, tmp_path):
    from imbssl.data.augment import AugmentConfig
    from imbssl.methods.simsiam import SimSiamConfig
    from imbssl.models.backbones import ModelConfig
    from imbssl.training.loop import TrainSettings
    from imbssl.training.pretrain import pretrain

    train, test, subsets = digits_data
    model = pretrain("simsiam", SimSiamConfig(proj_dim=16, pred_hidden_dim=8, warmup_epochs=0), str(train), str(test),
                     str(subsets / "imbalanced-p100.csv"), str(tmp_path / "m"),
                     settings=TrainSettings(epochs=1, batch_size=64, knn_every=0),
                     model=ModelConfig("resnet10", 4), augment=AugmentConfig())
    out = tmp_path / "r.json"
    evaluate_checkpoint(str(model), str(train), str(test), str(subsets / "balanced-p100.csv"),
                        str(subsets / "imbalanced-p100.csv"), "imbalanced-p100", "SimSiam", 0, str(out),
                        EvalSettings(epochs=5, augment=False))
    returned = evaluate_checkpoint(str(model), str(train), str(test), str(subsets / "balanced-p100.csv"),
                                   str(subsets / "imbalanced-p100.csv"), "imbalanced-p100", "SimSiam", 0,
                                   str(tmp_path / "again.json"), EvalSettings(epochs=5, augment=False))
    result = read_result(out)  # the file, read back through its reader
    assert result.n == result.eval_n == 352 and result.test_n == 360
    assert 0 <= result.top1 <= 100 and len(result.per_class) == 10
    # a backbone of one epoch is still far better than chance (10%) on digits
    assert result.top1 > 20
    assert result.knn_top1 > 20
    # What the run was, from the arguments and the model file.
    assert (result.subset, result.method, result.seed) == ("imbalanced-p100", "SimSiam", 0)
    assert result.classes == load_split(test).classes and result.pretrain_epochs == 1
    assert result.settings["epochs"] == 5
    # top-1 is the per-class accuracies weighted by the test split's class counts.
    counts = np.bincount(load_split(test).labels, minlength=10)
    assert result.top1 == pytest.approx(sum(a * c for a, c in zip(result.per_class, counts)) / counts.sum())
    assert result.test_class_counts == counts.tolist()
    assert result.knn_top1 == pytest.approx(
        sum(a * c for a, c in zip(result.knn_per_class, counts)) / counts.sum())
    # The same seed gives the same numbers; the returned result is what was written.
    assert {k: v for k, v in vars(returned).items() if k != "seconds"} == \
        {k: v for k, v in vars(result).items() if k != "seconds"}
    assert read_result(tmp_path / "again.json") == returned

    assert result.settings["augment"] is False and result.settings["feature_norm"] == "none"
    assert result.protocol["linear"] == "precomputed"
    # The reference protocol: crops and flips through the frozen backbone at every step.
    augmented = evaluate_checkpoint(str(model), str(train), str(test), str(subsets / "balanced-p100.csv"),
                                    str(subsets / "imbalanced-p100.csv"), "imbalanced-p100", "SimSiam", 0,
                                    str(tmp_path / "augmented.json"), EvalSettings(epochs=5, augment=True))
    assert augmented.settings["augment"] is True and augmented.protocol["linear"] == "augmented"
    assert "RandomResizedCrop(scale 0.08-1" in augmented.protocol["train_images"]
    assert augmented.n == augmented.eval_n == 352 and 0 <= augmented.top1 <= 100
    # kNN reads the un-augmented features in both: the same number.
    assert augmented.knn_top1 == result.knn_top1


@pytest.mark.parametrize("augment", [True, False])
def test_probe_and_knn_learn_from_the_eval_subset_not_the_test_split_or_pretrain_subset(tmp_path, augment):
    """The eval subset holds classes 0 and 1 only; the pretraining subset and the test split are all
    class 2. A probe or kNN fitted on the eval subset never predicts class 2 (its logit only falls
    from zero): top-1 is 0. Fitted on the test split or the pretraining subset, it would be 100.
    Both protocols: each calls its own probe."""
    from imbssl.methods.registry import build_method
    from imbssl.models.backbones import build_backbone
    from helpers.forge import forge_model

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
    model = forge_model(method, tmp_path, "simsiam", "resnet10", 4, 16)
    result = evaluate_checkpoint(str(model), str(tmp_path / "train.npz"), str(tmp_path / "test.npz"),
                                 str(tmp_path / "eval.csv"), str(tmp_path / "pretrain.csv"), "x", "SimSiam", 0,
                                 str(tmp_path / "r.json"), EvalSettings(epochs=3, batch_size=4, knn_k=5, augment=augment))
    assert result.settings["augment"] is augment
    assert (result.n, result.eval_n, result.test_n) == (6, 12, 6)
    assert result.top1 == 0.0 and result.knn_top1 == 0.0
    # classes 0 and 1 have no test images: unknown (null), never 0 or 100
    assert result.per_class == [None, None, 0.0] and result.knn_per_class == [None, None, 0.0]
    assert result.test_class_counts == [0, 0, 6] and result.train_class_counts == [0, 0, 6]


class MeanColour(torch.nn.Module):
    """A backbone whose features are the mean of each channel; it records every call."""

    output_dim = 3

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x):
        self.calls.append({"x": x.detach().clone(), "training": self.training, "grad": torch.is_grad_enabled(),
                           "dtype": x.dtype})
        return x.mean(dim=(2, 3))


def _colour_images(n, size=8):
    """uint8 NCHW images of one constant colour per class (4 classes)."""
    colours = torch.tensor([[230, 20, 20], [20, 230, 20], [20, 20, 230], [230, 230, 20]], dtype=torch.uint8)
    labels = torch.arange(n) % 4
    return colours[labels].view(n, 3, 1, 1).expand(n, 3, size, size).contiguous(), labels


def test_augmented_probe_learns_what_crops_and_flips_cannot_change():
    images, labels = _colour_images(64)
    test_x = images.float().div(255).sub(0.5).div(0.25).mean(dim=(2, 3))
    pred = augmented_linear_probe(MeanColour(), images, labels, test_x, 4, [0.5] * 3, [0.25] * 3,
                                  EvalSettings(epochs=10, batch_size=16, lr=1.0))
    assert pred.tolist() == labels.tolist()


def test_augmented_probe_recomputes_features_of_new_crops_every_step_in_eval_mode():
    n, size = 64, 8
    ramp = torch.arange(size, dtype=torch.float32) * 30  # horizontal and vertical gradients: crops differ
    images = torch.stack([ramp.view(1, -1).expand(size, size), ramp.view(-1, 1).expand(size, size),
                          torch.full((size, size), 100.0)]).to(torch.uint8).expand(n, 3, size, size).contiguous()
    labels = torch.arange(n) % 2
    backbone = MeanColour().train()
    augmented_linear_probe(backbone, images, labels, torch.zeros(5, 3), 2, [0.5] * 3, [0.25] * 3,
                           EvalSettings(epochs=3, batch_size=16))
    calls = backbone.calls
    assert len(calls) == 3 * (n // 16)  # one forward pass per step: nothing is cached across epochs
    assert all(c["x"].shape == (16, 3, size, size) and c["dtype"] == torch.float32 for c in calls)
    assert not any(c["training"] or c["grad"] for c in calls)  # frozen backbone, BatchNorm statistics kept
    assert backbone.training  # the caller's mode is restored
    plain = images[:16].float().div(255).sub(0.5).div(0.25)
    assert not any(torch.allclose(c["x"], plain) for c in calls)  # augmented views, not the raw images
    assert not any(torch.equal(a["x"], b["x"]) for i, a in enumerate(calls) for b in calls[i + 1:])  # fresh crops


def test_probe_augmentation_is_the_reference_crop_and_flip():
    config = probe_augmentation(EvalSettings())
    assert (config.crop_min_scale, config.crop_max_scale) == (0.08, 1.0)  # PatrickHua/SimSiam eval_aug.py
    assert (config.crop_min_ratio, config.crop_max_ratio) == pytest.approx((3 / 4, 4 / 3))
    assert config.flip_p == 0.5 and config.jitter_p == 0 and config.grayscale_p == 0


def test_features_are_float32_even_inside_a_bf16_autocast_region():
    """evaluation, kNN and clustering read `extract`'s features: never bf16, whoever calls it."""
    from imbssl.data.augment import normalize
    from imbssl.evaluation.features import extract
    from imbssl.models.backbones import build_backbone

    torch.manual_seed(0)
    backbone = build_backbone("resnet10", 4, 8).eval()
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    mean, std = [0.5] * 3, [0.25] * 3
    with torch.no_grad():
        reference = backbone(normalize(images, mean, std))  # float32, no autocast
        with torch.autocast("cpu", dtype=torch.bfloat16):
            in_bf16 = backbone(normalize(images, mean, std)).float()
            features = extract(backbone, images, mean, std, batch_size=4)
    assert not torch.allclose(in_bf16, reference, rtol=1e-4, atol=1e-5)  # bf16 would show
    assert features.dtype == torch.float32
    assert torch.allclose(features, reference, rtol=1e-5, atol=1e-6)


def test_a_result_records_its_provenance_and_imbssl_provenance_prints_it(digits_data, tmp_path, capsys):
    """What wrote the file: the command, its code hash (the same the rule's params carry) and every
    flag it ran with; `imbssl provenance FILE` prints it."""
    import json

    from imbssl.cli import command_code_hash, main
    from imbssl.data.augment import AugmentConfig
    from imbssl.methods.simsiam import SimSiamConfig
    from imbssl.models.backbones import ModelConfig
    from imbssl.training.loop import TrainSettings
    from imbssl.training.pretrain import pretrain

    train, test, subsets = digits_data
    model = pretrain("simsiam", SimSiamConfig(proj_dim=16, pred_hidden_dim=8, warmup_epochs=0), str(train), str(test),
                     str(subsets / "imbalanced-p100.csv"), str(tmp_path / "m"),
                     settings=TrainSettings(epochs=1, batch_size=64, knn_every=0), model=ModelConfig("resnet10", 4),
                     augment=AugmentConfig())
    out = tmp_path / "r.json"
    assert main(["evaluate", "--model", str(model), "--train-data", str(train), "--test-data", str(test),
                 "--eval-subset", str(subsets / "balanced-p100.csv"), "--pretrain-subset",
                 str(subsets / "imbalanced-p100.csv"), "--subset-name", "imbalanced-p100", "--method-name", "SimSiam",
                 "--dataset-name", "digits", "--out", str(out), "--epochs", "2", "--augment", "false"]) == 0
    recorded = read_result(out).provenance
    assert recorded["command"] == "evaluate" and recorded["code_hash"] == command_code_hash("evaluate")
    assert recorded["settings"]["epochs"] == 2 and recorded["settings"]["augment"] is False
    assert recorded["settings"]["model"] == str(model) and recorded["settings"]["dataset_name"] == "digits"
    # What model.pt says about the model it evaluated, so that the result alone tells its run (the report).
    assert {key: recorded["model"][key] for key in ("method", "arch", "width", "epochs", "image_size")} == \
        {"method": "simsiam", "arch": "resnet10", "width": 4, "epochs": 1, "image_size": 16}
    capsys.readouterr()
    assert main(["provenance", str(out)]) == 0
    assert json.loads(capsys.readouterr().out) == recorded
    # A model written without provenance (by an older imbssl) says so in one line.
    assert main(["provenance", str(model)]) == 2
    assert "records no provenance" in capsys.readouterr().err


def test_the_test_transform_is_torchvisions_bicubic_resize_then_centre_crop():
    """resize_crop is the reference's eval transform (Resize(int(32 * 8/7)) bicubic, CenterCrop(32)),
    image by image as torchvision applies it; `none` is the plain centre crop of the stored image."""
    from torchvision.transforms import InterpolationMode, v2

    from imbssl.data.augment import evaluation_view, resize_centre_crop

    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    reference = v2.Compose([v2.Resize(36, interpolation=InterpolationMode.BICUBIC, antialias=True), v2.CenterCrop(32)])
    batched = resize_centre_crop(images, 32)
    assert batched.dtype == torch.uint8 and batched.shape == (5, 3, 32, 32)
    assert torch.equal(batched, torch.stack([reference(image) for image in images]))
    assert torch.equal(evaluation_view("resize_crop", 32)(images), batched)
    assert not torch.equal(batched, images)  # it really resizes
    assert torch.equal(evaluation_view("none", 32)(images), images)
    # 224-px crops of a 256-px store: the shorter side is already int(224 * 8/7) = 256
    stored = torch.randint(0, 256, (2, 3, 256, 256), dtype=torch.uint8)
    assert torch.equal(resize_centre_crop(stored, 224), stored[..., 16:240, 16:240])


def test_a_resize_crop_of_images_of_unknown_shape_is_a_config_error():
    import yaml

    from imbssl.config_check import plan_error

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())
    config["dataset"].update(name="folder", root="data/x", image_size=None, store_size=None)
    message = plan_error(config)
    assert message.startswith("config error: evaluation.test_transform: resize_crop needs square images")
    config["evaluation"]["test_transform"] = "none"
    assert plan_error(config) is None or "test_transform" not in plan_error(config)
    config["evaluation"]["test_transform"], config["dataset"]["store_size"] = "resize_crop", 36
    assert plan_error(config) is None or "test_transform" not in plan_error(config)
