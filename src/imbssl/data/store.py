"""Dataset sources (cifar10, cifar100, folder, imagelist, digits) decoded once into a uint8 store.

`prepare` decodes every image once (in parallel, with a progress bar): shorter side resized to
`dataset.store_size` and centre-cropped, or kept at the source size. Each split becomes
- `<split>.images.npy`: (N, S, S, 3) uint8, which jobs memory-map, so a job reads the rows of its
  subset and never the whole dataset;
- `<split>.npz`: int64 labels, class names, the train split's per-channel mean/std (used to
  normalise inputs everywhere) and the training/evaluation crop size (`dataset.image_size`).
Every later job reads them through `load_split`; no job decodes images again.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imbssl import UserError
from imbssl.core.atomic import atomic_path

SOURCES = ("cifar10", "cifar100", "folder", "imagelist", "digits")
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


def _decode(path: Path, size: "StoreSize") -> np.ndarray:
    """One image as uint8 HWC RGB, at the store's size (see StoreSize)."""
    from PIL import Image

    with Image.open(path) as im:
        if size.shorter_side is not None:
            # JPEG: let the decoder scale by 1/2, 1/4 or 1/8 while decoding (never below the
            # requested size), which makes a 500-px ImageNet JPEG several times cheaper to decode.
            im.draft("RGB", (size.shorter_side, size.shorter_side))
        im = im.convert("RGB")
        if size.shorter_side is not None:
            return _resize_centre_crop(im, size.shorter_side)
        if size.square is not None and im.size != (size.square, size.square):
            im = im.resize((size.square, size.square), Image.BILINEAR)
        return np.asarray(im, np.uint8)


def _resize_centre_crop(im, side: int) -> np.ndarray:
    """torchvision's Resize(side) then CenterCrop(side): the shorter side scaled to `side`
    (bilinear, antialiased), then the central side x side square."""
    from PIL import Image

    width, height = im.size
    # torchvision truncates the longer side (int(side * long / short)), it does not round it.
    if width <= height:
        new_w, new_h = side, int(side * height / width)
    else:
        new_w, new_h = int(side * width / height), side
    if (new_w, new_h) != im.size:
        im = im.resize((new_w, new_h), Image.BILINEAR)
    left, top = int(round((new_w - side) / 2.0)), int(round((new_h - side) / 2.0))
    return np.asarray(im.crop((left, top, left + side, top + side)), np.uint8)


@dataclass(frozen=True)
class StoreSize:
    """How decoded images are sized in the store: `shorter_side` (dataset.store_size: shorter
    side resized, then centre-cropped to a square), else `square` (dataset.image_size without a
    store_size: resized to a square, as folder datasets always were), else the source size
    (which must then be the same for every image)."""

    shorter_side: int | None = None
    square: int | None = None


def _decode_chunk(task: tuple) -> list[str]:
    """Worker: decode files[i] into rows start+i of the store being written; returns the problems
    (unreadable files, and images of another size when the store keeps the source size)."""
    files, labels_root, store, start, size = task
    images = np.load(store, mmap_mode="r+")
    problems = []
    for offset, path in enumerate(files):
        try:
            pixels = _decode(path, size)
        except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
            problems.append(f"{_shown(path, labels_root)} ({type(err).__name__}: {err})".replace("\n", " "))
            continue
        if pixels.shape != images.shape[1:]:
            problems.append(f"{_shown(path, labels_root)} (size {pixels.shape[1]}x{pixels.shape[0]}, the first image "
                            f"is {images.shape[2]}x{images.shape[1]}: set dataset.store_size to resize them all)")
            continue
        images[start + offset] = pixels
    images.flush()
    return problems


