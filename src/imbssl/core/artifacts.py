"""Every file that one job writes and another reads, defined once: its format, its writer, its reader.

| file                                   | written by            | read by                                  |
|----------------------------------------|-----------------------|------------------------------------------|
| `subsets/{subset}.csv`, `cluster{j}.csv` | subsets, cluster    | every job that trains or evaluates       |
| `model.pt` (`ModelMeta` + weights)     | pretrain, distill     | evaluate, features, prototype usage, distill, export |
| `metrics.csv` (one row per epoch)      | every training job    | cluster table, training-curve figures    |
| `features.pt`                          | features              | cluster                                  |
| `assignments.csv`                      | cluster, partition    | partition-random, distill                |
| `summary.json` (a partition)           | cluster, partition    | partition-random, cluster table, Figure 3 |
| `eval/.../seed{s}.json` (`EvalResult`) | evaluate              | every table and figure of accuracies     |
| `prototypes/...json` (`PrototypeUsage`) | prototype usage      | Figure 4, the prior table                |
| `prior/...json` (`ClusterSizes`)       | cluster sizes         | the prior table and figure               |

`model.pt` and the result JSON also record their **provenance** (`provenance`): the imbssl version,
the git commit of the sources when there is one, the code hash of the command that wrote them (the
same hash the rule's params carry) and every setting it ran with; `imbssl provenance FILE` prints it.

A reader that finds a file it cannot use (missing, unreadable, written by an older imbssl) raises a
one-line UserError naming the file and the rule to rerun. Nothing here imports torch at module
level: the reporting side reads results without it; `model.pt` and `features.pt` load torch when
they are read or written.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from imbssl import UserError, __version__
from imbssl.core.atomic import atomic_path, write_json, write_text

# ---------------------------------------------------------------------------------------------
# Provenance


@functools.cache
def git_commit() -> str | None:
    """The commit the package's sources were checked out at ('+dirty' when they differ from it), or
    None when they are not in a git checkout (an installed wheel, a copied tree)."""
    sources = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(sources), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return None
        status = subprocess.run(["git", "-C", str(sources), "status", "--porcelain", "--", "."],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("+dirty" if status.stdout.strip() else "")


def _version_of(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def provenance(command: str, code_hash: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Where a file came from: the command and the code that wrote it, every setting it ran with."""
    return {
        "imbssl_version": __version__,
        "git_commit": git_commit(),
        "command": command,
        "code_hash": code_hash,
        "settings": _plain(settings),
        "python": sys.version.split()[0],
        "torch": _version_of("torch"),
    }


def _plain(value: Any) -> Any:
    """JSON- and weights_only-safe copy: dataclasses to dicts, paths to strings, numpy to Python."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_provenance(path: str | os.PathLike) -> dict[str, Any]:
    """The provenance recorded in a model.pt or a result JSON."""
    path = Path(path)
    if path.suffix == ".json":
        record = _read_json(path, "result file", "its evaluate job")
    else:
        record = read_model(path).meta.__dict__
    found = record.get("provenance")
    if not found:
        raise UserError(f"{path} records no provenance (written before imbssl recorded it): rerun the job that "
                        f"wrote it")
    return found


# ---------------------------------------------------------------------------------------------
# Subset files: `index,label` per image (indices into the prepared train split)


def _write_index_table(path: str | os.PathLike, column: str, indices, values) -> None:
    """`index,<column>` per row: integer tables keyed by train-split index."""
    lines = [f"index,{column}"] + [f"{i},{v}" for i, v in zip(np.asarray(indices), np.asarray(values))]
    write_text(path, "\n".join(lines) + "\n")


def _read_index_table(path: str | os.PathLike, missing: str) -> tuple[np.ndarray, np.ndarray]:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist: {missing}")
    table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.int64, ndmin=2)
    return table[:, 0], table[:, 1]


def write_subset(path: str | os.PathLike, indices: np.ndarray, labels: np.ndarray) -> None:
    """A subset file: the train-split index and label of each of its images, in index order
    (`labels` holds the label of every train image)."""
    _write_index_table(path, "label", indices, np.asarray(labels)[np.asarray(indices)])


def write_subset_rows(path: str | os.PathLike, indices: np.ndarray, labels: np.ndarray) -> None:
    """A subset file from matching rows (index[i], label[i]): a cluster's part of a subset."""
    _write_index_table(path, "label", indices, labels)


