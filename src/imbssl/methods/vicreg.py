"""VICReg (Bardes, Ponce & LeCun, 2022): variance-invariance-covariance regularisation of the
expander outputs of two views, without negatives, EMA or prototypes.

    loss = sim_weight * MSE(z1, z2)
         + var_weight * (v(z1) + v(z2)) / 2,  v(z) = mean_d relu(gamma - sqrt(Var(z_d) + eps))
         + cov_weight * (c(z1) + c(z2)),      c(z) = sum of the squared off-diagonal covariances / D

With several processes the variance and covariance terms see the global batch (every rank's rows,
gathered with their gradient), as VICReg's code does (main_vicreg.py:200-201); the invariance
term is the local MSE, whose mean over ranks is the global one.

Defaults: solo-learn's CIFAR recipe (vturrisi/solo-learn at 9187ea3, `scripts/pretrain/cifar/
vicreg.yaml`); the paper trains on ImageNet only. See docs/recipe.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from imbssl.core import distributed
from imbssl.methods.registry import LARSMethodConfig, Method, Optimizer, output_std
from imbssl.models.heads import VICRegExpander


@dataclass
class VICRegConfig(LARSMethodConfig):
    optimizer: Optimizer = "lars"  # solo-learn scripts/pretrain/cifar/vicreg.yaml:59
    base_lr: float = 0.3  # solo-learn vicreg.yaml:61 (x batch/256: solo/args/pretrain.py:153-154)
    weight_decay: float = 1e-4  # solo-learn vicreg.yaml:63
    momentum: float = 0.9  # solo-learn solo/args/pretrain.py:164 (LARS momentum default)
    warmup_epochs: int = 10  # solo-learn solo/methods/base.py:293 (scheduler.warmup_epochs default)
    lars_eta: float = 0.02  # solo-learn vicreg.yaml:66 (optimizer.kwargs; solo/utils/lars.py)
    lars_clip_lr: bool = True  # solo-learn vicreg.yaml:65
    proj_hidden_dim: int = 2048  # solo-learn vicreg.yaml:18 (3 linear layers: solo/methods/vicreg.py:53-61)
    proj_dim: int = 2048  # solo-learn vicreg.yaml:19
    sim_weight: float = 25.0  # lambda: solo-learn vicreg.yaml:20 (= VICReg main_vicreg.py:58)
    var_weight: float = 25.0  # mu: solo-learn vicreg.yaml:21 (= VICReg main_vicreg.py:60)
    cov_weight: float = 1.0  # nu: solo-learn vicreg.yaml:22 (= VICReg main_vicreg.py:62)


def invariance_term(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """Mean squared distance between the two views' embeddings, over rows and dimensions."""
    return F.mse_loss(z1, z2)


def variance_term(z: torch.Tensor, eps: float = 1e-4, gamma: float = 1.0) -> torch.Tensor:
    """Hinge on each dimension's standard deviation over the batch (unbiased variance + eps, as in
    VICReg's code), averaged over dimensions: 0 once every std reaches gamma."""
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(gamma - std).mean()


def covariance_term(z: torch.Tensor) -> torch.Tensor:
    """Sum of the squared off-diagonal entries of the (unbiased) covariance matrix, divided by D."""
    n, d = z.shape
    centred = z - z.mean(dim=0)
    cov = centred.T @ centred / (n - 1)
    off_diagonal = cov - torch.diag(torch.diagonal(cov))
    return off_diagonal.square().sum() / d


def vicreg_loss(z1: torch.Tensor, z2: torch.Tensor, sim_weight: float = 25.0, var_weight: float = 25.0,
                cov_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """VICReg's loss and its three (unweighted) terms; variance and covariance over the global batch."""
    invariance = invariance_term(z1, z2)
    z1, z2 = distributed.all_gather_with_grad(z1), distributed.all_gather_with_grad(z2)
    variance = (variance_term(z1) + variance_term(z2)) / 2
    covariance = covariance_term(z1) + covariance_term(z2)
    loss = sim_weight * invariance + var_weight * variance + cov_weight * covariance
    return loss, {"invariance": invariance.detach(), "variance": variance.detach(),
                  "covariance": covariance.detach()}


class VICReg(Method):
    """Backbone + expander (Linear-BN-ReLU x2, Linear); the loss on the expander outputs."""

    name = "vicreg"

    def __init__(self, backbone, config: VICRegConfig):
        super().__init__(backbone, config)
        self.projector = VICRegExpander(backbone.output_dim, config.proj_hidden_dim, config.proj_dim)

    def loss(self, views, index=None):
        x1, x2 = views
        z1, z2 = self.projector(self.backbone(x1)), self.projector(self.backbone(x2))
        cfg = self.config
        # float32: the covariance of 2048 dimensions in bf16 would lose most of its digits
        with torch.autocast(z1.device.type, enabled=False):
            loss, terms = vicreg_loss(z1.float(), z2.float(), cfg.sim_weight, cfg.var_weight, cfg.cov_weight)
        return loss, {"out_std": output_std(z1), **terms}
