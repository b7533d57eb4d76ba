"""BYOL (Grill et al., 2020, "Bootstrap your own latent"): an online network (backbone, projector,
predictor) regresses the projection of the other view by an EMA target network (backbone,
projector), with the normalised MSE 2 - 2 cos(p, z'), summed over both view orders.

Defaults: solo-learn's CIFAR recipe (vturrisi/solo-learn at 9187ea3, `scripts/pretrain/cifar/
byol.yaml`); the BYOL paper trains on ImageNet only. See docs/recipe.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from imbssl.methods.ema import EMAMethod, EMASchedule
from imbssl.methods.registry import LARSMethodConfig, Optimizer, output_std
from imbssl.models.heads import BYOLProjector


@dataclass
class BYOLConfig(LARSMethodConfig):
    optimizer: Optimizer = "lars"  # solo-learn scripts/pretrain/cifar/byol.yaml:32
    base_lr: float = 1.0  # solo-learn byol.yaml:34 (x batch/256: solo/args/pretrain.py:153-154)
    weight_decay: float = 1e-5  # solo-learn byol.yaml:36
    momentum: float = 0.9  # solo-learn solo/args/pretrain.py:164 (LARS momentum default)
    warmup_epochs: int = 10  # solo-learn solo/methods/base.py:293 (scheduler.warmup_epochs default)
    lars_eta: float = 0.02  # solo-learn byol.yaml:39 (optimizer.kwargs; solo/utils/lars.py)
    lars_clip_lr: bool = True  # solo-learn byol.yaml:38
    proj_hidden_dim: int = 4096  # solo-learn byol.yaml:19
    proj_dim: int = 256  # solo-learn byol.yaml:20
    pred_hidden_dim: int = 4096  # solo-learn byol.yaml:21
    ema_start: float = 0.99  # solo-learn byol.yaml:23 (base_tau; final_tau 1.0, :24)
    # BYOL's tau = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2 per step (BYOL paper Section 3.2;
    # solo-learn solo/utils/momentum.py:84-87)
    ema_schedule: EMASchedule = "cosine"


def normalized_mse(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL's regression loss ||p/|p| - z/|z|||^2 = 2 - 2 cos(p, z), averaged over the batch;
    `z` is a target: no gradient flows into it."""
    return (2.0 - 2.0 * F.cosine_similarity(p, z.detach(), dim=-1)).mean()


def byol_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """The symmetrised loss L + L~ of BYOL (eq. 2 and Section 3.1): each view's prediction
    regresses the other view's target projection; the two terms are summed, as in BYOL's and
    solo-learn's code (so the loss lies in [0, 8])."""
    return normalized_mse(p1, z2) + normalized_mse(p2, z1)


class BYOL(EMAMethod):
    """Online backbone + projector + predictor; EMA target backbone + projector (`self.target`)."""

    name = "byol"

    def __init__(self, backbone: nn.Module, config: BYOLConfig):
        super().__init__(backbone, config)
        self.projector = BYOLProjector(backbone.output_dim, config.proj_hidden_dim, config.proj_dim)
        self.predictor = BYOLProjector(config.proj_dim, config.pred_hidden_dim, config.proj_dim)
        self.make_target("backbone", "projector")

    # eval_backbone stays the online backbone: BYOL evaluates the online encoder ("we only keep the
    # encoder f_theta", Section 3.1), whose weights the target merely averages; at the end of a
    # run with the momentum at 1 the two are near-identical anyway.

    @torch.no_grad()
    def _target_z(self, x: torch.Tensor) -> torch.Tensor:
        return self.target["projector"](self.target["backbone"](x))

    def loss(self, views, index=None):
        self.sync_target_if_stale()
        x1, x2 = views
        z1, z2 = self.projector(self.backbone(x1)), self.projector(self.backbone(x2))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        t1, t2 = self._target_z(x1), self._target_z(x2)
        with torch.autocast(p1.device.type, enabled=False):  # cosines in float32 under bf16 autocast
            loss = byol_loss(p1.float(), p2.float(), t1.float(), t2.float())
        return loss, {"out_std": output_std(z1)}
