"""`imbssl bench`: training throughput of the project's engine against a conventional pipeline.

Both pipelines train the same model with the same batch size on the same device:
- engine: the uint8 subset on the device, batched tensor augmentations (augment.py), bf16
  autocast, channels_last and torch.compile on CUDA, fused optimizer steps (train.train_step);
- reference: torchvision.transforms.v2 applied per image in DataLoader worker processes,
  fp32, contiguous NCHW, no compile: how published CIFAR SSL code is usually written.
Every figure is the median over several timed windows after warm-up steps. It also times feature
extraction, k-means on 20k x 512 features per available backend and a 100-epoch linear
evaluation of the benchmark's backbone in both protocols (features precomputed once, and the
reference protocol: augmented images through the frozen backbone every step) with their ratio,
and turns the measured rates into an estimate of the paper-scale wall time per table.

With `--gpus N` (N > 1) it also runs the engine as one job on N processes, as `pretrain.gpus: N`
does (torchrun's launcher, DistributedDataParallel, SyncBatchNorm; NCCL on GPUs, gloo on the CPU),
on the same global batch, and reports images/s, the scaling efficiency (N-process images/s /
(N x 1-process images/s)), the step time at the per-process batch with and without the process
group, and the time of one all-reduce of the gradients.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from imbssl.core import distributed
from imbssl.core.atomic import write_json
from imbssl.data.augment import AugmentConfig, BatchAugment, torchvision_pipeline
from imbssl.data.store import channel_stats
from imbssl.data.device import resolve_device, to_device_images
from imbssl.evaluation.features import extract
from imbssl.methods.registry import build_method
from imbssl.models.backbones import build_backbone
from imbssl.training.loop import train_step

# Paper-scale workload (CIFAR-10): subset sizes and epoch budgets of Tables 2 and 3.
PAPER_SUBSETS = {"imbalanced-p10": 20431, "balanced-p10": 20431, "imbalanced-p100": 12406,
                 "balanced-p100": 12406, "full": 50000}
PAPER_EPOCHS, BASE_EPOCHS, EXPERT_EPOCHS, DISTILL_EPOCHS = 300, 40, 180, 80


@dataclass
class BenchSettings:
    methods: list[str] = field(default_factory=lambda: ["simsiam", "simclr"])  # methods whose training is timed
    arch: str = "resnet18"  # backbone of the timed model
    width: int = 64  # channels of the ResNet's first stage
    image_size: int = 32  # side of the synthetic images, in px
    batch_size: int = 1024  # images per training step (global with --gpus)
    num_images: int = 20480  # synthetic images that batches are drawn from
    warmup_steps: int = 15  # untimed steps before the timed windows
    window_steps: int = 10  # training steps per timed window
    windows: int = 5  # timed windows (the figures are their median)
    workers: int = 8  # DataLoader worker processes of the reference pipeline
    reference: bool = True  # also time the reference pipeline (torchvision per image, DataLoader workers)
    compile: str = "auto"  # the engine's torch.compile setting (auto: on for CUDA)
    compare_compile: bool = False  # also time the engine with compile off
    kmeans_points: int = 100000  # points of the synthetic k-means problem
    kmeans_dim: int = 2048  # dimension of those points
    kmeans_ks: list[int] = field(default_factory=lambda: [5, 100])  # numbers of clusters timed
    kmeans_n_init: int = 10  # k-means restarts of each timed run
    linear_epochs: int = 100  # epochs of the timed linear evaluation
    linear_points: int = 20431  # balanced-p10's size
    linear_augment: bool = True  # also time the augmented (reference) protocol
    device: str = "auto"  # torch device (auto: the GPU when one is visible, else the CPU)
    gpus: int = 1  # > 1: also the engine as one job on this many processes (one per GPU)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_windows(step, device, settings: BenchSettings) -> list[float]:
    """Seconds per window of `window_steps` steps, after `warmup_steps` untimed steps."""
    for _ in range(settings.warmup_steps):
        step()
    _sync(device)
    seconds = []
    for _ in range(settings.windows):
        start = time.perf_counter()
        for _ in range(settings.window_steps):
            step()
        _sync(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def _images_per_s(seconds: list[float], settings: BenchSettings) -> float:
    return settings.window_steps * settings.batch_size / statistics.median(seconds)


def _synthetic_images(settings: BenchSettings) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (settings.num_images, settings.image_size, settings.image_size, 3), dtype=np.uint8)


def _reset_peak(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def bench_engine(method: str, images_np, settings: BenchSettings, device, compile_backbone: bool) -> dict:
    torch.manual_seed(0)
    module = build_method(method, build_backbone(settings.arch, settings.width, settings.image_size)).to(device)
    optimizer = module.make_optimizer(settings.batch_size)
    cuda = device.type == "cuda"
    if cuda:
        module.to(memory_format=torch.channels_last)
    if compile_backbone:
        module.backbone.compile()
    images = to_device_images(images_np, device)
    augment = BatchAugment(AugmentConfig(), *channel_stats(images_np), settings.image_size)
    generator = torch.Generator(device=device).manual_seed(0)
    host_generator = torch.Generator().manual_seed(0)
    n = images.shape[0]

    def step():
        index = torch.randint(0, n, (settings.batch_size,), generator=generator, device=device)
        train_step(module, optimizer, images, index, augment, generator, host_generator, amp=cuda,
                   channels_last=cuda)

    _reset_peak(device)
    seconds = timed_windows(step, device, settings)
    return {"images_per_s": _images_per_s(seconds, settings), "window_seconds": seconds,
            "peak_mem_mib": _peak_mib(device), "compile": compile_backbone}


def _scaling_worker(method: str, settings: dict) -> dict:
    """One rank of the N-process engine (started by torchrun's launcher): global batch
    settings.batch_size, split over the ranks exactly as train.train_loop splits it."""
    settings = BenchSettings(**settings)
    device = distributed.setup(resolve_device(settings.device))
    world, rank = distributed.world_size(), distributed.rank()
    if device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))  # the cores split between the ranks
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    module = build_method(method, build_backbone(settings.arch, settings.width, settings.image_size)).to(device)
    distributed.convert_sync_batchnorm(module, device)
    optimizer = module.make_optimizer(settings.batch_size)
    if cuda:
        module.to(memory_format=torch.channels_last)
    if settings.compile == "on" or (settings.compile == "auto" and cuda):
        module.backbone.compile()
    model = distributed.wrap(module, device)
    images_np = _synthetic_images(settings)
    images = to_device_images(images_np, device)
    augment = BatchAugment(AugmentConfig(), *channel_stats(images_np), settings.image_size)
    generator = torch.Generator(device=device).manual_seed(0)  # the same on every rank
    host_generator = torch.Generator().manual_seed(0)

    def step():
        order = torch.randint(0, images.shape[0], (settings.batch_size,), generator=generator, device=device)
        index = distributed.rank_batch(order, 0, settings.batch_size, rank, world)
        train_step(model, optimizer, images, index, augment, generator, host_generator, amp=cuda, channels_last=cuda)

    seconds = timed_windows(step, device, settings)
    gradients = torch.zeros(sum(p.numel() for p in module.parameters() if p.requires_grad), device=device)
    for _ in range(3):
        torch.distributed.all_reduce(gradients)
    _sync(device)
    reduce_seconds = []
    for _ in range(20):
        start = time.perf_counter()
        torch.distributed.all_reduce(gradients)
        _sync(device)
        reduce_seconds.append(time.perf_counter() - start)
    return {"images_per_s": _images_per_s(seconds, settings), "window_seconds": seconds,
            "step_ms": 1000 * statistics.median(seconds) / settings.window_steps,
            "allreduce_ms": 1000 * statistics.median(reduce_seconds), "gradient_mib": gradients.numel() * 4 / 2**20,
            "threads_per_process": torch.get_num_threads(), "backend": torch.distributed.get_backend()}


def bench_scaling(method: str, images_np, settings: BenchSettings, device, one_process: dict) -> dict:
    """The engine on settings.gpus processes against `one_process` (the same global batch, no
    process group), plus one process at the per-process batch for the step-time overhead."""
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    n = settings.gpus
    if settings.batch_size % n:
        raise ValueError(f"--batch-size {settings.batch_size} does not split over --gpus {n}")
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=n, run_id=f"imbssl-bench-{os.getpid()}",
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1,
                          start_method="spawn")
    ranks = elastic_launch(config, _scaling_worker)(method, asdict(settings))
    multi = ranks[0]
    per_rank = replace(settings, batch_size=settings.batch_size // n)
    alone = bench_engine(method, images_np, per_rank, device, one_process["compile"])
    alone_step_ms = 1000 * statistics.median(alone["window_seconds"]) / settings.window_steps
    return {"processes": n, "images_per_s": multi["images_per_s"],
            "efficiency": multi["images_per_s"] / (n * one_process["images_per_s"]),
            "step_ms_per_process_batch": {"without_process_group": alone_step_ms, "with_process_group": multi["step_ms"]},
            "per_process_batch": per_rank.batch_size, **{k: multi[k] for k in (
                "allreduce_ms", "gradient_mib", "threads_per_process", "backend", "window_seconds")},
            "one_process_threads": torch.get_num_threads()}


class _TwoViews(torch.utils.data.Dataset):
    """The conventional dataset: two independently transformed views of one image per item."""

    def __init__(self, images: np.ndarray, transform):
        self.images, self.transform = images, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        image = torch.from_numpy(self.images[i]).permute(2, 0, 1)
        return self.transform(image), self.transform(image)


def dataloader_step(module, optimizer, dataset, settings, device: torch.device):
    """The conventional pipeline the engine is compared with: a step on the next two views from a
    shuffling DataLoader of `settings.workers` processes over `dataset` (cycled without end)."""
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=settings.batch_size, shuffle=True, drop_last=True, num_workers=settings.workers,
        pin_memory=device.type == "cuda", persistent_workers=settings.workers > 0)

    def batches():
        while True:
            yield from loader

    stream = batches()

    def step():
        x1, x2 = (x.to(device, non_blocking=True) for x in next(stream))
        loss, _ = module.loss([x1, x2], None)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def bench_reference(method: str, images_np, settings: BenchSettings, device) -> dict:
    torch.manual_seed(0)
    module = build_method(method, build_backbone(settings.arch, settings.width, settings.image_size)).to(device)
    optimizer = module.make_optimizer(settings.batch_size)
    dataset = _TwoViews(images_np, torchvision_pipeline(AugmentConfig(), *channel_stats(images_np), settings.image_size))
    step = dataloader_step(module, optimizer, dataset, settings, device)
    _reset_peak(device)
    seconds = timed_windows(step, device, settings)
    return {"images_per_s": _images_per_s(seconds, settings), "window_seconds": seconds,
            "peak_mem_mib": _peak_mib(device)}


def bench_features(images_np, settings: BenchSettings, device) -> dict:
    backbone = build_backbone(settings.arch, settings.width, settings.image_size).to(device)
    if device.type == "cuda":
        backbone.to(memory_format=torch.channels_last)
    images = to_device_images(images_np, device)
    mean, std = channel_stats(images_np)
    extract(backbone, images[:1024], mean, std)  # warm-up
    _sync(device)
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        extract(backbone, images, mean, std)
        _sync(device)
        runs.append(time.perf_counter() - start)
    return {"images_per_s": len(images) / statistics.median(runs)}


def bench_kmeans(settings: BenchSettings, device) -> dict:
    from imbssl.clustering import kmeans as cluster
    from imbssl.clustering.kmeans_torch import torch_kmeans

    g = torch.Generator().manual_seed(0)
    # Gaussian blobs around 4 x the largest k centres, so that k-means has structure to find.
    centres = 4 * torch.randn(max(settings.kmeans_ks) * 4, settings.kmeans_dim, generator=g)
    features = centres[torch.randint(len(centres), (settings.kmeans_points,), generator=g)]
    features += torch.randn(features.shape, generator=g)
    n_init = settings.kmeans_n_init
    runs = {"sklearn": lambda k: cluster._kmeans_sklearn(features, k, 0, n_init, 300)[2],
            "torch-cpu": lambda k: torch_kmeans(features, k, 0, n_init)[2]}
    if device.type == "cuda":
        on_gpu = features.to(device)
        runs["torch-cuda"] = lambda k: torch_kmeans(on_gpu, k, 0, n_init)[2]
        if cluster.cuml_unavailable_reason() is None:
            runs["cuml"] = lambda k: cluster._kmeans_cuml(on_gpu, k, 0, n_init, 300)[2]
    results = {}
    for k in settings.kmeans_ks:
        for backend, run in runs.items():
            _sync(device)
            start = time.perf_counter()
            inertia = run(k)
            _sync(device)
            results[f"{backend} k={k}"] = {"seconds": time.perf_counter() - start, "inertia": inertia}
        reference = results[f"sklearn k={k}"]["inertia"]
        for backend in runs:
            results[f"{backend} k={k}"]["inertia_vs_sklearn"] = results[f"{backend} k={k}"]["inertia"] / reference
    return results


def bench_linear(settings: BenchSettings, device) -> dict:
    """`linear_epochs` of linear evaluation on `linear_points` synthetic images through the
    benchmark's backbone, in both protocols, in the same run: precomputed (the features once, then
    the linear layer) and augmented (crop + flip and a backbone forward pass every step)."""
    from imbssl.evaluation.linear import EvalSettings, augmented_linear_probe, linear_probe

    n = settings.linear_points
    images_np = np.random.default_rng(1).integers(0, 256, (n, settings.image_size, settings.image_size, 3),
                                                   dtype=np.uint8)
    mean, std = channel_stats(images_np)
    backbone = build_backbone(settings.arch, settings.width, settings.image_size).to(device).eval()
    if device.type == "cuda":
        backbone.to(memory_format=torch.channels_last)
    images = to_device_images(images_np, device)
    labels = (torch.arange(n) % 10).to(device)
    test_x = extract(backbone, images[:1000], mean, std)  # also the warm-up; untimed in both protocols
    result = {"epochs": settings.linear_epochs, "train_n": n}
    for name in ("precomputed", "augmented") if settings.linear_augment else ("precomputed",):
        eval_settings = EvalSettings(epochs=settings.linear_epochs, augment=name == "augmented")
        _sync(device)
        start = time.perf_counter()
        if eval_settings.augment:
            augmented_linear_probe(backbone, images, labels, test_x, 10, mean, std, eval_settings)
        else:
            linear_probe(extract(backbone, images, mean, std), labels, test_x, 10, eval_settings)
        _sync(device)
        seconds = time.perf_counter() - start
        result[name] = {"seconds": seconds, "images_per_s": settings.linear_epochs * n / seconds}
    if "augmented" in result:
        result["ratio"] = result["augmented"]["seconds"] / result["precomputed"]["seconds"]
    # The paper config's protocol (evaluation.augment: true) sets the estimate's evaluation time.
    result["seconds"] = result.get("augmented", result["precomputed"])["seconds"]
    return result


def paper_estimate(rates: dict[str, float], linear_seconds: float) -> dict:
    """Wall time of the paper-scale run from measured two-view images/s (one seed)."""
    table2 = sum(PAPER_EPOCHS * sum(PAPER_SUBSETS.values()) / rates[m] for m in ("simsiam", "simclr") if m in rates)
    imbalanced = PAPER_SUBSETS["imbalanced-p10"] + PAPER_SUBSETS["imbalanced-p100"]
    simsiam = rates.get("simsiam")
    # base once, experts and distillation twice (k-means and random partitions); a distillation
    # step (one student view + frozen teachers) is costed as a SimSiam step.
    table3 = (BASE_EPOCHS + 2 * (EXPERT_EPOCHS + DISTILL_EPOCHS)) * imbalanced / simsiam if simsiam else None
    evals = 2 * len(PAPER_SUBSETS) + 4  # Table 2 runs + the four Table 3 students
    return {"table2_minutes": table2 / 60, "table3_minutes": table3 / 60 if table3 else None,
            "linear_eval_minutes": evals * linear_seconds / 60,
            "total_minutes": (table2 + (table3 or 0) + evals * linear_seconds) / 60,
            # The paper's workload, whichever methods were timed.
            "two_view_samples": PAPER_EPOCHS * sum(PAPER_SUBSETS.values()) * 2
                                + (BASE_EPOCHS + 2 * (EXPERT_EPOCHS + DISTILL_EPOCHS)) * imbalanced}


def run(settings: BenchSettings, out: str | None = None) -> dict:
    device = resolve_device(settings.device)
    compile_on = settings.compile == "on" or (settings.compile == "auto" and device.type == "cuda")
    images = _synthetic_images(settings)
    report = {"settings": asdict(settings), "device": _device_name(device), "torch": torch.__version__,
              "python": platform.python_version(), "date": time.strftime("%Y-%m-%d"),
              "command": " ".join(sys.argv), "training": {}}
    for method in settings.methods:
        entry = {"engine": bench_engine(method, images, settings, device, compile_on)}
        if settings.compare_compile and compile_on:
            entry["engine_no_compile"] = bench_engine(method, images, settings, device, False)
        if settings.reference:
            entry["reference"] = bench_reference(method, images, settings, device)
            entry["ratio"] = entry["engine"]["images_per_s"] / entry["reference"]["images_per_s"]
        if settings.gpus > 1:
            entry["scaling"] = bench_scaling(method, images, settings, device, entry["engine"])
        report["training"][method] = entry
        _print_method(method, entry)
    report["features"] = bench_features(images, settings, device)
    report["kmeans"] = bench_kmeans(settings, device)
    report["linear_eval"] = bench_linear(settings, device)
    rates = {m: e["engine"]["images_per_s"] for m, e in report["training"].items()}
    report["paper_estimate"] = paper_estimate(rates, report["linear_eval"]["seconds"])
    _print_rest(report)
    if out:
        write_json(out, report)
    return report


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _print_method(method: str, entry: dict) -> None:
    for name in ("engine", "engine_no_compile", "reference"):
        if name in entry:
            e = entry[name]
            mem = f"{e['peak_mem_mib']:.0f} MiB" if e.get("peak_mem_mib") is not None else "n/a"
            print(f"{method:8s} {name:18s} {e['images_per_s']:10.1f} images/s   peak memory {mem}", flush=True)
    if "ratio" in entry:
        print(f"{method:8s} {'engine/reference':18s} {entry['ratio']:10.2f}x", flush=True)
    if "scaling" in entry:
        s = entry["scaling"]
        steps = s["step_ms_per_process_batch"]
        print(f"{method:8s} {str(s['processes']) + ' processes':18s} {s['images_per_s']:10.1f} images/s   "
              f"scaling efficiency {s['efficiency']:.2f} (N-process / (N x 1-process images/s))", flush=True)
        print(f"{method:8s} {'overheads':18s} step at batch {s['per_process_batch']}: "
              f"{steps['without_process_group']:.1f} ms alone, {steps['with_process_group']:.1f} ms with the "
              f"process group ({s['backend']}); all-reduce of the {s['gradient_mib']:.1f} MiB gradients "
              f"{s['allreduce_ms']:.2f} ms", flush=True)


def _print_rest(report: dict) -> None:
    print(f"features           {report['features']['images_per_s']:10.1f} images/s")
    for backend, r in report["kmeans"].items():
        print(f"k-means {backend:16s} {r['seconds']:10.2f} s  inertia {r['inertia_vs_sklearn']:.4f} x sklearn's  "
              f"({report['settings']['kmeans_points']} x {report['settings']['kmeans_dim']}, "
              f"n_init {report['settings']['kmeans_n_init']})")
    linear = report["linear_eval"]
    for name in ("precomputed", "augmented"):
        if name in linear:
            print(f"linear eval {name:11s} {linear[name]['seconds']:10.2f} s  ({linear['epochs']} epochs x "
                  f"{linear['train_n']} images, {linear[name]['images_per_s']:.0f} images/s)")
    if "ratio" in linear:
        print(f"linear eval augmented/precomputed {linear['ratio']:.1f}x the time")
    est = report["paper_estimate"]
    print("paper-scale estimate (one seed): " + json.dumps({k: round(v, 1) if isinstance(v, float) else v
                                                          for k, v in est.items()}))
