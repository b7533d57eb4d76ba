import numpy as np
import pytest
from PIL import Image

from imbssl import UserError
from imbssl.data import channel_stats, load_split, prepare


def test_digits_split_is_deterministic_rgb_and_stratified(tmp_path, digits_data):
    train_path, test_path, _ = digits_data
    train, test = load_split(train_path), load_split(test_path)
    assert train.images.shape[1:] == (16, 16, 3) and train.images.dtype == np.uint8
    assert len(train.labels) + len(test.labels) == 1797
    assert abs(len(test.labels) / 1797 - 0.2) < 0.01
    assert np.array_equal(train.images[..., 0], train.images[..., 2])  # grey digits, 3 channels
    assert train.classes == [str(d) for d in range(10)]
    counts = np.bincount(test.labels)
    assert counts.max() - counts.min() <= 2  # stratified
    prepare("digits", tmp_path, tmp_path / "a.npz", tmp_path / "b.npz", image_size=16)
    again = load_split(tmp_path / "a.npz")
    assert np.array_equal(again.images, train.images) and np.array_equal(again.labels, train.labels)


def _make_folder(root, classes, per_class=3, size=8):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i:04d}.png")


def test_folder_dataset_sorted_order_and_explicit_order(tmp_path):
    _make_folder(tmp_path / "d", ["zebra", "ant", "cat"])
    prepare("folder", tmp_path / "d", tmp_path / "t.npz", tmp_path / "e.npz")
    split = load_split(tmp_path / "t.npz")
    assert split.classes == ["ant", "cat", "zebra"]  # torchvision ImageFolder order
    assert split.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    first_zebra = np.asarray(Image.open(tmp_path / "d" / "train" / "zebra" / "0000.png"))
    assert np.array_equal(split.images[6], first_zebra)
    prepare("folder", tmp_path / "d", tmp_path / "t2.npz", tmp_path / "e2.npz", classes=["zebra", "ant", "cat"])
    ordered = load_split(tmp_path / "t2.npz")
    assert ordered.classes == ["zebra", "ant", "cat"] and np.array_equal(ordered.images[0], first_zebra)


def test_folder_class_mismatch_names_the_setting(tmp_path):
    _make_folder(tmp_path / "d", ["a", "b"])
    with pytest.raises(UserError, match="dataset.classes"):
        prepare("folder", tmp_path / "d", tmp_path / "t.npz", tmp_path / "e.npz", classes=["a", "c"])
    with pytest.raises(UserError, match="dataset.root=.* has no train/ folder"):
        prepare("folder", tmp_path / "missing", tmp_path / "t.npz", tmp_path / "e.npz")


def test_cifar10_offline_error_says_where_to_put_the_files(tmp_path, monkeypatch):
    import urllib.error

    import torchvision.datasets

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(UserError) as err:
        prepare("cifar10", tmp_path, tmp_path / "t.npz", tmp_path / "e.npz")
    message = str(err.value)
    assert "cifar-10-python.tar.gz" in message and "cifar-10-batches-py" in message
    assert "dataset.name: folder" in message and "\n" not in message
    assert not (tmp_path / "t.npz").exists()


def test_channel_stats_by_hand():
    images = np.zeros((2, 1, 1, 3), np.uint8)
    images[1] = 255
    mean, std = channel_stats(images)
    assert np.allclose(mean, 0.5) and np.allclose(std, 0.5)
