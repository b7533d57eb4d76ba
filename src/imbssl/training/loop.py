"""The one training loop: base, baseline, expert, MSN and distillation training all run here.

Data stays on the training device as uint8 (or streams to it); augmentations are batched tensor
ops drawn from a generator seeded per epoch, so an interrupted run resumed from its checkpoint
computes exactly what the uninterrupted run would have: from an epoch's start, or from the step
where a mid-epoch checkpoint was taken (by wall time, or because a signal stopped the run:
training/checkpointing.py). Host synchronisation happens only every `log_every` steps and once
per epoch.

A job on several GPUs (torchrun) runs this same loop plus a process group (core/distributed.py):
each rank trains on its slice of the shared permutation under DistributedDataParallel, the global
batch stays `batch_size`, metrics are averaged over the ranks and rank 0 writes every file.

Read top to bottom: `train_loop` plans the schedule, prepares the module, resumes, then runs
`run_epoch` and `end_epoch` for each epoch; `train_step` is one optimisation step. SIGTERM and
SIGUSR1 stop the run at the end of the current step with a checkpoint (imbssl.Stopped).
"""

from __future__ import annotations

import hashlib
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import torch
from torch import nn

from imbssl import UserError
from imbssl.core import checkpoint, distributed
from imbssl.core.artifacts import write_metrics
from imbssl.core.optim import cosine_lr, set_lr
from imbssl.data.device import ResidentImages, StreamedImages, as_source
from imbssl.evaluation.features import extract_all_ranks
from imbssl.evaluation.knn import knn_accuracy
from imbssl.methods.registry import Method
from imbssl.training.checkpointing import (CHECKPOINT, STOP, Checkpointer, EpochPart, ResumePoint, reseed_after,
                                           restore_rng, resume_point)
from imbssl.training.preemption import stop_requests
from imbssl.training.progress import make_progress


@dataclass
class TrainSettings:
    """The `pretrain` config section: the loop's settings, shared by every training job."""

    epochs: int = 300  # passes over the training subset
    batch_size: int = 1024  # images per optimizer step, over all GPUs
    checkpoint_every: int = 10  # epochs between resumable checkpoints
    checkpoint_minutes: float = 30.0  # at most this long between checkpoints: one mid-epoch when due (0: epochs only)
    knn_every: int = 10  # epochs between kNN monitoring (0: only at the end)
    knn_k: int = 200  # neighbours that vote in the kNN monitor
    knn_t: float = 0.1  # kNN monitor temperature: a neighbour votes with weight exp(similarity / knn_t)
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    compile: Literal["auto", "on", "off"] = "auto"  # torch.compile the backbone (auto: on CUDA only)
    channels_last: bool = True  # NHWC activations on CUDA (ignored on CPU)
    device: str = "auto"  # torch device to train on (auto: the GPU when one is visible, else the CPU)
    log_every: int = 50  # steps between running-loss updates of the progress bar (each one syncs the host)
    # The whole subset on the device (true), streamed from the store (false), or by size (auto).
    data_on_device: Literal["auto", "true", "false"] = "auto"
    device_memory_fraction: float = 0.5  # auto: resident when the images fit in this share of its memory


@dataclass
class StageSchedule:
    """Where a job sits in a longer learning-rate schedule (Experiment II's `clustering.schedule:
    continuous`: one warm-up and one cosine over base + experts + student, each stage running its
    slice). The defaults are the job's own schedule (`per_stage`)."""

    schedule_start_epoch: int = 0  # epochs of the whole schedule before this job's first
    schedule_epochs: int = 0  # epochs of the whole schedule; 0: this job's own


@dataclass
class Monitor:
    """Labelled images used only to report kNN accuracy while training (never to train)."""

    bank_images: ResidentImages | StreamedImages
    bank_labels: torch.Tensor
    test_images: ResidentImages | StreamedImages
    test_labels: torch.Tensor
    num_classes: int
    mean: list[float]
    std: list[float]
    image_size: int  # the centre crop features are computed on


# Collapse: every image mapped to (nearly) one output. The std of L2-normalised outputs is about
# 1/sqrt(dim) when healthy (SimSiam paper, Section 4.1) and 0 when collapsed; below COLLAPSE_STD for
# COLLAPSE_EPOCHS epochs in a row counts as collapsed (our thresholds: 1e-4 is 40x below a healthy
# std even for 65,536-d outputs).
COLLAPSE_STD = 1e-4
COLLAPSE_EPOCHS = 3
# Uniform collapse of a method with prototypes: every image's distribution over the K outputs is
# (nearly) uniform, DINO's targets ("target_entropy") or the predictions of SwAV or DINO's student
# ("prediction_entropy"), each the mean per-image entropy over log K. At or above this share counts
# as collapsed (our threshold).
UNIFORM_ENTROPY_SHARE = 0.99
UNIFORM_ENTROPY_METRICS = ("target_entropy", "prediction_entropy")