def read_subset(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(indices, labels) of a subset file."""
    return _read_index_table(path, "run the subsets rule first")


def require_same_images(index: np.ndarray, subset_indices: np.ndarray, file: str | os.PathLike,
                        subset: str | os.PathLike, rule: str) -> None:
    """`file` (features, cluster assignments, ...) must list exactly the images of `subset`, in its
    order, since rows are matched by position; else a one-line error names the rule to rerun."""
    if not np.array_equal(np.asarray(index), np.asarray(subset_indices)):
        raise UserError(f"{file} does not list the images of subset {subset} in its order: rerun the {rule} rule")


# ---------------------------------------------------------------------------------------------
# Cluster assignments and partition summaries


def write_assignments(path: str | os.PathLike, indices: np.ndarray, clusters: np.ndarray) -> None:
    """`index,cluster` per image of a subset, in subset order."""
    _write_index_table(path, "cluster", indices, clusters)


def read_assignments(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(indices, clusters) of an assignments.csv, in subset order."""
    return _read_index_table(path, "run the cluster rule first")


# What a partition's summary.json always holds (with the settings of the k-means run that made it).
SUMMARY_KEYS = ("subset", "seed", "kind", "k", "n", "sizes", "nmi", "ari", "backend")


def write_cluster_summary(path: str | os.PathLike, summary: dict[str, Any]) -> None:
    missing = [key for key in SUMMARY_KEYS if key not in summary]
    assert not missing, f"a partition summary needs {missing}"
    write_json(path, _plain(summary))


def read_cluster_summary(path: str | os.PathLike) -> dict[str, Any]:
    summary = _read_json(Path(path), "cluster summary", "the cluster rule")
    missing = [key for key in SUMMARY_KEYS if key not in summary]
    if missing:
        raise UserError(f"cluster summary {path} lacks {missing}; rerun the cluster rule")
    return summary


# ---------------------------------------------------------------------------------------------
# metrics.csv: one row per epoch of a training job


def write_metrics(path: str | os.PathLike, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def read_metrics(path: str | os.PathLike, columns: Sequence[str] = ("epoch", "loss")):
    """A training job's metrics.csv as a DataFrame with at least `columns`."""
    import pandas as pd

    path = Path(path)
    try:
        frame = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise UserError(f"cannot read training metrics {path} ({type(err).__name__}): rerun its training job") from err
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise UserError(f"training metrics {path} lack columns {missing}: rerun its training job")
    if frame.empty:
        raise UserError(f"training metrics {path} have no rows: rerun its training job")
    return frame


def optimizer_steps(metrics_csv: str | os.PathLike) -> int:
    """Optimizer steps a training job took: the `steps` column of the last row of its metrics.csv."""
    return int(read_metrics(metrics_csv, ("epoch", "steps"))["steps"].iloc[-1])


# ---------------------------------------------------------------------------------------------
# Result JSON: one evaluated run (subset, method, seed)

RESULT_VERSION = 2  # 1: no version field (before provenance was recorded)


@dataclass
class EvalResult:
    """What the evaluate job measured for one pretrained model (`results/eval/{subset}/{method}/seed{s}.json`)."""

    subset: str
    method: str  # the method's label in tables (SimSiam, SimSiam+C+D, ...)
    seed: int
    n: int  # images of the pretraining subset
    eval_n: int  # images the linear probe and kNN learn from (the balanced twin)
    test_n: int
    top1: float  # linear probe, % of the test images
    knn_top1: float
    # Per-class accuracy (%) of the probe and of kNN, None for a class without test images; the
    # images of each class in the pretraining subset and in the test split; the class names.
    per_class: list[float | None]
    knn_per_class: list[float | None]
    train_class_counts: list[int]
    test_class_counts: list[int]
    classes: list[str]
    pretrain_epochs: int | None
    protocol: dict[str, Any]  # how the linear probe was trained, in words
    settings: dict[str, Any]
    seconds: float
    collapsed: bool = False  # its training ended collapsed (std ~0, or uniform per-image targets/predictions)
    provenance: dict[str, Any] = field(default_factory=dict)
    version: int = RESULT_VERSION


def write_result(path: str | os.PathLike, result: EvalResult) -> None:
    write_json(path, _plain(result))


def read_result(path: str | os.PathLike) -> EvalResult:
    record = _read_json(Path(path), "result file", "its evaluate job")
    if record.get("version") != RESULT_VERSION:
        raise UserError(f"result file {path} has format version {record.get('version', 1)}, this imbssl reads "
                        f"{RESULT_VERSION} (written by an older imbssl); rerun its evaluate job")
    names = {f.name for f in dataclasses.fields(EvalResult)}
    missing = sorted(names - set(record) - {"provenance", "collapsed"})
    if missing:
        raise UserError(f"result file {path} lacks {missing}; rerun its evaluate job")
    return EvalResult(**{key: value for key, value in record.items() if key in names})


def _read_json(path: Path, what: str, rerun: str) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read {what} {path} ({type(err).__name__}): rerun {rerun}") from err
    if not isinstance(record, dict):
        raise UserError(f"{what} {path} is not a JSON object: rerun {rerun}")
    return record


# ---------------------------------------------------------------------------------------------
# Prototype usage (MSN, PMSN): images won by each prototype, and what the prior expects


@dataclass
class PrototypeUsage:
    method: str
    prior: str  # uniform | powerlaw
    tau: float
    num_prototypes: int
    num_images: int
    counts: list[int]  # images won by each prototype (argmax of its soft assignment)
    expected: list[float]  # images per prototype the prior expects, most likely prototype first
    subset: str = ""  # the subset whose images were counted
    seed: int = 0


def write_prototype_usage(path: str | os.PathLike, usage: PrototypeUsage) -> None:
    write_json(path, _plain(usage))


def read_prototype_usage(path: str | os.PathLike) -> PrototypeUsage:
    record = _read_json(Path(path), "prototype-usage file", "the prototype_usage rule")
    names = [f.name for f in dataclasses.fields(PrototypeUsage)]
    missing = [key for key in names if key not in record and key not in ("subset", "seed")]
    if missing:
        raise UserError(f"prototype-usage file {path} lacks {missing}: rerun the prototype_usage rule")
    return PrototypeUsage(**{key: record[key] for key in names if key in record})


# ---------------------------------------------------------------------------------------------
# Cluster sizes a model's features imply (the hidden uniform prior's measurement)


@dataclass
class ClusterSizes:
    """k-means with K = the number of classes on a model's features of its pretraining subset:
    how evenly its features spread the images, against how evenly the classes do."""

    subset: str
    method: str  # the method's config name
    seed: int
    k: int
    n: int
    cluster_sizes: list[int]  # images per cluster, largest first
    class_sizes: list[int]  # images per class of the subset, largest first
    cluster_entropy: float  # entropy of the cluster sizes / log k: 1 = all equal
    class_entropy: float  # the same of the class sizes
    nmi: float  # normalised mutual information of clusters and classes
    backend: str
    collapsed: bool = False  # the model's training ended collapsed (ModelMeta.collapsed_from_epoch)
    provenance: dict[str, Any] = field(default_factory=dict)


def write_cluster_sizes(path: str | os.PathLike, sizes: ClusterSizes) -> None:
    write_json(path, _plain(sizes))


def read_cluster_sizes(path: str | os.PathLike) -> ClusterSizes:
    record = _read_json(Path(path), "cluster-sizes file", "the cluster_sizes rule")
    names = [f.name for f in dataclasses.fields(ClusterSizes)]
    missing = [key for key in names if key not in record and key not in ("provenance", "collapsed")]
    if missing:
        raise UserError(f"cluster-sizes file {path} lacks {missing}: rerun the cluster_sizes rule")
    return ClusterSizes(**{key: record[key] for key in names if key in record})


# ---------------------------------------------------------------------------------------------
# model.pt: a trained backbone (and the method around it), with what it takes to rebuild it

MODEL_VERSION = 2  # 1: before provenance and this version field


@dataclass
class ModelMeta:
    """What model.pt says about its model besides the weights: enough to rebuild the backbone
    (arch, width, stem, image_size), normalise its inputs (mean, std) and trace it."""

    method: str  # the method's config name (simsiam, ...), or "distill" for a student
    arch: str
    width: int
    stem: str
    image_size: int  # the crop the model was trained on
    output_dim: int
    mean: list[float]  # the train split's channel statistics its inputs were normalised with
    std: list[float]
    epochs: int
    num_images: int
    seed: int
    teachers: list[str] = field(default_factory=list)  # a distilled student's base and experts
    collapsed_from_epoch: int | None = None  # the run ended collapsed, from this epoch (training/loop.py)
    provenance: dict[str, Any] = field(default_factory=dict)
    version: int = MODEL_VERSION


@dataclass
class ModelFile:
    meta: ModelMeta
    backbone: dict  # state dict of the backbone that is evaluated (name -> tensor)
    method_state: dict  # state dict of what the method keeps (heads, prototypes, target)


def write_model(path: str | os.PathLike, backbone: dict, method_state: dict, meta: ModelMeta) -> None:
    from imbssl.core import checkpoint

    checkpoint.save({"backbone": backbone, "method_state": method_state, **_plain(meta)}, path)


def read_model(path: str | os.PathLike) -> ModelFile:
    """A model.pt, its weights on the CPU. Files of version 1 (no `version`, no provenance) still read."""
    from imbssl.core import checkpoint

    state = checkpoint.load(path, map_location="cpu")
    missing = [key for key in ("backbone", "arch", "width", "image_size", "mean", "std") if key not in state]
    if missing:
        raise UserError(f"{path} is not a model written by imbssl (it lacks {missing}): point at a model.pt of "
                        f"the pretrain or distill rule")
    names = {f.name for f in dataclasses.fields(ModelMeta)}
    known = {key: value for key, value in state.items() if key in names}
    known.setdefault("stem", "auto")  # files written before `stem`: auto gave the CIFAR stem they used
    known.setdefault("version", 1)
    for key in ("method", "epochs", "num_images", "seed", "output_dim"):
        known.setdefault(key, None)
    return ModelFile(ModelMeta(**known), state["backbone"], state.get("method_state", {}))


# ---------------------------------------------------------------------------------------------
# features.pt: backbone features of a subset's images, for k-means


def write_features(path: str | os.PathLike, features, indices: np.ndarray) -> None:
    """(N, D) float32 features and the train-split index of each row (subset order)."""
    import torch

    from imbssl.core import checkpoint

    checkpoint.save({"features": features.detach().cpu(), "index": torch.from_numpy(np.asarray(indices))}, path)


def read_features(path: str | os.PathLike, device: str = "cpu"):
    """(features tensor on `device`, train-split indices)."""
    from imbssl.core import checkpoint

    state = checkpoint.load(path, map_location=device)
    if "features" not in state or "index" not in state:
        raise UserError(f"features file {path} lacks 'features' or 'index': rerun the features rule")
    return state["features"], state["index"].cpu().numpy().astype(np.int64)


def atomic_csv(frame, path: str | os.PathLike, **options) -> None:
    """A pandas DataFrame written atomically as CSV (tables, contingency, PCA)."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, **options)
