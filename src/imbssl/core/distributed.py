"""The process group: one training job on several processes (torchrun), a no-op with one.

A job on N GPUs is the same `imbssl` command started N times by torchrun (`imbssl.orchestration.launch` builds
that command line). Each process calls `setup` to join the group: it reads torchrun's environment
(RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT), takes GPU LOCAL_RANK and NCCL on GPUs or gloo on
CPUs. Everything else here is what the single-process code needs to act as one job across ranks:
which images a rank trains on, SyncBatchNorm, gathers and reductions that keep their gradient.

Without torchrun nothing here touches torch.distributed: `world_size()` is 1, every collective
returns its input, and the single-process path runs exactly as it would without this module.
"""

from __future__ import annotations

import atexit
import datetime
import hashlib
import inspect
import os
import sys

import torch
import torch.distributed as dist
from torch import nn

from imbssl import UserError

# A collective that waits longer than this (a rank died, hung or lost its node) fails with an
# error on every rank instead of hanging the job. Long enough for rank 0 to write a checkpoint of
# a large model while the others wait for it.
DEFAULT_TIMEOUT_S = 1800


def launched_by_torchrun(env=None) -> bool:
    """True in a process that torchrun (or another env:// launcher) started."""
    env = os.environ if env is None else env
    return "RANK" in env and "WORLD_SIZE" in env and "LOCAL_RANK" in env


def timeout_seconds(env=None) -> float:
    env = os.environ if env is None else env
    text = env.get("IMBSSL_DIST_TIMEOUT_S", str(DEFAULT_TIMEOUT_S))
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if seconds <= 0:
        raise UserError(f"IMBSSL_DIST_TIMEOUT_S={text!r}: give a positive number of seconds or unset it")
    return seconds


def setup(device: torch.device) -> torch.device:
    """Join torchrun's process group (once) and return this process's device; without torchrun,
    return `device` untouched.

    On CUDA, rank r of a node takes GPU LOCAL_RANK of the devices it sees (the lease or SLURM set
    CUDA_VISIBLE_DEVICES to the job's GPUs) and the group uses NCCL; on the CPU it uses gloo.
    """
    if not launched_by_torchrun():
        return device
    local_rank = int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", local_rank + 1))
        visible = torch.cuda.device_count()
        if visible < local_world:
            raise UserError(f"{local_world} processes per node but only {visible} GPU(s) visible: lower "
                            f"pretrain.gpus (or clustering.expert_gpus) to at most {visible}")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_seconds()),
                                device_id=device if device.type == "cuda" else None)
        atexit.register(teardown)
        print(f"[imbssl] rank {rank()} of {world_size()} on {device} ({backend})", file=sys.stderr, flush=True)
    return device


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """Rank 0 writes every file of a job (metrics, checkpoints, model.pt) and prints its progress."""
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


# ---------------------------------------------------------------------------------------------
# Which images a rank trains on


def rank_batch(order: torch.Tensor, step: int, batch_size: int, rank: int, world_size: int) -> torch.Tensor:
    """This rank's share of global batch `step` of the epoch permutation `order`.

    Every rank draws the same permutation; global batch `step` is order[step*B:(step+1)*B] and
    rank r takes its r-th contiguous B/W slice, so the W ranks together train on exactly the batch
    a single process would (B = `batch_size`, the global batch, divisible by W).
    """
    if batch_size % world_size:
        raise ValueError(f"global batch {batch_size} is not divisible by {world_size} processes")
    per_rank = batch_size // world_size
    start = step * batch_size + rank * per_rank
    return order[start:start + per_rank]


def shard(n: int, rank: int, world_size: int) -> slice:
    """Contiguous share of n items for `rank` (sizes differ by at most one, lower ranks first)."""
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def rank_seed(seed: int, rank: int) -> int:
    """Seed of a rank's own random stream: `seed` itself on rank 0 (so one process draws what it
    always drew), a derived one on the others."""
    if rank == 0:
        return seed
    return int.from_bytes(hashlib.sha256(f"{seed}:rank{rank}".encode()).digest()[:7], "little")


def reseed_for_rank(seed: int, *generators: torch.Generator) -> None:
    """Give ranks other than 0 their own augmentation stream (and global RNG, for MSN's masks) once
    the shared permutation has been drawn: otherwise every rank would draw the same crops and
    colours for its different images."""
    r = rank()
    if r == 0:
        return
    own = rank_seed(seed, r)
    for generator in generators:
        generator.manual_seed(own)
    torch.manual_seed(own)


# ---------------------------------------------------------------------------------------------
# Model: SyncBatchNorm and the DistributedDataParallel wrapper


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """SyncBatchNorm for CPU tensors (gloo): torch's statistics-sync kernels exist on CUDA only, and
    DistributedDataParallel refuses nn.SyncBatchNorm in a CPU module.

    Same result as nn.SyncBatchNorm: normalised with the mean and (biased) variance of the batches
    of every rank together, running statistics updated with the unbiased variance. The sums go
    through differentiable all-reduces, so the backward pass includes every rank's contribution as
    a single process with the whole batch would compute it. Same state as a BatchNorm layer.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or world_size() == 1:
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = x.numel() // x.shape[1] * world_size()
        mean = all_reduce_with_grad(x.sum(dims)) / count
        centred = x - mean.view(shape)
        var = all_reduce_with_grad(centred.square().sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(var.detach() * count / max(count - 1, 1), momentum)
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm of `module` (backbone and heads) as a SyncBatchNorm when there are several
    ranks, so that batch statistics are those of the global batch; unchanged with one process.
    In place for BatchNorm layers that are children of `module` (a Method's always are)."""
    if world_size() == 1:
        return module
    if device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.__class__ = CpuSyncBatchNorm  # same parameters and buffers, a forward that syncs
    return module


