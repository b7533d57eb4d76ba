import math

import pytest
import torch

from imbssl.core.optim import LARS, build_optimizer, cosine_lr


def test_lars_step_matches_a_by_hand_update():
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))  # ||w|| = 5
    b = torch.nn.Parameter(torch.tensor([1.0]))
    w.grad = torch.tensor([0.6, 0.8])
    b.grad = torch.tensor([0.5])
    lr, wd, eta, mom = 0.1, 0.01, 0.001, 0.9
    opt = LARS([{"params": [w]}, {"params": [b], "lars_exclude": True, "weight_decay": 0.0}],
               lr=lr, momentum=mom, weight_decay=wd, eta=eta)
    opt.step()
    # by hand: d = g + wd*w = [0.63, 0.84], ||d|| = 1.05; trust = eta*5/1.05
    d = torch.tensor([0.63, 0.84])
    trust = eta * 5.0 / 1.05
    expected_w = torch.tensor([3.0, 4.0]) - lr * trust * d
    assert torch.allclose(w.detach(), expected_w, atol=1e-7)
    assert torch.allclose(b.detach(), torch.tensor([1.0 - lr * 0.5]))  # plain SGD, no decay
    # second step: momentum buffer = mom * buf + new scaled grad
    w.grad = torch.tensor([0.6, 0.8])
    before = w.detach().clone()
    d2 = torch.tensor([0.6, 0.8]) + wd * before
    trust2 = eta * before.norm() / d2.norm()
    buf = mom * (trust * d) + trust2 * d2
    opt.step()
    assert torch.allclose(w.detach(), before - lr * buf, atol=1e-7)


def test_lars_excludes_biases_and_norm_layers():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    opt = build_optimizer(net, "lars", lr=0.1, weight_decay=1e-6)
    excluded = [g for g in opt.param_groups if g["lars_exclude"]][0]["params"]
    assert {p.ndim for p in excluded} == {1} and len(excluded) == 3  # linear bias, BN weight + bias


def test_cosine_schedule_by_hand():
    assert cosine_lr(0, 100, 1.0) == 1.0
    assert math.isclose(cosine_lr(50, 100, 1.0), 0.5)
    assert cosine_lr(100, 100, 1.0) == 0.0
    assert math.isclose(cosine_lr(0, 100, 1.0, warmup_steps=10), 0.1)
    assert math.isclose(cosine_lr(10, 110, 2.0, warmup_steps=10), 2.0)


def test_unknown_optimizer():
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer(torch.nn.Linear(2, 2), "rmsprop", 0.1, 0.0)


def test_param_groups_split_decay_and_fixed_lr():
    from imbssl.core.optim import param_groups

    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    extra = net[0].weight  # a 2-D weight kept out of decay on request (as MSN's prototypes)
    fixed = list(net[2].parameters())  # a head on a constant lr (as SimSiam's predictor)
    groups = param_groups(net, 0.5, exclude_1d=True, no_decay=[extra], fixed_lr=fixed)
    by_kind = {(g["weight_decay"], g["fixed_lr"]): {id(p) for p in g["params"]} for g in groups}
    assert by_kind == {
        (0.0, False): {id(extra), id(net[0].bias), id(net[1].weight), id(net[1].bias)},
        (0.5, True): {id(net[2].weight)},
        (0.0, True): {id(net[2].bias)},
    }
    # SGD's rule (exclude_1d False): biases and norm parameters are decayed too.
    sgd = param_groups(net, 0.5, exclude_1d=False)
    assert len(sgd) == 1 and sgd[0]["weight_decay"] == 0.5 and len(sgd[0]["params"]) == 6


def test_set_lr_leaves_fixed_groups_at_their_lr():
    from imbssl.core.optim import set_lr

    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    optimizer = build_optimizer(net, "sgd", lr=0.2, weight_decay=0.0, fixed_lr=list(net[1].parameters()))
    set_lr(optimizer, 0.05)
    lrs = {g["fixed_lr"]: g["lr"] for g in optimizer.param_groups}
    assert lrs == {False: 0.05, True: 0.2}
