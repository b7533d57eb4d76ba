"""CIFAR and ImageNet ResNets: torchvision's ResNet of any width, with either stem, without its classifier."""

from __future__ import annotations

from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

STEMS = ("auto", "cifar", "imagenet")
IMAGENET_STEM_FROM = 64  # px: `stem: auto` picks the ImageNet stem from this size up
ARCHS = {"resnet18": (BasicBlock, (2, 2, 2, 2)), "resnet10": (BasicBlock, (1, 1, 1, 1)),
         "resnet50": (Bottleneck, (3, 4, 6, 3))}


class ResNetBackbone(ResNet):
    """torchvision's ResNet (BasicBlock or Bottleneck stages) of any width, without its classifier,
    with the CIFAR stem (3x3 conv, stride 1, no max-pool) or torchvision's ImageNet stem
    (7x7 conv, stride 2, 3x3 max-pool).

    `width` is the number of channels of the first stage (64 for the standard ResNets); later
    stages double it, so the output has 8 * width * expansion features (512 for ResNet-18,
    2048 for ResNet-50).
    """

    def __init__(self, block: type[BasicBlock] | type[Bottleneck] = BasicBlock,
                 layers: tuple[int, ...] = (2, 2, 2, 2), width: int = 64, stem: str = "cifar"):
        super().__init__(block, list(layers))
        # Rebuild the stages with the requested width through torchvision's own _make_layer.
        self.inplanes = width
        if stem == "cifar":
            self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.fc = nn.Identity()
        self.output_dim = width * 8 * block.expansion
        self.stem = stem
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def resolve_stem(stem: str, image_size: int) -> str:
    """`auto`: the CIFAR stem below 64 px (a stride-4 stem would leave a 32-px image 8x8 after
    the stem), torchvision's ImageNet stem from 64 px up."""
    assert stem in STEMS, f"model.stem={stem!r}"  # the config schema and argparse choices allow only these
    if stem != "auto":
        return stem
    return "imagenet" if image_size >= IMAGENET_STEM_FROM else "cifar"


def build_resnet(arch: str, width: int, image_size: int, stem: str) -> ResNetBackbone:
    block, layers = ARCHS[arch]
    return ResNetBackbone(block, layers, width, resolve_stem(stem, image_size))
