"""Where DINO's collapse at demo scale comes from (RESULTS.md, "DINO at demo scale: when it collapses").

imbssl's DINO on scikit-learn's digits (8x8 upsampled to 16 px, the demo's 1,437 training images),
the demo's ResNet-10 of width 8 and head, batch 128, 132 steps (12 demo epochs), one thread. Flags
change one thing of that recipe at a time; the output is one markdown row: the bottleneck
embedding's std (0.125 = spread evenly over 64 dimensions, 0 = one point for every image) at
steps 0 (the initial weights), 1, 33 and 131, and at the last step the teacher's target entropy and the student's
prediction entropy over log K (1 = uniform: the collapse rule's 0.99) and the loss (log K = 5.545 for
K = 256; with --koleo the KoLeo term is included).

    python benchmarks/dino_collapse_digits.py --name "demo recipe"
    python benchmarks/dino_collapse_digits.py --name "SGD 0.001" --optimizer sgd --lr 0.001 --wd 1e-4
    python benchmarks/dino_collapse_digits.py --trace 3 --steps 3     # the first steps' raw output
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from imbssl.core.optim import cosine_lr, set_lr
from imbssl.data.augment import AugmentConfig, BatchAugment
from imbssl.data.sources import load_digits
from imbssl.data.store import channel_stats
from imbssl.methods.dino import DINO, DINOConfig
from imbssl.models.backbones import build_backbone

BATCH = 128
REPORTED_STEPS = (0, 1, 33)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", default="demo recipe", help="the row's label")
    p.add_argument("--steps", type=int, default=132)
    p.add_argument("--warmup_steps", type=int, default=11, help="the demo's 1 warm-up epoch")
    p.add_argument("--width", type=int, default=8, help="backbone width (64-d output at 8)")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--bottleneck", type=int, default=64)
    p.add_argument("--prototypes", type=int, default=256)
    p.add_argument("--optimizer", default="lars")
    p.add_argument("--lr", type=float, default=0.3, help="base lr, x batch/256")
    p.add_argument("--wd", type=float, default=1e-6)
    p.add_argument("--ema", type=float, default=0.9995)
    p.add_argument("--head_bn", action="store_true")
    p.add_argument("--crop_min_scale", type=float, default=0.08)
    p.add_argument("--torch_init", action="store_true", help="the head's Linear layers at torch's default init")
    p.add_argument("--center_from_first_batch", action="store_true",
                   help="start the center at the teacher's first-batch mean instead of 0")
    p.add_argument("--koleo", type=float, default=0.0, help="weight of DINOv2's KoLeo term (0.1 there)")
    p.add_argument("--koleo_on", choices=["backbone", "bottleneck"], default="backbone",
                   help="DINOv2 applies it to the backbone's (class-token) output")
    p.add_argument("--trace", type=int, default=0,
                   help="also print, for the first N steps, the bottleneck's raw (pre-normalisation) output: "
                        "its mean norm and the norm of its per-dimension std over the batch")
    return p.parse_args()


def koleo(features: torch.Tensor) -> torch.Tensor:
    """Kozachenko-Leonenko entropy estimate, as DINOv2 uses it: -mean log distance to the nearest
    other row, on L2-normalised rows."""
    f = F.normalize(features, dim=1, eps=1e-8)
    with torch.no_grad():
        similarity = f @ f.t()
        similarity.fill_diagonal_(-2)
        nearest = similarity.argmax(dim=1)
    return -torch.log(F.pairwise_distance(f, f[nearest], eps=1e-8) + 1e-8).mean()


def main() -> None:
    a = parse_args()
    torch.set_num_threads(1)
    train, _, _ = load_digits(16, 0.2, 0)  # the demo's training split (dataset.test_fraction, split_seed)
    mean, std = channel_stats(train["images"])
    images = torch.from_numpy(train["images"]).permute(0, 3, 1, 2).contiguous()  # uint8 NCHW, as stored
    augment = BatchAugment(AugmentConfig(crop_min_scale=a.crop_min_scale, saturation=0.2, solarize_p=[0.0, 0.2]),
                           mean.tolist(), std.tolist(), 16)
    steps_per_epoch = len(images) // BATCH
    torch.manual_seed(0)
    config = DINOConfig(optimizer=a.optimizer, base_lr=a.lr, weight_decay=a.wd, proj_hidden_dim=a.hidden,
                        bottleneck_dim=a.bottleneck, num_prototypes=a.prototypes, head_bn=a.head_bn, ema_start=a.ema)
    method = DINO(build_backbone("resnet10", a.width, 16), config)
    if a.torch_init:
        for layer in method.head.mlp:
            if isinstance(layer, torch.nn.Linear):
                layer.reset_parameters()
        method._target_stale = True  # the teacher copies the new weights before the first step
    optimizer = method.make_optimizer(BATCH)
    peak = method.peak_lr(BATCH)
    method.train()
    stds = {}
    for step in range(a.steps):
        set_lr(optimizer, cosine_lr(step, a.steps, peak, a.warmup_steps))
        epoch, within = divmod(step, steps_per_epoch)
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(1000 + epoch))
        batch = images[order[within * BATCH:(within + 1) * BATCH]]
        generator, host = torch.Generator().manual_seed(50000 + step), torch.Generator().manual_seed(90000 + step)
        views = [augment(batch, generator, host, view=v) for v in range(2)]
        if a.center_from_first_batch and step == 0:
            with torch.no_grad():
                method.sync_target_if_stale()
                teacher = torch.cat([method.target["head"](method.target["backbone"](v)) for v in views])
                method.center.copy_(teacher.mean(dim=0))
        if step < a.trace:
            with torch.no_grad():
                raw = method.head.mlp(method.backbone(views[0]))
            print(f"step {step}: raw norm {raw.norm(dim=1).mean():.4f}, raw std {raw.std(dim=0).norm():.4f}", flush=True)
        loss, metrics = method.loss(views)
        if a.koleo:
            features = method.backbone(views[0])
            if a.koleo_on == "bottleneck":
                features = method.head.embed(features)
            loss = loss + a.koleo * koleo(features)
        optimizer.zero_grad()
        loss.backward()
        method.clip_gradients()
        optimizer.step()
        method.after_step((step + 1) / a.steps)
        stds[step] = metrics["out_std"].item()
    cells = [f"{stds[s]:.4f}" if s in stds else "-" for s in REPORTED_STEPS] + [f"{stds[a.steps - 1]:.4f}"]
    cells += [f"{metrics['target_entropy'].item():.3f}", f"{metrics['prediction_entropy'].item():.3f}",
              f"{loss.item():.3f}"]
    print(f"| {a.name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
