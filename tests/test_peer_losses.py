"""Every loss of the pipeline against lightly's implementation (lightly 1.6.0, a test-only
dependency), on the same random head outputs: equal to 1e-5, or different by a stated convention
that the test transforms away explicitly, or different on purpose (then the difference is asserted).

The losses are compared on head outputs (pure functions of tensors), or through a method whose
backbone passes its input through and whose heads are identities, so that only the loss differs.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lightly.loss as lightly_loss  # the `test` extra pins lightly==1.6.0
from lightly.loss.swav_loss import sinkhorn as lightly_sinkhorn

from imbssl.methods.registry import build_method
from imbssl.methods.byol import byol_loss
from imbssl.methods.dino import dino_loss, updated_center
from imbssl.methods.simclr import nt_xent
from imbssl.methods.simsiam import negative_cosine
from imbssl.methods.swav import swav_codes, swav_loss
from imbssl.methods.vicreg import vicreg_loss

torch.set_num_threads(1)
TOL = dict(atol=1e-5, rtol=1e-5)
SHAPES = [(4, 8), (16, 32), (33, 5)]  # (rows, dims): tiny, square-ish, odd rows and few dims


def randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("n,d", SHAPES)
def test_nt_xent_equals_lightly_ntxent_without_memory_bank(n, d):
    z1, z2 = randn(n, d, seed=1), randn(n, d, seed=2)
    # memory_bank_size=0: negatives are the other 2N-2 views of the batch, as in nt_xent
    expected = lightly_loss.NTXentLoss(temperature=0.5, memory_bank_size=0)(z1, z2)
    torch.testing.assert_close(nt_xent(z1, z2, 0.5), expected, **TOL)


@pytest.mark.parametrize("n,d", SHAPES)
def test_simsiam_symmetric_loss_equals_lightly_negative_cosine(n, d):
    p1, p2, z1, z2 = (randn(n, d, seed=s) for s in range(4))
    criterion = lightly_loss.NegativeCosineSimilarity()
    expected = 0.5 * (criterion(p1, z2) + criterion(p2, z1))
    torch.testing.assert_close(0.5 * (negative_cosine(p1, z2) + negative_cosine(p2, z1)), expected, **TOL)


@pytest.mark.parametrize("n,d", SHAPES)
def test_byol_loss_is_lightly_negative_cosine_shifted_and_summed(n, d):
    p1, p2, z1, z2 = (randn(n, d, seed=s) for s in range(4))
    criterion = lightly_loss.NegativeCosineSimilarity()
    # BYOL's term is 2 - 2 cos = 2 + 2 * (negative cosine); BYOL sums the two view orders where
    # lightly's CIFAR-10 benchmark averages them: ours = sum of (2 + 2 * lightly's) over both orders.
    expected = (2 + 2 * criterion(p1, z2)) + (2 + 2 * criterion(p2, z1))
    torch.testing.assert_close(byol_loss(p1, p2, z1, z2), expected, **TOL)


@pytest.mark.parametrize("n,d", SHAPES)
def test_vicreg_loss_equals_lightly(n, d):
    z1, z2 = randn(n, d, seed=5) * 0.7, randn(n, d, seed=6) * 1.3 + 0.2  # stds on both sides of gamma = 1
    loss, _ = vicreg_loss(z1, z2)
    torch.testing.assert_close(loss, lightly_loss.VICRegLoss()(z1, z2), **TOL)


def prototype_scores(n, d, k, seed):
    """Cosines of unit embeddings to unit prototypes: what both SwAV implementations score."""
    z = F.normalize(randn(n, d, seed=seed), dim=1)
    prototypes = F.normalize(randn(k, d, seed=seed + 100), dim=1)
    return z @ prototypes.T


@pytest.mark.parametrize("n,d,k", [(4, 8, 3), (16, 32, 10), (33, 5, 64)])
def test_swav_codes_and_loss_equal_lightly_swav(n, d, k):
    scores1, scores2 = prototype_scores(n, d, k, seed=7), prototype_scores(n, d, k, seed=8)
    # lightly's sinkhorn takes the scores (it applies exp(scores / epsilon) itself) and does not
    # normalise prototypes (its SwaVPrototypes does, outside the loss): unit inputs on both sides.
    codes1 = swav_codes(scores1, epsilon=0.05, iters=3)
    torch.testing.assert_close(codes1, lightly_sinkhorn(scores1, iterations=3, epsilon=0.05), **TOL)
    codes2 = swav_codes(scores2, epsilon=0.05, iters=3)
    criterion = lightly_loss.SwaVLoss(temperature=0.1, sinkhorn_iterations=3, sinkhorn_epsilon=0.05)
    expected = criterion([scores1, scores2], [])  # two high-resolution crops, no low-resolution ones
    torch.testing.assert_close(swav_loss(scores1, scores2, codes1, codes2, 0.1), expected.squeeze(0), **TOL)


@pytest.mark.parametrize("n,k", [(4, 3), (16, 10), (33, 64)])
def test_dino_loss_and_center_update_equal_lightly_with_the_same_center(n, k):
    student = [randn(n, k, seed=9), randn(n, k, seed=10)]
    teacher = [randn(n, k, seed=11) * 2, randn(n, k, seed=12) * 2]
    center = randn(k, seed=13) * 0.5
    criterion = lightly_loss.DINOLoss(output_dim=k, warmup_teacher_temp=0.04, teacher_temp=0.07,
                                      student_temp=0.1, center_momentum=0.9)
    with torch.no_grad():
        criterion.center.copy_(center.view(1, 1, k))
    # One step at one teacher temperature: lightly's per-epoch linspace schedule is not ours (per
    # step, reaching the final value at the end of the warm-up; test_dino.py checks it by hand).
    expected = criterion(teacher, student, teacher_temp=0.055)
    torch.testing.assert_close(dino_loss(student, teacher, center, 0.1, 0.055), expected, **TOL)
    # lightly updated its center after the loss, as DINO does: the mean over views and images.
    torch.testing.assert_close(updated_center(center, torch.cat(teacher), 0.9), criterion.center.view(k), **TOL)


class Features(nn.Module):
    """A backbone that passes its (N, D) input through."""

    def __init__(self, dim):
        super().__init__()
        self.output_dim = dim

    def forward(self, x):
        return x


def msn_on_features(name, dim, k, **settings):
    """MSN/PMSN with identity encoders: anchor z = views[0], target z = views[1]."""
    method = build_method(name, Features(dim), proj_hidden_dim=4, proj_dim=dim, num_prototypes=k, **settings)
    method.projector = nn.Identity()
    method.target = nn.ModuleDict({"backbone": Features(dim), "projector": nn.Identity()})
    return method


def msn_inputs(n, d, k, seed):
    return randn(n, d, seed=seed), randn(n, d, seed=seed + 1), randn(k, d, seed=seed + 2)


MSN_SETTINGS = dict(anchor_temperature=0.1, target_temperature=0.025, sinkhorn_iters=3, prior_weight=0.7, tau=0.25)


def lightly_msn(criterion_cls, anchors, targets, prototypes, **extra):
    # lightly sharpens the target softmax at 0.1 by the power 1 / 0.25, i.e. a softmax at 0.025:
    # our target_temperature. Its regularization_weight is our prior_weight.
    criterion = criterion_cls(temperature=0.1, sinkhorn_iterations=3, regularization_weight=0.7, **extra)
    return criterion(anchors, targets, prototypes, target_sharpen_temperature=0.25)


@pytest.mark.parametrize("n,d,k", [(4, 8, 3), (16, 32, 10), (33, 5, 64)])
def test_msn_loss_equals_lightly_msn(n, d, k):
    anchors, targets, prototypes = msn_inputs(n, d, k, seed=20)
    method = msn_on_features("msn", d, k, **MSN_SETTINGS)  # kl_direction: mean_to_prior (default)
    with torch.no_grad():
        method.prototypes.copy_(prototypes)
    loss, _ = method.loss([anchors, targets])
    # lightly's MSN regulariser log K - H(mean) is KL(mean || uniform): our mean_to_prior term.
    torch.testing.assert_close(loss, lightly_msn(lightly_loss.MSNLoss, anchors, targets, prototypes), **TOL)


@pytest.mark.filterwarnings("ignore:To copy construct from a tensor")  # inside lightly's PMSNLoss
@pytest.mark.parametrize("n,d,k", [(4, 8, 3), (16, 32, 10), (33, 5, 64)])
def test_pmsn_equals_lightly_in_prior_to_mean_and_differs_in_mean_to_prior(n, d, k):
    anchors, targets, prototypes = msn_inputs(n, d, k, seed=30)
    expected = lightly_msn(lightly_loss.PMSNLoss, anchors, targets, prototypes, power_law_exponent=0.25)
    losses = {}
    for direction in ("prior_to_mean", "mean_to_prior"):
        method = msn_on_features("pmsn", d, k, kl_direction=direction, **MSN_SETTINGS)
        with torch.no_grad():
            method.prototypes.copy_(prototypes)
        losses[direction], metrics = method.loss([anchors, targets])
        assert metrics["prior_term"] > 1e-4  # the prior term matters on these inputs
    # lightly's PMSNLoss computes F.kl_div(log mean, power law) = KL(power law || mean): our prior_to_mean.
    torch.testing.assert_close(losses["prior_to_mean"], expected, **TOL)
    # Our default, KL(mean || power law) as the PMSN paper writes it, differs on purpose.
    assert abs(losses["mean_to_prior"] - expected) > 1e-3
