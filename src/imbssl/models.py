"""Backbones and heads. Plain arguments in, nn.Module out: nothing here reads files or config."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet


@dataclass
class ModelConfig:
    """The backbone: `arch` (resnet18, resnet10, vit_tiny) and, for ResNets, the first-stage width."""

    arch: str = "resnet18"
    width: int = 64


class CifarResNet(ResNet):
    """torchvision's ResNet with the CIFAR stem (3x3 conv, stride 1, no max-pool) and any width.

    `width` is the number of channels of the first stage (64 for the standard ResNet-18);
    later stages double it, so the output has 8 * width features (512 for ResNet-18).
    """

    def __init__(self, layers: tuple[int, ...] = (2, 2, 2, 2), width: int = 64):
        super().__init__(BasicBlock, list(layers))
        # Rebuild the stages with the requested width through torchvision's own _make_layer.
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.maxpool = nn.Identity()
        self.layer1 = self._make_layer(BasicBlock, width, layers[0])
        self.layer2 = self._make_layer(BasicBlock, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(BasicBlock, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(BasicBlock, width * 8, layers[3], stride=2)
        self.fc = nn.Identity()
        self.output_dim = width * 8 * BasicBlock.expansion
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


ARCHS = {"resnet18": (2, 2, 2, 2), "resnet10": (1, 1, 1, 1)}


def build_backbone(arch: str = "resnet18", width: int = 64, image_size: int = 32) -> nn.Module:
    """A backbone with an `output_dim` attribute: CIFAR ResNets, or a small ViT (see vit.py)."""
    if arch in ARCHS:
        return CifarResNet(ARCHS[arch], width)
    if arch.startswith("vit"):
        from .vit import build_vit

        return build_vit(arch, image_size=image_size)
    raise ValueError(f"unknown backbone {arch!r}; choose one of {sorted(ARCHS)} or vit_tiny")


def mlp(dims: list[int], last_bn: bool = False) -> nn.Sequential:
    """Linear-BN-ReLU blocks between the given widths; the last layer is linear (optionally BN'd)."""
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        last = i == len(dims) - 2
        layers.append(nn.Linear(d_in, d_out, bias=last and not last_bn))
        if not last:
            layers += [nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)]
        elif last_bn:
            layers.append(nn.BatchNorm1d(d_out))
    return nn.Sequential(*layers)
