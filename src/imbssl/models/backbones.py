"""Backbones: which one a setting or a model file names, built with plain arguments.

Nothing here reads files or the config: a model file is read by `core.artifacts.read_model`, and
`restore_backbone` rebuilds its backbone from what it holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from imbssl.core.artifacts import ModelFile
from imbssl.models.resnet import ARCHS, build_resnet
from imbssl.models.vit import ARCHS as VIT_ARCHS

Arch = Literal["resnet18", "resnet10", "resnet50", "vit_tiny", "vit_small", "vit_mini"]
Stem = Literal["auto", "cifar", "imagenet"]


@dataclass
class ModelConfig:
    """The backbone: `arch` (resnet18, resnet10, resnet50, a ViT), for ResNets the first-stage
    width and the stem (auto: CIFAR's below 64 px, ImageNet's from 64 px)."""

    arch: Arch = "resnet18"  # the backbone network
    width: int = 64  # channels of a ResNet's first stage, doubled at each later stage (ignored by ViTs)
    stem: Stem = "auto"  # ResNet stem: cifar (3x3 conv), imagenet (7x7 conv + max-pool); auto: cifar below 64 px


def build_backbone(arch: str = "resnet18", width: int = 64, image_size: int = 32, stem: str = "auto") -> nn.Module:
    """A backbone with an `output_dim` attribute: ResNets (CIFAR or ImageNet stem), or a ViT (vit.py)."""
    if arch in ARCHS:
        return build_resnet(arch, width, image_size, stem)
    assert arch in VIT_ARCHS, f"model.arch={arch!r}"  # the schema and argparse choices allow only these
    from imbssl.models.vit import build_vit

    return build_vit(arch, image_size=image_size)


def backbone_from_meta(meta) -> nn.Module:
    """The (untrained) backbone a model file describes: a `ModelMeta` or a dict with arch, width,
    image_size and stem (files written before `stem` existed resolve it as `auto`, which gives the
    CIFAR stem they were trained with)."""
    get = meta.get if isinstance(meta, dict) else lambda key, default=None: getattr(meta, key, default)
    return build_backbone(get("arch"), get("width"), get("image_size"), get("stem", "auto") or "auto")


def restore_backbone(model: ModelFile, device) -> nn.Module:
    """The trained backbone of a model file, on `device`, in eval mode (channels_last on CUDA)."""
    import torch

    backbone = backbone_from_meta(model.meta)
    backbone.load_state_dict(model.backbone)
    backbone.to(device).eval()
    if torch.device(device).type == "cuda":
        backbone.to(memory_format=torch.channels_last)
    return backbone
