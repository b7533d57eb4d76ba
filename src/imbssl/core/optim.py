"""Optimizers and schedules shared by every method.

LARS is implemented here: the maintained PyTorch LARS implementations either come inside a large
framework (lightly, which pulls PyTorch Lightning; Lightning Bolts, unmaintained) or need a
compiled CUDA extension (torchlars). This one follows the SimCLR paper's update (You et al. 2017
trust ratio, with biases and norm layers excluded from adaptation and weight decay).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim import Optimizer


class LARS(Optimizer):
    """SGD with momentum whose per-tensor step is scaled by the trust ratio eta * ||w|| / ||g + wd * w||.

    Parameter groups with `lars_exclude=True` (biases, norm layers) take plain SGD steps
    without weight decay, as in SimCLR. With `clip_lr` the trust ratio is capped so that a
    tensor's learning rate never exceeds the global one: min(trust / lr, 1) (solo-learn's
    `clip_lars_lr`, solo/utils/lars.py, which its CIFAR recipes use with eta 0.02).
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.001,
                 clip_lr: bool = False):
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, clip_lr=clip_lr,
                        lars_exclude=False)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d_p = p.grad
                if not group["lars_exclude"]:
                    d_p = d_p.add(p, alpha=group["weight_decay"])
                    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(d_p)
                    one = torch.ones_like(w_norm)
                    trust = torch.where((w_norm > 0) & (g_norm > 0), group["eta"] * w_norm / g_norm, one)
                    if group["clip_lr"]:  # at lr 0 (warm-up's first step) trust / lr is inf: capped at 1
                        trust = torch.clamp(trust / group["lr"], max=1.0) if group["lr"] > 0 else one
                    d_p = d_p.mul(trust)
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = torch.clone(d_p).detach()
                else:
                    buf.mul_(group["momentum"]).add_(d_p)
                p.add_(buf, alpha=-group["lr"])
        return loss


def param_groups(module: nn.Module, weight_decay: float, exclude_1d: bool, no_decay=(), fixed_lr=()) -> list[dict]:
    """The trainable parameters of `module` in up to four groups: decayed or not, scheduled or fixed lr.

    A parameter is not decayed when it is in `no_decay` or, with `exclude_1d`, is a bias or norm
    parameter (ndim <= 1); it keeps a constant learning rate (`fixed_lr: True`, which `set_lr`
    leaves alone) when it is in `fixed_lr`. Non-decayed groups are also excluded from LARS's
    trust ratio (`lars_exclude`). Empty groups are left out; the order is fixed.
    """
    no_decay_ids, fixed_ids = {id(p) for p in no_decay}, {id(p) for p in fixed_lr}
    buckets: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for param in module.parameters():
        if not param.requires_grad:
            continue
        decayed = id(param) not in no_decay_ids and not (exclude_1d and param.ndim <= 1)
        buckets.setdefault((decayed, id(param) in fixed_ids), []).append(param)
    return [{"params": buckets[key], "weight_decay": weight_decay if key[0] else 0.0, "lars_exclude": not key[0],
             "fixed_lr": key[1]}
            for key in ((True, False), (False, False), (True, True), (False, True)) if key in buckets]


def build_optimizer(module: nn.Module, name: str, lr: float, weight_decay: float, momentum: float = 0.9,
                    no_decay=(), fixed_lr=(), lars_eta: float = 0.001, lars_clip_lr: bool = False) -> Optimizer:
    """The optimizer a method asks for, with fused/foreach kernels where torch offers them.

    `no_decay`: parameters kept out of weight decay (e.g. MSN's prototypes); `fixed_lr`:
    parameters whose learning rate stays at `lr` while the schedule moves the others (SimSiam's
    predictor with `fix_pred_lr`).
    """
    on_cuda = any(p.is_cuda for p in module.parameters())
    if name == "lars":
        return LARS(param_groups(module, weight_decay, True, no_decay, fixed_lr), lr=lr, momentum=momentum,
                    weight_decay=weight_decay, eta=lars_eta, clip_lr=lars_clip_lr)
    if name == "sgd":
        # SimSiam decays every parameter, biases and BatchNorm included (its reference code does).
        groups = _without_lars_key(param_groups(module, weight_decay, False, no_decay, fixed_lr))
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay,
                               foreach=None if on_cuda else False, fused=True if on_cuda else None)
    if name == "adamw":
        groups = _without_lars_key(param_groups(module, weight_decay, True, no_decay, fixed_lr))
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, fused=True if on_cuda else None)
    raise ValueError(f"unknown optimizer {name!r}: use sgd, lars or adamw")


def _without_lars_key(groups: list[dict]) -> list[dict]:
    for group in groups:
        group.pop("lars_exclude")
    return groups


def cosine_lr(step: int, total_steps: int, base_lr: float, warmup_steps: int = 0) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def set_lr(optimizer: Optimizer, lr: float) -> None:
    """The scheduled learning rate for every group except those marked `fixed_lr`."""
    for group in optimizer.param_groups:
        if not group.get("fixed_lr", False):
            group["lr"] = lr
