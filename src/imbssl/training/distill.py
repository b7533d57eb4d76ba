"""The distill job (Experiment II, last step): a student from the base model and the K experts of
one partition, trained through the one loop like any method (methods/distill.py: `Distiller`)."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import torch

from imbssl import UserError
from imbssl.core.artifacts import ModelMeta, read_assignments, read_model, require_same_images
from imbssl.data.augment import AugmentConfig
from imbssl.methods.distill import DistillConfig, Distiller, Teachers, initial_student
from imbssl.evaluation.features import encoder_of
from imbssl.models.backbones import backbone_from_meta
from imbssl.training.jobs import fingerprint, model_meta, open_job, run_settings, run_training
from imbssl.training.loop import StageSchedule, TrainSettings


def load_teachers(base: str, experts: list[str], device: torch.device,
                  target: str = "backbone") -> tuple[Teachers, ModelMeta]:
    """The frozen teachers on `device` (backbones, or backbones followed by their projector for
    `target: projector`), and the base's model.pt metadata (arch, width, ...)."""
    base_model = read_model(base)
    expert_backbones = []
    for path in experts:
        expert = read_model(path)
        for key in ("arch", "width", "image_size", "stem"):
            if getattr(expert.meta, key) != getattr(base_model.meta, key):
                raise UserError(f"expert {path} has {key}={getattr(expert.meta, key)} but the base {base} has "
                                f"{getattr(base_model.meta, key)}: retrain the experts from the base model")
        expert_backbones.append(encoder_of(expert, device, target))
    return Teachers(encoder_of(base_model, device, target), expert_backbones), base_model.meta


def distill(
    base: str,
    experts: list[str],
    clusters: str,
    train_data: str,
    test_data: str,
    subset: str,
    out_dir: str | os.PathLike,
    seed: int = 0,
    config: DistillConfig | None = None,
    settings: TrainSettings | None = None,
    augment: AugmentConfig | None = None,
    provenance: dict | None = None,
    stage: StageSchedule | None = None,
) -> Path:
    """Train a student from `base` and `experts` (model.pt files, expert j for cluster j of the
    `clusters` assignments.csv) on `subset`; writes out_dir/model.pt (student backbone only)."""
    config, settings, augment = config or DistillConfig(), settings or TrainSettings(), augment or AugmentConfig()
    device, data = open_job(settings, train_data, test_data, subset)
    cluster_index, cluster_of = read_assignments(clusters)
    require_same_images(cluster_index, data.indices, clusters, subset, "cluster")
    num_clusters = int(cluster_of.max()) + 1
    if len(experts) < num_clusters:
        raise UserError(f"{clusters} has {num_clusters} clusters but {len(experts)} experts were given: "
                        f"pass one expert model per cluster (clustering.k)")
    teachers, meta = load_teachers(base, experts, device, config.target)
    if data.image_size != meta.image_size:
        raise UserError(f"{train_data} has {data.image_size}px images but the base {base} was trained on "
                        f"{meta.image_size}px: use the train split the base was trained on")
    torch.manual_seed(seed)  # the student's initial weights (with init: scratch) and its heads'
    base_backbone = teachers.base[0] if isinstance(teachers.base, torch.nn.Sequential) else teachers.base
    student = initial_student(config.init, base_backbone, backbone_from_meta(meta))
    module = Distiller(student, config, teachers, torch.tensor(cluster_of)).to(device)
    stage = stage or StageSchedule()
    run_id = fingerprint("distill", asdict(config), run_settings(settings), asdict(augment), seed, data.indices.tolist(),
                         cluster_of.tolist(), base, list(experts), asdict(stage))
    student_meta = model_meta(data, settings, seed, "distill", meta.arch, meta.width, meta.stem or "auto",
                              student.output_dim, provenance, teachers=[base, *experts])
    return run_training(module, data, settings, augment, out_dir, seed, run_id, student_meta, stage)
