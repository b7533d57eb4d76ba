import numpy as np
import pytest
import torch

from imbssl import UserError
from imbssl.core.artifacts import ModelMeta, read_model, write_model
from imbssl.methods.distill import DistillConfig, Distiller, RegressionHeads, Teachers, distill_loss
from imbssl.models.backbones import build_backbone

torch.set_num_threads(1)


def tiny_backbone(seed):
    torch.manual_seed(seed)
    return build_backbone("resnet10", width=2, image_size=8)  # 16-d outputs


def make_distiller(num_clusters, cluster_of, hidden=8):
    teachers = Teachers(tiny_backbone(1), [tiny_backbone(2 + k) for k in range(num_clusters)])
    return Distiller(tiny_backbone(0), DistillConfig(head_hidden_dim=hidden, warmup_epochs=0), teachers, torch.tensor(cluster_of))


def test_distill_loss_matches_a_hand_computed_value():
    pred_base = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    q_base = torch.tensor([[0.0, 0.0], [0.0, 2.0]])  # squared errors 1, 4, 0, 4 -> MSE 9/4
    pred_expert = torch.tensor([[1.0, 1.0], [3.0, 0.0]])
    q_expert = torch.tensor([[1.0, 3.0], [0.0, 0.0]])  # squared errors 0, 4, 9, 0 -> MSE 13/4
    loss, to_base, to_expert = distill_loss(pred_base, q_base, pred_expert, q_expert)
    assert to_base.item() == pytest.approx(2.25)
    assert to_expert.item() == pytest.approx(3.25)
    assert loss.item() == pytest.approx(0.5 * 2.25 + 0.5 * 3.25)


def test_regression_heads_are_independent_mlps():
    heads = RegressionHeads(num_heads=3, dim=4, hidden_dim=5)
    q = torch.randn(6, 4)
    out = heads(q)
    assert out.shape == (3, 6, 4)
    h = 1
    by_hand = torch.relu(q @ heads.w1[h] + heads.b1[h]) @ heads.w2[h] + heads.b2[h]
    assert torch.allclose(out[h], by_hand, atol=1e-6)


def test_each_expert_teacher_runs_only_on_its_clusters_images():
    cluster = torch.tensor([2, 0, 2, 2, 0, 0, 0])
    module = make_distiller(3, cluster.tolist())
    seen = []
    for k, expert in enumerate(module.teachers.experts):
        expert.register_forward_hook(lambda mod, inp, out, k=k: seen.append((k, inp[0].shape[0])))
    x = torch.randn(7, 3, 8, 8)
    q_base, q_expert = module.teachers.targets(x, cluster)
    assert sorted(seen) == [(0, 4), (2, 3)]  # cluster 1 has no image in this batch: expert 1 never runs
    with torch.no_grad():  # eval-mode teachers: per-image outputs equal batched ones
        for i in range(7):
            expected = module.teachers.experts[cluster[i]](x[i:i + 1])[0]
            assert torch.allclose(q_expert[i], expected, atol=1e-5)
        assert torch.allclose(q_base, module.teachers.base(x), atol=1e-5)


def _head_grad_norms(module):
    heads = module.heads
    return torch.stack([sum(p.grad[h].abs().sum() for p in (heads.w1, heads.b1, heads.w2, heads.b2))
                        for h in range(heads.w1.shape[0])])


def test_each_image_trains_only_its_own_expert_head():
    cluster_of = [0, 2, 1, 2]
    module = make_distiller(3, cluster_of)
    x = torch.randn(4, 3, 8, 8)
    for i, k in enumerate(cluster_of):
        module.zero_grad(set_to_none=False)
        for p in module.heads.parameters():
            p.grad = torch.zeros_like(p)
        # Image i alone, as part of a batch of two copies so that BatchNorm has a batch.
        loss, _ = module.loss([x[[i, i]]], torch.tensor([i, i]))
        loss.backward()
        norms = _head_grad_norms(module)
        assert norms[0] > 0  # the base's head
        assert norms[1 + k] > 0  # its own expert's head
        others = [h for h in range(1, 4) if h != 1 + k]
        assert (norms[others] == 0).all()


def test_batch_without_a_cluster_leaves_that_head_untouched_and_teachers_frozen():
    module = make_distiller(3, [0, 2, 0, 2])
    loss, metrics = module.loss([torch.randn(4, 3, 8, 8)], torch.arange(4))
    loss.backward()
    norms = _head_grad_norms(module)
    assert norms[2] == 0 and norms[1] > 0 and norms[3] > 0
    assert all(p.grad is None for t in module.teachers.all() for p in t.parameters())
    assert {"out_std", "mse_base", "mse_expert"} <= set(metrics)
    assert loss.item() == pytest.approx(0.5 * metrics["mse_base"].item() + 0.5 * metrics["mse_expert"].item())


def test_checkpoint_state_holds_student_and_heads_not_teachers():
    module = make_distiller(2, [0, 1])
    keys = module.state_dict().keys()
    assert any(k.startswith("backbone.") for k in keys) and any(k.startswith("heads.") for k in keys)
    assert not any(k.startswith(("teachers", "cluster_of")) for k in keys)
    module.train()
    assert not any(t.training for t in module.teachers.all())


def test_cluster_ids_beyond_the_experts_are_rejected():
    with pytest.raises(UserError, match="one expert per cluster"):
        make_distiller(2, [0, 1, 2])


def _save_model(backbone, path, mean, std):
    meta = ModelMeta(method="simsiam", arch="resnet10", width=2, stem=backbone.stem, image_size=8,
                     output_dim=backbone.output_dim, mean=[float(v) for v in mean], std=[float(v) for v in std],
                     epochs=1, num_images=20, seed=0)
    write_model(path, backbone.state_dict(), {}, meta)


