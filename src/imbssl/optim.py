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
    """SGD with momentum whose per-tensor step is scaled by eta * ||w|| / ||g + wd * w||.

    Parameter groups with `lars_exclude=True` (biases, norm layers) take plain SGD steps
    without weight decay, as in SimCLR.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.001):
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars_exclude=False)
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
                    d_p = d_p.mul(trust)
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = torch.clone(d_p).detach()
                else:
                    buf.mul_(group["momentum"]).add_(d_p)
                p.add_(buf, alpha=-group["lr"])
        return loss


def split_decay_groups(module: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(weights, biases-and-norm-parameters): the second kind gets no weight decay / LARS scaling."""
    decay, no_decay = [], []
    for param in module.parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 else decay).append(param)
    return decay, no_decay


def build_optimizer(module: nn.Module, name: str, lr: float, weight_decay: float, momentum: float = 0.9) -> Optimizer:
    """The optimizer a method asks for, with fused/foreach kernels where torch offers them."""
    decay, no_decay = split_decay_groups(module)
    on_cuda = any(p.is_cuda for p in decay + no_decay)
    if name == "lars":
        groups = [{"params": decay}, {"params": no_decay, "lars_exclude": True, "weight_decay": 0.0}]
        return LARS(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "sgd":
        # SimSiam decays every parameter (its reference code does).
        return torch.optim.SGD(module.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay,
                               foreach=None if on_cuda else False, fused=True if on_cuda else None)
    if name == "adamw":
        groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, fused=True if on_cuda else None)
    raise ValueError(f"unknown optimizer {name!r}: use sgd, lars or adamw")


def cosine_lr(step: int, total_steps: int, base_lr: float, warmup_steps: int = 0) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def set_lr(optimizer: Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
