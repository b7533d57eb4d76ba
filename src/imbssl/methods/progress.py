"""Where a training run is, for methods whose loss follows a schedule of their own (SwAV's frozen
prototypes, DINO's teacher temperature): the training loop only tells `after_step(progress)`."""

from __future__ import annotations

import torch
from torch import nn


class RunProgress(nn.Module):
    """The last `progress` in [0, 1] passed to `after_step` (0 before the first step).

    Kept in a buffer so that checkpoints carry it and a resumed run continues its schedules, and
    mirrored in a Python float so that reading it never waits for the device.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("value", torch.zeros((), dtype=torch.float64))
        self.host = 0.0

    def set(self, progress: float) -> None:
        self.value.fill_(progress)
        self.host = float(progress)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.host = float(self.value)  # one read of the device, at load time only

    def __float__(self) -> float:
        return self.host
