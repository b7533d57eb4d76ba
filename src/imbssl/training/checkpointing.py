"""When a training run writes its checkpoints, what a checkpoint taken mid-epoch holds, and how a
run stops on a signal (training/preemption.py catches it).

A checkpoint is written every `checkpoint_every` epochs, at least every `checkpoint_minutes` of
wall time (mid-epoch when an epoch is longer), and at the step where a signal stopped the run. A
checkpoint taken after `step` batches of an epoch holds, besides the module and the optimizer,
each rank's generator states (the epoch's device and host generators and the global torch RNG,
which MSN's masks draw from) and its metric sums over those batches: the resumed run skips those
batches of the epoch's order and computes exactly what the uninterrupted run would have.

With several processes the ranks must act on the same step: each step's wish (nothing, a
checkpoint, a stop) is max-reduced over the ranks and read two steps later
(`distributed.LaggedMax`); with one process it is a Python check of a flag and a clock.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from imbssl import Stopped
from imbssl.core import distributed
from imbssl.training.preemption import StopRequest, requeue_if_running

# What a step asks for; the larger wins across ranks (a stop writes a checkpoint too).
NOTHING, CHECKPOINT, STOP = 0, 1, 2


@dataclass
class EpochPart:
    """This rank's share of the batches of an epoch done before a mid-epoch checkpoint."""

    step: int  # batches of the epoch done
    sums: dict[str, torch.Tensor]  # metric sums over those batches (as run_epoch keeps them)
    rng: dict[str, torch.Tensor] | None  # generator states after them; None: draw new streams


@dataclass
class ResumePoint:
    """Where a run starts: `step` batches into epoch `epoch` (a count of finished epochs), with
    the metrics rows of the epochs before; (0, 0) for a run from scratch."""

    rows: list[dict]
    epoch: int = 0
    step: int = 0
    part: EpochPart | None = None  # mid-epoch only


def rng_states(generator: torch.Generator, host_generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Every random stream a training step draws from, on this rank."""
    states = {"device": generator.get_state(), "host": host_generator.get_state(), "global": torch.get_rng_state()}
    if generator.device.type == "cuda":
        states["global_cuda"] = torch.cuda.get_rng_state(generator.device)
    return states


def restore_rng(states: dict[str, torch.Tensor], generator: torch.Generator, host_generator: torch.Generator) -> None:
    # States come back on the map_location device; generators take them as CPU byte tensors.
    generator.set_state(states["device"].cpu())
    host_generator.set_state(states["host"].cpu())
    torch.set_rng_state(states["global"].cpu())
    if "global_cuda" in states:
        torch.cuda.set_rng_state(states["global_cuda"].cpu(), generator.device)


def reseed_after(seed: int, epoch: int, step: int, generator: torch.Generator, host_generator: torch.Generator) -> None:
    """New streams for the rest of an epoch resumed on another number of processes than it
    started on (the saved streams belong to ranks that no longer exist)."""
    fresh = int.from_bytes(hashlib.sha256(f"{seed}:{epoch}:{step}".encode()).digest()[:7], "little")
    own = distributed.rank_seed(fresh, distributed.rank())
    for stream in (generator, host_generator):
        stream.manual_seed(own)
    torch.manual_seed(own)


def resume_point(state: dict, device: torch.device) -> ResumePoint:
    """The ResumePoint of a loaded checkpoint, for this rank."""
    rows, epoch, step = state["metrics"], state["epoch"], state.get("step", 0)
    if not step:
        return ResumePoint(rows, epoch)
    shares, world = state["ranks"], distributed.world_size()
    if len(shares) == world:
        mine = shares[distributed.rank()]
        return ResumePoint(rows, epoch, step, EpochPart(step, _on(mine["sums"], device), mine["rng"]))
    # Another number of processes: rank 0 carries what the old ranks summed, scaled so that the
    # epoch's mean over the new ranks comes out the same; the others start from zero.
    total = {key: sum(share["sums"][key].to(device) for share in shares) * world / len(shares)
             for key in shares[0]["sums"]}
    sums = total if distributed.is_main() else {key: torch.zeros_like(value) for key, value in total.items()}
    return ResumePoint(rows, epoch, step, EpochPart(step, sums, None))


def _on(tensors: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device) for key, value in tensors.items()}


class Checkpointer:
    """Writes a run's checkpoints when they are due and stops it when a signal asks; every rank
    calls it at the same points (rank 0 writes)."""

    def __init__(self, module, optimizer, rows: list[dict], out_dir: Path, run_id: str, minutes: float,
                 request: StopRequest, write: Callable[[Path, dict], None]):
        self.module, self.optimizer, self.rows = module, optimizer, rows
        self.path, self.run_id, self.request, self.write = out_dir / "checkpoint.pt", run_id, request, write
        self.interval = minutes * 60
        self.last = time.monotonic()
        self.asked = False  # rank 0 asked for this interval's checkpoint already (it is on its way)
        self.votes = distributed.LaggedMax(next(module.parameters()).device)

    def _wish(self) -> int:
        if self.request.signal is not None:
            return STOP
        if self.interval and not self.asked and distributed.is_main() and time.monotonic() - self.last >= self.interval:
            self.asked = True  # rank 0's clock decides for every rank, once per interval
            return CHECKPOINT
        return NOTHING

    def after_step(self, epoch: int, step: int, sums: dict[str, torch.Tensor],
                   generators: tuple[torch.Generator, torch.Generator]) -> None:
        """After `step` batches of epoch `epoch` (not the last: the epoch's end decides then)."""
        decision = self.votes.cast(self._wish())
        if decision == NOTHING:
            return
        shares = distributed.gather_objects({"sums": {key: value.detach().cpu() for key, value in sums.items()},
                                             "rng": rng_states(*generators)})
        self.save(epoch, step, shares)
        if decision == STOP:
            self.stop(epoch, step)

    def at_epoch_end(self) -> int:
        """What the ranks agree on once an epoch is done: NOTHING, CHECKPOINT or STOP."""
        return self.votes.settle(self._wish())

    def save(self, epoch: int, step: int = 0, shares: list[dict] | None = None) -> None:
        """The checkpoint after `step` batches of the epoch after `epoch` finished ones (rank 0)."""
        if distributed.is_main():
            state = {"run_id": self.run_id, "epoch": epoch, "step": step, "module": self.module.state_dict(),
                     "optimizer": self.optimizer.state_dict(), "metrics": self.rows}
            if step:
                state["ranks"] = shares
            self.write(self.path, state)
        self.last, self.asked = time.monotonic(), False

    def stop(self, epoch: int, step: int) -> None:
        """End the run after its stop checkpoint: rank 0 says where and requeues a SLURM job that
        still runs; every rank raises Stopped."""
        distributed.barrier()  # rank 0's checkpoint is on disk before any rank exits (torchrun then ends the rest)
        message = ""
        if distributed.is_main():
            where = f"at epoch {epoch} step {step}" if step else f"at epoch {epoch}"
            message = (f"stopped by {self.request.name if self.request.signal else 'a signal to another rank'} "
                       f"{where}: {self.path} holds the run so far; {requeue_if_running(os.environ)}")
            print(f"[imbssl] {message}", file=sys.stderr, flush=True)
        raise Stopped(message)