def test_distill_trains_a_student_and_saves_its_backbone_only(tmp_path):
    from imbssl.training.distill import distill
    from imbssl.training.loop import TrainSettings

    rng = np.random.default_rng(0)
    mean, std = np.full(3, 0.5, np.float32), np.full(3, 0.25, np.float32)
    for name, n in (("train", 40), ("test", 10)):
        np.savez(tmp_path / f"{name}.npz", images=rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8),
                 labels=np.arange(n) % 2, classes=np.array(["a", "b"]), mean=mean, std=std)
    indices = np.arange(0, 40, 2)  # 20 images
    (tmp_path / "subset.csv").write_text("index,label\n" + "".join(f"{i},{i % 2}\n" for i in indices))
    (tmp_path / "assignments.csv").write_text(
        "index,cluster\n" + "".join(f"{i},{j % 2}\n" for j, i in enumerate(indices)))
    paths = [tmp_path / f"teacher{t}.pt" for t in range(3)]
    for t, path in enumerate(paths):
        _save_model(tiny_backbone(10 + t), path, mean, std)
    settings = TrainSettings(epochs=1, batch_size=10, knn_k=3, knn_every=0, device="cpu", log_every=1)
    out = distill(str(paths[0]), [str(p) for p in paths[1:]], str(tmp_path / "assignments.csv"),
                  str(tmp_path / "train.npz"), str(tmp_path / "test.npz"), str(tmp_path / "subset.csv"),
                  tmp_path / "student", seed=0, config=DistillConfig(head_hidden_dim=8, warmup_epochs=0), settings=settings)
    saved = read_model(out)
    assert saved.meta.method == "distill" and saved.meta.arch == "resnet10" and saved.meta.epochs == 1
    assert saved.meta.teachers == [str(p) for p in paths]
    assert not any(k.startswith("heads") for k in saved.method_state)
    student = build_backbone("resnet10", 2, 8)
    student.load_state_dict(saved.backbone)  # evaluable like any pretrained model
    metrics = (tmp_path / "student" / "metrics.csv").read_text().splitlines()
    assert len(metrics) == 2 and "mse_expert" in metrics[0]

    with pytest.raises(UserError, match="one expert model per cluster"):
        distill(str(paths[0]), [str(paths[1])], str(tmp_path / "assignments.csv"), str(tmp_path / "train.npz"),
                str(tmp_path / "test.npz"), str(tmp_path / "subset.csv"), tmp_path / "bad", settings=settings)


def _distill_inputs(tmp_path):
    """Tiny train/test splits, a 20-image subset in two clusters, and base + 2 expert model.pt files."""
    rng = np.random.default_rng(0)
    mean, std = np.full(3, 0.5, np.float32), np.full(3, 0.25, np.float32)
    for name, n in (("train", 40), ("test", 10)):
        np.savez(tmp_path / f"{name}.npz", images=rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8),
                 labels=np.arange(n) % 2, classes=np.array(["a", "b"]), mean=mean, std=std)
    indices = np.arange(0, 40, 2)
    (tmp_path / "subset.csv").write_text("index,label\n" + "".join(f"{i},{i % 2}\n" for i in indices))
    (tmp_path / "assignments.csv").write_text(
        "index,cluster\n" + "".join(f"{i},{j % 2}\n" for j, i in enumerate(indices)))
    paths = [tmp_path / f"teacher{t}.pt" for t in range(3)]
    base = tiny_backbone(10)
    with torch.no_grad():  # BatchNorm statistics unlike a fresh model's: they must be copied too
        for module in base.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
    for t, path in enumerate(paths):
        _save_model(base if t == 0 else tiny_backbone(10 + t), path, mean, std)
    return base, paths


@pytest.mark.parametrize("init", ["base", "scratch"])
def test_student_starts_from_the_base_and_its_heads_start_fresh(tmp_path, monkeypatch, init):
    """Section 3.1 step 4: the student has "the same architecture and parameter as SimSiam_base"."""
    from imbssl.training import distill as distill_module
    from imbssl.training.loop import TrainSettings

    base, paths = _distill_inputs(tmp_path)
    captured = {}

    def at_step_0(module, *args, **kwargs):  # run_training is where the first step would happen
        captured["backbone"] = {k: v.clone() for k, v in module.backbone.state_dict().items()}
        captured["heads"] = {k: v.clone() for k, v in module.heads.state_dict().items()}
        return tmp_path / "model.pt"

    monkeypatch.setattr(distill_module, "run_training", at_step_0)
    settings = TrainSettings(epochs=2, batch_size=10, device="cpu")
    distill_module.distill(str(paths[0]), [str(p) for p in paths[1:]], str(tmp_path / "assignments.csv"),
                           str(tmp_path / "train.npz"), str(tmp_path / "test.npz"), str(tmp_path / "subset.csv"),
                           tmp_path / "student", seed=0, settings=settings,
                           config=DistillConfig(head_hidden_dim=8, warmup_epochs=0, init=init))
    expected = base.state_dict()
    same = [torch.equal(captured["backbone"][k], expected[k]) for k in expected]
    if init == "base":
        assert all(same)
    else:
        assert not all(same)
    # The heads are drawn from the seed alone, whatever the student's init.
    torch.manual_seed(0)
    build_backbone("resnet10", 2, 8)
    fresh = RegressionHeads(3, 16, 8).state_dict()
    assert all(torch.equal(captured["heads"][k], fresh[k]) for k in fresh)
