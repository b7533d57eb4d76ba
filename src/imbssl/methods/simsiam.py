"""SimSiam (Chen & He, 2021): symmetric negative cosine with a stop-gradient on the target branch."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from imbssl.methods.registry import Method, MethodConfig, Optimizer, output_std
from imbssl.models.heads import SimSiamPredictor, SimSiamProjector


@dataclass
class SimSiamConfig(MethodConfig):
    optimizer: Optimizer = "sgd"  # paper, Table 1
    base_lr: float = 0.03  # paper, Table 1
    weight_decay: float = 1e-5  # paper, Table 1 (PatrickHua/SimSiam's CIFAR config: 5e-4)
    momentum: float = 0.9  # PatrickHua/SimSiam configs/simsiam_cifar.yaml
    warmup_epochs: int = 10  # PatrickHua/SimSiam configs/simsiam_cifar.yaml (the paper says only "cosine")
    proj_dim: int = 2048  # width of the projector's hidden and output layers (the predictor's input and output)
    pred_hidden_dim: int = 512  # bottleneck width of the predictor
    # The predictor's lr stays at base_lr x batch/256 for the whole run, warm-up included, as in
    # PatrickHua/SimSiam (main.py: constant_predictor_lr=True; SimSiam paper, end of Section 4.2).
    fix_pred_lr: bool = True


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """-cos(p, stopgrad(z)), averaged over the batch."""
    return -F.cosine_similarity(p, z.detach(), dim=-1).mean()


class SimSiam(Method):
    name = "simsiam"

    def __init__(self, backbone, config: SimSiamConfig):
        super().__init__(backbone, config)
        d = backbone.output_dim
        self.projector = SimSiamProjector(d, config.proj_dim)
        self.predictor = SimSiamPredictor(config.proj_dim, config.pred_hidden_dim)

    def loss(self, views, index=None):
        x1, x2 = views
        z1, z2 = self.projector(self.backbone(x1)), self.projector(self.backbone(x2))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        loss = 0.5 * (negative_cosine(p1, z2) + negative_cosine(p2, z1))
        return loss, {"out_std": output_std(z1)}

    def fixed_lr_parameters(self):
        return list(self.predictor.parameters()) if self.config.fix_pred_lr else []


def projector_from_state(method_state: dict, prefix: str = "projector.") -> SimSiamProjector:
    """SimSiam's projector with the weights of a model file's method state (its `projector.*`
    entries), sized from them: Experiment II's base and experts seen through their projector."""
    weights = {key[len(prefix):]: value for key, value in method_state.items() if key.startswith(prefix)}
    first = weights["0.weight"]  # Linear(in_dim, dim)
    projector = SimSiamProjector(first.shape[1], first.shape[0])
    projector.load_state_dict(weights)
    return projector
