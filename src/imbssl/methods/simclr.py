"""SimCLR (Chen et al., 2020): NT-Xent over the 2N views of a batch, LARS optimizer.

On several processes the batch is the global one: each rank's views are contrasted against the
views of every rank (gathered with their gradient), as the paper's TPU implementation does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from imbssl.core import distributed
from imbssl.methods.registry import Method, MethodConfig, Optimizer, output_std
from imbssl.models.heads import SimCLRProjector


@dataclass
class SimCLRConfig(MethodConfig):
    optimizer: Optimizer = "lars"
    base_lr: float = 0.3
    weight_decay: float = 1e-6
    momentum: float = 0.9
    warmup_epochs: int = 10  # PatrickHua/SimSiam configs/simclr_cifar.yaml (the paper says only "cosine")
    proj_hidden_dim: int = 2048
    proj_dim: int = 128
    temperature: float = 0.5


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Normalised temperature-scaled cross-entropy: each view's positive is its twin, the other
    2N-2 views are negatives; averaged over all 2N anchors.

    With W processes, N is the global batch: this rank's 2n anchors (n = N/W) are scored against
    the 2N views of all ranks, whose rows are [z1 of ranks 0..W-1; z2 of ranks 0..W-1]; the loss
    averaged over ranks is the single-process loss of the whole batch.
    """
    n = z1.shape[0]
    anchors = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    candidates = torch.cat([distributed.all_gather_with_grad(anchors[:n]),
                            distributed.all_gather_with_grad(anchors[n:])])
    total = candidates.shape[0] // 2  # N
    logits = anchors @ candidates.T / temperature
    own = distributed.rank() * n + torch.arange(n, device=z1.device)  # this rank's rows among the N
    rows = torch.arange(2 * n, device=z1.device)
    logits[rows, torch.cat([own, total + own])] = float("-inf")  # a view is not its own negative
    targets = torch.cat([total + own, own])
    return F.cross_entropy(logits, targets)


class SimCLR(Method):
    name = "simclr"

    def __init__(self, backbone, config: SimCLRConfig):
        super().__init__(backbone, config)
        self.projector = SimCLRProjector(backbone.output_dim, config.proj_hidden_dim, config.proj_dim)

    def loss(self, views, index=None):
        x1, x2 = views
        z1, z2 = self.projector(self.backbone(x1)), self.projector(self.backbone(x2))
        return nt_xent(z1, z2, self.config.temperature), {"out_std": output_std(z1)}
