"""SwAV and power-law SwAV: Sinkhorn marginals by hand, the swapped prediction with identity heads,
normalised and frozen prototypes, a few real steps. Against lightly's SwaVLoss: test_peer_losses.py."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from imbssl.methods.registry import build_method
from imbssl.methods.msn import power_law, sinkhorn
from imbssl.models.backbones import build_backbone

torch.set_num_threads(1)


def test_power_law_sinkhorn_one_iteration_by_hand():
    # 2 images x 2 prototypes, marginals p = [2/3, 1/3] (tau 1). By hand: /sum -> [[.45,.05],[.3,.2]];
    # columns to 2/3 and 1/3 (x 8/9 and x 4/3) -> [[.4, 1/15], [4/15, 4/15]]; rows to 1/2 each, x2
    # -> [[6/7, 1/7], [1/2, 1/2]].
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4]])
    out = sinkhorn(probs, iters=1, marginals=power_law(2, tau=1.0))
    torch.testing.assert_close(out, torch.tensor([[6 / 7, 1 / 7], [0.5, 0.5]]))
    # The uniform marginals give MSN's numbers (test_msn.py): [[.75, .25], [1/3, 2/3]].
    assert not torch.allclose(out, torch.tensor([[0.75, 0.25], [1 / 3, 2 / 3]]), atol=1e-3)


def test_power_law_sinkhorn_columns_follow_the_power_law_and_rows_sum_to_one():
    probs = torch.exp(torch.randn(12, 4, generator=torch.Generator().manual_seed(0)) * 3)
    prior = power_law(4, tau=1.0)  # 1 : 1/2 : 1/3 : 1/4 = [12, 6, 4, 3] / 25
    codes = sinkhorn(probs, iters=300, marginals=prior)
    torch.testing.assert_close(codes.sum(dim=1), torch.ones(12))  # each image: total mass 1 (1/N before x N)
    torch.testing.assert_close(codes.sum(dim=0), 12 * torch.tensor([12, 6, 4, 3]) / 25, atol=1e-4, rtol=0)
    uniform = sinkhorn(probs, iters=300)
    torch.testing.assert_close(uniform.sum(dim=0), torch.full((4,), 3.0), atol=1e-4, rtol=0)


class Features(nn.Module):
    """A backbone that passes its (N, D) input through."""

    def __init__(self, dim):
        super().__init__()
        self.output_dim = dim

    def forward(self, x):
        return x


def swav_on_features(name, prototypes, **settings):
    method = build_method(name, Features(prototypes.shape[1]), proj_hidden_dim=4, proj_dim=prototypes.shape[1],
                          num_prototypes=prototypes.shape[0], tau=1.0, **settings)
    method.projector = nn.Identity()
    with torch.no_grad():
        method.prototypes.copy_(prototypes)
    return method


def unit(m):
    return m / m.norm(dim=1, keepdim=True)


def hand_swav(x1, x2, prototypes, marginals=None, epsilon=0.05, iters=3, temperature=0.1, hard=False, past=None):
    """SwAV's two-crop loss written out: unit rows, codes by Sinkhorn over exp(scores / epsilon)
    (with `past`, each view's queued unit rows stacked above the batch, their codes dropped after),
    rounded to one-hot with `hard`; view 2 predicting view 1's codes and the reverse, averaged."""
    scores = [unit(x) @ unit(prototypes).T for x in (x1, x2)]

    def codes(s, view):
        n = len(s)
        if past is not None:
            s = torch.cat([past[view] @ unit(prototypes).T, s])
        q = balanced(s)[-n:]
        return torch.nn.functional.one_hot(q.argmax(dim=1), q.shape[1]).float() if hard else q

    def balanced(s):
        q = torch.exp(s / epsilon)
        q = q / q.sum()
        n, k = q.shape
        columns = torch.full((k,), 1 / k) if marginals is None else marginals
        for _ in range(iters):
            q = q / q.sum(dim=0) * columns
            q = q / q.sum(dim=1, keepdim=True) / n
        return q * n

    cross_entropy = lambda q, s: -(q * torch.log_softmax(s / temperature, dim=1)).sum(dim=1).mean()
    loss = (cross_entropy(codes(scores[0], 0), scores[1]) + cross_entropy(codes(scores[1], 1), scores[0])) / 2
    probs = torch.softmax(scores[0] / temperature, dim=1)
    mean_probs = probs.mean(dim=0)
    per_image = -(probs * probs.log()).sum(dim=1).mean() / math.log(probs.shape[1])
    return loss, -(mean_probs * mean_probs.log()).sum(), per_image


X1 = torch.tensor([[1.0, 0.2], [0.1, 1.0], [-0.7, 0.7]])
X2 = torch.tensor([[0.8, 0.6], [0.3, 1.0], [-1.0, 0.1]])
PROTOTYPES = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, -1.0]])  # not unit: SwAV normalises them


