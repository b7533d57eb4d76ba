"""DINO (Caron et al., 2021, "Emerging Properties in Self-Supervised Vision Transformers") on any
backbone: self-distillation with no labels.

Student = backbone + DINO head (MLP -> L2-normalised bottleneck -> weight-normalised linear layer
to K outputs); teacher = an EMA copy of both (`self.target`). The teacher's outputs are centred
(minus an EMA of their global-batch mean) and sharpened (a low, warmed-up temperature); the
student at temperature 0.1 predicts them across views: cross-entropy between teacher(view a) and
student(view b) for a != b, averaged.

The head's initialisation (truncated normal, std 0.02) is DINO's, made for widths near 2,048: a much
narrower head (say 64 hidden units) gives a tiny bottleneck output whose L2 normalisation magnifies
the bias gradients, and the embeddings collapse within a step or two.

Two crops of one size only: DINO's multi-crop (extra small local views for the student) is not
implemented. Gradient clipping (DINO's 3.0) is left out as in solo-learn's CIFAR recipe
(clip_grad 0: solo/methods/dino.py:198).

Defaults: solo-learn's CIFAR recipe (vturrisi/solo-learn at 9187ea3, `scripts/pretrain/cifar/
dino.yaml`); the DINO paper trains on ImageNet only. See docs/recipe.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from imbssl.core import distributed
from imbssl.methods.ema import EMAMethod, EMASchedule
from imbssl.methods.msn import entropy, mean_normalized_entropy
from imbssl.methods.progress import RunProgress
from imbssl.methods.registry import LARSMethodConfig, Optimizer, output_std
from imbssl.models.heads import DINOHead


@dataclass
class DINOConfig(LARSMethodConfig):
    optimizer: Optimizer = "lars"  # solo-learn scripts/pretrain/cifar/dino.yaml:32
    base_lr: float = 0.3  # solo-learn dino.yaml:34 (x batch/256: solo/args/pretrain.py:153-154)
    weight_decay: float = 1e-6  # solo-learn dino.yaml:36
    momentum: float = 0.9  # solo-learn solo/args/pretrain.py:164 (LARS momentum default)
    warmup_epochs: int = 10  # solo-learn solo/methods/base.py:293 (scheduler.warmup_epochs default)
    lars_eta: float = 0.02  # solo-learn dino.yaml:39 (optimizer.kwargs; solo/utils/lars.py)
    lars_clip_lr: bool = True  # solo-learn dino.yaml:38
    # solo-learn dino.yaml:19 (3 linear layers, GELU, no BN: solo/methods/dino.py:42, 207-209)
    proj_hidden_dim: int = 2048
    bottleneck_dim: int = 256  # solo-learn dino.yaml:20 (proj_output_dim)
    num_prototypes: int = 4096  # solo-learn dino.yaml:21 (DINO's ImageNet default is 65,536)
    norm_last_layer: bool = True  # solo-learn solo/methods/dino.py:204-206 (DINO main_dino.py:57)
    # BatchNorm after the head's hidden layers: off in DINO (main_dino.py use_bn_in_head False) and
    # solo-learn (use_bn_in_head False); lightly's CIFAR-10 benchmark turns it on for its ResNet.
    head_bn: bool = False
    # Share of the run during which the last layer gets no update: solo-learn freezes it for 1
    # epoch (solo/methods/dino.py:199-201) of its 1,000 (dino.yaml:51), i.e. 0.001.
    freeze_last_layer_fraction: float = 0.001
    student_temperature: float = 0.1  # solo-learn solo/methods/dino.py:212-214 (DINO main_dino.py:365)
    teacher_temperature: float = 0.07  # solo-learn solo/methods/dino.py:215-217
    warmup_teacher_temperature: float = 0.04  # solo-learn solo/methods/dino.py:218-220 (DINO main_dino.py:68)
    # Linear warm-up of the teacher temperature over this share of the run. solo-learn's CIFAR
    # recipe warms up over 0 epochs (solo/methods/dino.py:221-223), lightly's CIFAR-10 benchmark
    # keeps 0.04 throughout; DINO's README:188, 197 warms 0.04 -> 0.07 over 30 of 300 epochs: 0.1.
    warmup_teacher_temp_fraction: float = 0.1
    center_momentum: float = 0.9  # DINO main_dino.py:366 (solo-learn solo/losses/dino.py:37)
    ema_start: float = 0.9995  # solo-learn dino.yaml:23 (base_tau; final_tau 1.0, :24)
    # teacher momentum rises to 1 on a half cosine per step: DINO main_dino.py:250 (utils.cosine_scheduler),
    # solo-learn solo/utils/momentum.py:84-87
    ema_schedule: EMASchedule = "cosine"


def teacher_temperature(progress: float, start: float, end: float, warmup_fraction: float) -> float:
    """`start` at progress 0, rising linearly to `end` at `warmup_fraction`, then `end`."""
    if warmup_fraction <= 0 or progress >= warmup_fraction:
        return end
    return start + (end - start) * progress / warmup_fraction


def dino_loss(student: list[torch.Tensor], teacher: list[torch.Tensor], center: torch.Tensor,
              student_temperature: float, teacher_temperature: float) -> torch.Tensor:
    """Cross-entropy of the centred, sharpened teacher distribution of view a against the student's
    of view b, for every a != b, averaged over rows and pairs (DINO main_dino.py:380-404)."""
    targets = [F.softmax((t.detach() - center) / teacher_temperature, dim=-1) for t in teacher]
    log_probs = [F.log_softmax(s / student_temperature, dim=-1) for s in student]
    terms = [-(q * lp).sum(dim=-1).mean()
             for a, q in enumerate(targets) for b, lp in enumerate(log_probs) if a != b]
    return sum(terms) / len(terms)


@torch.no_grad()
def target_entropy(teacher: torch.Tensor, center: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean entropy of the teacher's per-image target distribution over log K: 1 when every target
    is uniform, DINO's "uniform" collapse (DINO paper Section 5.3, Figure 7), which the output std
    does not show (the embeddings may still differ while the prototype scores no longer do)."""
    return mean_normalized_entropy(F.softmax((teacher - center) / temperature, dim=-1))


