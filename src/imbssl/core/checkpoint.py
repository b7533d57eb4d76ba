"""Checkpoints: atomic save, safe load (weights_only=True), and finding the one to resume from."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from imbssl import UserError
from imbssl.core.atomic import atomic_path


def save(obj: dict[str, Any], path: str | os.PathLike) -> None:
    """Write a checkpoint so that a crash mid-write leaves the previous file intact."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by `save` without unpickling arbitrary objects."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint {path} does not exist: run the rule that writes it first")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # a truncated or foreign file
        raise UserError(f"checkpoint {path} cannot be read ({type(err).__name__}): delete it and rerun") from err


def load_if_exists(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    return load(path, map_location) if Path(path).exists() else None
