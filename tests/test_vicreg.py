"""VICReg: its three terms and their weighted sum by hand, on three rows; a few real steps.
Against lightly's VICRegLoss: test_peer_losses.py; global-batch statistics: test_distributed.py."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from imbssl.methods.registry import build_method
from imbssl.methods.vicreg import covariance_term, invariance_term, variance_term, vicreg_loss
from imbssl.models.backbones import build_backbone

torch.set_num_threads(1)

Z1 = torch.tensor([[0.0, 0.0], [0.5, 1.0], [1.0, 0.5]])
Z2 = torch.tensor([[1.0, 0.0], [0.5, 1.0], [1.0, 0.5]])  # Z1 with its first entry moved by 1
# Z1: centred rows [-.5, -.5], [0, .5], [.5, 0]: variances (n - 1 = 2) 0.25 and 0.25, covariance 0.125.
# Z2: centred [1/6, -.5], [-1/3, .5], [1/6, 0]: variances 1/12 and 0.25, covariance -0.125.
INVARIANCE = 1 / 6  # one squared difference of 1 over 6 entries
VARIANCE = ((1 - math.sqrt(0.25 + 1e-4))  # Z1: both dimensions alike
            + ((1 - math.sqrt(1 / 12 + 1e-4)) + (1 - math.sqrt(0.25 + 1e-4))) / 2) / 2  # Z2, then the mean of both
COVARIANCE = 2 * 0.125 ** 2 / 2 + 2 * (-0.125) ** 2 / 2  # off-diagonal squares / D, for Z1 plus Z2


def test_the_three_terms_by_hand():
    assert math.isclose(invariance_term(Z1, Z2).item(), INVARIANCE, rel_tol=1e-6)
    assert math.isclose(((variance_term(Z1) + variance_term(Z2)) / 2).item(), VARIANCE, rel_tol=1e-6)
    assert math.isclose((covariance_term(Z1) + covariance_term(Z2)).item(), COVARIANCE, rel_tol=1e-6)
    # The variance is the unbiased one (VICReg's torch.var): the biased one (n = 3) gives another hinge.
    biased = 1 - math.sqrt(0.25 * 2 / 3 + 1e-4)
    assert abs(variance_term(Z1).item() - biased) > 1e-2
    # A std at or above gamma costs nothing: the hinge, not a pull towards 1.
    assert variance_term(Z1 * 10).item() == 0.0


@pytest.mark.parametrize("weights", [(25.0, 25.0, 1.0), (1.0, 2.0, 3.0)])
def test_loss_is_the_weighted_sum_of_the_terms(weights):
    sim, var, cov = weights
    loss, terms = vicreg_loss(Z1, Z2, sim, var, cov)
    assert math.isclose(loss.item(), sim * INVARIANCE + var * VARIANCE + cov * COVARIANCE, rel_tol=1e-6)
    assert terms["invariance"].item() == pytest.approx(INVARIANCE)
    assert terms["variance"].item() == pytest.approx(VARIANCE)
    assert terms["covariance"].item() == pytest.approx(COVARIANCE)


class Features(nn.Module):
    """A backbone that passes its (N, D) input through."""

    def __init__(self, dim):
        super().__init__()
        self.output_dim = dim

    def forward(self, x):
        return x


def test_method_takes_the_loss_on_the_expander_outputs_of_both_views():
    method = build_method("vicreg", Features(2), proj_hidden_dim=4, proj_dim=2)
    method.projector = nn.Identity()
    loss, metrics = method.loss([Z1, Z2])
    assert math.isclose(loss.item(), 25 * INVARIANCE + 25 * VARIANCE + COVARIANCE, rel_tol=1e-6)
    assert metrics["out_std"] > 0
    # Rows paired with another image's second view (rows shifted) would change the invariance term.
    shifted, _ = method.loss([Z1, Z2.roll(1, dims=0)])
    assert abs(shifted.item() - loss.item()) > 1e-2


def test_vicreg_heads_and_defaults():
    method = build_method("vicreg", build_backbone("resnet18", 8))
    dims = [layer.out_features for layer in method.projector if isinstance(layer, nn.Linear)]
    assert [method.projector[0].in_features] + dims == [64, 2048, 2048, 2048]
    cfg = method.config
    assert (cfg.optimizer, cfg.base_lr, cfg.weight_decay) == ("lars", 0.3, 1e-4)
    assert (cfg.sim_weight, cfg.var_weight, cfg.cov_weight) == (25.0, 25.0, 1.0)


def test_vicreg_trains_a_few_steps():
    torch.manual_seed(0)
    method = build_method("vicreg", build_backbone("resnet10", 4, 16), proj_hidden_dim=32, proj_dim=16)
    optimizer = method.make_optimizer(batch_size=8)
    for step in range(3):
        loss, metrics = method.loss([torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)])
        assert torch.isfinite(loss) and metrics["out_std"] > 0
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        method.after_step((step + 1) / 3)
