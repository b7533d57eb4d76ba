"""DINO of imbssl (B) against lightly's (A) on scikit-learn digits, same views, backbone init and
optimizer (RESULTS.md, "DINO at demo scale"): python benchmarks/dino_vs_lightly_digits.py A|B [--copy_init]."""
import argparse, copy, math, sys, time
import torch, torch.nn.functional as F
from torch import nn
from sklearn.datasets import load_digits
from lightly.models.modules import DINOProjectionHead
from lightly.loss import DINOLoss
from lightly.models.utils import update_momentum
from imbssl.models.backbones import build_backbone
from imbssl.data.augment import AugmentConfig, BatchAugment
from imbssl.methods.dino import DINO, DINOConfig, dino_loss, updated_center
import imbssl.methods.ema as ema_mod

p = argparse.ArgumentParser()
p.add_argument("variant", default="A")
p.add_argument("--head", default=None)      # lightly|ours (manual driver)
p.add_argument("--loss", default=None)      # lightly|ours (manual driver)
p.add_argument("--ema", default="const")    # const|cosine (B: const patches ema_momentum)
p.add_argument("--copy_init", action="store_true")  # B: copy lightly head init into our head
p.add_argument("--steps", type=int, default=132)
p.add_argument("--lr", type=float, default=0.06)
p.add_argument("--ema_m", type=float, default=0.99)
p.add_argument("--K", type=int, default=256)
p.add_argument("--tt", type=float, default=0.04)
p.add_argument("--seed", type=int, default=0)
args = p.parse_args()
torch.set_num_threads(1)

# ---- data: digits 8x8 -> 16x16, 3 channels, uint8
X = load_digits().images.astype("float32") / 16.0
X = torch.from_numpy(X)[:, None]
X = F.interpolate(X, size=16, mode="bilinear", align_corners=False).clamp(0, 1)
X = (X.repeat(1, 3, 1, 1) * 255).round().to(torch.uint8)
g0 = torch.Generator().manual_seed(123)
perm = torch.randperm(len(X), generator=g0)
X = X[perm[:1437]]
mean = (X.float() / 255).mean(dim=(0, 2, 3)).tolist(); std = (X.float() / 255).std(dim=(0, 2, 3)).tolist()
acfg = AugmentConfig(crop_min_scale=0.08, saturation=0.2, solarize_p=[0.0, 0.2])  # dino.augment over augment
aug = BatchAugment(acfg, mean, std, 16)
BS, SPE = 128, len(X) // 128  # 11 steps/epoch

def batch_views(step):
    epoch, s = divmod(step, SPE)
    order = torch.randperm(len(X), generator=torch.Generator().manual_seed(1000 + epoch))
    b = X[order[s * BS:(s + 1) * BS]]
    g = torch.Generator().manual_seed(50000 + step); hg = torch.Generator().manual_seed(90000 + step)
    return [aug(b, g, hg, view=v) for v in range(2)]

torch.manual_seed(args.seed)
backbone = build_backbone("resnet10", 8, 16)
torch.manual_seed(args.seed + 1)
lhead = DINOProjectionHead(64, 256, 64, args.K, batch_norm=True)
K, TT = args.K, args.tt

def copy_lightly_into_ours(ours, lh):
    lin_l = [m for m in lh.layers if isinstance(m, nn.Linear)]
    bn_l = [m for m in lh.layers if isinstance(m, nn.BatchNorm1d)]
    lin_o = [m for m in ours.mlp if isinstance(m, nn.Linear)]
    bn_o = [m for m in ours.mlp if isinstance(m, nn.BatchNorm1d)]
    with torch.no_grad():
        for a, b in zip(lin_l, lin_o):
            b.weight.copy_(a.weight)
            if a.bias is not None: b.bias.copy_(a.bias)
            else: b.bias.zero_()
        for a, b in zip(bn_l, bn_o):
            b.load_state_dict(a.state_dict())
        ours.last_layer.direction.copy_(lh.last_layer.weight_v)
        ours.last_layer.norm.copy_(lh.last_layer.weight_g)

def entropy_ratio(t, center, T):
    q = F.softmax((t - center) / T, dim=-1)
    return (-(q * torch.log(q.clamp_min(1e-30))).sum(-1)).mean().item() / math.log(q.shape[-1])

def std_emb(e):
    return F.normalize(e.detach().float(), dim=1).std(dim=0).mean().item()

log = []
def report(step, loss, ent, sd, extra=""):
    log.append((step, loss, ent, sd))
    print(f"step {step:4d} loss {loss:.4f} (logK {math.log(K):.4f}) tgt_ent/logK {ent:.4f} emb_std {sd:.4f} {extra}", flush=True)

