"""Image lists in the ImageNet-LT format from a CIFAR-10 image folder (RESULTS.md's image-list check).

    python benchmarks/make_cifar10_lt_lists.py data/cifar10-jpeg data/lists

writes train_lt.txt (CIFAR-10-LT p = 100: class c keeps floor(5000 * 100**(-c/9)) images, drawn
with seed 0), train_full.txt (every train image: the extra list of subsets.profile: given),
test.txt and classes.txt, paths relative to the folder, in CIFAR-10's label order.
"""

import math
import random
import sys
from pathlib import Path

CLASSES = "airplane automobile bird cat deer dog frog horse ship truck".split()


def main(root: Path, out: Path, factor: float = 100.0) -> None:
    rng = random.Random(0)
    lists = {"train_lt.txt": [], "train_full.txt": [], "test.txt": []}
    for label, name in enumerate(CLASSES):
        train = sorted(p.name for p in (root / "train" / name).iterdir())
        keep = math.floor(len(train) * factor ** (-label / (len(CLASSES) - 1)))
        lists["train_full.txt"] += [f"train/{name}/{f} {label}" for f in train]
        lists["train_lt.txt"] += [f"train/{name}/{f} {label}" for f in sorted(rng.sample(train, keep))]
        lists["test.txt"] += [f"test/{name}/{p.name} {label}" for p in sorted((root / "test" / name).iterdir())]
    out.mkdir(parents=True, exist_ok=True)
    for file, lines in lists.items():
        (out / file).write_text("\n".join(lines) + "\n")
    (out / "classes.txt").write_text("\n".join(CLASSES) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