@pytest.mark.parametrize("name", ["swav", "pswav"])
def test_swapped_prediction_with_normalised_prototypes_by_hand(name):
    method = swav_on_features(name, PROTOTYPES)
    loss, metrics = method.loss([X1, X2])
    torch.testing.assert_close(method.prototypes.norm(dim=1), torch.ones(3))  # normalised before the step
    marginals = None if name == "swav" else torch.tensor([6 / 11, 3 / 11, 2 / 11])  # 1 : 1/2 : 1/3
    expected, proto_entropy, prediction_entropy = hand_swav(X1, X2, PROTOTYPES, marginals)
    torch.testing.assert_close(loss.detach(), expected)
    torch.testing.assert_close(metrics["proto_entropy"], proto_entropy)
    torch.testing.assert_close(metrics["prediction_entropy"], prediction_entropy)
    # Each view predicting its own codes, or the other prior, would give other numbers.
    unswapped, _, _ = hand_swav(X1, X1, PROTOTYPES, marginals)
    assert abs(unswapped - expected) > 1e-3
    other_prior, _, _ = hand_swav(X1, X2, PROTOTYPES, torch.tensor([6 / 11, 3 / 11, 2 / 11]) if marginals is None
                               else None)
    assert abs(other_prior - expected) > 1e-3


@pytest.mark.parametrize("name", ["swav", "pswav"])
def test_hard_assignment_rounds_the_codes_to_their_argmax_by_hand(name):
    marginals = None if name == "swav" else torch.tensor([6 / 11, 3 / 11, 2 / 11])
    loss, _ = swav_on_features(name, PROTOTYPES, hard_assignment=True).loss([X1, X2])
    torch.testing.assert_close(loss.detach(), hand_swav(X1, X2, PROTOTYPES, marginals, hard=True)[0])
    assert abs(loss.item() - hand_swav(X1, X2, PROTOTYPES, marginals)[0].item()) > 1e-3  # not the soft codes


Y1 = torch.tensor([[0.9, -0.4], [-0.2, 1.0], [0.5, 0.5]])
Y2 = torch.tensor([[1.0, -0.1], [-0.5, 0.8], [0.2, 0.9]])


def test_queue_fills_from_its_start_joins_the_sinkhorn_once_full_and_survives_a_resume():
    method = swav_on_features("swav", PROTOTYPES, queue_size=6, queue_start_fraction=0.5)  # two batches of 3
    plain = lambda a, b: hand_swav(a, b, PROTOTYPES)[0]
    torch.testing.assert_close(method.loss([X1, X2])[0].detach(), plain(X1, X2))
    assert method.queue.filled_host == 0  # progress 0 < 0.5: not filling yet
    method.after_step(0.5)
    torch.testing.assert_close(method.loss([X1, X2])[0].detach(), plain(X1, X2))  # 3 of 6 rows after it
    torch.testing.assert_close(method.loss([Y1, Y2])[0].detach(), plain(Y1, Y2))  # full only after it
    assert method.queue.full
    torch.testing.assert_close(method.queue.past(0), torch.cat([unit(Y1), unit(X1)]))  # newest first
    past = [torch.cat([unit(Y1), unit(X1)]), torch.cat([unit(Y2), unit(X2)])]
    resumed = swav_on_features("swav", PROTOTYPES, queue_size=6, queue_start_fraction=0.5)
    resumed.load_state_dict(method.state_dict())
    expected = hand_swav(X1, X2, PROTOTYPES, past=past)[0]
    assert abs(expected.item() - plain(X1, X2).item()) > 1e-3  # the queue changes the codes
    torch.testing.assert_close(method.loss([X1, X2])[0].detach(), expected)
    torch.testing.assert_close(resumed.loss([X1, X2])[0].detach(), expected)
    torch.testing.assert_close(resumed.queue.past(1), torch.cat([unit(X2), unit(Y2)]))  # X pushed again, Y1 next


