import math
from copy import deepcopy

import pytest
import torch
from torch import nn

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


def test_lars_clip_caps_the_trust_ratio_at_the_global_lr_by_hand():
    """solo-learn's clip_lars_lr (its CIFAR recipes: eta 0.02): a tensor's step is
    lr x min(trust / lr, 1) x d, i.e. never above the global learning rate."""
    lr, wd, eta = 0.5, 0.0, 0.02
    big = torch.nn.Parameter(torch.tensor([300.0, 400.0]))  # ||w|| = 500: trust 0.02 x 500 / 1 = 10 > lr
    small = torch.nn.Parameter(torch.tensor([3.0, 4.0]))  # ||w|| = 5: trust 0.1 < lr
    for p in (big, small):
        p.grad = torch.tensor([0.6, 0.8])  # ||g|| = 1
    opt = LARS([{"params": [big]}, {"params": [small]}], lr=lr, momentum=0.9, weight_decay=wd, eta=eta, clip_lr=True)
    opt.step()
    g = torch.tensor([0.6, 0.8])
    assert torch.allclose(big.detach(), torch.tensor([300.0, 400.0]) - lr * 1.0 * g)  # capped: min(10 / 0.5, 1) = 1
    assert torch.allclose(small.detach(), torch.tensor([3.0, 4.0]) - lr * (0.1 / lr) * g)  # 0.1 / 0.5 = 0.2
    # unclipped, the big tensor would step lr x 10 x g
    unclipped = torch.nn.Parameter(torch.tensor([300.0, 400.0]))
    unclipped.grad = g.clone()
    LARS([unclipped], lr=lr, eta=eta).step()
    assert torch.allclose(unclipped.detach(), torch.tensor([300.0, 400.0]) - lr * 10.0 * g)


def test_each_method_builds_the_lars_of_its_recipe():
    from imbssl.methods.registry import get_method
    from imbssl.models.backbones import build_backbone

    expected = {"simclr": (0.001, False), "byol": (0.02, True), "vicreg": (0.02, True), "swav": (0.02, True),
                "pswav": (0.02, True), "dino": (0.02, True)}
    for name, (eta, clip) in expected.items():
        method_class, config_class = get_method(name)
        method = method_class(build_backbone("resnet10", width=4), config_class())
        optimizer = method.make_optimizer(batch_size=256)
        assert isinstance(optimizer, LARS), name
        assert {(g["eta"], g["clip_lr"]) for g in optimizer.param_groups} == {(eta, clip)}, name


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


def reference_lars_step(named: dict[str, torch.Tensor], grads: dict[str, torch.Tensor], lr: float, weight_decay: float,
                        excluded: set[str], trust_coef: float = 1e-3) -> None:
    """One step of PatrickHua/SimSiam's LARS_simclr as it ran (optimizers/lars_simclr.py): the
    velocity is read as `state.get('velocity', 0)` and never stored, so every step starts from 0:
    update = lr * trust * (g + wd * w) for adapted weights, lr * g for the excluded biases and
    BatchNorm parameters (no weight decay, trust 1). Written out by hand, in place."""
    for name, w in named.items():
        g = grads[name].clone()
        trust = 1.0
        if name not in excluded:
            g += weight_decay * w
            w_norm, g_norm = torch.norm(w, p=2), torch.norm(g, p=2)
            trust = trust_coef * w_norm / g_norm if w_norm > 0 and g_norm > 0 else 1.0
        w -= lr * trust * g


def test_lars_with_momentum_0_steps_exactly_as_the_reference_code_ran():
    """config/paper-as-run.yaml's `simclr.momentum: 0` is the reference's LARS with its bug: two
    steps with different gradients match the reference step by hand, biases and BatchNorm included;
    with our default momentum 0.9 the second step differs (the test can tell)."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    excluded = {"0.bias", "1.weight", "1.bias", "3.bias"}  # the reference's exclude group
    grads = [{name: torch.randn_like(p) for name, p in module.named_parameters()} for _ in range(2)]
    lr, weight_decay = 0.5, 1e-2

    def run(momentum: float) -> dict[str, torch.Tensor]:
        copy = deepcopy(module)
        optimizer = build_optimizer(copy, "lars", lr, weight_decay, momentum)
        for step in grads:
            for name, p in copy.named_parameters():
                p.grad = step[name].clone()
            optimizer.step()
        return {name: p.detach().clone() for name, p in copy.named_parameters()}

    expected = {name: p.detach().clone() for name, p in module.named_parameters()}
    for step in grads:
        reference_lars_step(expected, step, lr, weight_decay, excluded)
    as_ran = run(momentum=0.0)
    for name in expected:
        torch.testing.assert_close(as_ran[name], expected[name], rtol=1e-6, atol=1e-7, msg=name)
    with_momentum = run(momentum=0.9)
    assert not torch.allclose(with_momentum["3.weight"], expected["3.weight"], atol=1e-6)
