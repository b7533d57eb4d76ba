"""`imbssl export`: a pipeline model.pt loads with strict=True into torchvision's and timm's models
(and from safetensors), and the loaded model computes what the pipeline's backbone computes.

Each round trip runs the very code the command prints. Every weight and BatchNorm statistic is
perturbed first: at their initial values many tensors are equal (LayerNorm weights are all ones),
so a swapped key would otherwise go unnoticed.
"""

from __future__ import annotations

import json
import re

import pytest
import torch

from imbssl import UserError
from imbssl.cli import main
from imbssl.core import checkpoint
from imbssl.core.artifacts import ModelMeta, read_model, write_model
from imbssl.evaluation.export import export_model
from imbssl.models.backbones import build_backbone
from imbssl.models.export import TIMM_VIT_KEYS, BackboneMeta, library_state_dict, loader_code

MEAN, STD = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]


def perturbed(backbone: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in backbone.state_dict().items():
            if not tensor.is_floating_point():
                continue
            noise = torch.randn(tensor.shape, generator=generator)
            if name.endswith("running_var"):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=generator))
            else:
                tensor.add_(0.05 * noise)
    return backbone.eval()


def write_model_file(path, arch: str, image_size: int, width: int = 64, stem: str = "auto") -> torch.nn.Module:
    """A model.pt as the training jobs write it (core.artifacts); returns the backbone it holds."""
    backbone = perturbed(build_backbone(arch, width, image_size, stem))
    meta = ModelMeta(method="simsiam", arch=arch, width=width, stem=stem, image_size=image_size,
                     output_dim=backbone.output_dim, mean=MEAN, std=STD, epochs=1, num_images=0, seed=0)
    write_model(path, backbone.state_dict(), {}, meta)
    return backbone


def load_as_printed(code: str) -> torch.nn.Module:
    namespace: dict = {}
    exec(code, namespace)  # the code `imbssl export` prints, as a user would paste it
    return namespace["model"]


def assert_same_features(exported: torch.nn.Module, backbone: torch.nn.Module, image_size: int) -> None:
    x = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = backbone(x), exported(x)
    assert got.shape == expected.shape == (2, backbone.output_dim)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


ROUND_TRIPS = [
    # arch, image size, stem, format
    ("resnet18", 32, "cifar", "torchvision"),
    ("resnet18", 32, "cifar", "timm"),
    ("resnet18", 32, "cifar", "safetensors"),
    ("resnet18", 64, "imagenet", "torchvision"),
    ("resnet18", 64, "imagenet", "timm"),
    ("resnet50", 64, "imagenet", "torchvision"),
    ("resnet50", 32, "cifar", "timm"),
    ("resnet10", 16, "auto", "torchvision"),
    ("resnet10", 16, "auto", "timm"),
    ("vit_small", 224, "auto", "torchvision"),
    ("vit_small", 224, "auto", "timm"),  # timm's vit_small_patch16_224
    ("vit_mini", 32, "auto", "safetensors"),
    ("vit_tiny", 224, "auto", "timm"),  # timm's vit_tiny_patch16_224
    ("vit_mini", 32, "auto", "timm"),  # timm's VisionTransformer class: no named model is 32 px / patch 4
    ("vit_mini", 32, "auto", "torchvision"),
]


@pytest.mark.parametrize(("arch", "image_size", "stem", "fmt"), ROUND_TRIPS)
def test_export_loads_strictly_and_computes_the_same_features(tmp_path, arch, image_size, stem, fmt):
    if fmt == "timm":
        pytest.importorskip("timm")
    if fmt == "safetensors":
        pytest.importorskip("safetensors")
    backbone = write_model_file(tmp_path / "model.pt", arch, image_size, stem=stem)
    out = tmp_path / ("backbone.safetensors" if fmt == "safetensors" else "backbone.pt")
    code = export_model(tmp_path / "model.pt", fmt, out)
    assert_same_features(load_as_printed(code), backbone, image_size)


