"""Linear evaluation on precomputed features, kNN accuracy and per-class accuracy.

Protocol (the paper's "fine-tuning"): frozen backbone, a linear classifier trained with SGD
(lr 30, momentum 0.9, batch 256, 100 epochs, cosine schedule) on a balanced set of the same size
as the pretraining subset, top-1 on the test split. Features are computed once, so the 100
epochs take seconds.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from .atomic import write_json
from .data import load_split
from .device import resolve_device, to_device_images
from .features import extract, load_backbone
from .knn import knn_predict
from .optim import cosine_lr, set_lr
from .subsets import read_csv


@dataclass
class EvalSettings:
    epochs: int = 100
    lr: float = 30.0
    momentum: float = 0.9
    batch_size: int = 256
    weight_decay: float = 0.0
    # Features are L2-normalised before the linear layer: lr 30 (MoCo's value) is tuned for
    # features of that scale, and normalisation keeps it stable across methods and widths.
    feature_norm: str = "l2"  # l2 | none
    knn_k: int = 200
    knn_t: float = 0.1
    batch_size_features: int = 1024
    device: str = "auto"


def _prepare(features: torch.Tensor, norm: str) -> torch.Tensor:
    if norm == "l2":
        return F.normalize(features, dim=1)
    if norm == "none":
        return features
    from . import UserError

    raise UserError(f"evaluation.feature_norm={norm!r}: use l2 or none")


def linear_probe(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, num_classes: int,
    settings: EvalSettings, seed: int = 0,
) -> torch.Tensor:
    """Train a linear classifier on frozen features; returns the predicted test labels."""
    generator = torch.Generator(device=train_x.device).manual_seed(seed)
    train_x, test_x = _prepare(train_x, settings.feature_norm), _prepare(test_x, settings.feature_norm)
    classifier = torch.nn.Linear(train_x.shape[1], num_classes).to(train_x.device)
    torch.nn.init.zeros_(classifier.weight)
    torch.nn.init.zeros_(classifier.bias)
    optimizer = torch.optim.SGD(classifier.parameters(), lr=settings.lr, momentum=settings.momentum,
                                weight_decay=settings.weight_decay)
    n = train_x.shape[0]
    batch = min(settings.batch_size, n)
    steps_per_epoch = max(1, n // batch)  # drop the ragged last batch, as the reference code does
    total = settings.epochs * steps_per_epoch
    for epoch in range(settings.epochs):
        order = torch.randperm(n, generator=generator, device=train_x.device)
        for step in range(steps_per_epoch):
            set_lr(optimizer, cosine_lr(epoch * steps_per_epoch + step, total, settings.lr))
            idx = order[step * batch:(step + 1) * batch]
            loss = F.cross_entropy(classifier(train_x[idx]), train_y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return classifier(test_x).argmax(1)


def per_class_accuracy(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[float]:
    correct = torch.zeros(num_classes, device=labels.device).scatter_add_(0, labels, (pred == labels).float())
    total = torch.bincount(labels, minlength=num_classes).clamp(min=1)
    return (correct / total).tolist()


def evaluate_checkpoint(
    model: str, train_data: str, test_data: str, eval_subset: str, pretrain_subset: str,
    subset_name: str, method_name: str, seed: int, out: str, settings: EvalSettings | None = None,
) -> dict:
    """Evaluate a pretrained backbone and write a result JSON (one run: subset, method, seed)."""
    settings = settings or EvalSettings()
    started = time.perf_counter()
    device = resolve_device(settings.device)
    torch.manual_seed(seed)
    backbone, meta = load_backbone(model, device)
    train, test = load_split(train_data), load_split(test_data)
    eval_idx, _ = read_csv(eval_subset)
    pretrain_idx, _ = read_csv(pretrain_subset)
    feats = lambda imgs: extract(backbone, to_device_images(imgs, device), train.mean, train.std,
                                 settings.batch_size_features)
    train_x, test_x = feats(train.images[eval_idx]), feats(test.images)
    train_y = torch.from_numpy(train.labels[eval_idx]).to(device)
    test_y = torch.from_numpy(test.labels).to(device)
    pred = linear_probe(train_x, train_y, test_x, train.num_classes, settings, seed)
    knn_pred = knn_predict(train_x, train_y, test_x, train.num_classes, settings.knn_k, settings.knn_t)
    result = {
        "subset": subset_name,
        "method": method_name,
        "seed": seed,
        "n": int(len(pretrain_idx)),
        "eval_n": int(len(eval_idx)),
        "test_n": int(len(test_y)),
        "top1": 100.0 * (pred == test_y).float().mean().item(),
        "knn_top1": 100.0 * (knn_pred == test_y).float().mean().item(),
        "per_class": [100.0 * a for a in per_class_accuracy(pred, test_y, train.num_classes)],
        "classes": train.classes,
        "pretrain_epochs": meta.get("epochs"),
        "settings": asdict(settings),
        "seconds": time.perf_counter() - started,
    }
    write_json(out, result)
    return result