def collapsed_row(row: dict) -> bool:
    """One epoch's metrics say: outputs (nearly) identical, or per-image distributions (nearly) uniform."""
    uniform = any(row.get(name, 0.0) >= UNIFORM_ENTROPY_SHARE for name in UNIFORM_ENTROPY_METRICS)
    return row.get("out_std", 1.0) < COLLAPSE_STD or uniform


def collapse_epoch(rows: list[dict]) -> int | None:
    """The epoch from which every epoch was a collapsed one (`collapsed_row`), COLLAPSE_EPOCHS epochs
    or more up to the last row (the run ended collapsed); None otherwise."""
    streak = 0
    for row in reversed(rows):
        if not collapsed_row(row):
            break
        streak += 1
    return rows[-streak]["epoch"] if streak >= COLLAPSE_EPOCHS else None


@dataclass(frozen=True)
class Schedule:
    """How a run's images become optimizer steps, and the learning rate of each step: a linear
    warm-up then a cosine over the whole schedule, of which this job runs the epochs from
    `start_epoch` (0 and the job's own epochs unless it is a stage of a continuous schedule)."""

    batch_size: int  # global: the lr rule and the step count use it
    steps_per_epoch: int
    epochs: int  # this job's
    warmup_steps: int  # of the whole schedule, in this job's steps
    peak_lr: float
    start_epoch: int = 0
    schedule_epochs: int = 0  # 0: `epochs`

    @property
    def total_steps(self) -> int:
        """This job's optimizer steps."""
        return self.epochs * self.steps_per_epoch

    def lr(self, step: int) -> float:
        """The lr of this job's `step`: the whole schedule's at the same point, counted in this job's
        steps per epoch, so a stage boundary falls where one uninterrupted cosine would have it."""
        offset = self.start_epoch * self.steps_per_epoch
        total = (self.schedule_epochs or self.epochs) * self.steps_per_epoch
        return cosine_lr(offset + step, total, self.peak_lr, self.warmup_steps)


def epoch_seed(seed: int, epoch: int) -> int:
    """Each epoch draws its shuffling and augmentations from its own stream: a resume at an
    epoch's start needs no RNG state (one mid-epoch restores the streams' states)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{epoch}".encode()).digest()[:7], "little")


def effective_batch_size(n: int, batch_size: int, world_size: int = 1) -> int:
    """Clusters smaller than the batch train on one batch of all their images (with several
    processes: as many as split evenly over them)."""
    if n < 2:
        raise UserError(f"cannot train on {n} image(s): a training set needs at least 2 images")
    assert batch_size % world_size == 0, "pretrain.batch_size must split over the job's processes (config check)"
    batch = min(batch_size, n)
    batch -= batch % world_size
    if batch < max(2, world_size):
        raise UserError(f"cannot split {n} images over {world_size} processes: give this job fewer GPUs "
                        f"(clustering.expert_gpus for experts)")
    return batch


def plan_schedule(module: Method, n: int, settings: TrainSettings, out_dir: Path,
                  stage: StageSchedule | None = None) -> Schedule:
    """The run's batch, steps and learning rates; says in the log how many steps it takes (small
    clusters, Experiment II's experts, may get few)."""
    stage = stage or StageSchedule()
    batch_size = effective_batch_size(n, settings.batch_size, distributed.world_size())
    steps_per_epoch = n // batch_size
    warmup_epochs = module.config.warmup_epochs
    whole = stage.schedule_epochs or settings.epochs
    assert warmup_epochs < whole, f"{module.section}.warmup_epochs >= the job's epochs (config check)"
    if distributed.is_main():
        if batch_size < settings.batch_size:
            print(f"[imbssl] {n} images < batch size {settings.batch_size}: training with batch {batch_size}",
                  file=sys.stderr)
        print(f"[imbssl] {out_dir}: {n} images in batches of {batch_size}: {settings.epochs} epochs x "
              f"{steps_per_epoch} steps = {settings.epochs * steps_per_epoch} optimizer steps", file=sys.stderr)
    return Schedule(batch_size, steps_per_epoch, settings.epochs, warmup_epochs * steps_per_epoch,
                    module.peak_lr(batch_size), stage.schedule_start_epoch, stage.schedule_epochs)


