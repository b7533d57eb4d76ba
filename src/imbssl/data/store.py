"""The decoded image store: every source decoded once into uint8 arrays that jobs memory-map.

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
from imbssl.core.atomic import atomic_path, require_free_space
from imbssl.data.sources import (CIFAR, Source, listing, load_cifar, load_digits, load_folder, load_image_lists,
                                 shown_path)

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
            problems.append(f"{shown_path(path, labels_root)} ({type(err).__name__}: {err})".replace("\n", " "))
            continue
        if pixels.shape != images.shape[1:]:
            problems.append(f"{shown_path(path, labels_root)} (size {pixels.shape[1]}x{pixels.shape[0]}, the first image "
                            f"is {images.shape[2]}x{images.shape[1]}: set dataset.store_size to resize them all)")
            continue
        images[start + offset] = pixels
    images.flush()
    return problems


DECODE_CHUNK = 256  # images per decode task: large enough to amortise the task, small enough to balance


def available_cpus() -> int:
    """CPUs this process may use (a SLURM job's allocation, not the node's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


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
    return f"{shown_path(files[0], root)}: none of the {len(files)} images could be read"


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

    name: Source = "cifar10"  # the dataset source: cifar10, cifar100, an image folder, image lists or sklearn digits
    root: str = "data/cifar10"  # cifar: downloaded here if missing; folder: root/{train,test}/<class>/*
    image_size: int | None = None  # training/evaluation crop; null: the stored size
    store_size: int | None = None  # shorter side of the stored images (then centre-cropped)
    classes: list[str] | None = None  # folder only: the class order (label c = classes[c])
    train_list: str | None = None  # imagelist only: 'relative/path.jpg label' per line
    test_list: str | None = None  # imagelist only
    extra_train_list: str | None = None  # imagelist only: more train images, for balanced subsets and full
    class_names: str | None = None  # imagelist only: one class name per line
    test_fraction: float = 0.2  # digits only
    split_seed: int = 0  # digits only

    def store(self) -> StoreSize:
        return StoreSize(self.store_size, None if self.store_size is not None else self.image_size)


def prepare(settings: DatasetSettings, out_train: str | os.PathLike, out_test: str | os.PathLike,
            workers: int | None = None) -> None:
    """Decode a dataset source once: each split becomes a small .npz (labels, class names, the
    train split's channel statistics, the crop size) and a memory-mappable uint8 .images.npy."""
    workers = workers or available_cpus()
    out_train, out_test = Path(out_train), Path(out_test)
    name, root = settings.name, settings.root
    if name in CIFAR or name == "digits":
        if name == "digits":
            train, test, names = load_digits(settings.store_size or settings.image_size or 16, settings.test_fraction,
                                             settings.split_seed)
        else:
            train, test, names = load_cifar(name, root)
        _check_crop(settings, train["images"].shape[1])
        check_space(out_train.parent, len(train["images"]) + len(test["images"]), train["images"].shape[1:])
        with atomic_path(images_path(out_train)) as train_tmp, atomic_path(images_path(out_test)) as test_tmp:
            for arrays, tmp in ((train, train_tmp), (test, test_tmp)):
                with open(tmp, "wb") as fh:
                    np.save(fh, arrays["images"])
            _write_meta(settings, out_train, out_test, train_tmp, train["labels"], test["labels"], names, None)
        return
    if name == "folder":
        train_files, test_files, names, problems = load_folder(root, settings.classes)
        listed = None
    else:
        train_files, test_files, names, listed = load_image_lists(root, settings.train_list, settings.test_list,
                                                                  settings.extra_train_list, settings.class_names)
        problems = []
    _decode_splits(settings, out_train, out_test, train_files, test_files, names, listed, problems, workers)


def _decode_splits(settings: DatasetSettings, out_train: Path, out_test: Path, train_files, test_files,
                   names: list[str], listed, problems: list[str], workers: int) -> None:
    """Decode both splits into their stores; every problem of both is named in one error, and
    nothing is kept unless both decode."""
    root = Path(settings.root)
    files = [path for path, _ in train_files + test_files]
    shape = _first_shape(files, settings.store(), root) if files else "no images"
    if not isinstance(shape, str):  # else none reads: the decode below says which
        check_space(out_train.parent, len(train_files) + len(test_files), shape)
    with atomic_path(images_path(out_train)) as train_tmp, atomic_path(images_path(out_test)) as test_tmp:
        for files, tmp, split in ((train_files, train_tmp, "train"), (test_files, test_tmp, "test")):
            problems += decode_to_store([path for path, _ in files], tmp, settings.store(), root, workers,
                                        f"decoding {split}")
        if problems:
            raise UserError(f"dataset.root={root}: {len(problems)} problem(s) with the image files: "
                            f"{listing(problems)}; delete or replace these files (or fill the empty class "
                            f"folders), then rerun")
        train_shape, test_shape = (np.load(tmp, mmap_mode="r").shape[1:] for tmp in (train_tmp, test_tmp))
        if train_shape != test_shape:
            raise UserError(f"images under {root / 'train'} and {root / 'test'} differ in size "
                            f"{sorted({train_shape, test_shape})}: set dataset.store_size")
        _check_crop(settings, train_shape[0])
        labels = [np.asarray([label for _, label in files], np.int64) for files in (train_files, test_files)]
        _write_meta(settings, out_train, out_test, train_tmp, *labels, names, listed)


def check_space(folder: Path, count: int, shape: tuple[int, ...]) -> None:
    """Stop before decoding when the stores of `count` images of `shape` (uint8) do not fit on
    the file system of `folder` (an ImageNet-scale store takes hundreds of GiB)."""
    height, width, _ = shape
    require_free_space(folder, count * int(np.prod(shape)),
                       f"the image store ({count} images of {width}x{height} px)", "dataset.store_size")


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
