"""The CUDA paths, for a machine with a GPU: `pytest -m gpu` (skipped without one; conftest.py).

Each checks a GPU-only path against its CPU-tested twin: streamed batches (pinned buffers, side
stream, events) against resident ones, a bf16 autocast step against float32, torch.compile on CUDA
against eager, a one-process NCCL group, and RAPIDS cuML's k-means against scikit-learn's when
cuML imports.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from imbssl.data.augment import AugmentConfig, BatchAugment
from imbssl.data.device import ResidentImages, StreamedImages, to_device_images
from imbssl.methods.registry import build_method
from imbssl.models.backbones import build_backbone
from imbssl.training.loop import train_step

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


def store(n=96, size=16, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_streamed_batches_on_a_side_stream_equal_the_resident_ones():
    images = store()
    rows = np.random.default_rng(1).permutation(len(images))[:80]
    resident = ResidentImages(to_device_images(images[rows], CUDA))
    streamed = StreamedImages(images, rows, CUDA)
    order = torch.randperm(80, device=CUDA)
    batches = [order[i:i + 16] for i in range(0, 80, 16)]
    for index, (a, b) in zip(batches, zip(resident.batches(batches), streamed.batches(batches))):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert b.is_cuda and b.dtype == torch.uint8


def _step(amp: bool, compile_backbone: bool = False, seed: int = 0) -> tuple[float, torch.nn.Module]:
    torch.manual_seed(seed)
    method = build_method("simsiam", build_backbone("resnet10", 8, 16), proj_dim=64, pred_hidden_dim=16).to(CUDA)
    if compile_backbone:
        method.backbone.compile()
    optimizer = method.make_optimizer(32)
    images = to_device_images(store(32), CUDA)
    augment = BatchAugment(AugmentConfig(), [0.5] * 3, [0.25] * 3, 16)
    generator = torch.Generator(device=CUDA).manual_seed(0)
    loss, _ = train_step(method, optimizer, images, torch.arange(32, device=CUDA), augment, generator,
                         torch.Generator().manual_seed(0), amp=amp, channels_last=True)
    return loss.item(), method


def test_a_bf16_autocast_step_is_close_to_float32():
    fp32, _ = _step(amp=False)
    bf16, _ = _step(amp=True)
    assert np.isfinite(bf16) and bf16 == pytest.approx(fp32, abs=2e-2)


def test_torch_compile_on_cuda_matches_eager():
    eager, eager_method = _step(amp=False)
    compiled, compiled_method = _step(amp=False, compile_backbone=True)
    assert compiled == pytest.approx(eager, rel=1e-3, abs=1e-4)
    for (name, a), b in zip(eager_method.state_dict().items(), compiled_method.state_dict().values()):
        torch.testing.assert_close(a.float(), b.float(), rtol=1e-3, atol=1e-4, msg=name)


def test_nccl_with_one_process_joins_and_reduces():
    code = ("import torch, torch.distributed as dist; from imbssl.core import distributed as d;"
            "dev = d.setup(torch.device('cuda')); x = torch.ones(3, device=dev);"
            "print(dist.get_backend(), d.world_size(), d.all_reduce_sum(x).tolist())")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1",
                           "--no-python", sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=300, env={**os.environ})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-5:] == ["nccl", "1", "[1.0,", "1.0,", "1.0]"]


def test_cuml_kmeans_agrees_with_scikit_learn_when_it_imports():
    pytest.importorskip("cuml", reason="RAPIDS cuML is not installed (pip install 'imbssl[cuml-cu13]')")
    from sklearn.datasets import make_blobs

    from imbssl.clustering.kmeans import kmeans

    x, _ = make_blobs(n_samples=2000, centers=8, n_features=32, random_state=0)
    x = x.astype(np.float32)
    ours = kmeans(torch.from_numpy(x).to(CUDA), k=8, seed=0, backend="cuml", n_init=3)
    reference = kmeans(x, k=8, seed=0, backend="sklearn", n_init=3)
    assert ours.info["backend"] == "cuml"
    assert ours.inertia == pytest.approx(reference.inertia, rel=0.01)


def test_a_mid_epoch_checkpoint_restores_the_cuda_random_streams():
    """The CUDA generator of augmentations and the global CUDA RNG (MSN's masks on the GPU) come
    back to where a mid-epoch checkpoint took them; the CPU twin is tests/test_preemption.py."""
    from imbssl.training.checkpointing import restore_rng, rng_states

    generator, host = torch.Generator(device=CUDA).manual_seed(1), torch.Generator().manual_seed(2)
    torch.manual_seed(3)
    torch.rand(5, generator=generator, device=CUDA), torch.rand(5, device=CUDA)  # part of an epoch
    states = rng_states(generator, host)
    assert "global_cuda" in states and states["device"].device.type == "cpu"
    expected = (torch.rand(5, generator=generator, device=CUDA), torch.rand(5, generator=host),
                torch.rand(5, device=CUDA), torch.rand(5))
    moved = {key: value.to(CUDA) for key, value in states.items()}  # as torch.load(map_location=cuda) gives them
    restore_rng(moved, generator, host)
    again = (torch.rand(5, generator=generator, device=CUDA), torch.rand(5, generator=host),
             torch.rand(5, device=CUDA), torch.rand(5))
    for a, b in zip(expected, again):
        assert torch.equal(a, b)
