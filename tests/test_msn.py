"""MSN / PMSN: loss pieces against hand-computed values, patch dropping, EMA, a few real steps."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from imbssl import UserError
from imbssl.core.artifacts import PrototypeUsage, read_prototype_usage, write_prototype_usage
from imbssl.data.augment import normalize
from imbssl.methods.registry import build_method
from imbssl.methods.ema import ema_momentum, ema_update_
from imbssl.methods.msn import entropy, kl_divergence, power_law, prior_distribution, prior_term, sinkhorn
from imbssl.models.backbones import build_backbone
from imbssl.reporting.figures import figure_prototype_usage, sorted_usage
from imbssl.evaluation.prototypes import write_usage
from imbssl.methods.prototypes import prototype_usage
from imbssl.models.vit import build_vit, num_kept, random_keep

torch.set_num_threads(1)


def test_sinkhorn_one_iteration_matches_hand_computation():
    # 2 images x 2 prototypes. By hand: /sum -> [[.45,.05],[.3,.2]]; prototypes to 1/2 each ->
    # [[.3,.1],[.2,.4]]; images to 1/2 each, x2 -> [[.75,.25],[1/3,2/3]].
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4]])
    out = sinkhorn(probs, iters=1)
    torch.testing.assert_close(out, torch.tensor([[0.75, 0.25], [1 / 3, 2 / 3]]))


def test_sinkhorn_rows_sum_to_one_and_columns_to_n_over_k():
    probs = torch.softmax(torch.randn(12, 4, generator=torch.Generator().manual_seed(0)) * 3, dim=1)
    few = sinkhorn(probs, iters=3)
    torch.testing.assert_close(few.sum(dim=1), torch.ones(12))
    many = sinkhorn(probs, iters=200)
    torch.testing.assert_close(many.sum(dim=0), torch.full((4,), 12 / 4), atol=1e-4, rtol=0)
    assert sinkhorn(probs, iters=0) is probs


def test_uniform_prior_term_is_log_k_minus_entropy():
    p = torch.tensor([0.5, 0.25, 0.25])
    uniform = prior_distribution("uniform", 3, tau=0.25)
    # 0.5 ln(1.5) + 0.25 ln(0.75) * 2 = log 3 - 1.5 ln 2
    expected = 0.5 * math.log(1.5) + 0.5 * math.log(0.75)
    assert prior_term(p, uniform).item() == pytest.approx(expected, abs=1e-6)
    assert prior_term(p, uniform).item() == pytest.approx(math.log(3) - entropy(p).item(), abs=1e-6)
    assert prior_term(uniform, uniform).item() == pytest.approx(0.0, abs=1e-7)


def test_power_law_prior_values():
    torch.testing.assert_close(power_law(2, tau=1.0), torch.tensor([2 / 3, 1 / 3]))
    # k^-0.5 for k=1..4: 1, 0.70711, 0.57735, 0.5 (sum 2.78446)
    torch.testing.assert_close(power_law(4, tau=0.5), torch.tensor([0.35914, 0.25395, 0.20734, 0.17957]),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(power_law(5, tau=0.0), torch.full((5,), 0.2))


def test_power_law_prior_term_in_both_directions():
    prior = power_law(2, tau=1.0)  # [2/3, 1/3]
    p = torch.tensor([0.5, 0.5])
    # KL(p || prior) = 0.5 ln(0.75) + 0.5 ln(1.5); KL(prior || p) = 2/3 ln(4/3) + 1/3 ln(2/3)
    assert prior_term(p, prior, "mean_to_prior").item() == pytest.approx(
        0.5 * math.log(0.75) + 0.5 * math.log(1.5), abs=1e-6)
    assert prior_term(p, prior, "prior_to_mean").item() == pytest.approx(
        2 / 3 * math.log(4 / 3) + 1 / 3 * math.log(2 / 3), abs=1e-6)
    with pytest.raises(ValueError, match="KL direction"):  # the schema lets only the two through
        prior_term(p, prior, "sideways")


def test_kl_treats_zero_probabilities_as_zero_mass():
    assert kl_divergence(torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.5])).item() == pytest.approx(math.log(2))


def test_ema_update_on_a_toy_module():
    online, target = nn.Linear(2, 1), nn.Linear(2, 1)
    with torch.no_grad():
        online.weight.copy_(torch.tensor([[1.0, 2.0]]))
        target.weight.copy_(torch.tensor([[3.0, -2.0]]))
    ema_update_(target, online, momentum=0.75)
    torch.testing.assert_close(target.weight, torch.tensor([[0.75 * 3 + 0.25 * 1, 0.75 * -2 + 0.25 * 2]]))


def test_ema_momentum_schedule():
    # linear (MSN's ramp): start + (1 - start) * progress
    assert ema_momentum(0.0, 0.996) == pytest.approx(0.996)
    assert ema_momentum(0.25, 0.996) == pytest.approx(0.997)
    assert ema_momentum(0.5, 0.996) == pytest.approx(0.998)
    assert ema_momentum(1.0, 0.996) == pytest.approx(1.0)
    # cosine: 1 - (1 - start) * (cos(pi p) + 1) / 2; at p = 1/4: 1 - 0.004 * (0.70711 + 1) / 2
    assert ema_momentum(0.25, 0.996, "cosine") == pytest.approx(0.99658579, abs=1e-8)
    assert ema_momentum(0.5, 0.996, "cosine") == pytest.approx(0.998)
    with pytest.raises(ValueError, match="EMA schedule"):
        ema_momentum(0.5, 0.996, "step")


def test_prototypes_get_no_weight_decay_unless_asked():
    method = _small("msn", build_backbone("vit_mini", image_size=16), weight_decay=0.04)
    decay_of = lambda opt: {g["weight_decay"] for g in opt.param_groups if any(p is method.prototypes
                                                                                for p in g["params"])}
    assert decay_of(method.make_optimizer(8)) == {0.0}
    method.config.decay_prototypes = True
    assert decay_of(method.make_optimizer(8)) == {0.04}


def test_clip_gradients_clips_the_encoder_not_the_prototypes():
    torch.manual_seed(0)
    method = _small("msn", build_backbone("vit_mini", image_size=16), clip_grad=3.0)
    encoder = [*method.backbone.parameters(), *method.projector.parameters()]
    for p in [*encoder, method.prototypes]:
        p.grad = torch.ones_like(p)
    norm = lambda params: torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
    assert norm(encoder) > 3.0
    method.clip_gradients()
    assert norm(encoder).item() == pytest.approx(3.0, rel=1e-4)  # torch divides by (norm + 1e-6)
    assert torch.equal(method.prototypes.grad, torch.ones_like(method.prototypes))
    method.config.clip_grad = 0.0  # disabled: gradients untouched
    for p in encoder:
        p.grad = torch.ones_like(p)
    method.clip_gradients()
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in encoder)


@pytest.mark.parametrize("num_patches,mask_ratio,expected", [(64, 0.15, 54), (16, 0.15, 14), (16, 0.0, 16),
                                                             (64, 0.5, 32)])
def test_patch_masking_keeps_the_rounded_share(num_patches, mask_ratio, expected):
    assert num_kept(num_patches, mask_ratio) == expected
    keep = random_keep(3, num_patches, mask_ratio)
    assert keep.shape == (3, expected)
    assert all(len(set(row.tolist())) == expected for row in keep)  # no patch twice
    assert int(keep.min()) >= 0 and int(keep.max()) < num_patches


def test_vit_encodes_only_the_kept_patches():
    vit = build_vit("vit_mini", image_size=16).eval()
    assert vit.num_patches == 16 and vit.output_dim == 96
    lengths = []
    vit.encoder.layers[0].register_forward_hook(lambda m, args, out: lengths.append(args[0].shape[1]))
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        vit(x, keep=random_keep(2, 16, 0.25))
        full = vit(x)
        # Position embeddings go on before the gather: a permuted full set of patches is the same image.
        shuffled = vit(x, keep=torch.stack([torch.randperm(16), torch.randperm(16)]))
    assert lengths == [1 + 12, 1 + 16, 1 + 16]
    torch.testing.assert_close(shuffled, full, atol=1e-4, rtol=1e-4)


def test_vit_rejects_image_size_not_divisible_by_patch():
    with pytest.raises(UserError, match="patch size"):
        build_vit("vit_mini", image_size=18)


def _small(name, backbone, **overrides):
    settings = dict(proj_hidden_dim=32, proj_dim=16, num_prototypes=20, base_lr=1e-3, ema_start=0.9)
    settings.update(overrides)
    return build_method(name, backbone, **settings)


@pytest.mark.parametrize("name,prior", [("msn", "uniform"), ("pmsn", "powerlaw")])
def test_training_steps_finite_and_target_follows_ema(name, prior):
    torch.manual_seed(0)
    method = _small(name, build_backbone("vit_mini", image_size=16))
    assert method.config.prior == prior
    optimizer = method.make_optimizer(batch_size=8)
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not any(id(p) in trained for p in method.target.parameters())
    assert all(not p.requires_grad for p in method.target.parameters())
    for step in range(3):
        views = [torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)]
        loss, metrics = method.loss(views)
        assert torch.isfinite(loss)
        assert set(metrics) >= {"out_std", "proto_entropy"}
        assert all(v.ndim == 0 for v in metrics.values())
        assert 0 < metrics["proto_entropy"].item() <= math.log(20) + 1e-5
        optimizer.zero_grad()
        loss.backward()
        assert method.prototypes.grad is not None
        before = [p.detach().clone() for p in method.target.parameters()]
        optimizer.step()
        progress = (step + 1) / 3
        method.after_step(progress)
        m = ema_momentum(progress, 0.9)
        online = list(method.backbone.parameters()) + list(method.projector.parameters())
        for t_old, t_new, o in zip(before, method.target.parameters(), online, strict=True):
            torch.testing.assert_close(t_new, m * t_old + (1 - m) * o.detach())
    # At progress 1 the momentum is 1: the target stopped; the last update changed nothing.
    torch.testing.assert_close(list(method.target.parameters())[0], before[0])


def test_target_starts_as_copy_and_survives_state_dict_round_trip():
    torch.manual_seed(0)
    backbone = build_backbone("vit_mini", image_size=16)
    method = _small("msn", backbone)
    with torch.no_grad():  # weights loaded after construction (pretrain --init) reach the target
        backbone.conv_proj.weight.add_(1.0)
    method.loss([torch.randn(4, 3, 16, 16)] * 2)
    torch.testing.assert_close(method.target["backbone"].conv_proj.weight, backbone.conv_proj.weight)
    with torch.no_grad():
        method.target["backbone"].conv_proj.weight.mul_(0.5)  # a trained target differs from the anchor
    state = method.state_dict()
    assert any(k.startswith("target.") for k in state)
    resumed = _small("msn", build_backbone("vit_mini", image_size=16))
    resumed.load_state_dict(state)
    resumed.loss([torch.randn(4, 3, 16, 16)] * 2)  # must not re-copy the anchor over the resumed target
    torch.testing.assert_close(resumed.target["backbone"].conv_proj.weight,
                               method.target["backbone"].conv_proj.weight)


def hand_msn_loss(anchor_z, target_z, prototypes, prior, cfg):
    """MSN's loss written out: (cross-entropy, prior term), without Sinkhorn (sinkhorn_iters=0)."""
    protos = prototypes / prototypes.norm(dim=1, keepdim=True)
    cos = lambda z: (z / z.norm(dim=1, keepdim=True)) @ protos.T
    probs = torch.softmax(cos(anchor_z) / cfg.anchor_temperature, dim=1)
    targets = torch.softmax(cos(target_z) / cfg.target_temperature, dim=1)
    ce = -(targets * probs.log()).sum(dim=1).mean()
    mean = probs.mean(dim=0)
    p, q = (mean, prior) if cfg.kl_direction == "mean_to_prior" else (prior, mean)
    return ce, (p * (p / q).log()).sum()


