"""Dataset sources (cifar10, cifar100, folder, digits) decoded once into uint8 arrays and cached as .npz.

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

SOURCES = ("cifar10", "cifar100", "folder", "digits")
# Images per class of the train split, for the sources where it is known without reading data
# (the config check uses it before any job runs).
TRAIN_CLASS_COUNTS = {"cifar10": [5000] * 10, "cifar100": [500] * 100}
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


# dataset.name -> (torchvision class, name in messages, archive, folder it unpacks to).
CIFAR = {
    "cifar10": ("CIFAR10", "CIFAR-10", "cifar-10-python.tar.gz", "cifar-10-batches-py"),
    "cifar100": ("CIFAR100", "CIFAR-100", "cifar-100-python.tar.gz", "cifar-100-python"),
}


def load_cifar(name: str, root: str | os.PathLike) -> tuple[dict, dict, list[str]]:
    """CIFAR-10 or CIFAR-100 through torchvision: read a local copy, or download it when missing.

    CIFAR-100 gives its 100 fine labels and their names (torchvision's `targets` and `classes`).
    """
    import torchvision.datasets

    class_name, title, archive, folder = CIFAR[name]
    dataset = getattr(torchvision.datasets, class_name)
    root = Path(root)
    local = (root / folder).is_dir()
    try:
        train = dataset(str(root), train=True, download=not local)
        test = dataset(str(root), train=False, download=False)
    except Exception as err:  # offline, a partial download or a bad checksum
        reason = f"{type(err).__name__}: {err}".replace("\n", " ")
        raise UserError(
            f"dataset.name={name}: could not read or download {title} into dataset.root={root} "
            f"({reason}). Put {archive} or the unpacked "
            f"{folder}/ folder in {root}, or set dataset.name: folder to read an image folder"
        ) from err
    to_arrays = lambda ds: {"images": np.asarray(ds.data, np.uint8), "labels": np.asarray(ds.targets, np.int64)}
    return to_arrays(train), to_arrays(test), list(train.classes)


MAX_LISTED = 20  # bad files named in one error message


def _listing(items: list[str]) -> str:
    """The first MAX_LISTED items, comma-separated, and how many more there are."""
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


def _class_dirs(split_dir: Path) -> list[str]:
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def _folder_classes(root: Path, classes: list[str] | None) -> list[str]:
    """The class order: `classes`, or the train split's folder names sorted (ImageFolder's order).

    The test split may lack classes (their per-class accuracy is then n/a), never add any.
    """
    train, test = _class_dirs(root / "train"), _class_dirs(root / "test")
    if not train:
        raise UserError(f"dataset.root={root}: {root / 'train'} has no class folders "
                        f"(expected {root}/train/<class>/<image>)")
    if classes is not None:
        missing = [c for c in classes if c not in train]
        extra = [c for c in train if c not in classes]
        if missing or extra:
            raise UserError(f"dataset.classes does not match the class folders in {root / 'train'}: "
                            f"no folder for {missing}, not listed {extra}; list exactly the folder names")
    order = list(classes) if classes is not None else train
    unknown = [c for c in test if c not in order]
    if unknown:
        raise UserError(f"dataset.root={root}: {root / 'test'} has classes the train split lacks ({_listing(unknown)}): "
                        f"add their training images to {root / 'train'} or remove them from the test split")
    return order


def _image_files(split_dir: Path, classes: list[str], root: Path) -> tuple[list[tuple[Path, int]], list[str]]:
    """(path, label) of every image of a split, and the problems found: non-image files and class
    folders without images (hidden files such as .DS_Store are skipped)."""
    files, problems = [], []
    for label, name in enumerate(classes):
        class_dir = split_dir / name
        if not class_dir.is_dir():
            continue  # a test split may lack a class
        entries = sorted(p for p in class_dir.iterdir() if p.is_file() and not p.name.startswith("."))
        images = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES]
        problems += [f"{p.relative_to(root)} (not an image file)" for p in entries if p not in images]
        if not images:
            problems.append(f"{class_dir.relative_to(root)}/ (no images)")
        files += [(path, label) for path in images]
    return files, problems


def _decode(path: Path, image_size: int | None) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        if image_size is not None and im.size != (image_size, image_size):
            im = im.resize((image_size, image_size), Image.BILINEAR)
        return np.asarray(im, np.uint8)


def _decode_split(files: list[tuple[Path, int]], root: Path, image_size: int | None) -> tuple[dict, list[str]]:
    """The decoded images of a split, and the files that could not be decoded."""
    images, labels, problems = [], [], []
    for path, label in files:
        try:
            images.append(_decode(path, image_size))
        except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
            problems.append(f"{path.relative_to(root)} ({type(err).__name__}: {err})".replace("\n", " "))
            continue
        labels.append(label)
    return {"images": images, "labels": np.asarray(labels, np.int64)}, problems


def load_folder(root: str | os.PathLike, classes: list[str] | None, image_size: int | None):
    """An image-folder tree: root/train/<class>/* and root/test/<class>/*.

    Every file is checked before anything is written: all unreadable or non-image files and empty
    class folders are named in one error (up to MAX_LISTED of them).
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"dataset.root={root} has no train/ folder ({root} does not exist): point dataset.root "
                        f"at a folder with train/<class>/<image> and test/<class>/<image>")
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise UserError(f"dataset.root={root} has no {split}/ folder (expected {root}/{split}/<class>/<image>)")
    order = _folder_classes(root, classes)
    splits, problems = [], []
    for split in ("train", "test"):
        files, found = _image_files(root / split, order, root)
        arrays, unreadable = _decode_split(files, root, image_size)
        splits.append(arrays)
        problems += found + unreadable
    if problems:
        raise UserError(f"dataset.root={root}: {len(problems)} problem(s) with the image files: {_listing(problems)}; "
                        f"delete or replace these files (or fill the empty class folders), then rerun")
    for split, arrays in zip(("train", "test"), splits):
        shapes = sorted({im.shape for im in arrays["images"]})
        if len(shapes) > 1:
            raise UserError(f"images under {root / split} differ in size {shapes[:3]}: set dataset.image_size")
        arrays["images"] = np.stack(arrays["images"])
    return splits[0], splits[1], order


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
    if name in CIFAR:
        train, test, names = load_cifar(name, root)
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


def class_names(split_npz: str | os.PathLike) -> list[str]:
    """Class names stored in a prepared split (train.npz / test.npz), read without the images."""
    path = Path(split_npz)
    if not path.exists():
        raise UserError(f"{path} does not exist: run `imbssl prepare-data` (the prepare_data rule) first")
    with np.load(path, allow_pickle=False) as arrays:
        return [str(name) for name in arrays["classes"]]
