"""A pipeline backbone for other libraries: torchvision's and timm's model classes, and safetensors.

Pure functions: the contents of a model.pt in (its `backbone` state dict and metadata), out the
state dict under the target library's key names, safetensors metadata, and the Python code that
builds the library's model and loads the file into it with strict=True. Reading model.pt and
writing the file is imbssl.exporting's job.

The pipeline's backbones are torchvision modules (ResNetBackbone subclasses torchvision's ResNet,
PatchDropViT its VisionTransformer), so torchvision takes their state dicts as they are; timm's
ResNet uses the same key names, timm's ViT its own (TIMM_VIT_KEYS).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from torch import Tensor

from imbssl import UserError
from imbssl.core.artifacts import ModelMeta
from imbssl.models.resnet import ARCHS as RESNET_ARCHS
from imbssl.models.resnet import resolve_stem
from imbssl.models.vit import ARCHS as VIT_ARCHS
from imbssl.models.vit import patch_size_for

FORMATS = ("torchvision", "timm", "safetensors")
# Library ResNets have 64 channels in their first stage (torchvision hard-codes it).
LIBRARY_RESNET_WIDTH = 64
# The library's constructor of each ResNet depth: a named model where the library has one.
TORCHVISION_RESNETS = {
    "resnet18": ("from torchvision.models import resnet18", "resnet18()"),
    "resnet50": ("from torchvision.models import resnet50", "resnet50()"),
    "resnet10": ("from torchvision.models.resnet import BasicBlock, ResNet", "ResNet(BasicBlock, [1, 1, 1, 1])"),
}
TIMM_RESNETS = {
    "resnet18": ("import timm", 'timm.create_model("resnet18", num_classes=0)'),
    "resnet50": ("import timm", 'timm.create_model("resnet50", num_classes=0)'),
    "resnet10": ("from timm.models.resnet import BasicBlock, ResNet",
                 "ResNet(BasicBlock, [1, 1, 1, 1], num_classes=0)"),
}
# timm's named ViTs, by (arch, image size, patch size); other sizes get timm's VisionTransformer class.
TIMM_NAMED_VITS = {
    ("vit_tiny", 224, 16): "vit_tiny_patch16_224",
    ("vit_small", 224, 16): "vit_small_patch16_224",
}
# torchvision ViT key (regex) -> timm ViT key. Same tensors, same shapes: torchvision's in_proj
# stacks q, k, v as timm's qkv does; its MLP is Sequential(Linear, GELU, Dropout, Linear, Dropout).
TIMM_VIT_KEYS = [
    (r"class_token", "cls_token"),
    (r"conv_proj\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"encoder\.pos_embedding", "pos_embed"),
    (r"encoder\.layers\.encoder_layer_(\d+)\.ln_1\.(weight|bias)", r"blocks.\1.norm1.\2"),
    (r"encoder\.layers\.encoder_layer_(\d+)\.self_attention\.in_proj_(weight|bias)", r"blocks.\1.attn.qkv.\2"),
    (r"encoder\.layers\.encoder_layer_(\d+)\.self_attention\.out_proj\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (r"encoder\.layers\.encoder_layer_(\d+)\.ln_2\.(weight|bias)", r"blocks.\1.norm2.\2"),
    (r"encoder\.layers\.encoder_layer_(\d+)\.mlp\.0\.(weight|bias)", r"blocks.\1.mlp.fc1.\2"),
    (r"encoder\.layers\.encoder_layer_(\d+)\.mlp\.3\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
    (r"encoder\.ln\.(weight|bias)", r"norm.\1"),
]
EXPORTABLE = ", ".join(sorted([*TORCHVISION_RESNETS, *VIT_ARCHS]))


@dataclass(frozen=True)
class BackboneMeta:
    """What a model.pt says about its backbone, and what inputs it was trained on."""

    arch: str
    width: int
    stem: str  # resolved: cifar | imagenet (ResNets); "" for ViTs
    image_size: int
    output_dim: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_model_meta(cls, meta: ModelMeta) -> BackboneMeta:
        """From what model.pt records (core.artifacts.ModelMeta; older files' `stem` reads `auto`)."""
        stem = resolve_stem(meta.stem or "auto", meta.image_size) if meta.arch in RESNET_ARCHS else ""
        return cls(meta.arch, int(meta.width), stem, int(meta.image_size), int(meta.output_dim),
                   tuple(float(x) for x in meta.mean), tuple(float(x) for x in meta.std))

    @property
    def is_vit(self) -> bool:
        return self.arch in VIT_ARCHS

    @property
    def patch_size(self) -> int:
        return patch_size_for(self.image_size)


def check_exportable(meta: BackboneMeta, fmt: str) -> None:
    """One-line UserError when the library named by `fmt` has no model this backbone loads into."""
    if fmt not in FORMATS:
        raise UserError(f"export --format {fmt}: choose one of {', '.join(FORMATS)}")
    if meta.arch not in RESNET_ARCHS and not meta.is_vit:
        raise UserError(f"export: no library model matches model.arch={meta.arch!r} (exportable: {EXPORTABLE})")
    if fmt != "safetensors" and not meta.is_vit and meta.width != LIBRARY_RESNET_WIDTH:
        raise UserError(
            f"export --format {fmt}: {fmt}'s {meta.arch} has width {LIBRARY_RESNET_WIDTH} but this model has "
            f"model.width = {meta.width}: use --format safetensors (imbssl's own backbone loads it) "
            f"or train with model.width: {LIBRARY_RESNET_WIDTH}"
        )


def timm_vit_key(key: str) -> str:
    for pattern, replacement in TIMM_VIT_KEYS:
        if re.fullmatch(pattern, key):
            return re.sub(pattern, replacement, key)
    raise UserError(f"export --format timm: backbone key {key!r} has no timm name: is this a torchvision ViT?")


def library_state_dict(backbone: dict[str, Tensor], meta: BackboneMeta, fmt: str) -> dict[str, Tensor]:
    """The backbone's state dict under the key names of `fmt`'s model (safetensors: torchvision's)."""
    check_exportable(meta, fmt)
    if fmt == "timm" and meta.is_vit:
        return {timm_vit_key(key): value.contiguous() for key, value in backbone.items()}
    return {key: value.contiguous() for key, value in backbone.items()}


def safetensors_metadata(meta: BackboneMeta) -> dict[str, str]:
    """The model.pt metadata as the strings safetensors stores (lists as JSON)."""
    values = {"format": "pt", "key_names": "torchvision", "arch": meta.arch, "width": str(meta.width),
              "image_size": str(meta.image_size), "output_dim": str(meta.output_dim),
              "mean": json.dumps(list(meta.mean)), "std": json.dumps(list(meta.std))}
    if meta.is_vit:
        values["patch_size"] = str(meta.patch_size)
    else:
        values["stem"] = meta.stem
    return values


# --- The code that loads an export -----------------------------------------------------------


def _resnet_code(meta: BackboneMeta, library: str) -> list[str]:
    imports, constructor = (TORCHVISION_RESNETS if library == "torchvision" else TIMM_RESNETS)[meta.arch]
    lines = ["from torch import nn", imports, "", f"model = {constructor}"]
    if meta.stem == "cifar":
        lines += [
            "# CIFAR stem: 3x3 convolution, stride 1, no max-pool",
            "model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)",
            "model.maxpool = nn.Identity()",
        ]
    if library == "torchvision":
        lines.append(f"model.fc = nn.Identity()  # the backbone: {meta.output_dim} features, no classifier")
    return lines


def _vit_code(meta: BackboneMeta, library: str) -> list[str]:
    dims = VIT_ARCHS[meta.arch]
    if library == "torchvision":
        return [
            "from torch import nn",
            "from torchvision.models import VisionTransformer",
            "",
            f"model = VisionTransformer(image_size={meta.image_size}, patch_size={meta.patch_size}, "
            f"num_layers={dims['num_layers']}, num_heads={dims['num_heads']}, hidden_dim={dims['hidden_dim']}, "
            f"mlp_dim={dims['mlp_dim']})",
            f"model.heads = nn.Identity()  # the backbone: the CLS token's {meta.output_dim} features",
        ]
    name = TIMM_NAMED_VITS.get((meta.arch, meta.image_size, meta.patch_size))
    if name:
        return ["import timm", "", f'model = timm.create_model("{name}", num_classes=0)']
    return [
        "from timm.models.vision_transformer import VisionTransformer",
        "",
        f"model = VisionTransformer(img_size={meta.image_size}, patch_size={meta.patch_size}, "
        f"embed_dim={dims['hidden_dim']}, depth={dims['num_layers']}, num_heads={dims['num_heads']}, "
        f"mlp_ratio={dims['mlp_dim'] / dims['hidden_dim']}, num_classes=0)",
    ]


def _imbssl_code(meta: BackboneMeta) -> list[str]:
    stem = meta.stem or "auto"
    return ["from imbssl.models.backbones import build_backbone", "",
            f'model = build_backbone("{meta.arch}", width={meta.width}, image_size={meta.image_size}, stem="{stem}")']


def model_code(meta: BackboneMeta, library: str) -> list[str]:
    """Lines that build `library`'s model matching the backbone (imbssl: the pipeline's own)."""
    if library == "imbssl":
        return _imbssl_code(meta)
    return _vit_code(meta, library) if meta.is_vit else _resnet_code(meta, library)


def loader_code(meta: BackboneMeta, fmt: str, path: str) -> str:
    """Python that builds the model and loads the export at `path` into it, strict=True."""
    check_exportable(meta, fmt)
    if fmt == "safetensors":
        # torchvision's key names: its model where it has one, else imbssl's backbone (any width).
        torchvision_fits = meta.is_vit or meta.width == LIBRARY_RESNET_WIDTH
        lines = [
            "from safetensors import safe_open",
            "from safetensors.torch import load_file",
            *model_code(meta, "torchvision" if torchvision_fits else "imbssl"),
            f"model.load_state_dict(load_file({path!r}), strict=True)",
            f"with safe_open({path!r}, framework=\"pt\") as f:",
            "    meta = f.metadata()  # arch, width, image_size, output_dim, mean, std (JSON), ... as strings",
        ]
    else:
        lines = [
            "import torch",
            *model_code(meta, fmt),
            f"model.load_state_dict(torch.load({path!r}, weights_only=True), strict=True)",
        ]
    lines += [
        "model.eval()",
        f"# features = model(x): (N, {meta.output_dim}) for x of shape (N, 3, {meta.image_size}, {meta.image_size}), "
        "RGB in [0, 1] normalised per channel as in pretraining:",
        f"mean, std = {list(meta.mean)}, {list(meta.std)}  # e.g. torchvision.transforms.Normalize(mean, std)",
    ]
    return "\n".join(lines) + "\n"
