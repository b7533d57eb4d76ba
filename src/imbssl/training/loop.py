"""The one training loop: base, baseline, expert, MSN and distillation training all run here.

Data stays on the training device as uint8; augmentations are batched tensor ops drawn from a
generator seeded per epoch, so an interrupted run resumed from its checkpoint computes exactly
what the uninterrupted run would have. Host synchronisation happens only every `log_every`
steps and once per epoch.

A job on several GPUs (torchrun) runs this same loop plus a process group (distributed.py): each
rank trains on its slice of the shared permutation under DistributedDataParallel, the global batch
stays `batch_size`, metrics are averaged over the ranks and rank 0 writes every file.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import io
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from imbssl import UserError
from imbssl.core import checkpoint, distributed
from imbssl.core.atomic import write_text
from imbssl.data.augment import AugmentConfig, BatchAugment
from imbssl.data.store import Split, load_split
from imbssl.data.device import (ResidentImages, StreamedImages, as_source, choose_resident, image_source, images_bytes, resolve_device)
from imbssl.evaluation.features import extract_all_ranks
from imbssl.evaluation.knn import knn_accuracy
from imbssl.methods import build_method
from imbssl.methods.registry import Method, MethodConfig
from imbssl.models.backbones import ModelConfig, build_backbone
from imbssl.core.optim import cosine_lr, set_lr
from imbssl.data.subsets import read_csv


@dataclass
class TrainSettings:
    epochs: int = 300
    batch_size: int = 1024
    checkpoint_every: int = 10  # epochs between resumable checkpoints
    knn_every: int = 10  # epochs between kNN monitoring (0: only at the end)
    knn_k: int = 200
    knn_t: float = 0.1
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    compile: str = "auto"  # torch.compile the backbone: auto (CUDA only) | on | off
    channels_last: bool = True  # NHWC activations on CUDA (ignored on CPU)
    device: str = "auto"
    log_every: int = 50  # steps between progress-bar updates (each one syncs the host)
    data_on_device: str = "auto"  # the whole subset on the device (true), streamed (false), or by size
    device_memory_fraction: float = 0.5  # auto: resident when the images fit in this share of its memory


@dataclass
class TrainingData:
    """A job's training images (on the device, or streamed to it), with the splits that
    monitoring and saving need."""

    train: Split
    test: Split
    indices: np.ndarray  # positions in the train split of the images trained on
    images: ResidentImages | StreamedImages  # uint8 NCHW batches of train.images[indices]

    @property
    def image_size(self) -> int:
        """The crop the model sees (dataset.image_size), from images stored at train.store_size."""
        return self.train.image_size


def load_training_data(train_data: str | os.PathLike, test_data: str | os.PathLike, subset: str | os.PathLike,
                       device: torch.device, data_on_device: str = "auto",
                       device_memory_fraction: float = 0.5) -> TrainingData:
    """The subset's images and the test split (kNN monitoring), both resident on the device when
    they fit together in `device_memory_fraction` of its memory (or as `data_on_device` says),
    else both streamed from the memory-mapped store."""
    train, test = load_split(train_data), load_split(test_data)
    indices, _ = read_csv(subset)
    resident = choose_resident(data_on_device, images_bytes(train.images, len(indices) + len(test.labels)), device,
                               device_memory_fraction)
    if distributed.is_main():
        print(f"[imbssl] {len(indices)} training images of {train.store_size}px "
              f"({images_bytes(train.images, len(indices)) / 2**30:.2f} GiB): "
              f"{'resident on' if resident else 'streamed to'} {device}", file=sys.stderr)
    return TrainingData(train, test, indices, image_source(train.images, indices, device, resident))


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


def make_monitor(data: TrainingData) -> Monitor:
    """kNN monitoring of a model trained on `data`: its images are the bank, the test split the queries."""
    device = data.images.device
    train, test = data.train, data.test
    test_images = image_source(test.images, np.arange(len(test.labels)), device, data.images.resident)
    return Monitor(data.images, torch.from_numpy(train.labels[data.indices]).to(device),
                   test_images, torch.from_numpy(test.labels).to(device),
                   train.num_classes, train.mean.tolist(), train.std.tolist(), data.image_size)


def run_settings(settings: TrainSettings) -> dict:
    """The settings that make a run what it is (its checkpoint's identity): where the images
    live changes no batch, so a run may resume resident what it began streamed."""
    return {k: v for k, v in asdict(settings).items() if k not in ("data_on_device", "device_memory_fraction")}


def epoch_seed(seed: int, epoch: int) -> int:
    """Each epoch draws its shuffling and augmentations from its own stream: resume needs no RNG state."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{epoch}".encode()).digest()[:7], "little")


