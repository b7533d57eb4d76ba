"""Where data meets the device: which device a job runs on, and uint8 images moved onto it."""

from __future__ import annotations

import numpy as np
import torch

from . import UserError


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` = the GPU when one is visible, else the CPU; `cuda` without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device={name} but no CUDA device is visible: set device: auto or cpu")
    return torch.device(name)


def to_device_images(images_nhwc: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 NHWC numpy -> uint8 NCHW tensor on `device` (kept as uint8: 4x less memory than float)."""
    return torch.from_numpy(np.ascontiguousarray(images_nhwc)).to(device).permute(0, 3, 1, 2).contiguous()
