"""Tables and figures from result files only (JSON, CSV): no torch, no model, so re-plotting is instant.

matplotlib is imported inside the plotting functions (Agg backend), so the Snakefile can import
`method_label` without paying for it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from . import UserError
from .atomic import atomic_path, write_text
from .subsets import read_csv

# Display names of method config names (and of Experiment II's students), as in the paper's tables.
METHOD_LABELS = {"simsiam": "SimSiam", "simclr": "SimCLR", "msn": "MSN", "pmsn": "PMSN",
                 "simsiam-c-d": "SimSiam+C+D", "simsiam-d": "SimSiam+D"}

TABLE_COLUMNS = ["subset", "n", "method", "top1_mean", "top1_std", "knn_top1_mean", "knn_top1_std", "seeds"]


@dataclass
class PlotSettings:
    """Figure style. Output formats are chosen by the output paths' suffixes (.png, .pdf, .svg)."""

    dpi: int = 200
    width: float = 6.0  # inches
    height: float = 3.5  # inches
    font_size: float = 9.0
    style: str = "default"  # a name from matplotlib.style.available
    log_y: bool = False  # logarithmic image-count axis in Figure 1


def method_label(name: str) -> str:
    return METHOD_LABELS.get(name, name)


def subset_order_key(subset: str) -> tuple:
    """Paper order: imbalanced-p10, balanced-p10, imbalanced-p100, balanced-p100, ..., full last."""
    if subset == "full":
        return (2, 0.0, 0)
    kind, _, factor = subset.partition("-p")
    try:
        p = float(factor)
    except ValueError:
        return (3, 0.0, subset)  # unknown names after the known ones, alphabetically
    return (1, p, 0 if kind == "imbalanced" else 1)


def order_subsets(subsets) -> list[str]:
    return sorted(set(subsets), key=subset_order_key)


def _std(values: np.ndarray) -> float:
    """Sample standard deviation (ddof=1) over seeds; 0.0 for a single seed (no spread measured)."""
    return float(np.std(values, ddof=1)) if len(values) >= 2 else 0.0