def test_resnet_backbone_uses_the_second_crop_as_anchor():
    """Without patches to drop, the anchor is the other random crop: views[0] through the online
    encoder, the target views[1] through the EMA encoder, unmasked."""
    torch.manual_seed(0)
    method = _small("pmsn", build_backbone("resnet10", width=4, image_size=16), sinkhorn_iters=0)
    assert not method.masks_patches
    views = [torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)]
    loss, metrics = method.loss(views)
    assert torch.isfinite(loss) and metrics["out_std"] > 0
    # Make the EMA encoder differ from the online one, so that each role gives its own numbers.
    with torch.no_grad():
        for p in method.target.parameters():
            p.add_(0.1 * torch.randn_like(p))
    loss, metrics = method.loss(views)
    online = lambda x: method.projector(method.backbone(x))
    target = lambda x: method.target["projector"](method.target["backbone"](x))
    with torch.no_grad():
        expected = {(a, t): hand_msn_loss(online(views[a]), target(views[t]), method.prototypes, method.prior,
                                          method.config) for a, t in [(0, 1), (1, 0), (0, 0), (1, 1)]}
    ce, prior = expected[(0, 1)]
    torch.testing.assert_close(metrics["ce"], ce)
    torch.testing.assert_close(metrics["prior_term"], prior)
    torch.testing.assert_close(loss.detach(), ce + prior)
    for roles in [(1, 0), (0, 0), (1, 1)]:  # swapped roles, or one crop as both anchor and target
        assert abs(expected[roles][0] - ce) > 1e-3, roles