def fingerprint(*parts) -> str:
    """Identifies a run's settings; a checkpoint from other settings is never resumed."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def effective_batch_size(n: int, batch_size: int, world_size: int = 1) -> int:
    """Clusters smaller than the batch train on one batch of all their images (with several
    processes: as many as split evenly over them)."""
    if n < 2:
        raise UserError(f"cannot train on {n} image(s): a training set needs at least 2 images")
    if batch_size % world_size:
        raise UserError(f"batch size {batch_size} does not split evenly over {world_size} processes: make "
                        f"pretrain.batch_size a multiple of the job's GPUs (gpus x nodes)")
    batch = min(batch_size, n)
    batch -= batch % world_size
    if batch < max(2, world_size):
        raise UserError(f"cannot split {n} images over {world_size} processes: give this job fewer GPUs "
                        f"(clustering.expert_gpus for experts)")
    return batch


def _compile_enabled(setting: str, device: torch.device) -> bool:
    if setting not in ("auto", "on", "off"):
        raise UserError(f"pretrain.compile={setting!r}: use auto, on or off")
    return setting == "on" or (setting == "auto" and device.type == "cuda")


def _write_metrics(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


# ---------------------------------------------------------------------------------------------
# Progress: a live bar on a terminal, one plain line per epoch in a log file


class BarProgress:
    """tqdm's bar, for a person watching a terminal (updated every `log_every` steps)."""

    def __init__(self, name: str, epochs: int, steps_per_epoch: int, start_epoch: int):
        self.steps_per_epoch = steps_per_epoch
        self.bar = tqdm(total=epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch, file=sys.stderr,
                        desc=name, unit="step", mininterval=5, dynamic_ncols=False, ascii=True)
        self.shown = 0

    def steps(self, done_in_epoch: int, running_loss: float) -> None:
        self.bar.set_postfix(loss=f"{running_loss:.4f}", refresh=False)
        self.bar.update(done_in_epoch - self.shown)
        self.shown = done_in_epoch

    def epoch(self, row: dict) -> None:
        self.bar.update(self.steps_per_epoch - self.shown)
        self.shown = 0
        self.bar.set_postfix(loss=f"{row['loss']:.4f}", refresh=True)

    def close(self) -> None:
        self.bar.close()


def _clock(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds)))