def prepare_module(module: Method, device: torch.device, settings: TrainSettings,
                   schedule: Schedule) -> torch.optim.Optimizer:
    """SyncBatchNorm across processes, channels_last and torch.compile on CUDA; the optimizer."""
    distributed.convert_sync_batchnorm(module, device)  # in place: every BatchNorm is a child
    optimizer = module.make_optimizer(schedule.batch_size)
    if settings.channels_last and device.type == "cuda":
        module.to(memory_format=torch.channels_last)
    if settings.compile == "on" or (settings.compile == "auto" and device.type == "cuda"):
        module.backbone.compile()  # in place: state_dict keys stay the same
    return optimizer


def save_checkpoint(path: Path, state: dict) -> None:
    """The resumable state of a run (rank 0 only), keeping the previous one as checkpoint.prev.pt.
    Its own function so that tests can stop a run right after a checkpoint, as a kill would."""
    checkpoint.save_generation(state, path)


def resume(module: Method, optimizer: torch.optim.Optimizer, out_dir: Path, run_id: str,
           device: torch.device) -> ResumePoint:
    """Where to start: from the newest readable checkpoint in out_dir (checkpoint.pt, else
    checkpoint.prev.pt) when it was written by a run with the same `run_id`, else from scratch."""
    loaded = checkpoint.load_newest(out_dir / "checkpoint.pt", map_location=device)
    start = ResumePoint([])
    if loaded is not None and loaded.state.get("run_id") == run_id:
        module.load_state_dict(loaded.state["module"])
        optimizer.load_state_dict(loaded.state["optimizer"])
        start = resume_point(loaded.state, device)
        step = f" step {start.step}" if start.step else ""
        _say(f"resuming {out_dir} from epoch {start.epoch}{step} ({loaded.path.name})")
        if start.part is not None and start.part.rng is None:
            _say(f"the checkpoint was taken by {len(loaded.state['ranks'])} processes, this job has "
                 f"{distributed.world_size()}: the rest of its epoch draws new augmentations")
    elif loaded is not None:
        _say(f"ignoring {loaded.path}: it was written with other settings")
    distributed.same_on_every_rank(start.epoch, "the epoch to resume from")
    distributed.same_on_every_rank(start.step, "the step to resume from")
    if loaded is not None and loaded.unreadable and distributed.is_main():  # every rank has read by now
        _set_aside(loaded)
    return start


def _set_aside(loaded: checkpoint.Loaded) -> None:
    """Newer checkpoints that could not be read go out of the way (the next save would otherwise
    keep one as the previous generation), with a warning in the log."""
    aside = [checkpoint.set_aside(path).name for path, _ in loaded.unreadable]
    _say(f"warning: {checkpoint.describe(loaded.unreadable)} cannot be read: resumed from the older "
         f"{loaded.path.name} instead (moved the unreadable file to {', '.join(aside)})")


def _say(line: str) -> None:
    """A line in the job's log, from rank 0 (which speaks for every rank)."""
    if distributed.is_main():
        print(f"[imbssl] {line}", file=sys.stderr, flush=True)


