"""Result files for tests, written only through the project's artifact writers (core/artifacts.py),
so that a change to a file's format changes the forged files too."""

from __future__ import annotations

from pathlib import Path

from imbssl.core.artifacts import EvalResult, write_result


def forge_result(path: Path, subset: str, method: str, seed: int, top1: float, n: int = 100,
                 knn_top1: float | None = None, per_class: list | None = None, knn_per_class: list | None = None,
                 test_class_counts: list[int] | None = None, classes: list[str] | None = None,
                 provenance: dict | None = None, pretrain_epochs: int = 1, settings: dict | None = None,
                 collapsed: bool = False) -> Path:
    """A result JSON with the given numbers; per-class lists default to `top1` for 3 classes."""
    per_class = [top1] * 3 if per_class is None else per_class
    classes = classes or [str(c) for c in range(len(per_class))]
    counts = test_class_counts or [10] * len(per_class)
    result = EvalResult(subset=subset, method=method, seed=seed, n=n, eval_n=n, test_n=sum(counts), top1=top1,
                        knn_top1=top1 if knn_top1 is None else knn_top1, per_class=per_class,
                        knn_per_class=per_class if knn_per_class is None else knn_per_class,
                        train_class_counts=[0] * len(per_class), test_class_counts=counts, classes=classes,
                        pretrain_epochs=pretrain_epochs, protocol={}, settings=settings or {}, seconds=0.0,
                        provenance=provenance or {}, collapsed=collapsed)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_result(path, result)
    return path


def forge_model(method, out_dir: Path, method_name: str, arch: str, width: int, image_size: int,
                mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), epochs: int = 0, seed: int = 0) -> Path:
    """model.pt of an (untrained) Method, written by the training jobs' own writer."""
    from imbssl.core.artifacts import ModelMeta
    from imbssl.training.jobs import save_model

    meta = ModelMeta(method=method_name, arch=arch, width=width, stem=getattr(method.backbone, "stem", "auto"),
                     image_size=image_size, output_dim=method.backbone.output_dim, mean=list(mean), std=list(std),
                     epochs=epochs, num_images=0, seed=seed)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return save_model(method, Path(out_dir), meta)
