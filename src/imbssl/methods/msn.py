"""MSN (Assran et al., 2022, "Masked Siamese Networks") and PMSN (Assran et al., 2022, "The Hidden
Uniform Cluster Prior in Self-Supervised Learning"): one class, two priors over the prototypes.

An anchor view with a share of its patches dropped is pushed to predict, over K learnable
prototypes, the sharpened and Sinkhorn-balanced soft assignment of an unmasked target view
computed by an EMA copy of the encoder. A prior term on the mean anchor prediction keeps the
prototypes in use: MSN's mean-entropy maximisation (the KL to a uniform prior) or, for PMSN, the
KL to a power law p_k proportional to k^(-tau).

With a ResNet backbone (no patches to drop) the anchor is simply the other random crop: the
`mask_ratio` setting is then ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from imbssl.core import distributed
from imbssl.methods.registry import MethodConfig, Optimizer, output_std
from imbssl.models.heads import MSNProjector
from imbssl.models.vit import random_keep
from imbssl.methods.ema import EMAMethod, EMASchedule

Prior = Literal["uniform", "powerlaw"]
KLDirection = Literal["mean_to_prior", "prior_to_mean"]
PRIORS, KL_DIRECTIONS = get_args(Prior), get_args(KLDirection)


@dataclass
class MSNConfig(MethodConfig):
    optimizer: Optimizer = "adamw"  # facebookresearch/msn src/msn_train.py (AdamW)
    # MSN's lr is 1e-3 at its total batch of 1,024 (64 per GPU x 16 GPUs; configs/pretrain/
    # msn_vits16.yaml), absolute; scaled linearly here, 2.5e-4 x 1024/256 gives that value.
    base_lr: float = 2.5e-4
    weight_decay: float = 0.04  # MSN's starting weight decay (its schedule raises it to 0.4)
    momentum: float = 0.9  # unused by adamw
    warmup_epochs: int = 15  # facebookresearch/msn configs/pretrain/msn_vits16.yaml (warmup: 15)
    clip_grad: float = 3.0  # max L2 norm of the encoder's gradients (MSN's clip_grad; 0 disables)
    decay_prototypes: bool = False  # MSN keeps its prototypes out of weight decay
    proj_hidden_dim: int = 2048  # width of the projector's two hidden layers
    proj_dim: int = 256  # projector output dimension, also the prototypes' dimension
    num_prototypes: int = 1024  # K: the number of learnable prototypes
    anchor_temperature: float = 0.1  # softmax temperature of the anchor's assignment to the prototypes
    target_temperature: float = 0.025  # 0.1 x MSN's sharpening exponent 0.25
    sinkhorn_iters: int = 3  # 0 disables the balancing of the targets
    mask_ratio: float = 0.15  # share of patches dropped from the anchor (ViT only)
    ema_start: float = 0.996  # target-encoder momentum at the start, rising to 1 over the run
    ema_schedule: EMASchedule = "linear"  # linear (MSN's ramp) | cosine
    symmetric: bool = False  # also use view 2 as a masked anchor for view 1's target
    prior: Prior = "uniform"  # uniform (MSN) | powerlaw (PMSN)
    prior_weight: float = 1.0  # lambda
    tau: float = 0.25  # power-law exponent: p_k proportional to k^(-tau)
    # Direction of the prior KL. "mean_to_prior" = KL(p_mean || prior), as written in the PMSN
    # paper: with a uniform prior it equals MSN's mean-entropy term (log K - H(p_mean)) exactly,
    # so MSN and PMSN differ in the prior only. "prior_to_mean" = KL(prior || p_mean), what
    # lightly's PMSNLoss computes (F.kl_div(log p_mean, prior)); it is mass-covering and grows
    # without bound as any prototype's mean probability goes to 0.
    kl_direction: KLDirection = "mean_to_prior"


@dataclass
class PMSNConfig(MSNConfig):
    prior: Prior = "powerlaw"


# ---------------------------------------------------------------------------------------------
# The loss, as small pure functions


def prototype_probs(z: torch.Tensor, prototypes: torch.Tensor, temperature: float) -> torch.Tensor:
    """Soft assignment (N, K): softmax of cosine similarities to the prototypes / temperature."""
    logits = F.normalize(z, dim=1) @ F.normalize(prototypes, dim=1).T
    return F.softmax(logits / temperature, dim=1)


@torch.no_grad()
def sinkhorn(probs: torch.Tensor, iters: int, marginals: torch.Tensor | None = None) -> torch.Tensor:
    """MSN's (and SwAV's) Sinkhorn-Knopp balancing of target assignments (N, K).

    Alternately rescales so that every prototype k holds its share of the total mass (1/K, or
    `marginals[k]` when given: a distribution over the K prototypes) and every image 1/N; ends on
    the image step, so each row of the result sums to 1 exactly and column k tends to N/K (or
    N * marginals[k]) as `iters` grows. With several processes N is the global batch and the sums
    run over the rows of every rank (each rank holds an equal share), as in MSN's and SwAV's
    distributed implementations.
    """
    if iters <= 0:
        return probs
    n, k = probs.shape
    n *= distributed.world_size()
    q = probs / distributed.all_reduce_sum(probs.sum())
    for _ in range(iters):
        column_sums = distributed.all_reduce_sum(q.sum(dim=0, keepdim=True))
        if marginals is None:
            q = q / (column_sums * k)  # prototypes: 1/K each (MSN's exact arithmetic)
        else:
            q = q * (marginals / column_sums)  # prototype k: marginals[k]
        q = q / (q.sum(dim=1, keepdim=True) * n)  # images: 1/N each
    return q * n


def power_law(num_prototypes: int, tau: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """p_k proportional to k^(-tau), k = 1..K, normalised to sum to 1."""
    k = torch.arange(1, num_prototypes + 1, device=device, dtype=torch.float32)
    weights = k.pow(-tau)
    return weights / weights.sum()


def prior_distribution(prior: str, num_prototypes: int, tau: float, device: torch.device | str = "cpu"):
    if prior == "uniform":
        return torch.full((num_prototypes,), 1.0 / num_prototypes, device=device)
    if prior == "powerlaw":
        return power_law(num_prototypes, tau, device)
    raise ValueError(f"unknown prior {prior!r}: use one of {', '.join(PRIORS)}")


def kl_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) = sum_k p_k log(p_k / q_k) of two distributions over the last dim (0 log 0 = 0)."""
    return (torch.special.xlogy(p, p) - torch.special.xlogy(p, q)).sum(dim=-1)


