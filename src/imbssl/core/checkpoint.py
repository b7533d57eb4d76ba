"""Checkpoints: atomic save, safe load (weights_only=True), and the two generations a run keeps.

A training run keeps its newest checkpoint and the one before it (`checkpoint.pt`,
`checkpoint.prev.pt`): each is written atomically, and a newest one that cannot be read (a
damaged disk, a partial copy) costs the epochs since the previous one, not the whole run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
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


# ---------------------------------------------------------------------------------------------
# Generations of a run's checkpoint


def previous(path: str | os.PathLike) -> Path:
    """checkpoint.pt -> checkpoint.prev.pt: the generation before the newest."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def unreadable(path: str | os.PathLike) -> Path:
    """Where a generation that cannot be read is set aside (kept for a look, never loaded)."""
    path = Path(path)
    return path.with_name(f"{path.name}.unreadable")


def save_generation(obj: dict[str, Any], path: str | os.PathLike) -> None:
    """Write `path` atomically; the checkpoint it replaces becomes `previous(path)`. A crash
    between the two steps leaves the previous generation only, which `load_newest` reads."""
    path = Path(path)
    if path.exists():
        os.replace(path, previous(path))
    save(obj, path)


@dataclass
class Loaded:
    state: dict[str, Any]
    path: Path  # the generation it came from
    unreadable: list[tuple[Path, str]] = field(default_factory=list)  # newer generations that could not be read, why


def load_newest(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Loaded | None:
    """The newest readable generation of `path` (None when there is none at all); a one-line
    UserError when every generation there is unreadable."""
    path = Path(path)
    problems = []
    for candidate in (path, previous(path)):
        if not candidate.exists():
            continue
        try:
            state = torch.load(candidate, map_location=map_location, weights_only=True)
            if not isinstance(state, dict):
                raise TypeError(f"holds a {type(state).__name__}, not a checkpoint")
        except Exception as err:  # truncated, damaged or foreign
            problems.append((candidate, type(err).__name__))
            continue
        return Loaded(state, candidate, problems)
    if problems:
        raise UserError(f"no checkpoint in {path.parent} can be read: {describe(problems)}; delete them to train "
                        f"this run from scratch, then rerun")
    return None


def describe(problems: list[tuple[Path, str]]) -> str:
    return ", ".join(f"{path.name} ({why})" for path, why in problems)


def set_aside(path: Path) -> Path:
    """Move an unreadable generation out of the way, so that the next save does not keep it as the
    previous one."""
    os.replace(path, unreadable(path))
    return unreadable(path)


def remove_generations(path: str | os.PathLike) -> None:
    """Every generation of `path` (the run is finished: model.pt supersedes them)."""
    for candidate in (Path(path), previous(path), unreadable(path), unreadable(previous(path))):
        candidate.unlink(missing_ok=True)
