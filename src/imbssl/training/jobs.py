"""The skeleton every training job shares (pretraining, Experiment II's base and experts,
distillation): open the job (device, process group, images), train through the one loop, write
model.pt with its metadata and provenance.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from imbssl.core import checkpoint, distributed
from imbssl.core.artifacts import ModelMeta, read_subset, write_model
from imbssl.data.augment import AugmentConfig, BatchAugment
from imbssl.data.device import (ResidentImages, StreamedImages, choose_resident, image_source, images_bytes,
                                resolve_device)
from imbssl.data.store import Split, load_split
from imbssl.methods.registry import Method
from imbssl.training.loop import Monitor, StageSchedule, TrainSettings, collapse_epoch, train_loop


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
    indices, _ = read_subset(subset)
    resident = choose_resident(data_on_device, images_bytes(train.images, len(indices) + len(test.labels)), device,
                               device_memory_fraction)
    if distributed.is_main():
        print(f"[imbssl] {len(indices)} training images of {train.store_size}px "
              f"({images_bytes(train.images, len(indices)) / 2**30:.2f} GiB): "
              f"{'resident on' if resident else 'streamed to'} {device}", file=sys.stderr)
    return TrainingData(train, test, indices, image_source(train.images, indices, device, resident))


def open_job(settings: TrainSettings, train_data: str, test_data: str, subset: str) -> tuple[torch.device, TrainingData]:
    """The opening of every training job: its device (joining torchrun's process group when
    torchrun started it) and its images."""
    device = distributed.setup(resolve_device(settings.device))  # a no-op unless torchrun started this job
    data = load_training_data(train_data, test_data, subset, device, settings.data_on_device,
                              settings.device_memory_fraction)
    return device, data


def make_monitor(data: TrainingData) -> Monitor:
    """kNN monitoring of a model trained on `data`: its images are the bank, the test split the queries."""
    device = data.images.device
    train, test = data.train, data.test
    test_images = image_source(test.images, np.arange(len(test.labels)), device, data.images.resident)
    return Monitor(data.images, torch.from_numpy(train.labels[data.indices]).to(device),
                   test_images, torch.from_numpy(test.labels).to(device),
                   train.num_classes, train.mean.tolist(), train.std.tolist(), data.image_size)


NOT_THE_RUN = ("data_on_device", "device_memory_fraction", "checkpoint_every", "checkpoint_minutes", "log_every")


def run_settings(settings: TrainSettings) -> dict:
    """The settings that make a run what it is (its checkpoint's identity): where the images
    live changes no batch, so a run may resume resident what it began streamed; when checkpoints
    are written and the log speaks changes no weight, so a preempted run may resume with
    checkpoint_minutes lowered."""
    return {k: v for k, v in asdict(settings).items() if k not in NOT_THE_RUN}


def fingerprint(*parts) -> str:
    """Identifies a run's settings; a checkpoint from other settings is never resumed."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_training(module: Method, data: TrainingData, settings: TrainSettings, augment: AugmentConfig,
                 out_dir: str | os.PathLike, seed: int, run_id: str, meta: ModelMeta,
                 stage: StageSchedule | None = None) -> Path:
    """Monitor, augmentations, the loop with resume, then model.pt with `meta`."""
    batch_aug = BatchAugment(augment, data.train.mean, data.train.std, data.image_size)
    rows = train_loop(module, data.images, settings, batch_aug, out_dir, seed, run_id, make_monitor(data), stage)
    meta.collapsed_from_epoch = collapse_epoch(rows)
    return save_model(module, Path(out_dir), meta)


def model_meta(data: TrainingData, settings: TrainSettings, seed: int, method: str, arch: str, width: int,
               stem: str, output_dim: int, provenance: dict | None, teachers: list[str] = ()) -> ModelMeta:
    """What model.pt records besides the weights (its provenance from the command that trains it)."""
    return ModelMeta(method=method, arch=arch, width=width, stem=stem, image_size=data.image_size,
                     output_dim=output_dim, mean=[float(x) for x in data.train.mean],
                     std=[float(x) for x in data.train.std], epochs=settings.epochs, num_images=len(data.indices),
                     seed=seed, teachers=list(teachers), provenance=provenance or {})


def save_model(module: Method, out_dir: Path, meta: ModelMeta) -> Path:
    """Write the final model.pt atomically and drop the resume checkpoints it supersedes (rank 0;
    the other ranks of the job wait for it)."""
    path = out_dir / "model.pt"
    if not distributed.is_main():
        distributed.barrier()
        return path
    backbone = {k: v.detach().cpu() for k, v in module.eval_backbone.state_dict().items()}
    method_state = {k: v.detach().cpu() for k, v in module.exported_state().items()}
    write_model(path, backbone, method_state, meta)
    checkpoint.remove_generations(out_dir / "checkpoint.pt")
    distributed.barrier()
    return path
