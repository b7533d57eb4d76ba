"""The linear probe (augmented or on precomputed features) and per-class accuracy.

Protocol (the paper's "fine-tuning", Table 1; PatrickHua/SimSiam's linear_eval.py): frozen
backbone in eval mode, a linear classifier on its raw pooled features trained with SGD (lr 30,
momentum 0.9, batch 256, 100 epochs, cosine schedule) on a balanced set of the same size as the
pretraining subset, top-1 on the test split.

- `augment: true` (the reference protocol): every batch is a fresh RandomResizedCrop (scale
  0.08-1) + horizontal flip of the training images, made on the device with the project's batched
  augmentations (augment.py), and its features are recomputed by the frozen backbone, every epoch.
- `augment: false`: the features of the un-augmented images are computed once and the 100 epochs
  run on them (seconds instead of minutes; not the reference protocol).

Features are float32 throughout (no bf16 autocast outside training).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch
import torch.nn.functional as F

from imbssl import UserError
from imbssl.core.optim import cosine_lr, set_lr
from imbssl.data.augment import AugmentConfig, BatchAugment
from imbssl.data.device import as_source
from imbssl.evaluation.features import backbone_features


@dataclass
class EvalSettings:
    epochs: int = 100  # paper, Table 1
    lr: float = 30.0  # paper, Table 1 (PatrickHua/SimSiam: 30 x batch/256 at batch 256)
    momentum: float = 0.9  # paper, Table 1
    batch_size: int = 256  # paper, Table 1
    weight_decay: float = 0.0  # PatrickHua/SimSiam configs/simsiam_cifar.yaml (eval)
    # PatrickHua/SimSiam's classifier sits on the raw pooled features (no BN, no normalisation).
    feature_norm: Literal["none", "l2"] = "none"
    augment: bool = True  # the reference protocol (see the module docstring); false: precomputed features
    crop_min_scale: float = 0.08  # PatrickHua/SimSiam augmentations/eval_aug.py: RandomResizedCrop scale (0.08, 1)
    # The un-augmented view of evaluation (test images; also the precomputed features and the kNN
    # bank): resize_crop = the reference's bicubic resize to int(size x 8/7), then the centre crop
    # (PatrickHua/SimSiam augmentations/eval_aug.py:15-21); none = the centre crop of the stored images.
    test_transform: Literal["none", "resize_crop"] = "resize_crop"
    knn_k: int = 200  # neighbours that vote in the kNN accuracy
    knn_t: float = 0.1  # kNN temperature: a neighbour votes with weight exp(similarity / knn_t)
    batch_size_features: int = 1024  # images per forward pass when computing features
    device: str = "auto"  # torch device (auto: the GPU when one is visible, else the CPU)


def _prepare(features: torch.Tensor, norm: str) -> torch.Tensor:
    return F.normalize(features, dim=1) if norm == "l2" else features


def probe_augmentation(settings: EvalSettings) -> AugmentConfig:
    """The linear probe's training augmentation: RandomResizedCrop (ratio 3/4-4/3) + flip only."""
    return AugmentConfig(crop_min_scale=settings.crop_min_scale, crop_max_scale=1.0, flip_p=0.5, jitter_p=0.0,
                         brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0, grayscale_p=0.0)


