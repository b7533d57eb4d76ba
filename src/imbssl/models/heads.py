"""The heads methods put on a backbone, one class per paper's design.

Each head is an `nn.Sequential` of Linear / BatchNorm1d / ReLU layers (so a head's parameters are
named `0.weight`, `1.running_mean`, ...), built from the widths its method's settings give.
"""

from __future__ import annotations

from torch import nn


def _mlp_layers(dims: list[int], last_bn: bool = False) -> list[nn.Module]:
    """Linear-BN-ReLU blocks between the given widths; the last layer is linear (optionally BN'd).
    A Linear followed by BN has no bias (BN's shift replaces it)."""
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        last = i == len(dims) - 2
        layers.append(nn.Linear(d_in, d_out, bias=last and not last_bn))
        if not last:
            layers += [nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)]
        elif last_bn:
            layers.append(nn.BatchNorm1d(d_out))
    return layers


class SimSiamProjector(nn.Sequential):
    """SimSiam's projection MLP (Chen & He 2021, Section 3) in its CIFAR form: two layers,
    Linear-BN-ReLU then Linear-BN, as PatrickHua/SimSiam's `projection_MLP` with `set_layers(2)`
    for CIFAR (`models/simsiam.py`)."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__(*_mlp_layers([in_dim, dim, dim], last_bn=True))


class SimSiamPredictor(nn.Sequential):
    """SimSiam's predictor (Chen & He 2021, Section 3): a bottleneck Linear-BN-ReLU-Linear,
    dim -> hidden (512 in the paper) -> dim, no BN on its output."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__(*_mlp_layers([dim, hidden_dim, dim]))


class SimCLRProjector(nn.Sequential):
    """SimCLR's nonlinear projection head g (Chen et al. 2020, Section 2.1): Linear-BN-ReLU-Linear
    to the space the contrastive loss is computed in."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int):
        super().__init__(*_mlp_layers([in_dim, hidden_dim, out_dim]))


class MSNProjector(nn.Sequential):
    """MSN's three-layer projection head (Assran et al. 2022, Section 4): two hidden
    Linear-BN-ReLU blocks, then a Linear to the space of the prototypes."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int):
        super().__init__(*_mlp_layers([in_dim, hidden_dim, hidden_dim, out_dim]))
