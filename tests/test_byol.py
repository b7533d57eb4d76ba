"""BYOL: the normalised-MSE loss by hand, which branch predicts which target, a few real steps.
The EMA target is checked in test_ema.py."""

from __future__ import annotations

import math

import torch
from torch import nn

from imbssl.methods.registry import build_method
from imbssl.methods.byol import byol_loss, normalized_mse
from imbssl.models.backbones import build_backbone

torch.set_num_threads(1)


def test_byol_loss_by_hand():
    p1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p2 = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    z1 = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # target projections of view 1
    z2 = torch.tensor([[0.0, 1.0], [0.0, 2.0]])  # and of view 2
    # p1 vs z2: cosines 0 and 1 -> 2 - 2cos = 2, 0 -> mean 1.
    # p2 vs z1: cosines 1/sqrt2 twice -> mean 2 - sqrt2. BYOL sums both orders: 3 - sqrt2.
    assert math.isclose(normalized_mse(p1, z2).item(), 1.0, rel_tol=1e-6)
    assert math.isclose(byol_loss(p1, p2, z1, z2).item(), 3 - math.sqrt(2), rel_tol=1e-6)
    # Pairing each prediction with its own view's target would give (2 - sqrt2)/2 * 2 = 2 - sqrt2.
    assert not math.isclose(byol_loss(p1, p2, z2, z1).item(), 3 - math.sqrt(2), rel_tol=1e-3)


def test_byol_loss_does_not_train_the_targets():
    p = torch.tensor([[1.0, 2.0]], requires_grad=True)
    z = torch.tensor([[2.0, -1.0]], requires_grad=True)
    normalized_mse(p, z).backward()
    assert z.grad is None and p.grad is not None


class Features(nn.Module):
    """A backbone that passes its (N, D) input through."""

    def __init__(self, dim):
        super().__init__()
        self.output_dim = dim

    def forward(self, x):
        return x


def linear(rows):
    layer = nn.Linear(len(rows[0]), len(rows), bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(rows))
    return layer


def test_online_predictions_regress_the_target_projections_of_the_other_view():
    """Online: p = W P x; target: z' = T x (a target projector unlike the online one P)."""
    method = build_method("byol", Features(2), proj_hidden_dim=4, proj_dim=2, pred_hidden_dim=4)
    method.projector = linear([[1.0, 0.0], [0.0, 2.0]])  # P
    method.predictor = linear([[1.0, 1.0], [0.0, 1.0]])  # W
    method.make_target("backbone", "projector")
    method.sync_target()
    with torch.no_grad():
        method.target["projector"].weight.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))  # T swaps the axes
    x1 = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    x2 = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    loss, metrics = method.loss([x1, x2])
    # p1 = W P x1: [1, 0], [3, 2]; p2 = W P x2: [2, 2], [2, 0].
    # z'1 = T x1: [0, 1], [1, 1];  z'2 = T x2: [1, 0], [0, 2].
    # p1 vs z'2: cos 1 and 4/(2 sqrt13) -> mean (0 + 2 - 4/sqrt13) / 2
    # p2 vs z'1: cos 1/sqrt2 and 1/sqrt2 -> mean 2 - sqrt2
    expected = (2 - 4 / math.sqrt(13)) / 2 + (2 - math.sqrt(2))
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)
    # With the online projector as the target (z = P x) the loss would differ:
    online = {"z1": torch.tensor([[1.0, 0.0], [1.0, 2.0]]), "z2": torch.tensor([[0.0, 2.0], [2.0, 0.0]])}
    p1, p2 = torch.tensor([[1.0, 0.0], [3.0, 2.0]]), torch.tensor([[2.0, 2.0], [2.0, 0.0]])
    assert abs(byol_loss(p1, p2, online["z1"], online["z2"]).item() - expected) > 1e-3
    # out_std is measured on the online projection of view 1, P x1 = [1, 0], [1, 2] -> unit rows
    # [1, 0], [1/sqrt5, 2/sqrt5]; per-dimension std (n - 1): |a - b| / sqrt2.
    stds = [abs(1 - 1 / math.sqrt(5)) / math.sqrt(2), abs(0 - 2 / math.sqrt(5)) / math.sqrt(2)]
    assert math.isclose(metrics["out_std"].item(), sum(stds) / 2, rel_tol=1e-5)


def test_byol_evaluates_the_online_backbone():
    method = build_method("byol", build_backbone("resnet10", 4, 16), proj_hidden_dim=16, proj_dim=8,
                          pred_hidden_dim=8)
    assert method.eval_backbone is method.backbone
    assert method.config.ema_start == 0.99 and method.config.ema_schedule == "cosine"


def test_byol_trains_a_few_steps():
    torch.manual_seed(0)
    method = build_method("byol", build_backbone("resnet10", 4, 16), proj_hidden_dim=32, proj_dim=16,
                          pred_hidden_dim=16)
    optimizer = method.make_optimizer(batch_size=8)
    for step in range(3):
        loss, metrics = method.loss([torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)])
        assert torch.isfinite(loss) and 0 <= loss.item() <= 8
        assert metrics["out_std"] > 0
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        method.after_step((step + 1) / 3)
