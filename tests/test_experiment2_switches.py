"""Experiment II's readings of what the paper leaves open: one continuous schedule over the three
stages, k-means on the projector's output, the student regressing the teachers' projector output."""

from __future__ import annotations

import math

import pytest
import torch
import yaml

from imbssl.core.artifacts import ModelMeta, read_model, write_model
from imbssl.core.optim import cosine_lr
from imbssl.evaluation.features import encoder_of
from imbssl.methods.distill import DistillConfig, Distiller, Teachers
from imbssl.methods.registry import build_method
from imbssl.models.backbones import build_backbone
from imbssl.training.loop import Schedule

from helpers.repo import REPO


def test_a_continuous_schedule_is_one_cosine_whatever_each_stage_steps_per_epoch():
    """Base 3 epochs of 10 steps, experts 6 epochs of 4 steps, student 3 epochs of 10 steps, one
    warm-up of 1 epoch: every step's lr is the uninterrupted schedule's at the same point (in
    epochs), so the stage boundaries fall where one cosine puts them."""
    total, warmup, peak = 12, 1, 0.2
    stages = [(0, 3, 10), (3, 6, 4), (9, 3, 10)]  # (start epoch, epochs, steps per epoch)

    def uninterrupted(epoch_position: float) -> float:  # the whole schedule, as a function of epochs
        if epoch_position < warmup:
            return None  # within the warm-up the per-step rounding differs by stage; checked below
        return peak * 0.5 * (1 + math.cos(math.pi * (epoch_position - warmup) / (total - warmup)))

    for start, epochs, per_epoch in stages:
        schedule = Schedule(batch_size=8, steps_per_epoch=per_epoch, epochs=epochs, warmup_steps=warmup * per_epoch,
                            peak_lr=peak, start_epoch=start, schedule_epochs=total)
        for step in range(epochs * per_epoch):
            expected = uninterrupted(start + step / per_epoch)
            if expected is not None:
                assert schedule.lr(step) == pytest.approx(expected), (start, step)
    base = Schedule(8, 10, 3, 10, peak, 0, total)
    assert base.lr(0) == pytest.approx(peak / 10) and base.lr(9) == pytest.approx(peak)  # the one warm-up
    # The stage boundaries: the experts start where the base stopped, the student where the experts did.
    assert Schedule(8, 4, 6, 4, peak, 3, total).lr(0) == pytest.approx(uninterrupted(3))
    assert Schedule(8, 10, 3, 10, peak, 9, total).lr(0) == pytest.approx(uninterrupted(9))
    assert uninterrupted(9) < 0.25 * peak  # far down the cosine: not a fresh start
    # per_stage (the default) is each job's own warm-up and cosine, as before.
    own = Schedule(8, 4, 6, 4, peak)
    assert [own.lr(s) for s in range(24)] == [cosine_lr(s, 24, peak, 4) for s in range(24)]
    assert own.lr(0) != Schedule(8, 4, 6, 4, peak, 3, total).lr(0)


def simsiam_model(path, seed=0):
    """A SimSiam model.pt (random weights, BatchNorm statistics moved so that eval mode matters)."""
    torch.manual_seed(seed)
    method = build_method("simsiam", build_backbone("resnet10", 2, 8), proj_dim=12, pred_hidden_dim=4)
    with torch.no_grad():
        for module in method.modules():
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
    meta = ModelMeta(method="simsiam", arch="resnet10", width=2, stem="cifar", image_size=8, output_dim=16,
                     mean=[0.5] * 3, std=[0.25] * 3, epochs=1, num_images=0, seed=seed)
    write_model(path, method.backbone.state_dict(), method.state_dict(), meta)
    return method.eval()


def test_projector_features_are_the_projector_output_of_the_saved_model(tmp_path):
    method = simsiam_model(tmp_path / "model.pt")
    x = torch.randn(5, 3, 8, 8)
    model_file = read_model(tmp_path / "model.pt")
    with torch.no_grad():
        backbone_out = encoder_of(model_file, torch.device("cpu"), "backbone")(x)
        projector_out = encoder_of(model_file, torch.device("cpu"), "projector")(x)
        expected = method.projector(method.backbone(x))
    torch.testing.assert_close(backbone_out, method.backbone(x))
    torch.testing.assert_close(projector_out, expected)
    assert projector_out.shape == (5, 12) and encoder_of(model_file, "cpu", "projector").output_dim == 12


def test_the_student_regresses_the_teachers_projector_output_when_asked(tmp_path):
    base = simsiam_model(tmp_path / "base.pt", 0)
    experts = [simsiam_model(tmp_path / f"e{k}.pt", 1 + k) for k in range(2)]
    teachers = Teachers(encoder_of(read_model(tmp_path / "base.pt"), "cpu", "projector"),
                        [encoder_of(read_model(tmp_path / f"e{k}.pt"), "cpu", "projector") for k in range(2)])
    x, cluster = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 1, 0])
    q_base, q_expert = teachers.targets(x, cluster)
    with torch.no_grad():
        torch.testing.assert_close(q_base, base.projector(base.backbone(x)))
        torch.testing.assert_close(q_expert[1], experts[1].projector(experts[1].backbone(x[1:2]))[0])
    student = Distiller(build_backbone("resnet10", 2, 8), DistillConfig(head_hidden_dim=8, target="projector"),
                        teachers, torch.tensor([0, 1, 1, 0]))
    assert student.heads(torch.randn(4, 16)).shape == (3, 4, 12)  # K+1 heads from 16-d to the 12-d target
    loss, _ = student([x], torch.arange(4))
    assert torch.isfinite(loss)


def test_a_continuous_warm_up_longer_than_the_base_stage_is_a_config_error():
    from imbssl.config_check import plan_error

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["clustering"]["schedule"] = "continuous"
    config["simsiam"]["warmup_epochs"] = 40  # = clustering.base_epochs
    message = plan_error(config)
    assert message.startswith("config error: simsiam.warmup_epochs = 40 is not less than clustering.base_epochs = 40")
    assert "one warm-up of base, experts and student must end within the base stage" in message
    # Under continuous the experts and the student have no warm-up of their own: only the base's counts.
    config["simsiam"]["warmup_epochs"] = 10
    config["clustering"]["distill"]["warmup_epochs"] = 80  # = distill_epochs: an error per_stage only
    assert plan_error(config) is None
    config["clustering"]["schedule"] = "per_stage"
    assert "clustering.distill.warmup_epochs = 80" in plan_error(config)