def prior_term(mean_probs: torch.Tensor, prior: torch.Tensor, direction: str = "mean_to_prior") -> torch.Tensor:
    """KL between the mean anchor prediction and the prior, in the configured direction."""
    if direction == "mean_to_prior":
        return kl_divergence(mean_probs, prior)
    if direction == "prior_to_mean":
        return kl_divergence(prior, mean_probs)
    raise ValueError(f"unknown KL direction {direction!r}: use one of {', '.join(KL_DIRECTIONS)}")


def entropy(p: torch.Tensor) -> torch.Tensor:
    return -torch.special.xlogy(p, p).sum(dim=-1)


def mean_normalized_entropy(p: torch.Tensor) -> torch.Tensor:
    """Mean over the rows (images) of each row's entropy over log K: 1 when every row is the uniform
    distribution, a prototype method's uniform collapse. A mean over this rank's images: the training
    loop's average over the ranks makes it the global batch's."""
    return entropy(p).mean() / math.log(p.shape[-1])


def soft_cross_entropy(targets: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """H(targets, probs) averaged over rows."""
    return -(targets * torch.log(probs.clamp_min(1e-12))).sum(dim=1).mean()


# ---------------------------------------------------------------------------------------------


class MSN(EMAMethod):
    """Anchor encoder (backbone + projector), prototypes, and an EMA target encoder
    (`self.target`, see ema.py)."""

    name = "msn"

    def __init__(self, backbone: nn.Module, config: MSNConfig):
        super().__init__(backbone, config)
        self.projector = MSNProjector(backbone.output_dim, config.proj_hidden_dim, config.proj_dim)
        bound = config.proj_dim ** -0.5  # MSN's prototype initialisation
        self.prototypes = nn.Parameter(torch.empty(config.num_prototypes, config.proj_dim).uniform_(-bound, bound))
        self.make_target("backbone", "projector")
        self.register_buffer("prior", prior_distribution(config.prior, config.num_prototypes, config.tau),
                             persistent=False)
        self.masks_patches = getattr(backbone, "supports_patch_drop", False)

    @property
    def eval_backbone(self) -> nn.Module:
        """The target (EMA) encoder: the one MSN evaluates."""
        return self.target["backbone"]

    def _anchor(self, x: torch.Tensor) -> torch.Tensor:
        if self.masks_patches:
            keep = random_keep(x.shape[0], self.backbone.num_patches, self.config.mask_ratio, device=x.device)
            return self.projector(self.backbone(x, keep=keep))
        return self.projector(self.backbone(x))

    @torch.no_grad()
    def _target_z(self, x: torch.Tensor) -> torch.Tensor:
        return self.target["projector"](self.target["backbone"](x))

    def loss(self, views, index=None):
        self.sync_target_if_stale()
        cfg = self.config
        pairs = [(views[0], views[1])] + ([(views[1], views[0])] if cfg.symmetric else [])
        anchors = torch.cat([self._anchor(a) for a, _ in pairs])
        target_z = torch.cat([self._target_z(t) for _, t in pairs])
        # Assignments in float32 even under autocast: a 0.025 temperature magnifies bf16 rounding.
        with torch.autocast(anchors.device.type, enabled=False):
            anchors, prototypes = anchors.float(), self.prototypes.float()
            with torch.no_grad():
                target_probs = prototype_probs(target_z.float(), prototypes, cfg.target_temperature)
                targets = torch.cat([sinkhorn(chunk, cfg.sinkhorn_iters) for chunk in target_probs.chunk(len(pairs))])
            probs = prototype_probs(anchors, prototypes, cfg.anchor_temperature)
            mean_probs = distributed.batch_mean(probs)  # over the global batch (every rank's rows)
            ce = soft_cross_entropy(targets, probs)
            reg = prior_term(mean_probs, self.prior, cfg.kl_direction)
            loss = ce + cfg.prior_weight * reg
        return loss, {
            "out_std": output_std(anchors),
            "proto_entropy": entropy(mean_probs.detach()),
            "ce": ce.detach(),
            "prior_term": reg.detach(),
        }

    def no_decay_parameters(self):
        return [] if self.config.decay_prototypes else [self.prototypes]

    @torch.no_grad()
    def prototype_scores(self, x: torch.Tensor) -> torch.Tensor:
        """Cosine of the target (EMA) encoder's output to each prototype: the encoder MSN evaluates;
        the argmax of the soft assignment, whatever its temperature."""
        return F.normalize(self._target_z(x).float(), dim=1) @ F.normalize(self.prototypes.float(), dim=1).T

    def prototype_prior(self) -> torch.Tensor:
        return self.prior

    def clip_gradients(self) -> None:
        """MSN clips the encoder's gradients (backbone and projector), not the prototypes'."""
        if self.config.clip_grad > 0:
            encoder = [*self.backbone.parameters(), *self.projector.parameters()]
            torch.nn.utils.clip_grad_norm_(encoder, self.config.clip_grad)


class PMSN(MSN):
    """MSN with the power-law prior by default (the same class under its own name)."""

    name = "pmsn"