class LineProgress:
    """One plain line per epoch, for job logs (Snakemake's log files, SLURM's output files), where
    a bar's carriage returns would make a whole run one unreadable line."""

    def __init__(self, name: str, epochs: int, steps_per_epoch: int, start_epoch: int):
        self.name, self.epochs, self.start_epoch = name, epochs, start_epoch
        self.started = time.perf_counter()

    def steps(self, done_in_epoch: int, running_loss: float) -> None:
        pass

    def epoch(self, row: dict) -> None:
        elapsed = time.perf_counter() - self.started
        done = row["epoch"] - self.start_epoch  # epochs run by this process (a resume starts later)
        eta = elapsed / done * (self.epochs - row["epoch"])
        knn = f" knn_top1 {row['knn_top1']:.2f}" if "knn_top1" in row else ""
        print(f"[imbssl] {self.name} epoch {row['epoch']}/{self.epochs} loss {row['loss']:.4f} lr {row['lr']:.4g}"
              f"{knn} images/s {row['images_per_s']:.0f} elapsed {_clock(elapsed)} eta {_clock(eta)}",
              file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


class NoProgress:
    """Ranks other than 0 of a job on several processes: rank 0 reports for all."""

    def __init__(self, *args):
        pass

    def steps(self, done_in_epoch: int, running_loss: float) -> None:
        pass

    def epoch(self, row: dict) -> None:
        pass

    def close(self) -> None:
        pass


def make_progress(name: str, epochs: int, steps_per_epoch: int, start_epoch: int):
    kind = NoProgress if not distributed.is_main() else BarProgress if sys.stderr.isatty() else LineProgress
    return kind(name, epochs, steps_per_epoch, start_epoch)


# ---------------------------------------------------------------------------------------------
# The loop


def train_loop(
    module: Method,
    images: torch.Tensor | ResidentImages | StreamedImages,
    settings: TrainSettings,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
    out_dir: str | os.PathLike,
    seed: int,
    run_id: str,
    monitor: Monitor | None = None,
    stop_after_epoch: int | None = None,
) -> list[dict]:
    """Train `module` (a Method) on uint8 NCHW `images`: a tensor on the device, or an image
    source (device.py) that is resident or streams batches, prefetched, in the epoch's order.

    Resumes from out_dir/checkpoint.pt when it holds the same `run_id`; writes
    out_dir/metrics.csv every epoch. Returns the per-epoch metrics rows.
    `stop_after_epoch` ends the run early (as a kill would), for tests.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = as_source(images)
    device = images.device
    n = len(images)
    rank, world = distributed.rank(), distributed.world_size()
    batch_size = effective_batch_size(n, settings.batch_size, world)  # global: the lr rule and steps use it
    if batch_size < settings.batch_size and distributed.is_main():
        print(f"[imbssl] {n} images < batch size {settings.batch_size}: training with batch {batch_size}",
              file=sys.stderr)
    steps_per_epoch = n // batch_size
    total_steps = settings.epochs * steps_per_epoch
    distributed.convert_sync_batchnorm(module, device)  # in place: every BatchNorm is a child
    warmup_epochs = module.config.warmup_epochs
    if warmup_epochs >= settings.epochs:
        raise UserError(f"{module.section}.warmup_epochs={warmup_epochs} leaves no epoch of the {settings.epochs} "
                        f"this job trains for the cosine schedule: lower it below {settings.epochs}")
    if distributed.is_main():  # small clusters (Experiment II's experts) may get few steps: say how many
        print(f"[imbssl] {out_dir}: {n} images in batches of {batch_size}: {settings.epochs} epochs x "
              f"{steps_per_epoch} steps = {total_steps} optimizer steps", file=sys.stderr)
    peak_lr = module.peak_lr(batch_size)
    optimizer = module.make_optimizer(batch_size)
    amp = settings.amp and device.type == "cuda"
    channels_last = settings.channels_last and device.type == "cuda"
    if channels_last:
        module.to(memory_format=torch.channels_last)
    if _compile_enabled(settings.compile, device):
        module.backbone.compile()  # in place: state_dict keys stay the same

    ckpt_path = out_dir / "checkpoint.pt"
    rows: list[dict] = []
    start_epoch = 0
    saved = checkpoint.load_if_exists(ckpt_path, map_location=device)
    if saved is not None and saved.get("run_id") == run_id:
        module.load_state_dict(saved["module"])
        optimizer.load_state_dict(saved["optimizer"])
        rows, start_epoch = saved["metrics"], saved["epoch"]
        print(f"[imbssl] resuming {out_dir} from epoch {start_epoch}", file=sys.stderr)
    elif saved is not None:
        print(f"[imbssl] ignoring {ckpt_path}: it was written with other settings", file=sys.stderr)
    distributed.same_on_every_rank(start_epoch, "the epoch to resume from")
    model = distributed.wrap(module, device)  # DistributedDataParallel with several processes

    # e.g. imbalanced-p100/simsiam/seed0, or kmeans/seed0/cluster3 for an expert
    progress = make_progress("/".join(out_dir.parts[-3:]), settings.epochs, steps_per_epoch, start_epoch)
    for epoch in range(start_epoch, settings.epochs):
        module.train()
        generator = torch.Generator(device=device).manual_seed(epoch_seed(seed, epoch))
        host_generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
        torch.manual_seed(epoch_seed(seed, epoch))  # methods drawing from the global RNG (MSN's masks) too
        order = torch.randperm(n, generator=generator, device=device)  # the same on every rank
        distributed.reseed_for_rank(epoch_seed(seed, epoch), generator, host_generator)
        sums: dict[str, torch.Tensor] = {}
        started = time.perf_counter()
        indices = [distributed.rank_batch(order, step, batch_size, rank, world) for step in range(steps_per_epoch)]
        for step, (index, batch) in enumerate(zip(indices, images.batches(indices))):
            global_step = epoch * steps_per_epoch + step
            lr = cosine_lr(global_step, total_steps, peak_lr, warmup_epochs * steps_per_epoch)
            set_lr(optimizer, lr)
            loss, metrics = train_step(model, optimizer, images, index, augment, generator, host_generator,
                                       amp, channels_last, batch=batch)
            module.after_step((global_step + 1) / total_steps)
            for key, value in {"loss": loss, **metrics}.items():
                sums[key] = sums.get(key, 0.0) + value.detach().float()
            if (step + 1) % settings.log_every == 0:
                running = distributed.mean_over_ranks(sums["loss"]).item() / (step + 1)  # the only per-N-steps sync
                _check_finite(running, epoch, out_dir)
                progress.steps(step + 1, running)
        seconds = time.perf_counter() - started
        row = {"epoch": epoch + 1, "lr": lr, "steps": (epoch + 1) * steps_per_epoch}
        means = distributed.mean_over_ranks(torch.stack(list(sums.values()))) / steps_per_epoch
        row.update(zip(sums, means.tolist()))
        _check_finite(row["loss"], epoch, out_dir)
        row["images_per_s"] = steps_per_epoch * batch_size / seconds
        row["seconds"] = seconds
        last = epoch + 1 == settings.epochs
        if monitor is not None and (last or (settings.knn_every and (epoch + 1) % settings.knn_every == 0)):
            row["knn_top1"] = monitor_knn(module.eval_backbone, monitor, settings)
        rows.append(row)
        progress.epoch(row)
        if distributed.is_main():
            _write_metrics(out_dir / "metrics.csv", rows)
        if (not last and settings.checkpoint_every and (epoch + 1) % settings.checkpoint_every == 0
                and distributed.is_main()):
            checkpoint.save({"run_id": run_id, "epoch": epoch + 1, "module": module.state_dict(),
                             "optimizer": optimizer.state_dict(), "metrics": rows}, ckpt_path)
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch and not last:
            break
    progress.close()
    return rows


def train_step(
    module: Method, optimizer: torch.optim.Optimizer, images: torch.Tensor, index: torch.Tensor,
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


def _check_finite(loss: float, epoch: int, out_dir: Path) -> None:
    if not math.isfinite(loss):
        raise UserError(
            f"training diverged: loss is {loss} in epoch {epoch + 1} ({out_dir}); lower the method's "
            f"base_lr or raise its warmup_epochs, then rerun"
        )


def monitor_knn(backbone: nn.Module, monitor: Monitor, settings: TrainSettings) -> float:
    """kNN top-1 (%) of the test split against the training images' features (float32, as in
    evaluation: bf16 autocast is for training steps only)."""
    bank = extract_all_ranks(backbone, monitor.bank_images, monitor.mean, monitor.std, size=monitor.image_size)
    test = extract_all_ranks(backbone, monitor.test_images, monitor.mean, monitor.std, size=monitor.image_size)
    return 100.0 * knn_accuracy(bank, monitor.bank_labels, test, monitor.test_labels, monitor.num_classes,
                                settings.knn_k, settings.knn_t)


# ---------------------------------------------------------------------------------------------
# Whole jobs


def run_training(
    module: Method,
    data: TrainingData,
    settings: TrainSettings,
    augment: AugmentConfig,
    out_dir: str | os.PathLike,
    seed: int,
    run_id: str,
    stop_after_epoch: int | None = None,
    **meta,
) -> Path:
    """The skeleton of every training job (pretraining, base, experts, distillation): monitor,
    augmentations, the loop with resume, then model.pt with `meta` and the data's statistics.

    Returns model.pt, or checkpoint.pt when the run stopped early (`stop_after_epoch`, for tests).
    """
    batch_aug = BatchAugment(augment, data.train.mean, data.train.std, data.image_size)
    rows = train_loop(module, data.images, settings, batch_aug, out_dir, seed, run_id, make_monitor(data),
                      stop_after_epoch)
    if len(rows) < settings.epochs:
        return Path(out_dir) / "checkpoint.pt"
    return save_model(module, Path(out_dir), image_size=data.image_size, mean=data.train.mean,
                      std=data.train.std, epochs=settings.epochs, num_images=len(data.indices), seed=seed, **meta)


def pretrain(
    method: str,
    method_config: MethodConfig,
    train_data: str,
    test_data: str,
    subset: str,
    out_dir: str,
    seed: int = 0,
    settings: TrainSettings | None = None,
    model: ModelConfig | None = None,
    augment: AugmentConfig | None = None,
    init: str | None = None,
    init_heads: bool = True,
    stop_after_epoch: int | None = None,
) -> Path:
    """Self-supervised pretraining of `method` on the images of `subset`; writes out_dir/model.pt."""
    settings, model, augment = settings or TrainSettings(), model or ModelConfig(), augment or AugmentConfig()
    device = distributed.setup(resolve_device(settings.device))  # a no-op unless torchrun started this job
    data = load_training_data(train_data, test_data, subset, device, settings.data_on_device,
                              settings.device_memory_fraction)
    torch.manual_seed(seed)  # initial weights
    backbone = build_backbone(model.arch, model.width, data.image_size, model.stem)
    module = build_method(method, backbone, **asdict(method_config)).to(device)
    if init is not None:
        _initialise(module, init, init_heads, device)
    run_id = fingerprint(method, asdict(method_config), run_settings(settings), asdict(model), asdict(augment),
                         seed, data.indices.tolist(), init, init_heads)
    return run_training(module, data, settings, augment, out_dir, seed, run_id, stop_after_epoch,
                        method=method, arch=model.arch, width=model.width,
                        stem=getattr(backbone, "stem", "auto"))


def _initialise(module: Method, init: str, init_heads: bool, device: torch.device) -> None:
    state = checkpoint.load(init, map_location=device)
    if init_heads and state.get("method") == module.name:
        module.load_state_dict(state["method_state"])
    else:
        module.backbone.load_state_dict(state["backbone"])


def save_model(module: Method, out_dir: Path, **meta) -> Path:
    """Write the final model.pt atomically and drop the resume checkpoint it supersedes (rank 0;
    the other ranks of the job wait for it)."""
    path = out_dir / "model.pt"
    if not distributed.is_main():
        distributed.barrier()
        return path
    state = {
        "backbone": {k: v.detach().cpu() for k, v in module.eval_backbone.state_dict().items()},
        "method_state": {k: v.detach().cpu() for k, v in module.exported_state().items()},
        "output_dim": module.backbone.output_dim,
        **{k: ([float(x) for x in v] if hasattr(v, "tolist") else v) for k, v in meta.items()},
    }
    checkpoint.save(state, path)
    (out_dir / "checkpoint.pt").unlink(missing_ok=True)
    distributed.barrier()
    return path
