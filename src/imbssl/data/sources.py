"""Dataset sources: which images a dataset has, with their labels and class names.

`dataset.name` picks one: `cifar10` / `cifar100` (torchvision's arrays, downloaded when missing),
`folder` (root/{train,test}/<class>/<image>), `imagelist` (ImageNet-LT-style list files of
`relative/path.jpg label`), `digits` (scikit-learn's 8x8 digits, upsampled: the demo). Array
sources hand back their pixels; file sources hand back (path, label) lists that the store
(store.py) decodes once. Problems with the files are collected and named all at once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from imbssl import UserError

Source = Literal["cifar10", "cifar100", "folder", "imagelist", "digits"]
SOURCES = get_args(Source)
# Images per class of the train split, for the sources where it is known without reading data
# (the config check uses it before any job runs).
TRAIN_CLASS_COUNTS = {"cifar10": [5000] * 10, "cifar100": [500] * 100}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


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


def listing(items: list[str]) -> str:
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
        raise UserError(f"dataset.root={root}: {root / 'test'} has classes the train split lacks ({listing(unknown)}): "
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


def shown_path(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def load_folder(root: str | os.PathLike, classes: list[str] | None):
    """An image-folder tree: root/train/<class>/* and root/test/<class>/* -> (train, test) file
    lists [(path, label)], the class order and the problems found (non-image files, empty folders)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"dataset.root={root} has no train/ folder ({root} does not exist): point dataset.root "
                        f"at a folder with train/<class>/<image> and test/<class>/<image>")
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise UserError(f"dataset.root={root} has no {split}/ folder (expected {root}/{split}/<class>/<image>)")
    order = _folder_classes(root, classes)
    train, problems = _image_files(root / "train", order, root)
    test, found = _image_files(root / "test", order, root)
    return train, test, order, problems + found


def read_image_list(list_file: str | os.PathLike, root: Path, setting: str) -> list[tuple[Path, int]]:
    """An ImageNet-LT / Places-LT / iNaturalist list: one `relative/path.jpg label` per line
    (paths relative to dataset.root; blank lines skipped). A malformed line is a one-line error."""
    path = Path(list_file)
    if not path.is_file():
        raise UserError(f"{setting}={path} does not exist: point it at a list file with one "
                        f"'relative/path.jpg label' per line (paths relative to dataset.root)")
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.rsplit(None, 1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise UserError(f"{setting}={path} line {number}: expected 'relative/path.jpg label', got {line.strip()!r}")
        label = int(parts[1])
        if label < 0:
            raise UserError(f"{setting}={path} line {number}: label {label} < 0; labels are 0, 1, ..., C-1")
        entries.append((root / parts[0].strip(), label))
    if not entries:
        raise UserError(f"{setting}={path} lists no images")
    return entries


def list_class_counts(list_file: str | os.PathLike, setting: str) -> list[int]:
    """Images per label of a list file, from its labels alone (the config check runs it before
    any job: no image is opened)."""
    labels = [label for _, label in read_image_list(list_file, Path("."), setting)]
    return np.bincount(labels).tolist()


def read_class_names(path: str | os.PathLike | None, num_classes: int) -> list[str]:
    """dataset.class_names: one name per line (line c names label c); without it, label c is named c."""
    if path is None:
        return [str(c) for c in range(num_classes)]
    file = Path(path)
    if not file.is_file():
        raise UserError(f"dataset.class_names={file} does not exist: give a file with one class name per line, "
                        f"or set it to null to name classes by their labels")
    names = [line.strip() for line in file.read_text().splitlines() if line.strip()]
    if len(names) < num_classes:
        raise UserError(f"dataset.class_names={file} names {len(names)} classes but the lists use labels up to "
                        f"{num_classes - 1}: give one name per class, line c for label c")
    return names


def image_list_classes(train: list[tuple[Path, int]], names_file: str | None) -> list[str]:
    """The class names of an image-list dataset; every label of the train list must have a name."""
    num_classes = max(label for _, label in train) + 1
    return read_class_names(names_file, num_classes)


def load_image_lists(root: str | os.PathLike, train_list: str | None, test_list: str | None,
                     extra_train_list: str | None, names_file: str | None):
    """An image-list dataset -> (train, test) file lists, class names, and the mask of the train
    images that the train list itself names (the rest come from dataset.extra_train_list)."""
    root = Path(root)
    for setting, value in (("dataset.train_list", train_list), ("dataset.test_list", test_list)):
        if value is None:
            raise UserError(f"dataset.name=imagelist needs {setting}: a file with one 'relative/path.jpg label' per line")
    train = read_image_list(train_list, root, "dataset.train_list")
    listed = np.ones(len(train), bool)
    if extra_train_list is not None:
        known = dict(train)
        extra = read_image_list(extra_train_list, root, "dataset.extra_train_list")
        conflicts = [f"{shown_path(path, root)} ({known[path]} vs {label})" for path, label in extra
                     if path in known and known[path] != label]
        if conflicts:
            raise UserError(f"dataset.extra_train_list={extra_train_list} labels {len(conflicts)} image(s) of "
                            f"dataset.train_list={train_list} differently: {listing(conflicts)}; "
                            "the two lists must agree on every image they both name")
        extra = [entry for entry in extra if entry[0] not in known]  # an image both lists name is stored once
        train, listed = train + extra, np.concatenate([listed, np.zeros(len(extra), bool)])
    test = read_image_list(test_list, root, "dataset.test_list")
    classes = image_list_classes(train, names_file)
    unknown = sorted({label for _, label in test if label >= len(classes)})
    if unknown:
        raise UserError(f"dataset.test_list={test_list} has labels the train list lacks ({listing(list(map(str, unknown)))}): "
                        f"the test list must use the train list's labels 0..{len(classes) - 1}")
    missing = [shown_path(path, root) for path, _ in train + test if not path.is_file()]
    if missing:
        raise UserError(f"dataset.root={root}: {len(missing)} image(s) named in the list files do not exist: "
                        f"{listing(missing)}; fix dataset.root or the list files")
    return train, test, classes, listed


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


