import numpy as np
import pytest
from PIL import Image

from imbssl import UserError
from imbssl.data.store import channel_stats, load_split

from helpers.data import prepare_dataset


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
    prepare_dataset("digits", tmp_path, tmp_path / "a.npz", tmp_path / "b.npz", image_size=16)
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
    prepare_dataset("folder", tmp_path / "d", tmp_path / "t.npz", tmp_path / "e.npz")
    split = load_split(tmp_path / "t.npz")
    assert split.classes == ["ant", "cat", "zebra"]  # torchvision ImageFolder order
    assert split.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    first_zebra = np.asarray(Image.open(tmp_path / "d" / "train" / "zebra" / "0000.png"))
    assert np.array_equal(split.images[6], first_zebra)
    prepare_dataset("folder", tmp_path / "d", tmp_path / "t2.npz", tmp_path / "e2.npz", classes=["zebra", "ant", "cat"])
    ordered = load_split(tmp_path / "t2.npz")
    assert ordered.classes == ["zebra", "ant", "cat"] and np.array_equal(ordered.images[0], first_zebra)


def test_folder_class_mismatch_names_the_setting(tmp_path):
    _make_folder(tmp_path / "d", ["a", "b"])
    with pytest.raises(UserError, match="dataset.classes"):
        prepare_dataset("folder", tmp_path / "d", tmp_path / "t.npz", tmp_path / "e.npz", classes=["a", "c"])
    with pytest.raises(UserError, match="dataset.root=.* has no train/ folder"):
        prepare_dataset("folder", tmp_path / "missing", tmp_path / "t.npz", tmp_path / "e.npz")


def test_cifar10_offline_error_says_where_to_put_the_files(tmp_path, monkeypatch):
    import urllib.error

    import torchvision.datasets

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(UserError) as err:
        prepare_dataset("cifar10", tmp_path, tmp_path / "t.npz", tmp_path / "e.npz")
    message = str(err.value)
    assert "cifar-10-python.tar.gz" in message and "cifar-10-batches-py" in message
    assert "dataset.name: folder" in message and "\n" not in message
    assert not (tmp_path / "t.npz").exists()


def test_cifar100_offline_error_says_where_to_put_the_files(tmp_path, monkeypatch):
    import urllib.error

    import torchvision.datasets

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network\nat all")  # a multi-line reason stays one line

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", offline)
    with pytest.raises(UserError) as err:
        prepare_dataset("cifar100", tmp_path, tmp_path / "t.npz", tmp_path / "e.npz")
    message = str(err.value)
    assert message.startswith("dataset.name=cifar100: could not read or download CIFAR-100")
    assert "cifar-100-python.tar.gz" in message and "cifar-100-python/" in message
    assert "dataset.name: folder" in message and "\n" not in message
    assert not (tmp_path / "t.npz").exists()


def test_prepare_data_offline_prints_one_line(tmp_path, monkeypatch, capsys):
    import torchvision.datasets

    from imbssl import cli

    def offline(*args, **kwargs):
        raise RuntimeError("Dataset not found or corrupted.")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", offline)
    monkeypatch.setattr("sys.argv", ["imbssl", "prepare-data", "--name", "cifar100", "--root", str(tmp_path),
                                     "--out-train", str(tmp_path / "t.npz"), "--out-test", str(tmp_path / "e.npz")])
    assert cli.main() == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("imbssl: error: dataset.name=cifar100")
    assert "cifar-100-python.tar.gz" in err


def test_channel_stats_by_hand():
    images = np.zeros((2, 1, 1, 3), np.uint8)
    images[1] = 255
    mean, std = channel_stats(images)
    assert np.allclose(mean, 0.5) and np.allclose(std, 0.5)


def _prepare_fails(root, tmp_path, **kw):
    """prepare_dataset() of a folder dataset that must fail: its one-line message; nothing written."""
    out = tmp_path / "results" / "data"
    with pytest.raises(UserError) as err:
        prepare_dataset("folder", root, out / "train.npz", out / "test.npz", **kw)
    message = str(err.value)
    assert "\n" not in message
    assert not out.exists() or not any(out.iterdir()), "a failed prepare wrote files"
    return message


def test_every_unreadable_or_non_image_file_is_named_in_one_error(tmp_path):
    root = tmp_path / "d"
    _make_folder(root, ["a", "b"])
    (root / "train" / "a" / "0001.png").write_bytes(b"not a png at all")  # truncated / corrupt
    (root / "train" / "b" / "notes.txt").write_text("a stray file")
    (root / "test" / "b" / "0002.png").write_bytes(b"")
    (root / "train" / "a" / ".DS_Store").write_bytes(b"\0")  # hidden files are skipped, not errors
    message = _prepare_fails(root, tmp_path)
    assert "3 problem(s)" in message
    for name in ("train/a/0001.png", "train/b/notes.txt (not an image file)", "test/b/0002.png"):
        assert name in message, name
    assert ".DS_Store" not in message and "delete or replace these files" in message


def test_the_error_names_at_most_twenty_files_and_counts_the_rest(tmp_path):
    root = tmp_path / "d"
    _make_folder(root, ["a"], per_class=1)
    for i in range(25):
        (root / "train" / "a" / f"bad{i:02d}.jpg").write_bytes(b"junk")
    message = _prepare_fails(root, tmp_path)
    assert "25 problem(s)" in message and "and 5 more" in message
    assert "bad19.jpg" in message and "bad20.jpg" not in message


def test_a_class_folder_without_images_is_an_error(tmp_path):
    root = tmp_path / "d"
    _make_folder(root, ["a", "b"])
    for path in (root / "train" / "b").iterdir():
        path.unlink()
    message = _prepare_fails(root, tmp_path)
    assert "train/b/ (no images)" in message


def test_a_test_class_the_train_split_lacks_is_an_error(tmp_path):
    root = tmp_path / "d"
    _make_folder(root, ["a", "b"])
    (root / "test" / "c").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "test" / "c" / "0000.png")
    message = _prepare_fails(root, tmp_path)
    assert "has classes the train split lacks (c)" in message


def test_an_empty_root_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    assert "has no train/ folder" in _prepare_fails(tmp_path / "empty", tmp_path)
    (tmp_path / "empty" / "train").mkdir()
    (tmp_path / "empty" / "test").mkdir()
    assert "has no class folders" in _prepare_fails(tmp_path / "empty", tmp_path)


def test_a_test_split_may_lack_a_class(tmp_path):
    root = tmp_path / "d"
    _make_folder(root, ["a", "b", "c"])
    for path in (root / "test" / "b").iterdir():
        path.unlink()
    (root / "test" / "b").rmdir()
    prepare_dataset("folder", root, tmp_path / "t.npz", tmp_path / "e.npz")
    test = load_split(tmp_path / "e.npz")
    assert test.classes == ["a", "b", "c"] and test.labels.tolist() == [0, 0, 0, 2, 2, 2]
