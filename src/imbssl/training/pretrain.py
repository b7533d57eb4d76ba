"""The pretrain job: self-supervised pretraining of one method on one subset (also Experiment II's
base and experts, which are SimSiam pretraining jobs)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from imbssl.core.artifacts import read_model
from imbssl.data.augment import AugmentConfig
from imbssl.methods.registry import Method, MethodConfig, build_method
from imbssl.models.backbones import ModelConfig, build_backbone
from imbssl.training.jobs import fingerprint, model_meta, open_job, run_settings, run_training
from imbssl.training.loop import StageSchedule, TrainSettings


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
    provenance: dict | None = None,
    stage: StageSchedule | None = None,
) -> Path:
    """Self-supervised pretraining of `method` on the images of `subset`; writes out_dir/model.pt."""
    settings, model, augment = settings or TrainSettings(), model or ModelConfig(), augment or AugmentConfig()
    device, data = open_job(settings, train_data, test_data, subset)
    torch.manual_seed(seed)  # initial weights
    backbone = build_backbone(model.arch, model.width, data.image_size, model.stem)
    module = build_method(method, backbone, **asdict(method_config)).to(device)
    if init is not None:
        initialise(module, init, init_heads, device)
    stage = stage or StageSchedule()
    run_id = fingerprint(method, asdict(method_config), run_settings(settings), asdict(model), asdict(augment),
                         seed, data.indices.tolist(), init, init_heads, asdict(stage))
    meta = model_meta(data, settings, seed, method, model.arch, model.width, getattr(backbone, "stem", "auto"),
                      backbone.output_dim, provenance)
    return run_training(module, data, settings, augment, out_dir, seed, run_id, meta, stage)


def initialise(module: Method, init: str, init_heads: bool, device: torch.device) -> None:
    """Start from a model.pt: the whole method (backbone and heads) when it is of the same method
    and `init_heads`, else the backbone only (experts start from the base model)."""
    model = read_model(init)
    if init_heads and model.meta.method == module.name:
        module.load_state_dict(model.method_state)
    else:
        module.backbone.load_state_dict(model.backbone)