def load_results(paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    rows = []
    for path in paths:
        try:
            record = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise UserError(f"cannot read result file {path}: {err}; rerun its evaluate job") from err
        missing = [key for key in ("subset", "method", "seed", "n", "top1") if key not in record]
        if missing:
            raise UserError(f"result file {path} lacks {missing}; rerun its evaluate job")
        rows.append({key: record.get(key) for key in ("subset", "method", "seed", "n", "top1", "knn_top1")})
    return pd.DataFrame(rows, columns=["subset", "method", "seed", "n", "top1", "knn_top1"])


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (subset, method): mean and std over seeds of top-1 and kNN top-1."""
    rows = []
    for (subset, method), group in results.groupby(["subset", "method"], sort=False):
        ns = group["n"].unique()
        if len(ns) != 1:
            raise UserError(f"results for {subset}/{method} disagree on the subset size n: {sorted(ns)}")
        knn = group["knn_top1"].dropna().to_numpy(float)
        rows.append({
            "subset": subset,
            "n": int(ns[0]),
            "method": method,
            "top1_mean": float(group["top1"].mean()),
            "top1_std": _std(group["top1"].to_numpy(float)),
            "knn_top1_mean": float(knn.mean()) if len(knn) else float("nan"),
            "knn_top1_std": _std(knn) if len(knn) else float("nan"),
            "seeds": len(group),
        })
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    order = {s: i for i, s in enumerate(order_subsets(table["subset"]))}
    return table.sort_values("subset", key=lambda col: col.map(order), kind="stable").reset_index(drop=True)


def markdown_table(summary: pd.DataFrame, methods: Sequence[str], title: str = "") -> str:
    """Rows: subsets with N; columns: methods; cells "mean ± std"; `n/a` where a run is missing."""
    cells = {(r.subset, r.method): f"{r.top1_mean:.2f} ± {r.top1_std:.2f}" for r in summary.itertuples()}
    sizes = dict(zip(summary["subset"], summary["n"]))
    columns = list(methods) + [m for m in dict.fromkeys(summary["method"]) if m not in methods]
    lines = [f"**{title}**", ""] if title else []
    lines.append("| Subset | N | " + " | ".join(columns) + " |")
    lines.append("|---|---:|" + "---:|" * len(columns))
    for subset in order_subsets(summary["subset"]):
        row = [cells.get((subset, method), "n/a") for method in columns]
        lines.append(f"| {subset} | {sizes[subset]:,} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def write_table(result_jsons, methods, out_csv, out_md, title: str = "") -> pd.DataFrame:
    """Table 2 from per-run result JSONs: long-format CSV and a Markdown table like the paper's."""
    summary = summarize(load_results(result_jsons))
    with atomic_path(out_csv) as tmp:
        summary.to_csv(tmp, index=False, float_format="%.4f")
    write_text(out_md, markdown_table(summary, methods, title))
    return summary


def class_counts(subset_csvs: Sequence[str | os.PathLike]) -> dict[str, np.ndarray]:
    """Images per class of each subset file, keyed by subset name (the file stem), paper order."""
    labels = {Path(path).stem: read_csv(path)[1] for path in subset_csvs}
    num_classes = max((int(y.max()) + 1 for y in labels.values() if len(y)), default=0)
    counts = {name: np.bincount(y, minlength=num_classes) for name, y in labels.items()}
    return {name: counts[name] for name in order_subsets(counts)}


def class_names(split_npz: str | os.PathLike) -> list[str]:
    """Class names stored in a prepared split (.npz from prepare-data), read without torch."""
    with np.load(split_npz, allow_pickle=False) as arrays:
        return [str(name) for name in arrays["classes"]]


def save_figure(fig, outs, dpi: int) -> None:
    """Write `fig` atomically to every path in `outs` (format from each suffix), then close it."""
    import matplotlib.pyplot as plt

    for out in outs:
        with atomic_path(out) as tmp:
            # The temporary name has no image suffix: name the format explicitly.
            fig.savefig(tmp, format=Path(out).suffix.lstrip(".") or "png", dpi=dpi)
    plt.close(fig)


def figure_class_distribution(subset_csvs, classes, outs, settings: PlotSettings | None = None) -> None:
    """Figure 1: images per class, one line per subset; writes every path in `outs` (format from suffix)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = settings or PlotSettings()
    counts = class_counts(subset_csvs)
    num_classes = len(next(iter(counts.values()))) if counts else 0
    if classes is not None and len(classes) != num_classes:
        raise UserError(f"dataset.classes names {len(classes)} classes but the subsets have {num_classes}")
    names = list(classes) if classes is not None else [str(c) for c in range(num_classes)]
    x = np.arange(num_classes)
    with plt.style.context(settings.style), plt.rc_context({"font.size": settings.font_size}):
        fig, ax = plt.subplots(figsize=(settings.width, settings.height), layout="constrained")
        # One colour per imbalance factor: imbalanced-pX solid, its balanced twin dashed.
        colours = {}
        for name, per_class in counts.items():
            kind, _, factor = name.partition("-p")
            colour = colours.setdefault(factor or name, f"C{len(colours)}")
            ax.plot(x, per_class, marker="o", markersize=3, color=colour,
                    linestyle="--" if kind == "balanced" else "-", label=f"{name} (N={int(per_class.sum()):,})")
        long_names = max(map(len, names), default=0) > 3  # e.g. CIFAR-10's "automobile"
        ax.set_xticks(x, names, rotation=45 if long_names else 0, ha="right" if long_names else "center")
        ax.set_xlabel("class")
        ax.set_ylabel("images")
        if settings.log_y:
            ax.set_yscale("log")
        ax.set_ylim(bottom=None if settings.log_y else 0)
        ax.legend(fontsize="small", frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.set_title("Images per class in each pretraining subset")
        save_figure(fig, outs, settings.dpi)