def _shown(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


DECODE_CHUNK = 256  # images per decode task: large enough to amortise the task, small enough to balance


def decode_to_store(files: list[Path], out: Path, size: StoreSize, root: Path, workers: int,
                    desc: str) -> list[str]:
    """Decode `files` in order into the uint8 (N, S, S, 3) .npy store `out` (memory-mappable),
    on `workers` processes, with a progress bar. Returns the problems found (nothing is kept then)."""
    from tqdm import tqdm

    if not files:
        return []
    first = _first_shape(files, size, root)
    if isinstance(first, str):
        return [first]
    images = np.lib.format.open_memmap(out, mode="w+", dtype=np.uint8, shape=(len(files), *first))
    del images  # workers open the file themselves; only its header had to be written here
    tasks = [(files[i:i + DECODE_CHUNK], root, str(out), i, size) for i in range(0, len(files), DECODE_CHUNK)]
    problems: list[str] = []
    bar = tqdm(total=len(files), desc=desc, unit="img", file=sys.stderr, mininterval=5, ascii=True)
    if workers <= 1 or len(tasks) == 1:
        results = map(_decode_chunk, tasks)
    else:
        import concurrent.futures
        import multiprocessing

        # spawn: a fresh interpreter per worker, safe whatever threads the parent (torch) runs.
        pool = concurrent.futures.ProcessPoolExecutor(min(workers, len(tasks)),
                                                      mp_context=multiprocessing.get_context("spawn"))
        results = pool.map(_decode_chunk, tasks)
    try:
        for task, found in zip(tasks, results):
            problems += found
            bar.update(len(task[0]))
    finally:
        bar.close()
        if workers > 1 and len(tasks) > 1:
            pool.shutdown()
    return problems


def _first_shape(files: list[Path], size: StoreSize, root: Path) -> tuple[int, int, int] | str:
    """The store's image shape: the requested size, or the first readable image's own size."""
    if size.shorter_side is not None:
        return (size.shorter_side, size.shorter_side, 3)
    if size.square is not None:
        return (size.square, size.square, 3)
    for path in files:
        try:
            return _decode(path, size).shape
        except Exception:  # reported with the others by the workers
            continue
    return f"{_shown(files[0], root)}: none of the {len(files)} images could be read"


def available_cpus() -> int:
    """CPUs this process may use (a SLURM job's allocation, not the node's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


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
        conflicts = [f"{_shown(path, root)} ({known[path]} vs {label})" for path, label in extra
                     if path in known and known[path] != label]
        if conflicts:
            raise UserError(f"dataset.extra_train_list={extra_train_list} labels {len(conflicts)} image(s) of "
                            f"dataset.train_list={train_list} differently: {_listing(conflicts)}; "
                            "the two lists must agree on every image they both name")
        extra = [entry for entry in extra if entry[0] not in known]  # an image both lists name is stored once
        train, listed = train + extra, np.concatenate([listed, np.zeros(len(extra), bool)])
    test = read_image_list(test_list, root, "dataset.test_list")
    classes = image_list_classes(train, names_file)
    unknown = sorted({label for _, label in test if label >= len(classes)})
    if unknown:
        raise UserError(f"dataset.test_list={test_list} has labels the train list lacks ({_listing(list(map(str, unknown)))}): "
                        f"the test list must use the train list's labels 0..{len(classes) - 1}")
    missing = [_shown(path, root) for path, _ in train + test if not path.is_file()]
    if missing:
        raise UserError(f"dataset.root={root}: {len(missing)} image(s) named in the list files do not exist: "
                        f"{_listing(missing)}; fix dataset.root or the list files")
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


STATS_CHUNK = 4096  # images per step of the channel statistics (bounded memory on any dataset)


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std in [0, 1], accumulated in float64 over chunks of images (exact on
    50k images, and a memory-mapped store is never read whole)."""
    total = np.zeros(images.shape[-1]), np.zeros(images.shape[-1])
    count = 0
    for start in range(0, len(images), STATS_CHUNK):
        flat = images[start:start + STATS_CHUNK].reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
        total = total[0] + flat.sum(0), total[1] + np.square(flat).sum(0)
        count += len(flat)
    mean = total[0] / max(count, 1)
    var = np.maximum(total[1] / max(count, 1) - np.square(mean), 0.0)
    return mean.astype(np.float32), np.sqrt(var).astype(np.float32)


def crop_size_error(image_size: int | None, store_size: int | None) -> str | None:
    """Why dataset.image_size cannot be cropped from images stored at dataset.store_size, or None."""
    if image_size is not None and store_size is not None and image_size > store_size:
        return (f"dataset.image_size={image_size} > dataset.store_size={store_size}: training crops come "
                f"from the stored images, so set image_size <= store_size")
    return None


def images_path(split_npz: str | os.PathLike) -> Path:
    """The uint8 image store beside a prepared split: results/data/train.npz -> train.images.npy."""
    path = Path(split_npz)
    return path.with_name(path.stem + ".images.npy")


@dataclass
class DatasetSettings:
    """The `dataset` config section (the prepare-data rule's params)."""

    name: str = "cifar10"
    root: str = "data/cifar10"
    image_size: int | None = None  # training/evaluation crop; null: the stored size
    store_size: int | None = None  # shorter side of the stored images (then centre-cropped)
    classes: list[str] | None = None  # folder only
    train_list: str | None = None  # imagelist only
    test_list: str | None = None
    extra_train_list: str | None = None
    class_names: str | None = None
    test_fraction: float = 0.2  # digits only
    split_seed: int = 0

    def __post_init__(self) -> None:
        if self.name not in SOURCES:
            raise UserError(f"dataset.name={self.name!r} is not one of {', '.join(SOURCES)}")
        message = crop_size_error(self.image_size, self.store_size)
        if message is not None:
            raise UserError(message)

    def store(self) -> StoreSize:
        return StoreSize(self.store_size, None if self.store_size is not None else self.image_size)


def prepare(
    name: str,
    root: str | os.PathLike,
    out_train: str | os.PathLike,
    out_test: str | os.PathLike,
    image_size: int | None = None,
    classes: list[str] | None = None,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    store_size: int | None = None,
    train_list: str | None = None,
    test_list: str | None = None,
    extra_train_list: str | None = None,
    class_names: str | None = None,
    workers: int | None = None,
) -> None:
    """Decode a dataset source once: each split becomes a small .npz (labels, class names, the
    train split's channel statistics, the crop size) and a memory-mappable uint8 .images.npy."""
    settings = DatasetSettings(name, str(root), image_size, store_size, classes, train_list, test_list,
                               extra_train_list, class_names, test_fraction, split_seed)
    workers = workers or available_cpus()
    out_train, out_test = Path(out_train), Path(out_test)
    if name in CIFAR or name == "digits":
        if name == "digits":
            train, test, names = load_digits(store_size or image_size or 16, test_fraction, split_seed)
        else:
            train, test, names = load_cifar(name, root)
        _check_crop(settings, train["images"].shape[1])
        with atomic_path(images_path(out_train)) as train_tmp, atomic_path(images_path(out_test)) as test_tmp:
            for arrays, tmp in ((train, train_tmp), (test, test_tmp)):
                with open(tmp, "wb") as fh:
                    np.save(fh, arrays["images"])
            _write_meta(settings, out_train, out_test, train_tmp, train["labels"], test["labels"], names, None)
        return
    if name == "folder":
        train_files, test_files, names, problems = load_folder(root, classes)
        listed = None
    else:
        train_files, test_files, names, listed = load_image_lists(root, train_list, test_list, extra_train_list,
                                                                  class_names)
        problems = []
    _decode_splits(settings, out_train, out_test, train_files, test_files, names, listed, problems, workers)


def _decode_splits(settings: DatasetSettings, out_train: Path, out_test: Path, train_files, test_files,
                   names: list[str], listed, problems: list[str], workers: int) -> None:
    """Decode both splits into their stores; every problem of both is named in one error, and
    nothing is kept unless both decode."""
    root = Path(settings.root)
    with atomic_path(images_path(out_train)) as train_tmp, atomic_path(images_path(out_test)) as test_tmp:
        for files, tmp, split in ((train_files, train_tmp, "train"), (test_files, test_tmp, "test")):
            problems += decode_to_store([path for path, _ in files], tmp, settings.store(), root, workers,
                                        f"decoding {split}")
        if problems:
            raise UserError(f"dataset.root={root}: {len(problems)} problem(s) with the image files: "
                            f"{_listing(problems)}; delete or replace these files (or fill the empty class "
                            f"folders), then rerun")
        train_shape, test_shape = (np.load(tmp, mmap_mode="r").shape[1:] for tmp in (train_tmp, test_tmp))
        if train_shape != test_shape:
            raise UserError(f"images under {root / 'train'} and {root / 'test'} differ in size "
                            f"{sorted({train_shape, test_shape})}: set dataset.store_size")
        _check_crop(settings, train_shape[0])
        labels = [np.asarray([label for _, label in files], np.int64) for files in (train_files, test_files)]
        _write_meta(settings, out_train, out_test, train_tmp, *labels, names, listed)


def _check_crop(settings: DatasetSettings, stored: int) -> None:
    if settings.image_size is not None and settings.image_size > stored:
        raise UserError(f"dataset.image_size={settings.image_size} is larger than the stored {stored}-px images: "
                        f"set dataset.store_size >= {settings.image_size} (or a smaller image_size)")


def _write_meta(settings: DatasetSettings, out_train: Path, out_test: Path, train_images: Path,
                train_labels: np.ndarray, test_labels: np.ndarray, names: list[str], listed) -> None:
    """The two small .npz files; written while the stores still sit at their temporary paths, so
    that an interrupted prepare leaves neither a split without images nor images without a split."""
    images = np.load(train_images, mmap_mode="r")
    mean, std = channel_stats(images)
    crop = settings.image_size or int(images.shape[1])
    extra = {} if listed is None else {"listed": listed}
    for labels, out in ((train_labels, out_train), (test_labels, out_test)):
        with atomic_path(out) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, labels=labels, classes=np.asarray(names), mean=mean, std=std,
                         image_size=np.int64(crop), **(extra if out == out_train else {}))


