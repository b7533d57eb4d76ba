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

The queue (`queue_size` rows, off by default): SwAV's store of past batches' embeddings, per view,
scored by the current prototypes and balanced by Sinkhorn together with the batch, so that small
batches still spread over K prototypes (SwAV main_swav.py:207-234, 294-307; its README recommends
it for small batches). It fills from `queue_start_fraction` of the run and joins the Sinkhorn once
full.
With several processes each rank keeps `queue_size / world size` rows of its own embeddings, as
SwAV does, and Sinkhorn runs over all ranks' rows.

`hard_assignment` rounds the codes to their argmax: the SwAV paper finds the soft codes better
(Section 3.1), and its README lists hard assignment among the workarounds for a loss stuck at
log K (README.md:163, Common Issues). Off by default.

Not implemented: multi-crop (two crops of one size only).

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
    # Queue rows over all ranks; 0: off (SwAV main_swav.py:69 queue_length 0; off by default on
    # CIFAR, where solo-learn fills 3,840 rows from epoch 50: swav.yaml:20, 23).
    queue_size: int = 0
    # Share of the run after which the queue fills: solo-learn starts it at epoch 50 of its 1,000
    # (swav.yaml:23, 52), i.e. 0.05.
    queue_start_fraction: float = 0.05
    hard_assignment: bool = False  # SwAV main_swav.py: soft codes (paper Section 3.1)
    prior: Prior = "uniform"  # uniform (SwAV) | powerlaw (pswav)
    tau: float = 0.25  # power-law exponent of pswav: PMSN's default (msn.MSNConfig.tau), our choice


@dataclass
class PSwAVConfig(SwAVConfig):
    prior: Prior = "powerlaw"


def swav_codes(scores: torch.Tensor, epsilon: float, iters: int,
               marginals: torch.Tensor | None = None, hard: bool = False) -> torch.Tensor:
    """SwAV's soft codes (N, K) of prototype scores: Sinkhorn-Knopp on exp(scores / epsilon) over the
    global batch, each row summing to 1, column k tending to N/K (or N * marginals[k]); with `hard`,
    each row rounded to a one-hot at its largest code."""
    codes = sinkhorn(torch.exp(scores.detach() / epsilon), iters, marginals)
    if hard:
        codes = F.one_hot(codes.argmax(dim=1), codes.shape[1]).to(codes.dtype)
    return codes


class EmbeddingQueue(nn.Module):
    """Past embeddings per view, newest first (SwAV's queue). Holds `size` rows for checkpoints of
    one shape whatever the number of processes; each rank fills the first `size / world size`.
    The count of filled rows is mirrored on the host, so that asking whether the queue is full never
    waits for the device."""

    def __init__(self, views: int, size: int, dim: int):
        super().__init__()
        self.register_buffer("rows", torch.zeros(views, size, dim))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))
        self.filled_host = 0

    @property
    def capacity(self) -> int:
        return self.rows.shape[1] // distributed.world_size()

    @property
    def full(self) -> bool:
        return self.capacity > 0 and self.filled_host >= self.capacity

    def past(self, view: int) -> torch.Tensor:
        return self.rows[view, :self.capacity]

    @torch.no_grad()
    def push(self, embeddings: list[torch.Tensor]) -> None:
        """Put each view's batch in front; the oldest rows fall off the end."""
        capacity = self.capacity
        if capacity == 0:
            return
        for view, batch in enumerate(embeddings):
            self.rows[view, :capacity] = torch.cat([batch.detach().to(self.rows.dtype), self.past(view)])[:capacity]
        self.filled_host = min(capacity, self.filled_host + len(embeddings[0]))
        self.filled.fill_(self.filled_host)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.filled_host = int(self.filled)  # one read of the device, at load time only


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
        self.progress = RunProgress()  # for the prototypes' frozen start and the queue's
        self.queue = EmbeddingQueue(2, config.queue_size, config.proj_dim)

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
            embeddings = [F.normalize(z.float(), dim=1) for z in (z1, z2)]
            scores1, scores2 = (e @ prototypes.T for e in embeddings)  # cosines (N, K)
            codes1, codes2 = (self.codes(scores, view, prototypes) for view, scores in enumerate((scores1, scores2)))
            if float(self.progress) >= cfg.queue_start_fraction:
                self.queue.push(embeddings)  # after their use, as SwAV main_swav.py:302-304
            loss = swav_loss(scores1, scores2, codes1, codes2, cfg.temperature)
            probs1 = F.softmax(scores1.detach() / cfg.temperature, dim=1)
            mean_probs = distributed.batch_mean(probs1)
        # prediction_entropy at 1: every image's prediction uniform, SwAV's uniform collapse (the loss
        # then sits at log K whatever the codes, while the output std may still look healthy).
        return loss, {"out_std": output_std(z1), "proto_entropy": entropy(mean_probs),
                      "prediction_entropy": mean_normalized_entropy(probs1)}

    @torch.no_grad()
    def codes(self, scores: torch.Tensor, view: int, prototypes: torch.Tensor) -> torch.Tensor:
        """The batch's codes; once the queue is full its rows, scored by the current prototypes,
        join the Sinkhorn and only the batch's rows are kept (SwAV main_swav.py:294-307)."""
        cfg = self.config
        rows = torch.cat([self.queue.past(view) @ prototypes.T, scores]) if self.queue.full else scores
        codes = swav_codes(rows, cfg.sinkhorn_epsilon, cfg.sinkhorn_iters, self.marginals, cfg.hard_assignment)
        return codes[-len(scores):]

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