def train_loop(
    module: Method,
    images: torch.Tensor | ResidentImages | StreamedImages,
    settings: TrainSettings,
    augment: Callable[..., torch.Tensor],
    out_dir: str | Path,
    seed: int,
    run_id: str,
    monitor: Monitor | None = None,
    stage: StageSchedule | None = None,
) -> list[dict]:
    """Train `module` (a Method) on uint8 NCHW `images`: a tensor on the device, or an image
    source (data/device.py) that is resident or streams batches, prefetched, in the epoch's order.

    Resumes from out_dir/checkpoint.pt when it holds the same `run_id`; writes
    out_dir/metrics.csv every epoch. Returns the per-epoch metrics rows. A SIGTERM or SIGUSR1
    stops it after the current step with a checkpoint there (raises imbssl.Stopped).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = as_source(images)
    schedule = plan_schedule(module, len(images), settings, out_dir, stage)
    optimizer = prepare_module(module, images.device, settings, schedule)
    start = resume(module, optimizer, out_dir, run_id, images.device)
    model = distributed.wrap(module, images.device)  # DistributedDataParallel with several processes
    # e.g. imbalanced-p100/simsiam/seed0, or kmeans/seed0/cluster3 for an expert
    progress = make_progress("/".join(out_dir.parts[-3:]), settings.epochs, schedule.steps_per_epoch, start.epoch,
                             schedule.batch_size)
    rows = start.rows
    with stop_requests() as request:
        # save_checkpoint looked up at each call: tests wrap it to stop a run after a checkpoint
        checkpoints = Checkpointer(module, optimizer, rows, out_dir, run_id, settings.checkpoint_minutes, request,
                                   lambda path, state: save_checkpoint(path, state))
        for epoch in range(start.epoch, settings.epochs):
            part = start.part if epoch == start.epoch else None
            row = run_epoch(model, optimizer, images, augment, schedule, settings, seed, epoch, progress, out_dir,
                            checkpoints, part)
            rows.append(row)
            end_epoch(module, rows, monitor, settings, out_dir, progress, checkpoints)
    progress.close()
    return rows


def run_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, images, augment: Callable, schedule: Schedule,
              settings: TrainSettings, seed: int, epoch: int, progress, out_dir: Path, checkpoints: Checkpointer,
              part: EpochPart | None = None) -> dict:
    """One epoch: the shared permutation, this rank's share of each batch, one step per batch;
    returns the epoch's metrics row (means over its steps and over the ranks). With `part` (a
    mid-epoch checkpoint's) it continues after the batches that one had done."""
    module = distributed.unwrap(model)
    module.train()
    device = images.device
    order, generator, host_generator = epoch_streams(seed, epoch, len(images), device)
    first, sums = continue_epoch(part, seed, epoch, generator, host_generator)
    rank, world = distributed.rank(), distributed.world_size()
    indices = [distributed.rank_batch(order, step, schedule.batch_size, rank, world)
               for step in range(first, schedule.steps_per_epoch)]
    amp = settings.amp and device.type == "cuda"
    channels_last = settings.channels_last and device.type == "cuda"
    started = time.perf_counter()
    for step, (index, batch) in enumerate(zip(indices, images.batches(indices)), start=first):
        global_step = epoch * schedule.steps_per_epoch + step
        lr = schedule.lr(global_step)
        set_lr(optimizer, lr)
        loss, metrics = train_step(model, optimizer, images, index, augment, generator, host_generator, amp,
                                   channels_last, batch=batch)
        module.after_step((global_step + 1) / schedule.total_steps)  # this job's progress (EMA, SwAV, DINO)
        for key, value in {"loss": loss, **metrics}.items():
            sums[key] = sums.get(key, 0.0) + value.detach().float()
        running = None
        if (step + 1) % settings.log_every == 0:
            running = distributed.mean_over_ranks(sums["loss"]).item() / (step + 1)  # the only per-N-steps sync
            _check_finite(running, epoch, out_dir, module.section)
        progress.steps(step + 1, lr, running)  # every step: moves the bar, no sync
        if step + 1 < schedule.steps_per_epoch:  # the epoch's end decides after its last step
            checkpoints.after_step(epoch, step + 1, sums, (generator, host_generator))
    seconds = time.perf_counter() - started
    return _epoch_row(sums, epoch, lr, schedule, schedule.steps_per_epoch - first, seconds, out_dir,
                      module.section)


def epoch_streams(seed: int, epoch: int, n: int, device: torch.device):
    """(the epoch's permutation of the n images, the same on every rank; this rank's device and
    host generators of augmentations), with the global RNG seeded for the epoch too."""
    generator = torch.Generator(device=device).manual_seed(epoch_seed(seed, epoch))
    host_generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    torch.manual_seed(epoch_seed(seed, epoch))  # methods drawing from the global RNG (MSN's masks) too
    order = torch.randperm(n, generator=generator, device=device)  # the same on every rank
    distributed.reseed_for_rank(epoch_seed(seed, epoch), generator, host_generator)
    return order, generator, host_generator


def continue_epoch(part: EpochPart | None, seed: int, epoch: int, generator: torch.Generator,
                   host_generator: torch.Generator) -> tuple[int, dict[str, torch.Tensor]]:
    """(the first step to run, the metric sums so far): (0, {}) at an epoch's start; after a
    mid-epoch checkpoint, its step and sums, with the random streams where it left them."""
    if part is None:
        return 0, {}
    step = part.step
    if part.rng is not None:
        restore_rng(part.rng, generator, host_generator)
    else:
        reseed_after(seed, epoch, step, generator, host_generator)
    return step, dict(part.sums)


