"""Dataset sources (cifar10, folder, digits) decoded once into uint8 arrays and cached as .npz.

Every later job reads the cache (`load_split`), so no job decodes images again.
Arrays are NHWC uint8 with int64 labels; the cache also stores class names and the
per-channel mean/std of the train split (used to normalise inputs everywhere).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import UserError
from .atomic import atomic_path

SOURCES = ("cifar10", "folder", "digits")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


@dataclass
class Split:
    images: np.ndarray  # (N, H, W, 3) uint8
    labels: np.ndarray  # (N,) int64
    classes: list[str]
    mean: np.ndarray  # (3,) float32, of the *train* split, in [0, 1]
    std: np.ndarray  # (3,) float32

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def load_cifar10(root: str | os.PathLike) -> tuple[dict, dict, list[str]]:
    """CIFAR-10 through torchvision: read a local copy, or download it when missing."""
    from torchvision.datasets import CIFAR10

    root = Path(root)
    local = (root / "cifar-10-batches-py").is_dir()
    try:
        train = CIFAR10(str(root), train=True, download=not local)
        test = CIFAR10(str(root), train=False, download=False)
    except Exception as err:  # offline, a partial download or a bad checksum
        raise UserError(
            f"dataset.name=cifar10: could not read or download CIFAR-10 into dataset.root={root} "
            f"({type(err).__name__}: {err}). Put cifar-10-python.tar.gz or the unpacked "
            f"cifar-10-batches-py/ folder in {root}, or set dataset.name: folder to read an image folder"
        ) from err
    to_arrays = lambda ds: {"images": np.asarray(ds.data, np.uint8), "labels": np.asarray(ds.targets, np.int64)}
    return to_arrays(train), to_arrays(test), list(train.classes)


def _folder_classes(split_dir: Path, classes: list[str] | None) -> list[str]:
    found = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    if not found:
        raise UserError(f"dataset.root: {split_dir} has no class folders (expected {split_dir}/<class>/<image>)")
    if classes is None:
        return found  # torchvision ImageFolder order: sorted by name
    missing = [c for c in classes if c not in found]
    extra = [c for c in found if c not in classes]
    if missing or extra:
        raise UserError(
            f"dataset.classes does not match the folders in {split_dir}: missing {missing}, not listed {extra}"
        )
    return list(classes)


def _read_folder_split(split_dir: Path, classes: list[str], image_size: int | None) -> dict:
    from PIL import Image

    images, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (split_dir / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for path in files:
            with Image.open(path) as im:
                im = im.convert("RGB")
                if image_size is not None and im.size != (image_size, image_size):
                    im = im.resize((image_size, image_size), Image.BILINEAR)
                images.append(np.asarray(im, np.uint8))
            labels.append(label)
    if not images:
        raise UserError(f"dataset.root: no images found under {split_dir}")
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise UserError(f"images under {split_dir} differ in size {sorted(shapes)[:3]}: set dataset.image_size")
    return {"images": np.stack(images), "labels": np.asarray(labels, np.int64)}


def load_folder(root: str | os.PathLike, classes: list[str] | None, image_size: int | None):
    """An image-folder tree: root/train/<class>/* and root/test/<class>/*."""
    root = Path(root)
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise UserError(f"dataset.root={root} has no {split}/ folder (expected {root}/{split}/<class>/<image>)")
    order = _folder_classes(root / "train", classes)
    _folder_classes(root / "test", order)
    train = _read_folder_split(root / "train", order, image_size)
    test = _read_folder_split(root / "test", order, image_size)
    return train, test, order


def load_digits(image_size: int, test_fraction: float, split_seed: int):
    """scikit-learn's 8x8 digits, split deterministically (stratified), upsampled to RGB image_size."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    digits = sk_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]  # (N,1,8,8) in [0,1]
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8).repeat(1, 3, 1, 1).permute(0, 2, 3, 1).numpy()
    y = digits.target.astype(np.int64)
    idx_train, idx_test = train_test_split(
        np.arange(len(y)), test_size=test_fraction, random_state=split_seed, stratify=y
    )
    idx_train.sort()
    idx_test.sort()
    pack = lambda idx: {"images": np.ascontiguousarray(x[idx]), "labels": y[idx]}
    return pack(idx_train), pack(idx_test), [str(d) for d in range(10)]


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std in [0, 1], accumulated in float64 to stay exact on 50k images."""
    flat = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    return flat.mean(0).astype(np.float32), flat.std(0).astype(np.float32)


def prepare(
    name: str,
    root: str | os.PathLike,
    out_train: str | os.PathLike,
    out_test: str | os.PathLike,
    image_size: int | None = None,
    classes: list[str] | None = None,
    test_fraction: float = 0.2,
    split_seed: int = 0,
) -> None:
    """Decode a dataset source once and cache both splits as .npz files."""
    if name == "cifar10":
        train, test, names = load_cifar10(root)
    elif name == "folder":
        train, test, names = load_folder(root, classes, image_size)
    elif name == "digits":
        train, test, names = load_digits(image_size or 16, test_fraction, split_seed)
    else:
        raise UserError(f"dataset.name={name!r} is not one of {', '.join(SOURCES)}")
    mean, std = channel_stats(train["images"])
    for arrays, out in ((train, out_train), (test, out_test)):
        with atomic_path(out) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays, classes=np.asarray(names), mean=mean, std=std)


def load_split(path: str | os.PathLike) -> Split:
    """Read a cached split written by `prepare`."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist: run `imbssl prepare-data` (the prepare_data rule) first")
    with np.load(path) as z:
        return Split(
            images=z["images"],
            labels=z["labels"].astype(np.int64),
            classes=[str(c) for c in z["classes"]],
            mean=z["mean"].astype(np.float32),
            std=z["std"].astype(np.float32),
        )
