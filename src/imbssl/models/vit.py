"""Small Vision Transformers for low-resolution images, able to run on a subset of patches.

Built on torchvision's `VisionTransformer` (its patch embedding, class token, position
embedding and encoder blocks); only `forward` is new: it adds the position embedding *before*
dropping patches, so that a masked view keeps the positions of the patches it still has. That is
how MSN masks its anchor views (patches are dropped, not replaced by a mask token).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

from imbssl import UserError

# Widths of the ViTs offered; vit_tiny is ViT-Tiny (DeiT-Ti), vit_mini a CPU-sized one for demos.
ARCHS: dict[str, dict[str, int]] = {
    "vit_tiny": dict(hidden_dim=192, num_layers=12, num_heads=3, mlp_dim=768),
    "vit_small": dict(hidden_dim=384, num_layers=12, num_heads=6, mlp_dim=1536),
    "vit_mini": dict(hidden_dim=96, num_layers=4, num_heads=3, mlp_dim=384),
}
PATCH_SIZE = 4  # 32x32 images -> 64 tokens, 16x16 images -> 16 tokens


def patch_size_for(image_size: int) -> int:
    """ViT patch: 4 px below 64 px (CIFAR), 8 px from 64 px, 16 px from 128 px (224 px -> the
    14 x 14 tokens of ViT-S/16, MSN's ImageNet backbone)."""
    return 16 if image_size >= 128 else 8 if image_size >= 64 else PATCH_SIZE


class PatchDropViT(VisionTransformer):
    """torchvision's ViT without a classification head; outputs the final CLS token (`output_dim`)."""

    supports_patch_drop = True  # methods check this to decide between masking and a second crop

    def __init__(self, image_size: int, patch_size: int, hidden_dim: int, num_layers: int, num_heads: int,
                 mlp_dim: int):
        super().__init__(image_size=image_size, patch_size=patch_size, num_layers=num_layers,
                         num_heads=num_heads, hidden_dim=hidden_dim, mlp_dim=mlp_dim)
        self.heads = nn.Identity()
        self.output_dim = hidden_dim
        self.num_patches = (image_size // patch_size) ** 2

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """CLS output (N, dim). `keep` (N, k) int64 patch indices in [0, num_patches): only those
        patches enter the encoder (the others are dropped); None keeps all of them."""
        pos = self.encoder.pos_embedding
        tokens = self._process_input(x) + pos[:, 1:]
        if keep is not None:
            tokens = torch.gather(tokens, 1, keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
        cls = (self.class_token + pos[:, :1]).expand(x.shape[0], -1, -1)
        hidden = torch.cat([cls, tokens], dim=1)
        hidden = self.encoder.ln(self.encoder.layers(self.encoder.dropout(hidden)))
        return hidden[:, 0]


def num_kept(num_patches: int, mask_ratio: float) -> int:
    """Patches an anchor view keeps: round((1 - mask_ratio) * num_patches), at least one."""
    if not 0.0 <= mask_ratio < 1.0:
        raise UserError(f"mask_ratio={mask_ratio}: use a value in [0, 1)")
    return max(1, round((1.0 - mask_ratio) * num_patches))


def random_keep(batch: int, num_patches: int, mask_ratio: float, device: torch.device | str = "cpu",
                generator: torch.Generator | None = None) -> torch.Tensor:
    """(batch, num_kept) indices of the patches each image keeps, drawn uniformly without replacement."""
    noise = torch.rand(batch, num_patches, device=device, generator=generator)
    return noise.argsort(dim=1)[:, :num_kept(num_patches, mask_ratio)]


def build_vit(arch: str = "vit_tiny", image_size: int = 32, patch_size: int | None = None) -> PatchDropViT:
    patch_size = patch_size or patch_size_for(image_size)
    if arch not in ARCHS:
        raise UserError(f"model.arch={arch!r}: choose one of {', '.join(sorted(ARCHS))}, resnet18, resnet10")
    if image_size % patch_size:
        raise UserError(f"image size {image_size} is not a multiple of the ViT patch size {patch_size}: "
                        f"prepare the data with an --image-size divisible by {patch_size}")
    return PatchDropViT(image_size, patch_size, **ARCHS[arch])