def _epoch_row(sums: dict[str, torch.Tensor], epoch: int, lr: float, schedule: Schedule, steps_run: int,
               seconds: float, out_dir: Path, section: str) -> dict:
    row = {"epoch": epoch + 1, "lr": lr, "steps": (epoch + 1) * schedule.steps_per_epoch}
    means = distributed.mean_over_ranks(torch.stack(list(sums.values()))) / schedule.steps_per_epoch
    row.update(zip(sums, means.tolist()))
    _check_finite(row["loss"], epoch, out_dir, section)
    row["images_per_s"] = steps_run * schedule.batch_size / seconds  # the steps this process ran
    row["seconds"] = seconds
    return row


def end_epoch(module: Method, rows: list[dict], monitor: Monitor | None, settings: TrainSettings, out_dir: Path,
              progress, checkpoints: Checkpointer) -> None:
    """After an epoch: kNN monitoring when due, the progress line, metrics.csv, and a checkpoint
    every `checkpoint_every` epochs, when `checkpoint_minutes` have passed or when a signal asks to
    stop (then the run stops here); none after the last epoch: model.pt follows."""
    row, epoch = rows[-1], rows[-1]["epoch"]
    last = epoch == settings.epochs
    if monitor is not None and (last or (settings.knn_every and epoch % settings.knn_every == 0)):
        row["knn_top1"] = monitor_knn(module.eval_backbone, monitor, settings)
    progress.epoch(row)
    _warn_on_collapse(rows, module.section)
    if distributed.is_main():
        write_metrics(out_dir / "metrics.csv", rows)
    if last:
        return  # a stop asked now costs nothing to honour later: model.pt is a moment away
    decision = checkpoints.at_epoch_end()  # the same on every rank
    if decision >= CHECKPOINT or (settings.checkpoint_every and epoch % settings.checkpoint_every == 0):
        checkpoints.save(epoch)
    if decision == STOP:
        checkpoints.stop(epoch, 0)


def _warn_on_collapse(rows: list[dict], section: str) -> None:
    """One warning in the job's log, the epoch the collapse is first recognised."""
    since = collapse_epoch(rows)
    if since is not None and rows[-1]["epoch"] - since + 1 == COLLAPSE_EPOCHS and distributed.is_main():
        print(f"[imbssl] warning: {section} collapsed from epoch {since} ({COLLAPSE_EPOCHS} epochs): the output "
              f"std stayed below {COLLAPSE_STD:g} or the per-image targets (or predictions) stayed at least "
              f"{UNIFORM_ENTROPY_SHARE:.0%} of uniform entropy; every image maps to about one output. Lower "
              f"{section}.base_lr or change its heads; the result file and the tables will flag this run",
              file=sys.stderr, flush=True)


def train_step(
    module: Method, optimizer: torch.optim.Optimizer, images, index: torch.Tensor,
    augment: Callable, generator: torch.Generator, host_generator: torch.Generator, amp: bool,
    channels_last: bool, batch: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One optimisation step on images[index]: augment on the device, forward, backward, update.

    `module` is the Method, or the Method under DistributedDataParallel (which averages the
    gradients of all ranks during backward); calling it computes the method's loss. `batch` is
    images[index] when the caller already has it (a streamed source's prefetched batch).
    """
    batch = images[index] if batch is None else batch
    views = [augment(batch, generator, host_generator, view=i) for i in range(distributed.unwrap(module).num_views)]
    if channels_last:
        views = [v.contiguous(memory_format=torch.channels_last) for v in views]
    with torch.autocast(batch.device.type, dtype=torch.bfloat16, enabled=amp):
        loss, metrics = module(views, index)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    distributed.unwrap(module).clip_gradients()  # after DDP averaged the gradients: the same on every rank
    optimizer.step()
    return loss, metrics


def _check_finite(loss: float, epoch: int, out_dir: Path, section: str) -> None:
    if not math.isfinite(loss):
        raise UserError(
            f"training diverged: loss is {loss} in epoch {epoch + 1} ({out_dir}); lower {section}.base_lr or "
            f"raise {section}.warmup_epochs, then rerun"
        )


def monitor_knn(backbone: nn.Module, monitor: Monitor, settings: TrainSettings) -> float:
    """kNN top-1 (%) of the test split against the training images' features (float32, as in
    evaluation: bf16 autocast is for training steps only)."""
    bank = extract_all_ranks(backbone, monitor.bank_images, monitor.mean, monitor.std, size=monitor.image_size)
    test = extract_all_ranks(backbone, monitor.test_images, monitor.mean, monitor.std, size=monitor.image_size)
    return 100.0 * knn_accuracy(bank, monitor.bank_labels, test, monitor.test_labels, monitor.num_classes,
                                settings.knn_k, settings.knn_t)