class Features(nn.Module):
    """A backbone that passes its (N, D) input through, so the loss can be checked by hand."""

    def __init__(self, dim):
        super().__init__()
        self.output_dim = dim

    def forward(self, x):
        return x


def msn_on_features(name, **overrides):
    """MSN/PMSN with identity encoders (anchor z = views[0], target z = views[1]) and fixed prototypes."""
    settings = dict(proj_dim=3, num_prototypes=3, sinkhorn_iters=0, tau=1.0)
    settings.update(overrides)
    method = build_method(name, Features(3), proj_hidden_dim=4, **settings)
    method.projector = nn.Identity()
    method.target = nn.ModuleDict({"backbone": Features(3), "projector": nn.Identity()})
    with torch.no_grad():
        method.prototypes.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    return method


VIEWS = [torch.tensor([[1.0, 0.2, 0.0], [0.9, 0.0, 0.4], [0.0, 0.3, 1.0]]),
         torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, 0.2], [0.1, 0.0, 1.0]])]


@pytest.mark.parametrize("name", ["msn", "pmsn"])
@pytest.mark.parametrize("direction", ["mean_to_prior", "prior_to_mean"])
def test_msn_loss_and_its_prior_term_by_hand(name, direction):
    method = msn_on_features(name, kl_direction=direction)
    prior = torch.full((3,), 1 / 3) if name == "msn" else torch.tensor([6 / 11, 3 / 11, 2 / 11])  # 1 : 1/2 : 1/3
    loss, metrics = method.loss(VIEWS)
    ce, prior_term = hand_msn_loss(VIEWS[0], VIEWS[1], method.prototypes.detach(), prior, method.config)
    torch.testing.assert_close(metrics["ce"], ce)
    torch.testing.assert_close(metrics["prior_term"], prior_term)
    torch.testing.assert_close(loss.detach(), ce + prior_term)
    # The other direction differs on these inputs, so a swapped KL cannot pass.
    other = "prior_to_mean" if direction == "mean_to_prior" else "mean_to_prior"
    _, wrong = hand_msn_loss(VIEWS[0], VIEWS[1], method.prototypes.detach(), prior,
                             msn_on_features(name, kl_direction=other).config)
    assert abs(wrong - prior_term) > 1e-3


