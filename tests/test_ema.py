"""The EMA target shared by MSN, BYOL and DINO (methods/ema.py): it moves by exactly (1 - m)
towards the online weights after each step, on BYOL's cosine schedule, is never trained, starts as
a copy of weights loaded after construction and survives a resume. MSN's own: test_msn.py."""

from __future__ import annotations

import math

import pytest
import torch

from imbssl.methods.registry import build_method
from imbssl.models.backbones import build_backbone

torch.set_num_threads(1)

SMALL = {"byol": dict(proj_hidden_dim=16, proj_dim=8, pred_hidden_dim=8),
         "dino": dict(proj_hidden_dim=32, bottleneck_dim=16, num_prototypes=10)}
ONLINE = {"byol": ("backbone", "projector"), "dino": ("backbone", "head")}


def small(name, **overrides):
    return build_method(name, build_backbone("resnet10", 4, 16), **{**SMALL[name], **overrides})


@pytest.mark.parametrize("name", ["byol", "dino"])
def test_target_moves_by_one_minus_momentum_towards_the_online_weights(name):
    torch.manual_seed(0)
    method = small(name, ema_start=0.9)
    optimizer = method.make_optimizer(batch_size=8)
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not any(id(p) in trained for p in method.target.parameters())
    assert all(not p.requires_grad for p in method.target.parameters())
    assert tuple(method.target) == ONLINE[name]
    # cosine schedule from 0.9: m = 1 - 0.1 (cos(pi p) + 1) / 2 = 0.925 at p = 1/3, 0.975 at 2/3, 1 at 1
    for step, momentum in enumerate([0.925, 0.975, 1.0]):
        loss, _ = method.loss([torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)])
        optimizer.zero_grad()
        loss.backward()
        method.clip_gradients()
        optimizer.step()
        before = [p.detach().clone() for p in method.target.parameters()]
        method.after_step((step + 1) / 3)
        online = [p for part in ONLINE[name] for p in getattr(method, part).parameters()]
        moved = 0
        for old, new, o in zip(before, method.target.parameters(), online, strict=True):
            torch.testing.assert_close(new, momentum * old + (1 - momentum) * o.detach())
            moved += not torch.equal(new, old)
        assert (moved > 0) == (momentum < 1)  # at momentum 1 (the end of the run) the target stops


@pytest.mark.parametrize("name", ["byol", "dino"])
def test_target_starts_as_a_copy_and_survives_a_resume(name):
    torch.manual_seed(0)
    method = small(name)
    first = lambda module: next(module.parameters())
    with torch.no_grad():  # weights loaded after construction (pretrain --init) reach the target
        first(method.backbone).add_(1.0)
    method.loss([torch.randn(4, 3, 16, 16)] * 2)
    torch.testing.assert_close(first(method.target["backbone"]), first(method.backbone))
    with torch.no_grad():
        first(method.target["backbone"]).mul_(0.5)  # a trained target differs from the online encoder
    resumed = small(name)
    resumed.load_state_dict(method.state_dict())
    resumed.loss([torch.randn(4, 3, 16, 16)] * 2)  # must not re-copy the online encoder over it
    torch.testing.assert_close(first(resumed.target["backbone"]), first(method.target["backbone"]))
    assert not torch.allclose(first(resumed.target["backbone"]), first(resumed.backbone))


def test_byol_momentum_schedule_by_hand():
    from imbssl.methods.ema import ema_momentum

    # BYOL: tau = 1 - (1 - 0.99)(cos(pi k / K) + 1) / 2
    assert ema_momentum(0.0, 0.99, "cosine") == pytest.approx(0.99)
    assert ema_momentum(0.5, 0.99, "cosine") == pytest.approx(0.995)
    assert ema_momentum(0.25, 0.99, "cosine") == pytest.approx(1 - 0.01 * (math.sqrt(0.5) + 1) / 2)