def test_prototypes_frozen_for_the_first_share_of_the_run_and_after_a_resume():
    method = swav_on_features("swav", PROTOTYPES, freeze_prototypes_fraction=0.5)
    optimizer = method.make_optimizer(batch_size=256)

    def step(progress):
        loss, _ = method.loss([X1, X2])
        optimizer.zero_grad()
        loss.backward()
        method.clip_gradients()
        frozen = method.prototypes.grad is None
        before = method.prototypes.detach().clone()
        optimizer.step()
        method.after_step(progress)
        return frozen, torch.equal(before, method.prototypes.detach())

    assert step(0.25) == (True, True)  # progress 0 < 0.5: no gradient, no update
    assert step(0.5) == (True, True)  # progress 0.25
    assert step(0.75) == (False, False)  # progress 0.5: trained
    resumed = swav_on_features("swav", PROTOTYPES, freeze_prototypes_fraction=0.5)
    resumed.load_state_dict(method.state_dict())
    loss, _ = resumed.loss([X1, X2])
    loss.backward()
    resumed.clip_gradients()
    assert resumed.prototypes.grad is not None  # the resumed run knows it is past the frozen start
    never = swav_on_features("swav", PROTOTYPES, freeze_prototypes_fraction=0.0)
    never.loss([X1, X2])[0].backward()
    never.clip_gradients()
    assert never.prototypes.grad is not None


def test_pswav_is_swav_with_the_power_law_prior():
    swav = build_method("swav", build_backbone("resnet10", 4, 16))
    pswav = build_method("pswav", build_backbone("resnet10", 4, 16))
    assert (swav.config.prior, pswav.config.prior) == ("uniform", "powerlaw")
    assert swav.marginals is None
    torch.testing.assert_close(pswav.marginals, power_law(3000, 0.25))
    cfg = swav.config
    assert (cfg.optimizer, cfg.base_lr, cfg.weight_decay, cfg.num_prototypes, cfg.proj_dim) == (
        "lars", 0.6, 1e-6, 3000, 128)
    assert (cfg.temperature, cfg.sinkhorn_epsilon, cfg.sinkhorn_iters) == (0.1, 0.05, 3)


@pytest.mark.parametrize("name", ["swav", "pswav"])
def test_swav_trains_a_few_steps(name):
    torch.manual_seed(0)
    method = build_method(name, build_backbone("resnet10", 4, 16), proj_hidden_dim=32, proj_dim=16,
                          num_prototypes=10, freeze_prototypes_fraction=0.3)
    optimizer = method.make_optimizer(batch_size=8)
    for step in range(3):
        loss, metrics = method.loss([torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)])
        assert torch.isfinite(loss) and metrics["out_std"] > 0
        assert 0 < metrics["proto_entropy"].item() <= math.log(10) + 1e-5
        optimizer.zero_grad()
        loss.backward()
        method.clip_gradients()
        optimizer.step()
        method.after_step((step + 1) / 3)


def test_an_unknown_prior_is_refused():
    # The schema and argparse's choices let only uniform and powerlaw through.
    with pytest.raises(ValueError, match="unknown prior 'zipf'"):
        build_method("swav", build_backbone("resnet10", 4, 16), prior="zipf")


@pytest.mark.parametrize("name", ["swav", "pswav"])
def test_prototype_usage_counts_each_image_at_its_nearest_prototype(name):
    """Usage: an image goes to the prototype its projection is most similar to (cosine); the prior
    expects 1/K of the images per prototype (swav) or the power law (pswav)."""
    from imbssl.methods.prototypes import expected_usage, prototype_usage

    torch.manual_seed(0)
    method = build_method(name, build_backbone("resnet10", 4, 16), proj_hidden_dim=16, proj_dim=8,
                          num_prototypes=3, tau=1.0).eval()
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    mean, std = [0.5] * 3, [0.25] * 3
    from imbssl.data.augment import normalize

    with torch.no_grad():
        z = torch.nn.functional.normalize(method.projector(method.backbone(normalize(images, mean, std))), dim=1)
        method.prototypes.copy_(torch.stack([z[1], z[0], -z[0]]))  # image a -> prototype 1, b -> 0, none -> 2
    counts = prototype_usage(method, images[[0, 0, 1]], mean, std, batch_size=2)
    assert counts.tolist() == [1, 2, 0]
    expected = expected_usage(method, 6)
    assert expected == (pytest.approx([2.0, 2.0, 2.0]) if name == "swav" else
                        pytest.approx([6 / (1 + 1 / 2 + 1 / 3) / k for k in (1, 2, 3)]))


def test_mean_normalized_entropy_is_one_when_every_prediction_is_uniform_and_zero_when_one_hot():
    from imbssl.methods.msn import mean_normalized_entropy
    assert mean_normalized_entropy(torch.full((4, 8), 1 / 8)).item() == pytest.approx(1.0)
    assert mean_normalized_entropy(torch.eye(8)[:4]).item() == pytest.approx(0.0, abs=1e-6)
    half = torch.tensor([[0.5, 0.5, 0.0, 0.0]])  # by hand: log 2 / log 4
    assert mean_normalized_entropy(half).item() == pytest.approx(0.5)
