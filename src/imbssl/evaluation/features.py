"""Backbone outputs for a set of images: eval mode, no augmentation, large batches."""

from __future__ import annotations

import os

import torch
from torch import nn

from imbssl.core import checkpoint, distributed
from imbssl.data.augment import centre_crop, normalize
from imbssl.data.device import StreamedImages, as_source, resolve_device
from imbssl.models.backbones import backbone_from_meta


@torch.no_grad()
def extract(backbone: nn.Module, images, mean, std, batch_size: int = 1024, size: int | None = None) -> torch.Tensor:
    """float32 features (N, D) of uint8 NCHW `images`: a tensor on the backbone's device, or an
    image source (device.py; a streamed one is prefetched chunk by chunk), centre-cropped to
    `size` when they are stored larger.

    Computed in float32 even when called inside an autocast region: evaluation, kNN and
    clustering read these features, and bf16 (8 bits of mantissa) would round them.
    """
    images = as_source(images)
    was_training = backbone.training
    backbone.eval()
    out = [backbone_features(backbone, normalize(centre_crop(chunk, size), mean, std))
           for chunk in images.chunks(batch_size)]
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


def load_backbone(model_path: str | os.PathLike, device: torch.device) -> tuple[nn.Module, dict]:
    """The backbone stored in a model.pt (any method), in eval mode, plus the file's metadata."""
    state = checkpoint.load(model_path, map_location="cpu")
    backbone = backbone_from_meta(state)
    backbone.load_state_dict(state["backbone"])
    backbone.to(device).eval()
    if device.type == "cuda":
        backbone.to(memory_format=torch.channels_last)
    return backbone, state


def write_features(model: str, train_data: str, subset: str, out: str, batch_size_features: int = 1024,
                   device: str = "auto") -> None:
    """The features rule: backbone outputs of every image of a subset, saved once for clustering."""
    from imbssl.data.store import load_split
    from imbssl.data.subsets import read_csv

    dev = distributed.setup(resolve_device(device))  # a no-op unless torchrun started this job
    backbone, state = load_backbone(model, dev)
    split = load_split(train_data)
    indices, _ = read_csv(subset)
    # One pass over the subset: streamed from the store in chunks (nothing gained by uploading it whole).
    feats = extract_all_ranks(backbone, StreamedImages(split.images, indices, dev), state["mean"], state["std"],
                              batch_size_features, state["image_size"])
    if distributed.is_main():
        checkpoint.save({"features": feats.cpu(), "index": torch.from_numpy(indices)}, out)
    distributed.barrier()
