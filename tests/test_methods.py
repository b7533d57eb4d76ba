import math

import torch
import torch.nn.functional as F

from imbssl.methods import build_method
from imbssl.methods.registry import output_std
from imbssl.methods.simclr import nt_xent
from imbssl.methods.simsiam import negative_cosine
from imbssl.models import build_backbone, mlp


def test_negative_cosine_by_hand_and_stop_gradient():
    p = torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    z = torch.tensor([[1.0, 1.0], [0.0, -1.0]], requires_grad=True)
    loss = negative_cosine(p, z)
    assert math.isclose(loss.item(), -(1 / math.sqrt(2) + -1.0) / 2, rel_tol=1e-6)
    loss.backward()
    assert z.grad is None and p.grad is not None


def test_nt_xent_by_hand():
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = 0.5
    # anchor 0 (=[1,0]): positive view 2 (sim 1), negatives view 1 (sim 0) and view 3 (sim 0)
    per_anchor = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2 * math.exp(0)))
    assert math.isclose(nt_xent(z1, z2, t).item(), per_anchor, rel_tol=1e-6)  # all 4 anchors symmetric


def test_nt_xent_is_lower_for_matching_views():
    torch.manual_seed(0)
    z = torch.randn(8, 16)
    assert nt_xent(z, z + 0.01 * torch.randn(8, 16), 0.5) < nt_xent(z, torch.randn(8, 16), 0.5)


def test_simsiam_heads_have_the_paper_shapes():
    m = build_method("simsiam", build_backbone("resnet18", 64))
    dims = [l.out_features for l in m.projector if isinstance(l, torch.nn.Linear)]
    assert [m.projector[0].in_features] + dims == [512, 2048, 2048]
    assert isinstance(m.projector[-1], torch.nn.BatchNorm1d)
    assert [m.predictor[0].in_features] + [l.out_features for l in m.predictor if isinstance(l, torch.nn.Linear)] == [2048, 512, 2048]
    assert m.make_optimizer(1024).param_groups[0]["lr"] == 0.03 * 4


def test_simclr_projects_to_128_with_lars():
    m = build_method("simclr", build_backbone("resnet18", 8))
    assert m.projector[-1].out_features == 128
    opt = m.make_optimizer(512)
    assert type(opt).__name__ == "LARS" and math.isclose(opt.param_groups[0]["lr"], 0.6)


def test_cifar_resnet_stem_and_width():
    net = build_backbone("resnet18", 16)
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert isinstance(net.maxpool, torch.nn.Identity) and net.output_dim == 128
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 128)
    assert build_backbone("resnet18", 64).output_dim == 512


def test_output_std_collapse_indicator():
    assert output_std(torch.ones(16, 8)).item() == 0.0
    healthy = output_std(torch.randn(4096, 64)).item()
    assert abs(healthy - 1 / math.sqrt(64)) < 0.01


def test_mlp_last_bn():
    head = mlp([4, 8, 2], last_bn=True)
    assert isinstance(head[-1], torch.nn.BatchNorm1d) and head[-2].bias is None
