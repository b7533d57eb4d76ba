"""The evaluate job: linear probe, kNN and per-class accuracy of a pretrained backbone, as a result file.

Protocol (the paper's "fine-tuning", Table 1; PatrickHua/SimSiam's linear_eval.py): see linear.py.
The probe and kNN learn from the balanced subset of the pretraining subset's size (`eval_subset`)
and are tested on the test split; nothing here sees the pretraining subset's images.
"""

from __future__ import annotations

import time
from dataclasses import asdict

import numpy as np
import torch

from imbssl.core.artifacts import EvalResult, read_model, read_subset, write_result
from imbssl.data.augment import evaluation_view
from imbssl.data.device import StreamedImages, choose_resident, image_source, images_bytes, resolve_device
from imbssl.data.store import load_split
from imbssl.data.subsets import class_counts_of
from imbssl.evaluation.features import extract
from imbssl.evaluation.knn import knn_predict
from imbssl.evaluation.linear import EvalSettings, augmented_linear_probe, linear_probe, per_class_accuracy, protocol
from imbssl.models.backbones import restore_backbone


def _percent(values: list[float | None]) -> list[float | None]:
    return [None if v is None else 100.0 * v for v in values]


def recorded_provenance(provenance: dict | None, meta) -> dict:
    """This job's provenance with, under `model`, what model.pt says about the model it evaluated
    (its architecture, epochs and its own provenance: every flag it was trained with), so that a
    result file alone tells which run it belongs to (the report's overview, `snakemake --report`'s
    check of the config against the results) without opening model.pt (torch) again."""
    return {**(provenance or {}), "model": asdict(meta)}


def evaluate_checkpoint(
    model: str, train_data: str, test_data: str, eval_subset: str, pretrain_subset: str,
    subset_name: str, method_name: str, seed: int, out: str, settings: EvalSettings | None = None,
    provenance: dict | None = None,
) -> EvalResult:
    """Evaluate a pretrained backbone and write a result JSON (one run: subset, method, seed)."""
    settings = settings or EvalSettings()
    started = time.perf_counter()
    device = resolve_device(settings.device)
    torch.manual_seed(seed)
    model_file = read_model(model)
    backbone, meta = restore_backbone(model_file, device), model_file.meta
    train, test = load_split(train_data), load_split(test_data)
    eval_idx, _ = read_subset(eval_subset)
    pretrain_idx, pretrain_labels = read_subset(pretrain_subset)
    size = meta.image_size
    # The augmented probe reads the training images every step: on the device when they fit in
    # half its memory, else streamed; the test images are read once, streamed.
    train_images = image_source(train.images, eval_idx, device,
                                choose_resident("auto", images_bytes(train.images, len(eval_idx)), device, 0.5))
    view = evaluation_view(settings.test_transform, size)  # the same un-augmented view of every image
    train_x = extract(backbone, train_images, train.mean, train.std, settings.batch_size_features, size, view)
    test_x = extract(backbone, StreamedImages(test.images, np.arange(len(test.labels)), device), train.mean,
                     train.std, settings.batch_size_features, size, view)
    train_y = torch.from_numpy(train.labels[eval_idx]).to(device)
    test_y = torch.from_numpy(test.labels).to(device)
    if settings.augment:
        pred = augmented_linear_probe(backbone, train_images, train_y, test_x, train.num_classes, train.mean,
                                      train.std, settings, seed, size)
    else:
        pred = linear_probe(train_x, train_y, test_x, train.num_classes, settings, seed)
    knn_pred = knn_predict(train_x, train_y, test_x, train.num_classes, settings.knn_k, settings.knn_t)
    result = EvalResult(
        subset=subset_name, method=method_name, seed=seed, n=int(len(pretrain_idx)), eval_n=int(len(eval_idx)),
        test_n=int(len(test_y)),
        top1=100.0 * (pred == test_y).float().mean().item(),
        knn_top1=100.0 * (knn_pred == test_y).float().mean().item(),
        per_class=_percent(per_class_accuracy(pred, test_y, train.num_classes)),
        knn_per_class=_percent(per_class_accuracy(knn_pred, test_y, train.num_classes)),
        train_class_counts=class_counts_of(pretrain_labels, train.num_classes),
        test_class_counts=torch.bincount(test_y, minlength=train.num_classes).tolist(),
        classes=train.classes, pretrain_epochs=meta.epochs, protocol=protocol(settings), settings=asdict(settings),
        seconds=time.perf_counter() - started, collapsed=meta.collapsed_from_epoch is not None,
        provenance=recorded_provenance(provenance, meta))
    write_result(out, result)
    return result