@torch.no_grad()
def updated_center(center: torch.Tensor, teacher: torch.Tensor, momentum: float) -> torch.Tensor:
    """EMA of the teacher outputs' mean over the rows (views x images) of the global batch
    (DINO main_dino.py:406-416: all-reduced over ranks)."""
    rows = teacher.shape[0] * distributed.world_size()
    batch_center = distributed.all_reduce_sum(teacher.sum(dim=0)) / rows
    return center * momentum + batch_center * (1 - momentum)


class DINO(EMAMethod):
    """Student backbone + DINO head; EMA teacher of both (`self.target`); the center in a buffer."""

    name = "dino"

    def __init__(self, backbone: nn.Module, config: DINOConfig):
        super().__init__(backbone, config)
        self.head = DINOHead(backbone.output_dim, config.proj_hidden_dim, config.bottleneck_dim,
                             config.num_prototypes, config.norm_last_layer, config.head_bn)
        self.make_target("backbone", "head")
        self.register_buffer("center", torch.zeros(config.num_prototypes))
        self.progress = RunProgress()  # for the teacher temperature and the frozen last layer

    @property
    def eval_backbone(self) -> nn.Module:
        """The teacher's backbone: DINO evaluates the teacher (eval_linear.py:264, checkpoint_key
        "teacher"), which its paper finds ahead of the student throughout training."""
        return self.target["backbone"]

    def loss(self, views, index=None):
        self.sync_target_if_stale()
        cfg = self.config
        embeddings = [self.head.embed(self.backbone(x)) for x in views]
        with torch.no_grad():
            teacher = [self.target["head"](self.target["backbone"](x)) for x in views]
        with torch.autocast(embeddings[0].device.type, enabled=False):  # softmax at 0.04 in float32
            student = [self.head.last_layer(e.float()) for e in embeddings]
            teacher = [t.float() for t in teacher]
            temperature = teacher_temperature(float(self.progress), cfg.warmup_teacher_temperature,
                                              cfg.teacher_temperature, cfg.warmup_teacher_temp_fraction)
            loss = dino_loss(student, teacher, self.center, cfg.student_temperature, temperature)
            spread = target_entropy(teacher[0], self.center, temperature)  # with the center the loss used
            self.center.copy_(updated_center(self.center, torch.cat(teacher), cfg.center_momentum))
            probs = F.softmax(student[0].detach() / cfg.student_temperature, dim=1)
            mean_probs = distributed.batch_mean(probs)
        # Either side uniform is a uniform collapse: the teacher's targets (DINO paper Section 5.3), or
        # the student's predictions, as SwAV's (the loss then sits at log K while a barely moving
        # teacher's targets may still look less than uniform).
        return loss, {"out_std": output_std(embeddings[0]), "proto_entropy": entropy(mean_probs),
                      "target_entropy": spread, "prediction_entropy": mean_normalized_entropy(probs)}

    def clip_gradients(self) -> None:
        """No last-layer update while frozen: its gradient is dropped after backward (DINO
        utils.py:144-149), so the optimizer skips it."""
        if float(self.progress) < self.config.freeze_last_layer_fraction:
            for p in self.head.last_layer.parameters():
                p.grad = None

    def after_step(self, progress: float) -> None:
        super().after_step(progress)  # the teacher's EMA
        self.progress.set(progress)

    @torch.no_grad()
    def prototype_scores(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's centred logits: the argmax of its (centred, sharpened) target distribution."""
        return self.target["head"](self.target["backbone"](x)).float() - self.center

    def prototype_prior(self) -> torch.Tensor:
        """Uniform: centering pushes the teacher's mean output towards equal use of every output."""
        k = self.center.shape[0]
        return torch.full((k,), 1.0 / k, device=self.center.device)
