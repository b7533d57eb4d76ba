"""Methods with an EMA target (MSN, BYOL, DINO): a copy of some online modules that follows them
by an exponential moving average after every optimizer step and is never trained itself.
"""

from __future__ import annotations

import copy
import math
from typing import Literal, get_args

import torch
from torch import nn

from imbssl.methods.registry import Method

EMASchedule = Literal["linear", "cosine"]
EMA_SCHEDULES = get_args(EMASchedule)


def ema_momentum(progress: float, start: float, schedule: str = "linear") -> float:
    """Target momentum: `start` at progress 0, rising to 1 at progress 1, linearly (MSN's ramp)
    or on a half cosine (BYOL's, also DINO's)."""
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "linear":
        return start + (1.0 - start) * progress
    if schedule == "cosine":
        return 1.0 - (1.0 - start) * (math.cos(math.pi * progress) + 1.0) / 2.0
    raise ValueError(f"unknown EMA schedule {schedule!r}: use one of {', '.join(EMA_SCHEDULES)}")


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """target <- momentum * target + (1 - momentum) * online, parameter by parameter."""
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        t.lerp_(o.detach(), 1.0 - momentum)


class EMAMethod(Method):
    """A Method whose `self.target` holds EMA copies of some of its online modules, by name.

    The target has requires_grad=False: the optimizer (built from parameters that require grad)
    never sees it, while state_dict() keeps it for resuming. Its BatchNorm buffers are its own
    (updated by its forward passes, as in MSN, BYOL and DINO); only parameters are averaged.
    The config must have `ema_start` and `ema_schedule`.
    """

    def make_target(self, *names: str) -> None:
        """Deep copies of the online modules `names` (call once the heads exist)."""
        self.target = nn.ModuleDict({name: copy.deepcopy(getattr(self, name)) for name in names})
        self.target.requires_grad_(False)
        # Weights may be loaded into the online modules after construction (pretrain's --init):
        # the target is then re-copied from them before its first use, unless a full state_dict
        # with the target (a resume) was loaded.
        self._target_stale = True

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self._target_stale = not any(key.startswith("target.") for key in state_dict)
        return result

    @torch.no_grad()
    def sync_target(self) -> None:
        for name, module in self.target.items():
            module.load_state_dict(getattr(self, name).state_dict())
        self._target_stale = False

    def sync_target_if_stale(self) -> None:
        """Called at the start of every loss: copies the online weights once, before the first step."""
        if self._target_stale:
            self.sync_target()

    def after_step(self, progress: float) -> None:
        momentum = ema_momentum(progress, self.config.ema_start, self.config.ema_schedule)
        for name, module in self.target.items():
            ema_update_(module, getattr(self, name), momentum)