sched_lr = lambda step: args.lr * 0.5 * (1 + math.cos(math.pi * step / args.steps))
t0 = time.time()
if args.variant == "B":
    from imbssl.models.heads import DINOHead
    cfg = DINOConfig(optimizer="sgd", base_lr=args.lr * 2, weight_decay=5e-4, momentum=0.9, warmup_epochs=0,
                     proj_hidden_dim=256, bottleneck_dim=64, num_prototypes=K, norm_last_layer=True, head_bn=True,
                     freeze_last_layer_fraction=0.0, student_temperature=0.1, teacher_temperature=TT,
                     warmup_teacher_temperature=TT, warmup_teacher_temp_fraction=0.0, center_momentum=0.9,
                     ema_start=args.ema_m, ema_schedule="cosine")
    m = DINO(backbone, cfg)
    if args.copy_init:
        copy_lightly_into_ours(m.head, lhead)
        m._target_stale = True
    if args.ema == "const":
        ema_mod.ema_momentum = lambda progress, start, schedule="linear": start
    m.train()
    params = [q for q in m.parameters() if q.requires_grad]
    opt = torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=5e-4)
    for step in range(args.steps):
        for gr in opt.param_groups: gr["lr"] = sched_lr(step)
        views = batch_views(step)
        c_before = m.center.clone()
        loss, metrics = m.loss(views)
        opt.zero_grad(); loss.backward(); m.clip_gradients(); opt.step()
        if step % 10 == 0 or step == args.steps - 1:
            # teacher logits for view 0 recomputed (train-mode BN; outputs identical to the loss's pass)
            with torch.no_grad():
                t = m.target["head"](m.target["backbone"](views[0]))
            report(step, loss.item(), entropy_ratio(t, c_before, TT), metrics["out_std"].item(),
                   f"(module target_entropy {metrics['target_entropy'].item():.4f})")
        m.after_step((step + 1) / args.steps)
else:
    # manual driver: student = backbone + head; teacher = deepcopy; pluggable head/loss
    head_kind = args.head or "lightly"; loss_kind = args.loss or "lightly"
    if head_kind == "lightly":
        head = lhead
        embed = lambda h, f: F.normalize(h.layers(f), dim=-1)
        last = lambda h, e: h.last_layer(e)
    else:
        from imbssl.models.heads import DINOHead
        head = DINOHead(64, 256, 64, K, True, True)
        if args.copy_init: copy_lightly_into_ours(head, lhead)
        embed = lambda h, f: h.embed(f)
        last = lambda h, e: h.last_layer(e)
    student = nn.ModuleDict({"backbone": backbone, "head": head})
    if head_kind == "lightly":
        thead = DINOProjectionHead(64, 256, 64, K, batch_norm=True)
    else:
        thead = DINOHead(64, 256, 64, K, True, True)
    teacher = nn.ModuleDict({"backbone": copy.deepcopy(backbone), "head": thead})
    teacher.load_state_dict(student.state_dict()); teacher.requires_grad_(False)
    crit = DINOLoss(output_dim=K, warmup_teacher_temp=TT, teacher_temp=TT, warmup_teacher_temp_epochs=0)
    center = torch.zeros(K)
    params = [q for q in student.parameters() if q.requires_grad]
    opt = torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=5e-4)
    for step in range(args.steps):
        for gr in opt.param_groups: gr["lr"] = sched_lr(step)
        views = batch_views(step)
        embs = [embed(student["head"], student["backbone"](v)) for v in views]
        s_out = [last(student["head"], e) for e in embs]
        with torch.no_grad():
            t_out = [teacher["head"](teacher["backbone"](v)) for v in views]
        if loss_kind == "lightly":
            c_before = crit.center.view(K).clone()
            loss = crit(t_out, s_out)
        else:
            c_before = center.clone()
            loss = dino_loss(s_out, t_out, center, 0.1, TT)
            center = updated_center(center, torch.cat(t_out), 0.9)
        opt.zero_grad(); loss.backward(); opt.step()
        if step % 10 == 0 or step == args.steps - 1:
            report(step, loss.item(), entropy_ratio(t_out[0], c_before, TT), std_emb(embs[0]))
        mom = args.ema_m if args.ema == "const" else ema_mod.ema_momentum((step + 1) / args.steps, args.ema_m, "cosine")
        update_momentum(student, teacher, mom)
print(f"done in {time.time() - t0:.0f}s", flush=True)
