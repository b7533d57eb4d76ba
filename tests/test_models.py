"""Backbones: ResNet-50 and its stems, ViT-S/16 at 224 px, rebuilding from a model.pt's metadata."""

import pytest
import torch
from torch import nn

from imbssl.methods.registry import build_method
from imbssl.models.backbones import backbone_from_meta, build_backbone
from imbssl.models.resnet import resolve_stem


def test_resnet50_is_torchvisions_with_a_2048_d_output():
    import torchvision

    ours = build_backbone("resnet50", image_size=224)
    reference = torchvision.models.resnet50()
    reference.fc = nn.Identity()
    assert ours.output_dim == 2048 and ours.stem == "imagenet"
    shapes = {k: v.shape for k, v in ours.state_dict().items()}
    assert shapes == {k: v.shape for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    assert ours(torch.zeros(2, 3, 64, 64)).shape == (2, 2048)


def test_the_stem_follows_the_image_size_unless_set():
    assert resolve_stem("auto", 32) == "cifar" and resolve_stem("auto", 63) == "cifar"
    assert resolve_stem("auto", 64) == "imagenet" and resolve_stem("cifar", 224) == "cifar"
    cifar, imagenet = build_backbone("resnet18", 64, 32), build_backbone("resnet18", 64, 96)
    assert cifar.conv1.kernel_size == (3, 3) and cifar.conv1.stride == (1, 1) and isinstance(cifar.maxpool, nn.Identity)
    assert imagenet.conv1.kernel_size == (7, 7) and imagenet.conv1.stride == (2, 2)
    assert isinstance(imagenet.maxpool, nn.MaxPool2d)
    # The CIFAR stem keeps 32x32 at 32x32 into layer1; the ImageNet stem divides by 4.
    assert cifar.layer1(cifar.maxpool(cifar.relu(cifar.bn1(cifar.conv1(torch.zeros(1, 3, 32, 32)))))).shape[-1] == 32
    x = imagenet.maxpool(imagenet.relu(imagenet.bn1(imagenet.conv1(torch.zeros(1, 3, 96, 96)))))
    assert x.shape[-1] == 24
    # The schema and argparse's choices allow only the known values; the builders assert it.
    with pytest.raises(AssertionError, match="model.stem='big'"):
        build_backbone("resnet18", 64, 32, stem="big")
    with pytest.raises(AssertionError, match="model.arch='resnet34'"):
        build_backbone("resnet34")


def test_vit_small_at_224_px_is_vit_s_16():
    vit = build_backbone("vit_small", image_size=224)
    assert vit.patch_size == 16 and vit.num_patches == 14 * 14 and vit.output_dim == 384
    assert build_backbone("vit_tiny", image_size=32).patch_size == 4
    assert build_backbone("vit_mini", image_size=64).patch_size == 8


def test_method_heads_are_sized_from_the_backbone():
    simsiam = build_method("simsiam", build_backbone("resnet50", width=8, image_size=64), proj_dim=64,
                           pred_hidden_dim=16)
    first_linear = next(m for m in simsiam.projector.modules() if isinstance(m, nn.Linear))
    assert first_linear.in_features == 8 * 8 * 4  # Bottleneck: 8 x width x 4


def test_a_model_file_written_before_stems_existed_rebuilds_its_cifar_stem():
    old = {"arch": "resnet18", "width": 8, "image_size": 32}
    assert backbone_from_meta(old).stem == "cifar"
    assert backbone_from_meta({**old, "image_size": 64, "stem": "cifar"}).stem == "cifar"
    assert backbone_from_meta({**old, "image_size": 64}).stem == "imagenet"
