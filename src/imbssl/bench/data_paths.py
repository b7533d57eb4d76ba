"""`imbssl bench --data-paths true`: the three ways a training step can get its images, timed in one run.

All three train the same SimSiam model (ResNet-50 at 224 px by default) with the same batch size
on the same device, from the same synthetic JPEG files (ImageNet-sized, 500x375):
- resident: the uint8 store (decoded once, shorter side `store_size`, centre-cropped) whole on
  the device; a batch is an index op; batched augmentations (augment.py);
- streamed: the same store memory-mapped on the host, batches gathered into pinned memory and
  copied on a side stream, prefetched (device.StreamedImages); the same augmentations;
- dataloader: torchvision's way: a DataLoader whose `workers` processes decode each JPEG with PIL
  and apply torchvision.transforms.v2 per image (RandomResizedCrop straight from the full-size JPEG),
  pinned memory.
Per pipeline: images/s and the wall time per step (median over windows after warm-up), and on a
GPU the GPU-side time per step (CUDA events around each step's kernels): wall ~ GPU time means the
GPU never waited for data. Ratios are against the dataloader pipeline of the same run.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from imbssl.data.augment import AugmentConfig, BatchAugment, torchvision_pipeline
from imbssl.bench.engine import dataloader_step, timed_windows
from imbssl.data.store import StoreSize, channel_stats, decode_to_store
from imbssl.data.device import ResidentImages, StreamedImages, to_device_images
from imbssl.methods.registry import build_method
from imbssl.models.backbones import build_backbone
from imbssl.training.loop import train_step

JPEG_SIZE = (500, 375)  # a typical ImageNet photo


@dataclass
class DataBenchSettings:
    arch: str = "resnet50"
    width: int = 64
    image_size: int = 224
    store_size: int = 256
    batch_size: int = 256
    num_images: int = 4096
    workers: int = 15
    warmup_steps: int = 10
    window_steps: int = 10
    windows: int = 3


def write_jpegs(folder: Path, n: int) -> list[Path]:
    """n synthetic JPEGs (smooth colour fields plus noise, so they compress like photos)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    width, height = JPEG_SIZE
    y, x = np.mgrid[0:height, 0:width]
    paths = []
    for i in range(n):
        base = rng.integers(0, 256, 3)
        field = (base + 60 * np.sin(x[..., None] / rng.uniform(10, 60) + rng.uniform(0, 6, 3))
                 + 40 * np.cos(y[..., None] / rng.uniform(10, 60)))
        pixels = np.clip(field + rng.normal(0, 12, field.shape), 0, 255).astype(np.uint8)
        path = folder / f"{i:06d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


class _JpegTwoViews(torch.utils.data.Dataset):
    """The conventional dataset: decode a JPEG per item, two torchvision views of it."""

    def __init__(self, paths: list[Path], transform):
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from PIL import Image
        from torchvision.transforms.v2 import functional as F

        with Image.open(self.paths[i]) as im:
            image = F.pil_to_tensor(im.convert("RGB"))
        return self.transform(image), self.transform(image)


def _model(settings: DataBenchSettings, device: torch.device):
    torch.manual_seed(0)
    module = build_method("simsiam", build_backbone(settings.arch, settings.width, settings.image_size)).to(device)
    if device.type == "cuda":
        module.to(memory_format=torch.channels_last)
    return module, module.make_optimizer(settings.batch_size)


def _time(step, device: torch.device, settings: DataBenchSettings) -> dict:
    """Median wall seconds per step over the windows (bench.timed_windows), and on CUDA the
    median over the windows of each window's median GPU seconds per step (CUDA events)."""
    cuda = device.type == "cuda"
    events = []

    def timed_step():
        if not cuda:
            return step()
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        step()
        end.record()
        events.append((begin, end))

    walls = [seconds / settings.window_steps for seconds in timed_windows(timed_step, device, settings)]
    gpus = []
    timed = events[settings.warmup_steps:]  # the warm-up steps' events are not counted
    for start in range(0, len(timed), settings.window_steps):
        gpus.append(statistics.median(b.elapsed_time(e) / 1000 for b, e in timed[start:start + settings.window_steps]))
    wall = statistics.median(walls)
    return {"images_per_s": settings.batch_size / wall, "wall_step_s": wall,
            "gpu_step_s": statistics.median(gpus) if gpus else None, "window_step_s": walls}