@pytest.mark.parametrize("name", ["msn", "pmsn"])
def test_msn_loss_weighs_the_prior_term_by_prior_weight(name):
    for weight in (0.5, 2.0):
        loss, metrics = msn_on_features(name, prior_weight=weight).loss(VIEWS)
        assert metrics["prior_term"] > 1e-3
        torch.testing.assert_close(loss.detach(), metrics["ce"] + weight * metrics["prior_term"])


def test_an_unknown_prior_is_refused():
    with pytest.raises(ValueError, match="prior"):  # the schema and argparse's choices let only the two through
        _small("msn", build_backbone("vit_mini", image_size=16), prior="zipf")


def test_prototype_usage_counts_the_winning_prototype_of_each_image():
    torch.manual_seed(0)
    method = _small("msn", build_backbone("vit_mini", image_size=16), num_prototypes=3).eval()
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    mean, std = [0.5] * 3, [0.25] * 3
    with torch.no_grad():  # prototypes = target outputs of images a, b, c
        z = method.target["projector"](method.target["backbone"](normalize(images, mean, std)))
        method.prototypes.copy_(z)
    batch = images[[0, 0, 1]]  # a, a, b: a wins prototype 0 twice, b prototype 1, c's prototype none
    assert prototype_usage(method, batch, mean, std, batch_size=2).tolist() == [2, 1, 0]


