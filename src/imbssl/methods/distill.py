"""Distillation of a base model and K per-cluster experts into one student.

The student has the base's backbone architecture and, by default (`init: base`), its trained
weights too: Section 3.1 step 4 of the paper trains a student "having the same architecture and
parameter as SimSiam_base". Its K+1 regression heads (one for the base, one per expert) always
start from random weights. With q the 512-d backbone outputs of one augmented view, seen by student and
teachers alike, and k the image's cluster:

    L = 1/2 * MSE(r_base(q_s), q_base) + 1/2 * MSE(r_k(q_s), q_expert_k)

Teachers are frozen and in eval mode; each expert runs only on the images of its own cluster.
The heads are dropped after training: the saved model.pt holds the student backbone only, in
the pretraining format, so it is evaluated exactly like any pretrained model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from imbssl import UserError
from imbssl.methods.registry import Method, MethodConfig, Optimizer, output_std


@dataclass
class DistillConfig(MethodConfig):
    """Optimizer, head and initialisation settings of the student (the `clustering.distill` keys).

    The paper gives the distillation no optimizer of its own: Table 1's settings are shared by
    every experiment, so the student gets SimSiam's (SGD, base lr 0.03, weight decay 1e-5,
    cosine) and, like SimSiam in PatrickHua/SimSiam, 10 warm-up epochs.
    """

    optimizer: Optimizer = "sgd"  # SimSiam's (paper, Table 1)
    base_lr: float = 0.03  # scaled by batch_size / 256
    weight_decay: float = 1e-5  # SimSiam's (paper, Table 1)
    momentum: float = 0.9  # SimSiam's (PatrickHua/SimSiam configs/simsiam_cifar.yaml)
    warmup_epochs: int = 10  # SimSiam's in PatrickHua/SimSiam: linear warm-up of the learning rate
    head_hidden_dim: int = 512  # hidden width of each regression head (Linear-ReLU-Linear)
    init: Literal["base", "scratch"] = "base"  # base: the student starts as a copy of the base backbone
    # q of eq. 2 ("output of SimSiam", the paper is silent on which): the teachers' backbone outputs,
    # or their projector outputs (the heads then map the student's backbone output to that width)
    target: Literal["backbone", "projector"] = "backbone"


def distill_loss(pred_base: torch.Tensor, q_base: torch.Tensor, pred_expert: torch.Tensor,
                 q_expert: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(L, MSE to the base, MSE to the experts): MSE is the mean over images and dimensions,
    each image's expert target being the expert of its own cluster."""
    to_base = F.mse_loss(pred_base.float(), q_base.float())
    to_expert = F.mse_loss(pred_expert.float(), q_expert.float())
    return 0.5 * to_base + 0.5 * to_expert, to_base, to_expert


class RegressionHeads(nn.Module):
    """`num_heads` independent Linear-ReLU-Linear MLPs evaluated together as batched matmuls.

    No BatchNorm: batch statistics would mix images of different clusters, and each image must
    train only its own heads. Running every head on every image costs (K+1) small matmuls, a
    fraction of a percent of the backbone's work, and needs no per-cluster loop.
    """

    def __init__(self, num_heads: int, dim: int, hidden_dim: int, out_dim: int | None = None):
        super().__init__()
        out_dim = out_dim or dim
        self.w1 = nn.Parameter(torch.empty(num_heads, dim, hidden_dim))
        self.b1 = nn.Parameter(torch.empty(num_heads, hidden_dim))
        self.w2 = nn.Parameter(torch.empty(num_heads, hidden_dim, out_dim))
        self.b2 = nn.Parameter(torch.empty(num_heads, out_dim))
        for weight, bias in ((self.w1, self.b1), (self.w2, self.b2)):  # nn.Linear's default init
            bound = 1 / math.sqrt(weight.shape[1])
            nn.init.uniform_(weight, -bound, bound)
            nn.init.uniform_(bias, -bound, bound)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        """(num_heads, N, out_dim) predictions of every head for every row of q (N, dim)."""
        hidden = torch.relu(torch.einsum("nd,hde->hne", q, self.w1) + self.b1[:, None])
        return torch.einsum("hne,hed->hnd", hidden, self.w2) + self.b2[:, None]


class Teachers:
    """The frozen base and expert backbones.

    Deliberately not an nn.Module attribute of the student's module: checkpoints and the
    optimizer then hold only what trains (student and heads), and `module.train()` never
    switches the teachers' BatchNorm out of eval mode.
    """

    def __init__(self, base: nn.Module, experts: list[nn.Module]):
        self.base, self.experts = base, list(experts)
        for teacher in self.all():
            teacher.eval().requires_grad_(False)

    def all(self) -> list[nn.Module]:
        return [self.base, *self.experts]

    def to(self, device: torch.device) -> "Teachers":
        for teacher in self.all():
            teacher.to(device)
        return self

    @torch.no_grad()
    def targets(self, x: torch.Tensor, cluster: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(q_base, q_expert): the base on every image, expert k only on the images of cluster k."""
        q_base = self.base(x)
        order = torch.argsort(cluster)
        counts = torch.bincount(cluster, minlength=len(self.experts)).tolist()  # one host sync per step
        chunks = [expert(part) for expert, part in zip(self.experts, torch.split(x[order], counts)) if len(part)]
        q_expert = torch.empty_like(q_base)
        q_expert[order] = torch.cat(chunks).to(q_base.dtype)
        return q_base, q_expert


class Distiller(Method):
    """Student backbone + K+1 regression heads, trained by `train.train_loop` like any method."""

    name = "distill"
    config_section = "clustering.distill"
    num_views = 1

    def __init__(self, backbone: nn.Module, config: DistillConfig, teachers: Teachers, cluster_of: torch.Tensor):
        super().__init__(backbone, config)
        num_clusters = len(teachers.experts)
        if int(cluster_of.min()) < 0 or int(cluster_of.max()) >= num_clusters:
            raise UserError(f"cluster ids must lie in 0..{num_clusters - 1} (one expert per cluster), "
                            f"got {int(cluster_of.min())}..{int(cluster_of.max())}")
        self.teachers = teachers
        self.heads = RegressionHeads(num_clusters + 1, backbone.output_dim, config.head_hidden_dim,
                                     getattr(teachers.base, "output_dim", backbone.output_dim))
        # Cluster of each training image, by its position in the training subset (the loop's `index`).
        self.register_buffer("cluster_of", cluster_of.long(), persistent=False)

    def loss(self, views, index):
        (x,) = views
        cluster = self.cluster_of[index]
        q_base, q_expert = self.teachers.targets(x, cluster)
        q_student = self.backbone(x)
        predictions = self.heads(q_student)  # (K+1, N, D): head 0 is the base's, head 1+k expert k's
        rows = torch.arange(len(x), device=x.device)
        loss, to_base, to_expert = distill_loss(predictions[0], q_base, predictions[1 + cluster, rows], q_expert)
        return loss, {"out_std": output_std(q_student), "mse_base": to_base.detach(), "mse_expert": to_expert.detach()}

    def exported_state(self) -> dict[str, torch.Tensor]:
        """The student backbone alone: the heads only serve the distillation."""
        return {key: value for key, value in self.state_dict().items() if key.startswith("backbone.")}


def initial_student(init: str, base: nn.Module, student: nn.Module) -> nn.Module:
    """The student backbone before its first step: `student` (freshly built) with the base's
    weights and BatchNorm statistics copied in (init: base), or left random (init: scratch)."""
    if init == "base":
        student.load_state_dict(base.state_dict())
    return student
