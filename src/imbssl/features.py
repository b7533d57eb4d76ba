"""Backbone outputs for a set of images: eval mode, no augmentation, large batches."""

from __future__ import annotations

import os

import torch
from torch import nn

from . import checkpoint, distributed
from .augment import normalize
from .device import resolve_device, to_device_images
from .models import build_backbone


@torch.no_grad()
def extract(backbone: nn.Module, images: torch.Tensor, mean, std, batch_size: int = 1024) -> torch.Tensor:
    """float32 features (N, D) of uint8 NCHW `images` (already on the backbone's device).

    Computed in float32 even when called inside an autocast region: evaluation, kNN and
    clustering read these features, and bf16 (8 bits of mantissa) would round them.
    """
    was_training = backbone.training
    backbone.eval()
    device = images.device
    out = []
    for start in range(0, images.shape[0], batch_size):
        out.append(backbone_features(backbone, normalize(images[start:start + batch_size], mean, std)))
    backbone.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, getattr(backbone, "output_dim", 0), device=device)


def extract_all_ranks(backbone: nn.Module, images: torch.Tensor, mean, std, batch_size: int = 1024) -> torch.Tensor:
    """`extract` with the work split over the ranks of a job on several processes: each rank
    extracts its contiguous share and every rank gets all features, in index order. With one
    process it is `extract`."""
    world = distributed.world_size()
    if world == 1:
        return extract(backbone, images, mean, std, batch_size)
    part = distributed.shard(images.shape[0], distributed.rank(), world)
    return distributed.gather_rows(extract(backbone, images[part], mean, std, batch_size), images.shape[0])


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
    backbone = build_backbone(state["arch"], state["width"], state["image_size"])
    backbone.load_state_dict(state["backbone"])
    backbone.to(device).eval()
    if device.type == "cuda":
        backbone.to(memory_format=torch.channels_last)
    return backbone, state


def write_features(model: str, train_data: str, subset: str, out: str, batch_size_features: int = 1024,
                   device: str = "auto") -> None:
    """The features rule: backbone outputs of every image of a subset, saved once for clustering."""
    from .data import load_split
    from .subsets import read_csv

    dev = distributed.setup(resolve_device(device))  # a no-op unless torchrun started this job
    backbone, state = load_backbone(model, dev)
    split = load_split(train_data)
    indices, _ = read_csv(subset)
    feats = extract_all_ranks(backbone, to_device_images(split.images[indices], dev), state["mean"], state["std"],
                              batch_size_features)
    if distributed.is_main():
        checkpoint.save({"features": feats.cpu(), "index": torch.from_numpy(indices)}, out)
    distributed.barrier()
