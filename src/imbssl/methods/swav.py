"""SwAV (Caron et al., 2020, "Unsupervised Learning of Visual Features by Contrasting Cluster
Assignments") and power-law SwAV (`pswav`, this pipeline's own variant): one class, two priors.

Each view's projection (L2-normalised) is scored against K L2-normalised prototypes; Sinkhorn-Knopp
turns one view's scores into soft codes that spread the global batch over the prototypes by a
prior, and the other view predicts those codes (swapped prediction, cross-entropy at
`temperature`). The prototypes are re-normalised before every step and get no update during the
first `freeze_prototypes_fraction` of the run, as SwAV does.

- `prior: uniform` (SwAV): the codes' column marginals are 1/K, SwAV's equipartition constraint.
- `prior: powerlaw` (`pswav`): the column marginals follow p_k proportional to k^(-tau), the
  power law of PMSN (msn.power_law). No paper defines this variant: it is the pipeline's own,
  derived from the argument of the PMSN paper (Assran et al., 2022, "The Hidden Uniform Cluster
  Prior in Self-Supervised Learning") that a uniform cluster prior suits class-balanced data and
  a power law suits long-tailed data; SwAV's prior lives in the Sinkhorn marginals, so that is
  where the power law goes.

Not implemented: multi-crop (two crops of one size only) and SwAV's queue of past batches'
embeddings (solo-learn's CIFAR recipe fills a 3,840-row queue from epoch 50; SwAV uses one only
for small batches). Without the queue, Sinkhorn balances each global batch on its own.

Defaults: solo-learn's CIFAR recipe (vturrisi/solo-learn at 9187ea3, `scripts/pretrain/cifar/
swav.yaml`); the SwAV paper trains on ImageNet only. See docs/recipe.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from imbssl.core import distributed
from imbssl.methods.msn import Prior, entropy, mean_normalized_entropy, prior_distribution, sinkhorn
from imbssl.methods.progress import RunProgress
from imbssl.methods.registry import LARSMethodConfig, Method, Optimizer, output_std
from imbssl.models.heads import SwAVProjector


@dataclass
class SwAVConfig(LARSMethodConfig):
    optimizer: Optimizer = "lars"  # solo-learn scripts/pretrain/cifar/swav.yaml:33
    base_lr: float = 0.6  # solo-learn swav.yaml:35 (x batch/256: solo/args/pretrain.py:153-154)
    weight_decay: float = 1e-6  # solo-learn swav.yaml:37
    momentum: float = 0.9  # solo-learn solo/args/pretrain.py:164 (LARS momentum default)
    warmup_epochs: int = 10  # solo-learn solo/methods/base.py:293 (scheduler.warmup_epochs default)
    lars_eta: float = 0.02  # solo-learn swav.yaml:40 (optimizer.kwargs; solo/utils/lars.py)
    lars_clip_lr: bool = True  # solo-learn swav.yaml:39
    proj_hidden_dim: int = 2048  # solo-learn swav.yaml:19 (Linear-BN-ReLU-Linear: solo/methods/swav.py:65-70)
    proj_dim: int = 128  # solo-learn swav.yaml:21
    num_prototypes: int = 3000  # solo-learn swav.yaml:22
    temperature: float = 0.1  # solo-learn swav.yaml:25
    sinkhorn_epsilon: float = 0.05  # solo-learn solo/methods/swav.py:102 (SwAV main_swav.py:61)
    sinkhorn_iters: int = 3  # solo-learn solo/methods/swav.py:103 (SwAV main_swav.py:63)
    # Share of the run's optimizer steps during which the prototypes get no update: solo-learn
    # freezes them for 2 epochs (swav.yaml:24) of its 1,000 (swav.yaml:52), i.e. 0.002.
    freeze_prototypes_fraction: float = 0.002
    prior: Prior = "uniform"  # uniform (SwAV) | powerlaw (pswav)
    tau: float = 0.25  # power-law exponent of pswav: PMSN's default (msn.MSNConfig.tau), our choice


@dataclass
class PSwAVConfig(SwAVConfig):
    prior: Prior = "powerlaw"


def swav_codes(scores: torch.Tensor, epsilon: float, iters: int,
               marginals: torch.Tensor | None = None) -> torch.Tensor:
    """SwAV's soft codes (N, K) of prototype scores: Sinkhorn-Knopp on exp(scores / epsilon) over the
    global batch, each row summing to 1, column k tending to N/K (or N * marginals[k])."""
    return sinkhorn(torch.exp(scores.detach() / epsilon), iters, marginals)


def swapped_cross_entropy(codes: torch.Tensor, scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """-sum_k codes_k log softmax(scores / temperature)_k, averaged over rows."""
    return -(codes * F.log_softmax(scores / temperature, dim=1)).sum(dim=1).mean()


def swav_loss(scores1: torch.Tensor, scores2: torch.Tensor, codes1: torch.Tensor, codes2: torch.Tensor,
              temperature: float) -> torch.Tensor:
    """Swapped prediction with two crops: view 2 predicts view 1's codes and view 1 view 2's,
    averaged (SwAV main_swav.py:290-315 with nmb_crops [2])."""
    return (swapped_cross_entropy(codes1, scores2, temperature)
            + swapped_cross_entropy(codes2, scores1, temperature)) / 2


class SwAV(Method):
    """Backbone + projector, K prototypes (rows of `self.prototypes`, kept L2-normalised)."""

    name = "swav"

    def __init__(self, backbone: nn.Module, config: SwAVConfig):
        super().__init__(backbone, config)
        self.projector = SwAVProjector(backbone.output_dim, config.proj_hidden_dim, config.proj_dim)
        # Random unit vectors (our choice; SwAV normalises nn.Linear's initial weights at its first step).
        self.prototypes = nn.Parameter(F.normalize(torch.randn(config.num_prototypes, config.proj_dim), dim=1))
        marginals = prior_distribution(config.prior, config.num_prototypes, config.tau)
        # None keeps SwAV's exact 1/K arithmetic for the uniform prior.
        self.register_buffer("marginals", None if config.prior == "uniform" else marginals, persistent=False)
        self.progress = RunProgress()  # for the prototypes' frozen start

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        """Project the prototypes back onto the unit sphere (SwAV main_swav.py:277-281)."""
        self.prototypes.copy_(F.normalize(self.prototypes, dim=1))

    def loss(self, views, index=None):
        cfg = self.config
        self.normalize_prototypes()  # before every step, as SwAV does
        z1, z2 = (self.projector(self.backbone(x)) for x in views)
        with torch.autocast(z1.device.type, enabled=False):  # exp(scores / 0.05) needs float32
            prototypes = self.prototypes.float()
            scores1, scores2 = (F.normalize(z.float(), dim=1) @ prototypes.T for z in (z1, z2))  # cosines (N, K)
            codes1 = swav_codes(scores1, cfg.sinkhorn_epsilon, cfg.sinkhorn_iters, self.marginals)
            codes2 = swav_codes(scores2, cfg.sinkhorn_epsilon, cfg.sinkhorn_iters, self.marginals)
            loss = swav_loss(scores1, scores2, codes1, codes2, cfg.temperature)
            probs1 = F.softmax(scores1.detach() / cfg.temperature, dim=1)
            mean_probs = distributed.batch_mean(probs1)
        # prediction_entropy at 1: every image's prediction uniform, SwAV's uniform collapse (the loss
        # then sits at log K whatever the codes, while the output std may still look healthy).
        return loss, {"out_std": output_std(z1), "proto_entropy": entropy(mean_probs),
                      "prediction_entropy": mean_normalized_entropy(probs1)}

    def clip_gradients(self) -> None:
        """No prototype update while frozen: their gradient is dropped after backward (SwAV
        main_swav.py:324-328), so the optimizer skips them (no momentum, no weight decay)."""
        if float(self.progress) < self.config.freeze_prototypes_fraction:
            self.prototypes.grad = None

    def after_step(self, progress: float) -> None:
        self.progress.set(progress)

    @torch.no_grad()
    def prototype_scores(self, x: torch.Tensor) -> torch.Tensor:
        """Cosine of the projection to each (unit) prototype: the scores SwAV's codes come from."""
        return F.normalize(self.projector(self.backbone(x)).float(), dim=1) @ F.normalize(self.prototypes.float(), dim=1).T

    def prototype_prior(self) -> torch.Tensor:
        """The Sinkhorn column marginals: 1/K (swav) or the power law (pswav)."""
        k = self.prototypes.shape[0]
        return self.marginals if self.marginals is not None else torch.full((k,), 1.0 / k, device=self.prototypes.device)


class PSwAV(SwAV):
    """SwAV with power-law Sinkhorn marginals by default (the same class under its own name)."""

    name = "pswav"
