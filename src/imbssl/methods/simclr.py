"""SimCLR (Chen et al., 2020): NT-Xent over the 2N views of a batch, LARS optimizer.

On several processes the batch is the global one: each rank's views are contrasted against the
views of every rank (gathered with their gradient), as the paper's TPU implementation does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from imbssl.core import distributed
from imbssl.methods.registry import LARSMethodConfig, Method, Optimizer, output_std
from imbssl.models.heads import SimCLRProjector


@dataclass
class SimCLRConfig(LARSMethodConfig):
    optimizer: Optimizer = "lars"  # paper, Table 1
    base_lr: float = 0.3  # paper, Table 1 (x batch/256, as PatrickHua/SimSiam configs/simclr_cifar.yaml)
    weight_decay: float = 1e-6  # paper, Table 1
    # LARS momentum: the reference's LARS_simclr defaults to 0.9 but never stores its velocity
    # (optimizers/lars_simclr.py: `self.state[p].get('velocity', 0)`, `next_v` unsaved), so it ran
    # with none; 0.9 is the LARS the paper names, 0 what ran (config/paper-as-run.yaml).
    momentum: float = 0.9
    warmup_epochs: int = 10  # PatrickHua/SimSiam configs/simclr_cifar.yaml (the paper says only "cosine")
    lars_eta: float = 0.001  # PatrickHua/SimSiam optimizers/lars_simclr.py (trust_coef=1e-3, SimCLR's)
    lars_clip_lr: bool = False  # PatrickHua/SimSiam optimizers/lars_simclr.py does not clip
    # The reference's projection_MLP (PatrickHua/SimSiam models/simclr.py:33-44): hidden = in_dim =
    # 512, out 256, no BatchNorm (the paper is silent on the head).
    proj_hidden_dim: int = 512
    proj_dim: int = 256  # projector output dimension, where the contrastive loss is computed
    proj_bn: bool = False  # BatchNorm after the hidden layer (not in the reference head)
    temperature: float = 0.5  # PatrickHua/SimSiam models/simclr.py:6 (NT_XentLoss default)


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
        self.projector = SimCLRProjector(backbone.output_dim, config.proj_hidden_dim, config.proj_dim, config.proj_bn)

    def loss(self, views, index=None):
        x1, x2 = views
        z1, z2 = self.projector(self.backbone(x1)), self.projector(self.backbone(x2))
        return nt_xent(z1, z2, self.config.temperature), {"out_std": output_std(z1)}
