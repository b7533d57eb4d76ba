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
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from imbssl import UserError
from imbssl.methods.registry import Method, MethodConfig, output_std


@dataclass
class DistillConfig(MethodConfig):
    """Optimizer, head and initialisation settings of the student (the `clustering.distill` keys).

    The paper gives the distillation no optimizer of its own: Table 1's settings are shared by
    every experiment, so the student gets SimSiam's (SGD, base lr 0.03, weight decay 1e-5,
    cosine) and, like SimSiam in PatrickHua/SimSiam, 10 warm-up epochs.
    """

    optimizer: str = "sgd"
    base_lr: float = 0.03  # scaled by batch_size / 256
    weight_decay: float = 1e-5
    momentum: float = 0.9
    warmup_epochs: int = 10
    head_hidden_dim: int = 512
    init: str = "base"  # base: the student starts as a copy of the base backbone | scratch: random

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise UserError(f"clustering.distill.init={self.init!r}: use one of {', '.join(INITS)}")


INITS = ("base", "scratch")


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

    def __init__(self, num_heads: int, dim: int, hidden_dim: int):
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(num_heads, dim, hidden_dim))
        self.b1 = nn.Parameter(torch.empty(num_heads, hidden_dim))
        self.w2 = nn.Parameter(torch.empty(num_heads, hidden_dim, dim))
        self.b2 = nn.Parameter(torch.empty(num_heads, dim))
        for weight, bias in ((self.w1, self.b1), (self.w2, self.b2)):  # nn.Linear's default init
            bound = 1 / math.sqrt(weight.shape[1])
            nn.init.uniform_(weight, -bound, bound)
            nn.init.uniform_(bias, -bound, bound)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        """(num_heads, N, dim) predictions of every head for every row of q (N, dim)."""
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
        self.heads = RegressionHeads(num_clusters + 1, backbone.output_dim, config.head_hidden_dim)
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


def load_teachers(base: str, experts: list[str], device: torch.device) -> tuple[Teachers, dict]:
    """The frozen teachers on `device`, and the base's model.pt metadata (arch, width, ...)."""
    from imbssl.evaluation.features import load_backbone

    base_backbone, meta = load_backbone(base, device)
    expert_backbones = []
    for path in experts:
        backbone, expert_meta = load_backbone(path, device)
        for key in ("arch", "width", "image_size", "stem"):
            if expert_meta.get(key) != meta.get(key):
                raise UserError(f"expert {path} has {key}={expert_meta.get(key)} but the base {base} has "
                                f"{meta.get(key)}: retrain the experts from the base model")
        expert_backbones.append(backbone)
    return Teachers(base_backbone, expert_backbones), meta


def distill(
    base: str,
    experts: list[str],
    clusters: str,
    train_data: str,
    test_data: str,
    subset: str,
    out_dir: str | os.PathLike,
    seed: int = 0,
    config: DistillConfig | None = None,
    settings=None,
    augment=None,
    stop_after_epoch: int | None = None,
) -> Path:
    """Train a student from `base` and `experts` (model.pt files, expert j for cluster j of the
    `clusters` assignments.csv) on `subset`; writes out_dir/model.pt (student backbone only)."""
    from imbssl.core import distributed
    from imbssl.data.augment import AugmentConfig
    from imbssl.clustering.kmeans import read_assignments
    from imbssl.data.device import resolve_device
    from imbssl.models.backbones import backbone_from_meta
    from imbssl.data.subsets import require_subset_order
    from imbssl.training.loop import TrainSettings, fingerprint, load_training_data, run_settings, run_training

    config, settings, augment = config or DistillConfig(), settings or TrainSettings(), augment or AugmentConfig()
    device = distributed.setup(resolve_device(settings.device))  # a no-op unless torchrun started this job
    data = load_training_data(train_data, test_data, subset, device, settings.data_on_device,
                              settings.device_memory_fraction)
    cluster_index, cluster_of = read_assignments(clusters)
    require_subset_order(cluster_index, data.indices, clusters, subset, "cluster")
    num_clusters = int(cluster_of.max()) + 1
    if len(experts) < num_clusters:
        raise UserError(f"{clusters} has {num_clusters} clusters but {len(experts)} experts were given: "
                        f"pass one expert model per cluster (clustering.k)")
    teachers, meta = load_teachers(base, experts, device)
    if data.image_size != meta["image_size"]:
        raise UserError(f"{train_data} has {data.image_size}px images but the base {base} was trained on "
                        f"{meta['image_size']}px: use the train split the base was trained on")
    torch.manual_seed(seed)  # the student's initial weights (with init: scratch) and its heads'
    student = initial_student(config.init, teachers.base, backbone_from_meta(meta))
    module = Distiller(student, config, teachers, torch.tensor(cluster_of)).to(device)
    run_id = fingerprint("distill", asdict(config), run_settings(settings), asdict(augment), seed, data.indices.tolist(),
                         cluster_of.tolist(), base, list(experts))
    return run_training(module, data, settings, augment, out_dir, seed, run_id, stop_after_epoch,
                        method="distill", arch=meta["arch"], width=meta["width"], stem=meta.get("stem", "auto"),
                        teachers=[base, *experts])