def _bench_store(source, mean, std, settings: DataBenchSettings, device: torch.device) -> dict:
    """Training steps on a resident or streamed source, batches in a random order, prefetched."""
    module, optimizer = _model(settings, device)
    augment = BatchAugment(AugmentConfig(), mean, std, settings.image_size)
    generator = torch.Generator(device=device).manual_seed(0)
    host_generator = torch.Generator().manual_seed(0)
    cuda = device.type == "cuda"
    steps = settings.warmup_steps + settings.windows * settings.window_steps
    order = torch.randint(0, len(source), (steps, settings.batch_size), generator=torch.Generator().manual_seed(0))
    indices = [row.to(device) if source.resident else row for row in order]
    batches = iter(source.batches(indices))
    position = iter(indices)

    def step():
        index, batch = next(position), next(batches)
        train_step(module, optimizer, source, index, augment, generator, host_generator, amp=cuda,
                   channels_last=cuda, batch=batch)

    return _time(step, device, settings)


def _bench_dataloader(paths: list[Path], mean, std, settings: DataBenchSettings, device: torch.device) -> dict:
    module, optimizer = _model(settings, device)
    dataset = _JpegTwoViews(paths, torchvision_pipeline(AugmentConfig(), mean, std, settings.image_size))
    return _time(dataloader_step(module, optimizer, dataset, settings, device), device, settings)


def run(settings: DataBenchSettings, device: torch.device) -> dict:
    """The three pipelines on `device`, with ratios against the dataloader."""
    with tempfile.TemporaryDirectory(prefix="imbssl-bench-data-") as tmp:
        folder = Path(tmp)
        paths = write_jpegs(folder, settings.num_images)
        store_path = folder / "store.images.npy"
        started = time.perf_counter()
        problems = decode_to_store(paths, store_path, StoreSize(settings.store_size), folder, settings.workers,
                                   "decoding the benchmark's JPEGs")
        decode_s = time.perf_counter() - started
        assert not problems, problems
        store = np.load(store_path, mmap_mode="r")
        mean, std = channel_stats(store)
        rows = np.arange(len(store))
        report = {"settings": asdict(settings), "device": str(device),
                  "decode_images_per_s": settings.num_images / decode_s}
        report["resident"] = _bench_store(ResidentImages(to_device_images(store, device)), mean, std, settings,
                                          device)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        report["streamed"] = _bench_store(StreamedImages(store, rows, device), mean, std, settings, device)
        report["dataloader"] = _bench_dataloader(paths, mean, std, settings, device)
    base = report["dataloader"]["images_per_s"]
    for name in ("resident", "streamed"):
        report[name]["vs_dataloader"] = report[name]["images_per_s"] / base
    return report


def print_report(report: dict) -> None:
    s = report["settings"]
    print(f"data paths on {report['device']}: SimSiam {s['arch']} at {s['image_size']} px (store {s['store_size']} px), "
          f"batch {s['batch_size']}, {s['num_images']} JPEGs {JPEG_SIZE[0]}x{JPEG_SIZE[1]}, "
          f"dataloader workers {s['workers']}; prepare-time decode {report['decode_images_per_s']:.0f} images/s")
    for name in ("resident", "streamed", "dataloader"):
        r = report[name]
        gpu = f"  GPU step {r['gpu_step_s'] * 1000:8.1f} ms" if r["gpu_step_s"] is not None else ""
        ratio = f"  {r['vs_dataloader']:.2f}x dataloader" if "vs_dataloader" in r else ""
        print(f"  {name:10s} {r['images_per_s']:9.1f} images/s  wall step {r['wall_step_s'] * 1000:8.1f} ms{gpu}{ratio}")


def bench_data_paths(args, store_size: int | None, out: str | None) -> dict:
    """`imbssl bench --data-paths true`: the engine's settings flags shared with this benchmark, the
    store size (default: image_size x 8/7, 256 for 224), the report printed and written as JSON."""
    import dataclasses

    from imbssl.core.atomic import write_json
    from imbssl.data.device import resolve_device

    shared = {f.name: getattr(args, f.name) for f in dataclasses.fields(DataBenchSettings) if f.name != "store_size"}
    settings = DataBenchSettings(**shared, store_size=store_size or round(args.image_size * 8 / 7))
    report = run(settings, resolve_device(args.device))
    print_report(report)
    if out:
        write_json(out, report)
    return report