def wrap(module: nn.Module, device: torch.device) -> nn.Module:
    """The module under DistributedDataParallel (gradients averaged over ranks during backward),
    or `module` itself with one process."""
    if world_size() == 1:
        return module
    # SyncBatchNorm keeps the running statistics equal on every rank: no buffer broadcasts per step
    # (the option's name since torch 2.14; the older one before).
    ddp = nn.parallel.DistributedDataParallel
    no_sync = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(ddp).parameters
               else "broadcast_buffers")
    return ddp(module, device_ids=[device.index] if device.type == "cuda" else None, **{no_sync: False})


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or `model` itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# ---------------------------------------------------------------------------------------------
# Collectives (identity with one process)


# Differentiable collectives on the public torch.distributed calls: torch's own
# (torch.distributed.nn.functional) are deprecated since 2.14 for a private module whose names
# change between releases. Every rank's loss may depend on every rank's rows, so the gradient
# reaching a rank's input is the sum of the gradients of all ranks' losses.


class _SumOverRanks(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        total = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad


class _GatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        parts = [torch.empty_like(x, memory_format=torch.contiguous_format) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad.chunk(dist.get_world_size())[dist.get_rank()]


def all_reduce_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Sum of `x` over ranks; its gradient is the sum of every rank's gradient."""
    return x if world_size() == 1 else _SumOverRanks.apply(x)


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Rows of every rank's `x` (the same number on each) concatenated in rank order, with the
    gradient of all ranks' losses flowing back to each rank's own rows."""
    return x if world_size() == 1 else _GatherRows.apply(x)


def batch_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over the rows of every rank's `x` (all ranks hold the same number of rows), differentiable."""
    if world_size() == 1:
        return x.mean(dim=0)
    return all_reduce_with_grad(x.sum(dim=0)) / (x.shape[0] * world_size())


@torch.no_grad()
def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, no gradient (a new tensor; `x` is left as it is)."""
    if world_size() == 1:
        return x
    x = x.clone()
    dist.all_reduce(x)
    return x


@torch.no_grad()
def mean_over_ranks(x: torch.Tensor) -> torch.Tensor:
    return x if world_size() == 1 else all_reduce_sum(x) / world_size()


@torch.no_grad()
def gather_rows(local: torch.Tensor, n: int) -> torch.Tensor:
    """Every rank's `local` rows (rank r holding rows `shard(n, r, W)` of n) as one (n, ...) tensor
    in index order, on every rank."""
    world = world_size()
    if world == 1:
        return local
    largest = shard(n, 0, world)
    size = largest.stop - largest.start
    padded = local.new_zeros((size, *local.shape[1:]))
    padded[:local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    sizes = [shard(n, r, world).stop - shard(n, r, world).start for r in range(world)]
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])


def same_on_every_rank(value: int, what: str) -> None:
    """Stop with a clear error when ranks disagree on `value` (e.g. the epoch they resume from:
    nodes that do not share the output folder's file system)."""
    if world_size() == 1:
        return
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    both = all_reduce_max(torch.tensor([value, -value], device=device))
    if int(both[0]) != -int(both[1]):
        raise UserError(f"the ranks of this job disagree on {what} ({-int(both[1])} to {int(both[0])}): every "
                        f"node must see the same output folder (a shared file system)")


@torch.no_grad()
def all_reduce_max(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    dist.all_reduce(x, op=dist.ReduceOp.MAX)
    return x


def gather_objects(obj) -> list:
    """Every rank's `obj` (small, picklable: CPU tensors, numbers), in rank order, on every rank."""
    if world_size() == 1:
        return [obj]
    gathered = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


class LaggedMax:
    """The maximum over the ranks of a small integer each rank casts every step, read `lag` casts
    later: the same answer on every rank, at the same step, without a host synchronisation per
    step. Each cast is all-reduced on the device and copied to pinned host memory behind the
    step's work; `lag` steps later that copy has long arrived, so reading it rarely waits (and
    never waits for more than the GPU's lag behind the host). With one process it is the cast value.
    """

    def __init__(self, device: torch.device, lag: int = 2):
        self.device, self.lag = device, lag
        self.cuda = device.type == "cuda"
        self.value = torch.zeros(1, dtype=torch.int32, device=device)
        self.pending: list[tuple[torch.Tensor, torch.cuda.Event | None]] = []

    def cast(self, wish: int) -> int:
        """Cast this step's `wish`; returns the maximum cast `lag` steps ago (0 before)."""
        if world_size() == 1:
            return wish
        self._send(wish)
        return self._read(self.pending.pop(0)) if len(self.pending) > self.lag else 0

    def settle(self, wish: int) -> int:
        """Cast `wish` and read every cast still in flight (one wait, e.g. at the end of an
        epoch): the maximum of all of them."""
        if world_size() == 1:
            return wish
        self._send(wish)
        found = max(self._read(entry) for entry in self.pending)
        self.pending.clear()
        return found

    def _send(self, wish: int) -> None:
        self.value.fill_(wish)  # a kernel on the device's stream, no copy from the host
        dist.all_reduce(self.value, op=dist.ReduceOp.MAX)
        self.pending.append(self._to_host())

    def _to_host(self) -> tuple[torch.Tensor, torch.cuda.Event | None]:
        if not self.cuda:
            return self.value.clone(), None  # gloo reduced it on the host already
        host = torch.empty(1, dtype=torch.int32, pin_memory=True)  # from torch's cache of pinned blocks
        host.copy_(self.value, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return host, done

    @staticmethod
    def _read(entry: tuple[torch.Tensor, torch.cuda.Event | None]) -> int:
        host, done = entry
        if done is not None:
            done.synchronize()
        return int(host.item())
