"""SimCLR (Chen et al., 2020): NT-Xent over the 2N views of a batch, LARS optimizer."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..models import mlp
from .registry import Method, MethodConfig, output_std, register


@dataclass
class SimCLRConfig(MethodConfig):
    optimizer: str = "lars"
    base_lr: float = 0.3
    weight_decay: float = 1e-6
    momentum: float = 0.9
    proj_hidden_dim: int = 2048
    proj_dim: int = 128
    temperature: float = 0.5


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Normalised temperature-scaled cross-entropy: each view's positive is its twin, the other
    2N-2 views are negatives; averaged over all 2N anchors."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    n = z1.shape[0]
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))  # a view is not its own negative
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, targets)


@register("simclr", SimCLRConfig)
class SimCLR(Method):
    def __init__(self, backbone, config: SimCLRConfig):
        super().__init__(backbone, config)
        self.projector = mlp([backbone.output_dim, config.proj_hidden_dim, config.proj_dim])

    def loss(self, views, index=None):
        x1, x2 = views
        z1, z2 = self.projector(self.backbone(x1)), self.projector(self.backbone(x2))
        return nt_xent(z1, z2, self.config.temperature), {"out_std": output_std(z1)}
