"""Images on the device or streamed to it: the same batches, the same training, the right choice."""

import threading

import numpy as np
import pytest
import torch

from imbssl import UserError
from imbssl.core import checkpoint
from imbssl.data import device
from imbssl.data.augment import AugmentConfig, centre_crop
from imbssl.data.device import ResidentImages, StreamedImages, choose_resident, image_source, to_device_images
from imbssl.methods.simsiam import SimSiamConfig
from imbssl.models.backbones import ModelConfig
from imbssl.training.jobs import load_training_data
from imbssl.training.loop import TrainSettings
from imbssl.training.pretrain import pretrain

CPU = torch.device("cpu")


@pytest.fixture
def store(tmp_path, rng):
    """A memory-mapped uint8 store of 40 images, as prepare-data writes one."""
    path = tmp_path / "train.images.npy"
    images = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(40, 12, 12, 3))
    images[:] = rng.integers(0, 256, images.shape, dtype=np.uint8)
    images.flush()
    return np.load(path, mmap_mode="r")


def test_streamed_batches_are_the_resident_batches(store):
    rows = np.array([3, 7, 0, 39, 12, 5, 21, 30, 8, 9])
    resident = ResidentImages(to_device_images(store[rows], CPU))
    streamed = StreamedImages(store, rows, CPU)
    assert len(streamed) == 10 and streamed.image_shape == (3, 12, 12)
    indices = [torch.tensor([4, 0, 9]), torch.tensor([1, 2]), torch.tensor([8, 8, 3, 5])]
    for a, b in zip(resident.batches(indices), streamed.batches(indices), strict=True):
        assert a.shape[1:] == (3, 12, 12) and torch.equal(a, b)
    assert torch.equal(streamed[torch.tensor([2, 1])], resident[torch.tensor([2, 1])])
    # Row 3 of the subset is store row 39, as NCHW.
    assert torch.equal(streamed[torch.tensor([3])][0], torch.from_numpy(np.array(store[39])).permute(2, 0, 1))
    chunks = list(streamed.chunks(4))
    assert [len(c) for c in chunks] == [4, 4, 2] and torch.equal(torch.cat(chunks), resident.images)
    part = streamed.rows(slice(2, 5))
    assert torch.equal(torch.cat(list(part.chunks(8))), resident.images[2:5])


def test_a_failing_gather_is_raised_in_the_consumer_and_nothing_hangs(store):
    streamed = StreamedImages(store, np.arange(10), CPU)
    with pytest.raises(IndexError):
        list(streamed.batches([torch.tensor([0, 1]), torch.tensor([99])]))  # position 99 does not exist
    threads = threading.active_count()
    for batch in streamed.batches(torch.tensor([i]) for i in range(10)):
        break  # the consumer stops early: the prefetching thread must end
    for _ in range(100):
        if threading.active_count() <= threads:
            break
        threading.Event().wait(0.01)
    assert threading.active_count() <= threads


def test_auto_keeps_images_resident_only_when_they_fit(monkeypatch):
    monkeypatch.setattr(device, "device_memory_bytes", lambda dev: 1000)
    assert choose_resident("auto", 500, CPU, 0.5) and not choose_resident("auto", 501, CPU, 0.5)
    assert choose_resident("true", 10**12, CPU, 0.5) and not choose_resident("false", 1, CPU, 0.5)
    with pytest.raises(UserError, match="pretrain.data_on_device='yes'"):
        choose_resident("yes", 1, CPU, 0.5)
    with pytest.raises(UserError, match="pretrain.device_memory_fraction=0"):
        choose_resident("auto", 1, CPU, 0)


def test_the_training_data_is_streamed_when_it_does_not_fit(digits_data, monkeypatch):
    train, test, subsets = digits_data
    monkeypatch.setattr(device, "device_memory_bytes", lambda dev: 10_000)  # far less than the subset
    streamed = load_training_data(train, test, subsets / "full.csv", CPU)
    assert isinstance(streamed.images, StreamedImages)
    resident = load_training_data(train, test, subsets / "full.csv", CPU, data_on_device="true")
    assert isinstance(resident.images, ResidentImages)
    assert torch.equal(torch.cat(list(streamed.images.chunks(500))), resident.images.images)


def test_streamed_training_gives_the_weights_of_resident_training(digits_data, tmp_path):
    train, test, subsets = digits_data
    config = SimSiamConfig(proj_dim=32, pred_hidden_dim=8, warmup_epochs=0)
    weights = {}
    for placement in ("true", "false"):
        settings = TrainSettings(epochs=2, batch_size=32, checkpoint_every=1, knn_every=1, knn_k=5,
                                 data_on_device=placement)
        path = pretrain("simsiam", config, str(train), str(test), str(subsets / "imbalanced-p100.csv"),
                        str(tmp_path / placement), seed=3, settings=settings,
                        model=ModelConfig(arch="resnet10", width=4), augment=AugmentConfig())
        weights[placement] = checkpoint.load(path)["method_state"]
    for key in weights["true"]:
        assert torch.equal(weights["true"][key], weights["false"][key]), key
    metrics = [(tmp_path / p / "metrics.csv").read_text().splitlines() for p in ("true", "false")]
    assert [r.split(",")[:3] for r in metrics[0]] == [r.split(",")[:3] for r in metrics[1]]


def test_image_source_uploads_or_streams_the_same_rows(store):
    rows = np.array([5, 1, 2])
    a, b = image_source(store, rows, CPU, True), image_source(store, rows, CPU, False)
    assert a.resident and not b.resident
    assert torch.equal(a.images, torch.cat(list(b.chunks(2))))


def test_centre_crop_takes_torchvisions_central_window():
    images = torch.arange(2 * 3 * 7 * 6).reshape(2, 3, 7, 6)
    crop = centre_crop(images, 4)
    # torchvision's CenterCrop: top = round((7 - 4) / 2) = 2, left = round((6 - 4) / 2) = 1
    assert torch.equal(crop, images[..., 2:6, 1:5])
    assert centre_crop(images, None) is images
