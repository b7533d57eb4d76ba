"""Backbone outputs for a set of images: eval mode, no augmentation, large batches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from imbssl.core import distributed
from imbssl.data.augment import centre_crop, normalize
from imbssl.data.device import StreamedImages, as_source, resolve_device


@torch.no_grad()
def extract(backbone: nn.Module, images, mean, std, batch_size: int = 1024, size: int | None = None,
            view=None) -> torch.Tensor:
    """float32 features (N, D) of uint8 NCHW `images`: a tensor on the backbone's device, or an
    image source (device.py; a streamed one is prefetched chunk by chunk), centre-cropped to
    `size` when they are stored larger (or seen through `view`, uint8 -> uint8: evaluation's
    test transform).

    Computed in float32 even when called inside an autocast region: evaluation, kNN and
    clustering read these features, and bf16 (8 bits of mantissa) would round them.
    """
    images = as_source(images)
    was_training = backbone.training
    backbone.eval()
    view = view or (lambda chunk: centre_crop(chunk, size))
    out = [backbone_features(backbone, normalize(view(chunk), mean, std)) for chunk in images.chunks(batch_size)]
    backbone.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, getattr(backbone, "output_dim", 0), device=images.device)


def extract_all_ranks(backbone: nn.Module, images, mean, std, batch_size: int = 1024,
                      size: int | None = None) -> torch.Tensor:
    """`extract` with the work split over the ranks of a job on several processes: each rank
    extracts its contiguous share and every rank gets all features, in index order. With one
    process it is `extract`."""
    images = as_source(images)
    world = distributed.world_size()
    if world == 1:
        return extract(backbone, images, mean, std, batch_size, size)
    part = distributed.shard(len(images), distributed.rank(), world)
    return distributed.gather_rows(extract(backbone, images.rows(part), mean, std, batch_size, size), len(images))


def backbone_features(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """float32 outputs of `backbone` (in the caller's train/eval mode) for normalised images x,
    with autocast switched off (no bf16 even inside a training step's autocast region)."""
    if x.device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(x.device.type, enabled=False):
        return backbone(x.float()).float()


@dataclass
class FeatureSettings:
    """What the features rule takes from the config (`evaluation.batch_size_features`, `pretrain.device`)."""

    batch_size_features: int = 1024  # images per forward pass (no gradients: large batches are fine)
    device: str = "auto"  # torch device (auto: the GPU when one is visible, else the CPU)


@dataclass
class FeatureOutput:
    """What the features job writes (`clustering.features`)."""

    # backbone = the backbone's output; projector = a SimSiam model's projector output on top of it
    features: Literal["backbone", "projector"] = "backbone"


def encoder_of(model_file, device, output: str = "backbone") -> nn.Module:
    """The model's backbone, or (output `projector`) its backbone followed by its SimSiam projector,
    in eval mode on `device`: Experiment II's base and experts seen through either."""
    from imbssl import UserError
    from imbssl.methods.simsiam import projector_from_state
    from imbssl.models.backbones import restore_backbone

    backbone = restore_backbone(model_file, device)
    if output == "backbone":
        return backbone
    if not any(key.startswith("projector.") for key in model_file.method_state):
        raise UserError(f"a {model_file.meta.method} model has no SimSiam projector: clustering.features and "
                        f"clustering.distill.target `projector` need Experiment II's SimSiam models")
    projector = projector_from_state(model_file.method_state).to(device)
    encoder = nn.Sequential(backbone, projector).eval()
    encoder.output_dim = projector.out_dim
    return encoder


def write_features(model: str, train_data: str, subset: str, out: str, settings: FeatureSettings,
                   output: FeatureOutput | None = None) -> None:
    """The features rule: backbone outputs of every image of a subset, saved once for clustering."""
    from imbssl.core.artifacts import read_model, read_subset, write_features as write_features_file
    from imbssl.data.store import load_split

    dev = distributed.setup(resolve_device(settings.device))  # a no-op unless torchrun started this job
    model_file = read_model(model)
    backbone = encoder_of(model_file, dev, (output or FeatureOutput()).features)
    split = load_split(train_data)
    indices, _ = read_subset(subset)
    # One pass over the subset: streamed from the store in chunks (nothing gained by uploading it whole).
    feats = extract_all_ranks(backbone, StreamedImages(split.images, indices, dev), model_file.meta.mean,
                              model_file.meta.std, settings.batch_size_features, model_file.meta.image_size)
    if distributed.is_main():
        write_features_file(out, feats, indices)
    distributed.barrier()