def train_linear(
    features_of: Callable[[torch.Tensor], torch.Tensor], train_y: torch.Tensor, dim: int, num_classes: int,
    settings: EvalSettings, generator: torch.Generator,
) -> torch.nn.Linear:
    """SGD on a zero-initialised linear classifier; `features_of(idx)` gives the inputs of the
    training rows `idx` (precomputed, or recomputed from augmented images)."""
    device = train_y.device
    classifier = torch.nn.Linear(dim, num_classes).to(device)
    torch.nn.init.zeros_(classifier.weight)
    torch.nn.init.zeros_(classifier.bias)
    optimizer = torch.optim.SGD(classifier.parameters(), lr=settings.lr, momentum=settings.momentum,
                                weight_decay=settings.weight_decay)
    n = train_y.shape[0]
    batch = min(settings.batch_size, n)
    steps_per_epoch = max(1, n // batch)  # drop the ragged last batch, as the reference code does
    total = settings.epochs * steps_per_epoch
    for epoch in range(settings.epochs):
        order = torch.randperm(n, generator=generator, device=device)
        for step in range(steps_per_epoch):
            set_lr(optimizer, cosine_lr(epoch * steps_per_epoch + step, total, settings.lr))
            idx = order[step * batch:(step + 1) * batch]
            loss = F.cross_entropy(classifier(features_of(idx)), train_y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if not torch.isfinite(loss):  # one host sync per epoch
            raise UserError(f"linear evaluation diverged (loss {loss.item()} in epoch {epoch + 1}): lower "
                            f"evaluation.lr or set evaluation.feature_norm: l2")
    return classifier


def linear_probe(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, num_classes: int,
    settings: EvalSettings, seed: int = 0,
) -> torch.Tensor:
    """Train a linear classifier on precomputed frozen features; returns the predicted test labels."""
    generator = torch.Generator(device=train_x.device).manual_seed(seed)
    train_x, test_x = _prepare(train_x, settings.feature_norm), _prepare(test_x, settings.feature_norm)
    classifier = train_linear(lambda idx: train_x[idx], train_y, train_x.shape[1], num_classes, settings, generator)
    with torch.no_grad():
        return classifier(test_x).argmax(1)


def augmented_linear_probe(
    backbone: torch.nn.Module, train_images, train_y: torch.Tensor, test_x: torch.Tensor,
    num_classes: int, mean, std, settings: EvalSettings, seed: int = 0, size: int | None = None,
) -> torch.Tensor:
    """Train a linear classifier on the frozen backbone's features of freshly augmented uint8
    `train_images` (a tensor on the device or an image source) every step, crops of `size` px (default:
    the images' own); returns the predicted labels of the test features."""
    train_images = as_source(train_images)
    device = train_images.device
    generator = torch.Generator(device=device).manual_seed(seed)
    host_generator = torch.Generator().manual_seed(seed)
    augment = BatchAugment(probe_augmentation(settings), mean, std, size or int(train_images.image_shape[1]))
    was_training = backbone.training
    backbone.eval()  # BatchNorm keeps its pretrained statistics

    @torch.no_grad()
    def features_of(idx: torch.Tensor) -> torch.Tensor:
        views = augment(train_images[idx], generator, host_generator)
        return _prepare(backbone_features(backbone, views), settings.feature_norm)

    classifier = train_linear(features_of, train_y, test_x.shape[1], num_classes, settings, generator)
    backbone.train(was_training)
    with torch.no_grad():
        return classifier(_prepare(test_x, settings.feature_norm)).argmax(1)


def protocol(settings: EvalSettings) -> dict:
    """How the linear classifier was trained, in words, for the result JSON."""
    if settings.augment:
        train_images = (f"RandomResizedCrop(scale {settings.crop_min_scale:g}-1, ratio 3/4-4/3) + horizontal "
                        f"flip, features recomputed every step (frozen backbone in eval mode)")
    else:
        train_images = "un-augmented, features computed once"
    return {"linear": "augmented" if settings.augment else "precomputed", "train_images": train_images,
            "test_images": ("bicubic resize to 8/7 of the crop, then the centre crop" if settings.test_transform ==
                            "resize_crop" else "the centre crop of the stored images"),
            "features": f"float32, feature_norm {settings.feature_norm}",
            "lr": settings.lr, "epochs": settings.epochs, "batch_size": settings.batch_size}


def per_class_accuracy(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[float | None]:
    """Fraction of each class's test images predicted right; None for a class with no test images
    (its accuracy is unknown, not 0 or 1)."""
    correct = torch.zeros(num_classes, device=labels.device).scatter_add_(0, labels, (pred == labels).float())
    total = torch.bincount(labels, minlength=num_classes)
    return [None if n == 0 else c / n for c, n in zip(correct.tolist(), total.tolist())]