@pytest.mark.parametrize("name,tau,expected", [("pmsn", 1.0, [20.0, 10.0]), ("msn", 1.0, [15.0, 15.0])])
def test_usage_file_stores_the_images_per_prototype_the_prior_expects(tmp_path, name, tau, expected):
    # 30 images, 2 prototypes: a power law with tau 1 expects 1 : 1/2 of them, i.e. 20 and 10;
    # the uniform prior 15 each, whatever tau says.
    from imbssl.methods.msn import MSNConfig, PMSNConfig
    from helpers.forge import forge_model

    torch.manual_seed(0)
    method = _small(name, build_backbone("vit_mini", image_size=16), num_prototypes=2, tau=tau)
    forge_model(method, tmp_path, name, "vit_mini", 8, 16)
    images = np.random.default_rng(0).integers(0, 256, (30, 16, 16, 3), dtype=np.uint8)
    np.savez(tmp_path / "train.npz", images=images, labels=np.zeros(30, np.int64), classes=np.asarray(["a"]),
             mean=np.full(3, 0.5, np.float32), std=np.full(3, 0.25, np.float32))
    (tmp_path / "subset.csv").write_text("index,label\n" + "".join(f"{i},0\n" for i in range(30)))
    config = (PMSNConfig if name == "pmsn" else MSNConfig)(proj_hidden_dim=32, proj_dim=16, num_prototypes=2,
                                                          base_lr=1e-3, ema_start=0.9, tau=tau)
    usage = write_usage(str(tmp_path / "model.pt"), str(tmp_path / "train.npz"), str(tmp_path / "subset.csv"),
                        str(tmp_path / "usage.json"), config, device="cpu")
    assert usage.expected == pytest.approx(expected)
    assert read_prototype_usage(tmp_path / "usage.json").expected == pytest.approx(expected)
    assert sum(usage.counts) == 30


def test_prototype_usage_figure_from_files_only(tmp_path):
    assert sorted_usage([0, 3, 1, 0, 5]).tolist() == [5.0, 3.0, 1.0]
    paths = []
    for name, prior, counts, expected in [("msn", "uniform", [3, 3, 2, 0], [2.0] * 4),
                                          ("pmsn", "powerlaw", [5, 2, 1, 0], [4.0, 2.0, 1.5, 0.5])]:
        path = tmp_path / f"{name}.json"
        write_prototype_usage(path, PrototypeUsage(name, prior, 0.25, 4, 8, counts, expected))
        paths.append(str(path))
    out = [str(tmp_path / "usage.png"), str(tmp_path / "usage.pdf")]
    figure_prototype_usage(paths, out)
    assert (tmp_path / "usage.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "usage.pdf").read_bytes()[:4] == b"%PDF"
    (tmp_path / "old.json").write_text(json.dumps({"method": "msn", "counts": [1]}))
    with pytest.raises(UserError, match="lacks .*expected.*rerun the prototype_usage rule"):
        figure_prototype_usage([str(tmp_path / "old.json")], out)
