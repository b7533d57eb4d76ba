"""The heads methods put on a backbone, one class per paper's design.

Each head is an `nn.Sequential` of Linear / BatchNorm1d / ReLU layers (so a head's parameters are
named `0.weight`, `1.running_mean`, ...), built from the widths its method's settings give.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _mlp_layers(dims: list[int], last_bn: bool = False, hidden_bn: bool = True) -> list[nn.Module]:
    """Linear-BN-ReLU blocks between the given widths (Linear-ReLU without `hidden_bn`); the last
    layer is linear (optionally BN'd). A Linear followed by BN has no bias (BN's shift replaces it)."""
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        last = i == len(dims) - 2
        followed_by_bn = (last and last_bn) or (not last and hidden_bn)
        layers.append(nn.Linear(d_in, d_out, bias=not followed_by_bn))
        if not last:
            layers += [nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)] if hidden_bn else [nn.ReLU(inplace=True)]
        elif last_bn:
            layers.append(nn.BatchNorm1d(d_out))
    return layers


class SimSiamProjector(nn.Sequential):
    """SimSiam's projection MLP (Chen & He 2021, Section 3) in its CIFAR form: two layers,
    Linear-BN-ReLU then Linear-BN, as PatrickHua/SimSiam's `projection_MLP` with `set_layers(2)`
    for CIFAR (`models/simsiam.py`)."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__(*_mlp_layers([in_dim, dim, dim], last_bn=True))
        self.out_dim = dim


class SimSiamPredictor(nn.Sequential):
    """SimSiam's predictor (Chen & He 2021, Section 3): a bottleneck Linear-BN-ReLU-Linear,
    dim -> hidden (512 in the paper) -> dim, no BN on its output."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__(*_mlp_layers([dim, hidden_dim, dim]))


class SimCLRProjector(nn.Sequential):
    """SimCLR's nonlinear projection head g (Chen et al. 2020, Section 2.1): Linear-ReLU-Linear to the
    space the contrastive loss is computed in, as PatrickHua/SimSiam's `projection_MLP`
    (`models/simclr.py`: 512 -> 512 -> 256, no BatchNorm); `batch_norm` adds BN after the hidden
    Linear (SimCLR v2's and most later code's head)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, batch_norm: bool = False):
        super().__init__(*_mlp_layers([in_dim, hidden_dim, out_dim], hidden_bn=batch_norm))


class MSNProjector(nn.Sequential):
    """MSN's three-layer projection head (Assran et al. 2022, Section 4): two hidden
    Linear-BN-ReLU blocks, then a Linear to the space of the prototypes."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int):
        super().__init__(*_mlp_layers([in_dim, hidden_dim, hidden_dim, out_dim]))


class BYOLProjector(nn.Sequential):
    """BYOL's projector, also its predictor (Grill et al. 2020, Section 3.3): Linear to a hidden
    width (4096), BN, ReLU, Linear to the output (256)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int):
        super().__init__(*_mlp_layers([in_dim, hidden_dim, out_dim]))


class VICRegExpander(nn.Sequential):
    """VICReg's expander (Bardes et al. 2022, Section 4.1): two Linear-BN-ReLU blocks, then a Linear."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int):
        super().__init__(*_mlp_layers([in_dim, hidden_dim, hidden_dim, out_dim]))


class SwAVProjector(nn.Sequential):
    """SwAV's projection head (Caron et al. 2020, Section 4.1 and its code): Linear-BN-ReLU-Linear
    (2048 -> 128), followed by the prototypes."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int):
        super().__init__(*_mlp_layers([in_dim, hidden_dim, out_dim]))


class WeightNormLinear(nn.Module):
    """A linear map without bias whose row k is g_k * v_k / ||v_k|| (weight normalisation, Salimans &
    Kingma 2016), as DINO's last layer: nn.utils.weight_norm with g filled with 1, and g fixed
    (not trained) unless `learn_norm`. Written out because torch deprecates weight_norm."""

    def __init__(self, in_dim: int, out_dim: int, learn_norm: bool):
        super().__init__()
        self.direction = nn.Parameter(nn.Linear(in_dim, out_dim, bias=False).weight.detach().clone())
        self.norm = nn.Parameter(torch.ones(out_dim, 1), requires_grad=learn_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.norm * F.normalize(self.direction, dim=1))


class DINOHead(nn.Module):
    """Linear-GELU-Linear-GELU-Linear to the bottleneck, L2 normalisation, then the weight-normalised
    layer to K outputs (DINO vision_transformer.py:257-291, nlayers 3); `bn` puts BatchNorm after
    each hidden Linear (DINO's use_bn, lightly's DINOProjectionHead batch_norm=True)."""

    def __init__(self, in_dim: int, hidden_dim: int, bottleneck_dim: int, num_prototypes: int,
                 norm_last_layer: bool = True, bn: bool = False):
        super().__init__()
        norm = (lambda: nn.BatchNorm1d(hidden_dim)) if bn else nn.Identity
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), norm(), nn.GELU(),
                                 nn.Linear(hidden_dim, hidden_dim), norm(), nn.GELU(),
                                 nn.Linear(hidden_dim, bottleneck_dim))
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):  # DINO's _init_weights
                nn.init.trunc_normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)
        self.last_layer = WeightNormLinear(bottleneck_dim, num_prototypes, learn_norm=not norm_last_layer)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The L2-normalised bottleneck embedding."""
        return F.normalize(self.mlp(x), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(self.embed(x))