@dataclass
class Split:
    images: np.ndarray  # (N, S, S, 3) uint8; memory-mapped from the store (rows read on use)
    labels: np.ndarray  # (N,) int64
    classes: list[str]
    mean: np.ndarray  # (3,) float32, of the *train* split, in [0, 1]
    std: np.ndarray  # (3,) float32
    image_size: int = 0  # training/evaluation crop; 0: the stored size
    listed: np.ndarray | None = None  # imagelist: True for the images the train list names

    def __post_init__(self) -> None:
        self.image_size = int(self.image_size or self.images.shape[1])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def store_size(self) -> int:
        return int(self.images.shape[1])


def load_split(path: str | os.PathLike) -> Split:
    """Read a prepared split: its metadata, and its images memory-mapped from the store (an .npz
    that holds the images itself, as hand-made test files do, is read whole)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist: run `imbssl prepare-data` (the prepare_data rule) first")
    with np.load(path) as z:
        if "images" in z:
            images = z["images"]
        else:
            store = images_path(path)
            if not store.exists():
                raise UserError(f"{store} (the images of {path}) does not exist: rerun the prepare_data rule")
            images = np.load(store, mmap_mode="r")
        labels = z["labels"].astype(np.int64)
        if len(images) != len(labels):
            raise UserError(f"{path} has {len(labels)} labels but its images {len(images)}: rerun the prepare_data rule")
        return Split(
            images=images,
            labels=labels,
            classes=[str(c) for c in z["classes"]],
            mean=z["mean"].astype(np.float32),
            std=z["std"].astype(np.float32),
            image_size=int(z["image_size"]) if "image_size" in z else 0,
            listed=z["listed"] if "listed" in z else None,
        )


def class_names(split_npz: str | os.PathLike) -> list[str]:
    """Class names stored in a prepared split (train.npz / test.npz), read without the images."""
    path = Path(split_npz)
    if not path.exists():
        raise UserError(f"{path} does not exist: run `imbssl prepare-data` (the prepare_data rule) first")
    with np.load(path, allow_pickle=False) as arrays:
        return [str(name) for name in arrays["classes"]]
