import math

import torch
import torch.nn.functional as F

from imbssl.methods.registry import build_method
from imbssl.methods.registry import output_std
from imbssl.methods.simclr import nt_xent
from imbssl.methods.simsiam import negative_cosine
from imbssl.models.backbones import build_backbone
from imbssl.models.heads import MSNProjector, SimCLRProjector, SimSiamPredictor, SimSiamProjector


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


def test_simclr_has_the_reference_head_and_lars():
    """PatrickHua/SimSiam's projection_MLP: backbone -> hidden (= 512) -> 256, no BatchNorm."""
    m = build_method("simclr", build_backbone("resnet18", 64))
    assert layer_kinds(m.projector) == ["Linear", "ReLU", "Linear"]
    assert [m.projector[0].in_features, m.projector[0].out_features, m.projector[-1].out_features] == [512, 512, 256]
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


def layer_kinds(head):
    return [type(layer).__name__ for layer in head]


def test_heads_have_the_layers_their_papers_give():
    # SimSiam's CIFAR projector ends in BN (its Linear then has no bias); its predictor does not.
    assert layer_kinds(SimSiamProjector(4, 8)) == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    assert SimSiamProjector(4, 8)[3].bias is None and SimSiamProjector(4, 8)[0].bias is None
    assert layer_kinds(SimSiamPredictor(8, 2)) == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert SimSiamPredictor(8, 2)[3].bias is not None and SimSiamPredictor(8, 2)[3].out_features == 8
    # SimCLR: the reference's projection_MLP (no BatchNorm, biases kept); BN only when asked.
    assert layer_kinds(SimCLRProjector(4, 8, 2)) == ["Linear", "ReLU", "Linear"]
    assert all(layer.bias is not None for layer in SimCLRProjector(4, 8, 2) if isinstance(layer, torch.nn.Linear))
    assert layer_kinds(SimCLRProjector(4, 8, 2, batch_norm=True)) == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert [layer.out_features for layer in SimCLRProjector(512, 512, 256) if isinstance(layer, torch.nn.Linear)] == \
        [512, 256]
    msn = MSNProjector(4, 8, 2)
    assert layer_kinds(msn) == ["Linear", "BatchNorm1d", "ReLU"] * 2 + ["Linear"]
    assert [layer.out_features for layer in msn if isinstance(layer, torch.nn.Linear)] == [8, 8, 2]


class Features(torch.nn.Module):
    """A backbone that passes its (N, D) input through: method heads and losses checked by hand."""

    def __init__(self, dim):
        super().__init__()
        self.output_dim = dim

    def forward(self, x):
        return x


def test_simsiam_loss_pairs_each_prediction_with_the_other_views_projection():
    method = build_method("simsiam", Features(2), proj_dim=2, pred_hidden_dim=2)
    method.projector = torch.nn.Identity()  # z = x
    method.predictor = torch.nn.Linear(2, 2, bias=False)  # p = W z
    with torch.no_grad():
        method.predictor.weight.copy_(torch.tensor([[2.0, 1.0], [0.0, 1.0]]))
    x1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    x2 = torch.tensor([[1.0, 1.0], [1.0, -1.0]], requires_grad=True)
    loss, metrics = method.loss([x1, x2])
    # Row 0: p1 = [2, 0], p2 = [3, 1]; cos(p1, z2) = 1/sqrt2, cos(p2, z1) = 3/sqrt10.
    # Row 1: p1 = [1, 1], p2 = [1, -1]; cos(p1, z2) = 0, cos(p2, z1) = -1/sqrt2.
    expected = 0.5 * (-(1 / math.sqrt(2) + 0) / 2 - (3 / math.sqrt(10) - 1 / math.sqrt(2)) / 2)
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)
    # Pairing p1 with z1 (the same view) would give 0.5 * (-(1 + 1/sqrt2)/2 - (4/sqrt20 + 1)/2).
    assert not math.isclose(loss.item(), 0.5 * (-(1 + 1 / math.sqrt(2)) / 2 - (4 / math.sqrt(20) + 1) / 2),
                            rel_tol=1e-3)
    # z1's rows are [1, 0] and [0, 1]: per-dimension std sqrt(1/2), so out_std = 1/sqrt2.
    assert math.isclose(metrics["out_std"].item(), 1 / math.sqrt(2), rel_tol=1e-6)
    # Stop-gradient on the targets: the input gradients are those of the loss with z detached.
    loss.backward()
    a1, a2 = x1.detach().clone().requires_grad_(), x2.detach().clone().requires_grad_()
    w = method.predictor.weight.detach()
    hand = 0.5 * (-F.cosine_similarity(a1 @ w.T, a2.detach()).mean()
                  - F.cosine_similarity(a2 @ w.T, a1.detach()).mean())
    hand.backward()
    torch.testing.assert_close(x1.grad, a1.grad)
    torch.testing.assert_close(x2.grad, a2.grad)


def test_simclr_loss_takes_the_other_view_as_the_positive():
    method = build_method("simclr", Features(2), proj_hidden_dim=2, proj_dim=2, temperature=0.5)
    method.projector = torch.nn.Identity()
    x1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    x2 = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # each image's second view points where the other's first does
    loss, _ = method.loss([x1, x2])
    t = 0.5
    # Anchor x1[0] = [1, 0]: positive x2[0] (sim 0); negatives x1[1] (0) and x2[1] (1). Same for all 4.
    per_anchor = -math.log(math.exp(0) / (math.exp(0) + math.exp(0) + math.exp(1 / t)))
    assert math.isclose(loss.item(), per_anchor, rel_tol=1e-6)
    # With the first view as its own positive the loss would be nt_xent(x1, x1) instead.
    assert not math.isclose(loss.item(), nt_xent(x1, x1, t).item(), rel_tol=1e-3)