def test_the_printed_code_names_the_library_models():
    vit_small = BackboneMeta("vit_small", 64, "", 224, 384, tuple(MEAN), tuple(STD))
    assert 'timm.create_model("vit_small_patch16_224", num_classes=0)' in loader_code(vit_small, "timm", "b.pt")
    cifar_resnet = BackboneMeta("resnet18", 64, "cifar", 32, 512, tuple(MEAN), tuple(STD))
    code = loader_code(cifar_resnet, "torchvision", "b.pt")
    assert "model = resnet18()" in code and "model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)" in code
    assert "model.maxpool = nn.Identity()" in code and "model.fc = nn.Identity()" in code
    assert f"mean, std = {MEAN}, {STD}" in code
    # The ImageNet stem is torchvision's own: no patch.
    imagenet_resnet = BackboneMeta("resnet50", 64, "imagenet", 224, 2048, tuple(MEAN), tuple(STD))
    assert "conv1" not in loader_code(imagenet_resnet, "torchvision", "b.pt")


def test_the_command_writes_the_file_and_prints_code_that_loads_it(tmp_path, capsys):
    backbone = write_model_file(tmp_path / "model.pt", "resnet18", 32, stem="cifar")
    out = tmp_path / "exported" / "resnet18.pt"
    assert main(["export", str(tmp_path / "model.pt"), "--format", "torchvision", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"# Wrote {out} (torchvision). Load it with:\n")
    assert_same_features(load_as_printed(printed), backbone, 32)


def test_safetensors_keeps_the_metadata_as_strings(tmp_path):
    safetensors = pytest.importorskip("safetensors")
    write_model_file(tmp_path / "model.pt", "resnet18", 32, stem="auto")
    export_model(tmp_path / "model.pt", "safetensors", tmp_path / "b.safetensors")
    with safetensors.safe_open(str(tmp_path / "b.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert {k: meta[k] for k in ("arch", "width", "stem", "image_size", "output_dim")} == {
        "arch": "resnet18", "width": "64", "stem": "cifar", "image_size": "32", "output_dim": "512"}
    assert json.loads(meta["mean"]) == MEAN and json.loads(meta["std"]) == STD


@pytest.mark.parametrize("fmt", ["torchvision", "timm"])
def test_library_resnets_refuse_another_width_in_one_line(tmp_path, fmt):
    write_model_file(tmp_path / "model.pt", "resnet18", 16, width=8)
    with pytest.raises(UserError) as err:
        export_model(tmp_path / "model.pt", fmt, tmp_path / "out.pt")
    message = str(err.value)
    assert "model.width = 8" in message and "--format safetensors" in message and "\n" not in message
    assert not (tmp_path / "out.pt").exists()


def test_safetensors_takes_any_width_and_loads_into_imbssls_backbone(tmp_path):
    pytest.importorskip("safetensors")
    backbone = write_model_file(tmp_path / "model.pt", "resnet18", 16, width=8)
    code = export_model(tmp_path / "model.pt", "safetensors", tmp_path / "b.safetensors")
    assert "build_backbone" in code
    assert_same_features(load_as_printed(code), backbone, 16)


def test_an_arch_no_library_has_is_refused_in_one_line():
    meta = BackboneMeta("resnet34", 64, "cifar", 32, 512, (0.5,) * 3, (0.2,) * 3)
    with pytest.raises(UserError, match=r"no library model matches model.arch='resnet34' \(exportable: "):
        library_state_dict({}, meta, "torchvision")


def test_a_file_that_is_not_a_pipeline_model_is_refused_naming_what_it_lacks(tmp_path):
    checkpoint.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(UserError, match=r"other.pt is not a model written by imbssl \(it lacks \['backbone', 'arch'"):
        read_model(tmp_path / "other.pt")


def test_every_torchvision_vit_key_has_exactly_one_timm_name():
    for key in build_backbone("vit_mini", image_size=32).state_dict():
        assert sum(bool(re.fullmatch(pattern, key)) for pattern, _ in TIMM_VIT_KEYS) == 1, key
