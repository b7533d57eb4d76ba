"""DINO: centering, teacher temperature, the cross-view loss with identity heads, the weight-normalised
last layer and its frozen start, a few real steps. Against lightly's DINOLoss: test_peer_losses.py;
the EMA teacher: test_ema.py."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from imbssl.methods.registry import build_method
from imbssl.methods.dino import teacher_temperature, updated_center
from imbssl.models.heads import WeightNormLinear
from imbssl.models.backbones import build_backbone

torch.set_num_threads(1)


def test_center_update_by_hand():
    teacher = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])  # 2 views x 2 images
    # mean over the 4 rows [4, 5]; 0.9 * [1, 0] + 0.1 * [4, 5] = [1.3, 0.5]
    torch.testing.assert_close(updated_center(torch.tensor([1.0, 0.0]), teacher, 0.9), torch.tensor([1.3, 0.5]))


def test_teacher_temperature_warms_up_linearly_then_stays():
    assert teacher_temperature(0.0, 0.04, 0.07, 0.1) == pytest.approx(0.04)
    assert teacher_temperature(0.05, 0.04, 0.07, 0.1) == pytest.approx(0.055)
    assert teacher_temperature(0.1, 0.04, 0.07, 0.1) == pytest.approx(0.07)
    assert teacher_temperature(0.6, 0.04, 0.07, 0.1) == pytest.approx(0.07)
    assert teacher_temperature(0.0, 0.04, 0.07, 0.0) == pytest.approx(0.07)  # no warm-up


def test_weight_normalised_layer_by_hand():
    layer = WeightNormLinear(2, 2, learn_norm=False)
    with torch.no_grad():
        layer.direction.copy_(torch.tensor([[3.0, 4.0], [0.0, 2.0]]))  # unit rows [.6, .8], [0, 1]
    x = torch.tensor([[1.0, 1.0]])
    torch.testing.assert_close(layer(x), torch.tensor([[1.4, 1.0]]))
    assert not layer.norm.requires_grad
    learned = WeightNormLinear(2, 2, learn_norm=True)
    with torch.no_grad():
        learned.direction.copy_(layer.direction)
        learned.norm.copy_(torch.tensor([[2.0], [1.0]]))
    torch.testing.assert_close(learned(x), torch.tensor([[2.8, 1.0]]))
    assert learned.norm.requires_grad


class Features(nn.Module):
    """A backbone that passes its (N, D) input through."""

    def __init__(self, dim):
        super().__init__()
        self.output_dim = dim

    def forward(self, x):
        return x


class IdentityHead(nn.Module):
    """A DINO head whose embedding and last layer pass their input through."""

    def __init__(self):
        super().__init__()
        self.last_layer = nn.Identity()

    def embed(self, x):
        return x

    def forward(self, x):
        return x


def dino_on_features(**settings):
    """Student = identity; teacher = x @ T^T with T = [[0, 2], [1, 0]] (unlike the student)."""
    method = build_method("dino", Features(2), proj_hidden_dim=4, bottleneck_dim=2, num_prototypes=2, **settings)
    method.head = IdentityHead()
    method.make_target("backbone", "head")
    method.sync_target()
    teacher_head = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        teacher_head.weight.copy_(torch.tensor([[0.0, 2.0], [1.0, 0.0]]))
    method.target["head"] = teacher_head
    return method


def hand_dino(student, teacher, center, student_temperature, teacher_temperature, pairs=((0, 1), (1, 0))):
    """Cross-entropy of softmax((teacher_a - center) / t_T) against log softmax(student_b / t_S)."""
    total = 0.0
    for a, b in pairs:
        q = torch.softmax((teacher[a] - center) / teacher_temperature, dim=1)
        log_p = torch.log_softmax(student[b] / student_temperature, dim=1)
        total = total - (q * log_p).sum(dim=1).mean()
    return total / len(pairs)


X1 = torch.tensor([[1.0, 0.5], [0.2, 1.0], [-0.5, 0.3]])
X2 = torch.tensor([[0.8, 0.7], [0.0, 1.0], [-1.0, 0.2]])
TEACHER = [torch.tensor([[1.0, 1.0], [2.0, 0.2], [0.6, -0.5]]),  # X1 @ T^T: [2 x_2, x_1]
           torch.tensor([[1.4, 0.8], [2.0, 0.0], [0.4, -1.0]])]


def test_loss_pairs_the_teacher_of_one_view_with_the_student_of_the_other():
    method = dino_on_features(warmup_teacher_temp_fraction=0.1)
    center = torch.tensor([0.3, -0.2])
    with torch.no_grad():
        method.center.copy_(center)
    method.progress.set(0.05)  # halfway through the warm-up: teacher temperature 0.055
    loss, metrics = method.loss([X1, X2])
    expected = hand_dino([X1, X2], TEACHER, center, 0.1, 0.055)
    torch.testing.assert_close(loss.detach(), expected)
    # The center moved after the loss: 0.9 * center + 0.1 * mean of the 6 teacher rows [1.233.., 0.0833..].
    torch.testing.assert_close(method.center, 0.9 * center + 0.1 * torch.cat(TEACHER).mean(dim=0))
    # proto_entropy: entropy of the mean student distribution of view 1.
    mean = torch.softmax(X1 / 0.1, dim=1).mean(dim=0)
    torch.testing.assert_close(metrics["proto_entropy"], -(mean * mean.log()).sum())
    # prediction_entropy: the mean per-image entropy of the student's view-1 distributions over log K.
    probs = torch.softmax(X1 / 0.1, dim=1)
    torch.testing.assert_close(metrics["prediction_entropy"], -(probs * probs.log()).sum(dim=1).mean() / math.log(2))
    # Each of these would give another loss: same-view pairs, no centering, the final temperature,
    # the student as its own teacher.
    others = [hand_dino([X1, X2], TEACHER, center, 0.1, 0.055, pairs=((0, 0), (1, 1))),
              hand_dino([X1, X2], TEACHER, torch.zeros(2), 0.1, 0.055),
              hand_dino([X1, X2], TEACHER, center, 0.1, 0.07),
              hand_dino([X1, X2], [X1, X2], center, 0.1, 0.055)]
    assert all(abs(other - expected) > 1e-3 for other in others)


def test_last_layer_frozen_for_the_first_share_of_the_run():
    torch.manual_seed(0)
    method = build_method("dino", Features(4), proj_hidden_dim=8, bottleneck_dim=4, num_prototypes=6,
                          freeze_last_layer_fraction=0.5)
    views = [torch.randn(5, 4), torch.randn(5, 4)]

    def last_layer_grad():
        method.zero_grad(set_to_none=True)
        method.loss(views)[0].backward()
        method.clip_gradients()
        assert method.head.mlp[0].weight.grad is not None  # the rest of the head trains throughout
        return method.head.last_layer.direction.grad

    assert last_layer_grad() is None
    method.after_step(0.25)
    assert last_layer_grad() is None
    method.after_step(0.5)
    assert last_layer_grad() is not None
    assert not method.head.last_layer.norm.requires_grad  # norm_last_layer: the norms stay 1


def test_dino_defaults_and_evaluated_backbone():
    method = build_method("dino", build_backbone("resnet18", 8))
    cfg = method.config
    assert (cfg.optimizer, cfg.base_lr, cfg.weight_decay) == ("lars", 0.3, 1e-6)
    assert (cfg.num_prototypes, cfg.bottleneck_dim, cfg.proj_hidden_dim) == (4096, 256, 2048)
    assert (cfg.student_temperature, cfg.warmup_teacher_temperature, cfg.teacher_temperature) == (0.1, 0.04, 0.07)
    assert (cfg.center_momentum, cfg.ema_start, cfg.ema_schedule) == (0.9, 0.9995, "cosine")
    assert method.head.last_layer(torch.randn(3, 256)).shape == (3, 4096)
    assert method.eval_backbone is method.target["backbone"]  # DINO evaluates the teacher


def test_dino_trains_a_few_steps():
    # DINO's own head widths: its std-0.02 initialisation makes a narrow head's bottleneck output tiny,
    # and the L2 normalisation then magnifies the bias gradients until the embeddings collapse in
    # one step (out_std 0 from the second step with hidden 64, bottleneck 32).
    torch.manual_seed(0)
    method = build_method("dino", build_backbone("resnet10", 4, 16), proj_hidden_dim=2048, bottleneck_dim=256,
                          num_prototypes=16)
    optimizer = method.make_optimizer(batch_size=8)
    for step in range(3):
        loss, metrics = method.loss([torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)])
        assert torch.isfinite(loss) and metrics["out_std"] > 0.01
        assert 0 < metrics["proto_entropy"].item() <= math.log(16) + 1e-5
        optimizer.zero_grad()
        loss.backward()
        method.clip_gradients()
        optimizer.step()
        method.after_step((step + 1) / 3)
