"""A synthetic image-list dataset in the ImageNet-LT format, made by the tests themselves.

10 classes, each a distinct colour (so a test can tell from the pixels which class an image is),
JPEGs and a few PNGs of mixed, non-square sizes (20-48 px); a long-tailed train list, a balanced
extra list with the other train images, a test list and a class-names file, paths relative to
the root.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

TRAIN_LT = [60, 42, 30, 21, 15, 10, 7, 5, 4, 3]  # 197 images: the long-tailed train list
PER_CLASS = 60  # train images stored per class (the list's plus the extra list's)
TEST_PER_CLASS = 8
CLASS_NAMES = [f"class_{c}" for c in range(10)]


def colour(label: int) -> np.ndarray:
    """Class c's colour: well apart in RGB for the 10 classes."""
    return np.array([(37 * label) % 256, (101 * label + 60) % 256, (173 * label + 120) % 256], np.uint8)


def _image(rng, label: int) -> Image.Image:
    width, height = rng.integers(20, 49, 2)
    pixels = np.clip(colour(label).astype(int) + rng.integers(-6, 7, (height, width, 3)), 0, 255)
    return Image.fromarray(pixels.astype(np.uint8))


def make_image_lists(root: Path, seed: int = 0) -> dict[str, Path]:
    """Writes the images under root/{train,val}/<class>/ and the lists under root/lists/."""
    rng = np.random.default_rng(seed)
    lines = {"train_lt": [], "extra": [], "test": []}
    for label, name in enumerate(CLASS_NAMES):
        for split, count in (("train", PER_CLASS), ("val", TEST_PER_CLASS)):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                suffix = ".png" if i % 10 == 9 else ".jpg"
                relative = f"{split}/{name}/{i:04d}{suffix}"
                _image(rng, label).save(root / relative, **({"quality": 95} if suffix == ".jpg" else {}))
                if split == "val":
                    lines["test"].append(f"{relative} {label}")
                else:
                    lines["train_lt" if i < TRAIN_LT[label] else "extra"].append(f"{relative} {label}")
    (root / "lists").mkdir(exist_ok=True)
    paths = {}
    for key, entries in lines.items():
        paths[key] = root / "lists" / f"{key}.txt"
        paths[key].write_text("\n".join(entries) + "\n")
    paths["class_names"] = root / "lists" / "classes.txt"
    paths["class_names"].write_text("\n".join(CLASS_NAMES) + "\n")
    return paths
