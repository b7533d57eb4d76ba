"""A few training steps of each method, run by tests/test_distributed.py twice: in the test process
(one process, batch B) and under torchrun (2 processes x B/2), on the same images and weights.

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/helpers/ddp_job.py steps OUT
    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/helpers/ddp_job.py fail OUT
    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/helpers/ddp_job.py votes OUT

`steps` writes OUT/steps.pt (rank 0): per method the loss of every step and the final weights,
plus features of an odd number of images extracted by all ranks together. `fail` trains SimSiam
with rank 1 raising an error at its third step. `votes` runs the ranks' per-step agreement
(`distributed.LaggedMax`) on fixed wishes and writes what each rank read.

Augmentation is off (full-image crops, no flip, colour or grayscale): the views of an image are
then the same whichever rank draws them, so 1 and 2 processes must compute the same steps.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from imbssl.core import distributed
from imbssl.data.augment import AugmentConfig, BatchAugment
from imbssl.data.device import to_device_images
from imbssl.methods.distill import Distiller, DistillConfig, Teachers
from imbssl.evaluation.features import extract, extract_all_ranks
from imbssl.methods.registry import build_method
from imbssl.models.backbones import build_backbone
from imbssl.training.loop import TrainSettings, train_loop

NUM_IMAGES, BATCH, STEPS, SIZE = 32, 32, 4, 16  # one global batch per epoch: one loss per step
NO_AUGMENTATION = AugmentConfig(crop_min_scale=1.0, crop_max_scale=1.0, crop_min_ratio=1.0, crop_max_ratio=1.0,
                                flip_p=0.0, jitter_p=0.0, grayscale_p=0.0)
METHODS = {
    "simsiam": dict(proj_dim=32, pred_hidden_dim=8, warmup_epochs=0),
    "simclr": dict(proj_hidden_dim=32, proj_dim=16, warmup_epochs=0),
    "msn": dict(proj_hidden_dim=32, proj_dim=16, num_prototypes=8, warmup_epochs=0),  # ResNet: no masks, prior + Sinkhorn
    # base_lr below BYOL's 1.0: at 1.0 this tiny net's fourth step amplifies any 1e-7 difference
    # (a 1e-7 nudge of the initial weights of one process too) to 5e-4 in the BN weights.
    "byol": dict(proj_hidden_dim=32, proj_dim=16, pred_hidden_dim=16, base_lr=0.3, warmup_epochs=0),
    "vicreg": dict(proj_hidden_dim=32, proj_dim=16, warmup_epochs=0),  # variance, covariance on the gathered batch
    # global Sinkhorn; the prototypes frozen at the first of the 4 steps (SwAV's in-place normalisation under DDP);
    # the queue filled by the first step (32 rows: 16 per rank), in the Sinkhorn from the second
    "swav": dict(proj_hidden_dim=32, proj_dim=16, num_prototypes=8, freeze_prototypes_fraction=0.2, warmup_epochs=0,
                 queue_size=32, queue_start_fraction=0.0),
    "pswav": dict(proj_hidden_dim=32, proj_dim=16, num_prototypes=8, freeze_prototypes_fraction=0.2, warmup_epochs=0),
    # global center; teacher temperature warm-up over the first 2 steps; last layer frozen at the
    # first; DINO's head widths (a narrow head collapses at once, see test_dino.py)
    "dino": dict(proj_hidden_dim=2048, bottleneck_dim=256, num_prototypes=8, warmup_teacher_temp_fraction=0.5,
                 freeze_last_layer_fraction=0.2, warmup_epochs=0),
}


def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (NUM_IMAGES, SIZE, SIZE, 3), dtype=np.uint8)


def backbone(seed: int = 0):
    torch.manual_seed(seed)
    return build_backbone("resnet10", 4, SIZE)


def distiller() -> Distiller:
    teachers = Teachers(backbone(1), [backbone(2), backbone(3)])
    cluster_of = torch.from_numpy(np.random.default_rng(1).integers(0, 2, NUM_IMAGES))
    student = backbone(0)
    torch.manual_seed(0)
    return Distiller(student, DistillConfig(head_hidden_dim=8, warmup_epochs=0), teachers, cluster_of)


def module_of(name: str):
    if name == "distill":
        return distiller()
    student = backbone(0)
    torch.manual_seed(0)  # the heads
    return build_method(name, student, **METHODS[name])


def train(name: str, out: Path, fail_on_rank: int | None = None) -> dict:
    data = images()
    module = module_of(name)
    if fail_on_rank is not None and distributed.rank() == fail_on_rank:
        original, calls = module.loss, []

        def failing_loss(views, index):
            calls.append(1)
            if len(calls) == 3:
                raise RuntimeError(f"planted failure on rank {fail_on_rank}")
            return original(views, index)

        module.loss = failing_loss
    settings = TrainSettings(epochs=STEPS, batch_size=BATCH, checkpoint_every=0, knn_every=0, log_every=1,
                             amp=False, compile="off", device="cpu")
    augment = BatchAugment(NO_AUGMENTATION, data.reshape(-1, 3).mean(0) / 255, data.reshape(-1, 3).std(0) / 255,
                           SIZE)
    rows = train_loop(module, to_device_images(data, torch.device("cpu")), settings, augment, out / name, seed=0,
                      run_id=name)
    return {"losses": [row["loss"] for row in rows],
            "state": {key: value.detach().clone() for key, value in module.state_dict().items()}}


def features() -> torch.Tensor:
    """Features of 13 images (an odd count: unequal shares) from every rank, in index order."""
    data = to_device_images(images()[:13], torch.device("cpu"))
    return extract_all_ranks(backbone(5), data, [0.5] * 3, [0.25] * 3, batch_size=4)


def reference_features() -> torch.Tensor:
    return extract(backbone(5), to_device_images(images()[:13], torch.device("cpu")), [0.5] * 3, [0.25] * 3,
                   batch_size=4)


def steps(out: Path, methods=(*METHODS, "distill")) -> dict:
    return {"methods": {name: train(name, out) for name in methods}, "features": features(),
            "world_size": distributed.world_size()}


# Per step, what each rank wishes (0 nothing, 1 checkpoint, 2 stop); the last entry is settled,
# which must also read rank 1's stop of two steps before (due right then).
VOTES = {0: [0, 0, 1, 0, 0, 0, 0, 0, 0], 1: [0, 0, 0, 0, 0, 0, 2, 0, 0]}


def votes(out: Path) -> None:
    """Each rank casts its VOTES through LaggedMax (lag 2) and writes what it read back."""
    mine = VOTES[distributed.rank()]
    agreement = distributed.LaggedMax(torch.device("cpu"))
    read = [agreement.cast(wish) for wish in mine[:-1]] + [agreement.settle(mine[-1])]
    (out / f"votes{distributed.rank()}.txt").write_text(" ".join(map(str, read)))


def main(mode: str, out: str) -> None:
    torch.set_num_threads(1)
    distributed.setup(torch.device("cpu"))
    out = Path(out)
    if mode == "steps":
        result = steps(out)
        if distributed.is_main():
            torch.save(result, out / "steps.pt")
    elif mode == "fail":
        train("simsiam", out, fail_on_rank=1)
    elif mode == "votes":
        votes(out)
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(*sys.argv[1:])

