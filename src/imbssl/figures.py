"""Figure 3 and the cluster-quality table, from the cluster rule's output files only (no torch).

Figure 3: the base features' 2-D PCA coloured by cluster, and beside it the cluster x class
table as a heatmap (class labels are for reporting only; clustering never sees them).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from . import UserError
from .atomic import atomic_path, write_text
from .report import PlotSettings, save_figure, subset_order_key

CLUSTER_TABLE_COLUMNS = ["subset", "seed", "kind", "k", "n", "sizes", "nmi", "ari", "backend"]


def _read_csv(path: str | os.PathLike, columns: Sequence[str]) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist: run the cluster rule first")
    frame = pd.read_csv(path)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise UserError(f"{path} lacks columns {missing}: rerun the cluster rule")
    return frame


def _read_summary(path: str | os.PathLike) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read cluster summary {path}: {err}; rerun the cluster rule") from err


def figure3(pca_file, contingency_file, outs: Sequence[str | os.PathLike], settings: PlotSettings | None = None,
            summary_file=None) -> None:
    """Figure 3 to every path in `outs` (format from the suffix): PCA scatter by cluster (left) and
    the cluster x class heatmap, cells = counts, colour = share of the cluster (right).
    With `summary_file`, the title reports the subset, NMI and ARI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = settings or PlotSettings()
    points = _read_csv(pca_file, ["x", "y", "cluster"])
    table = _read_csv(contingency_file, ["cluster"]).set_index("cluster")
    counts = table.to_numpy(np.int64)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    k = len(table)
    colours = plt.get_cmap("tab10" if k <= 10 else "tab20")
    with plt.style.context(settings.style), plt.rc_context({"font.size": settings.font_size}):
        fig, (scatter, heat) = plt.subplots(1, 2, figsize=(settings.width * 1.6, settings.height),
                                            layout="constrained", width_ratios=[1, 1.3])
        for j in range(k):
            members = points["cluster"].to_numpy() == j
            scatter.scatter(points["x"][members], points["y"][members], s=2, color=colours(j % colours.N),
                            label=f"{j} ({members.sum():,})", rasterized=True, linewidths=0)
        scatter.set_xlabel("PC 1")
        scatter.set_ylabel("PC 2")
        scatter.set_title("base features, by cluster")
        scatter.legend(title="cluster (images)", fontsize="x-small", markerscale=4, frameon=False)
        image = heat.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto")
        for (j, c), n in np.ndenumerate(counts):
            heat.text(c, j, f"{n}", ha="center", va="center", fontsize="x-small",
                      color="white" if share[j, c] > 0.6 else "black")
        long_names = max(map(len, table.columns), default=0) > 3
        heat.set_xticks(range(counts.shape[1]), table.columns, rotation=45 if long_names else 0,
                        ha="right" if long_names else "center")
        heat.set_yticks(range(k), [str(j) for j in table.index])
        heat.set_xlabel("class (reporting only)")
        heat.set_ylabel("cluster")
        heat.set_title("images per cluster and class")
        fig.colorbar(image, ax=heat, label="share of the cluster")
        if summary_file is not None:
            summary = _read_summary(summary_file)
            fig.suptitle(f"{summary.get('subset', '')} seed {summary.get('seed', '')}: k={summary['k']}, "
                         f"NMI {summary['nmi']:.3f}, ARI {summary['ari']:.3f}")
        save_figure(fig, outs, settings.dpi)


def cluster_table(summary_files: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """One row per partition (summary.json), paper subset order, then seed and kind."""
    rows = []
    for path in summary_files:
        summary = _read_summary(path)
        missing = [key for key in ("k", "sizes", "nmi", "ari", "backend") if key not in summary]
        if missing:
            raise UserError(f"cluster summary {path} lacks {missing}; rerun the cluster rule")
        row = {key: summary.get(key) for key in CLUSTER_TABLE_COLUMNS}
        row["sizes"] = " / ".join(str(s) for s in summary["sizes"])
        rows.append(row)
    rows.sort(key=lambda row: (subset_order_key(str(row["subset"])), row["seed"] or 0, str(row["kind"])))
    return pd.DataFrame(rows, columns=CLUSTER_TABLE_COLUMNS)


def write_cluster_table(summary_files: Sequence[str | os.PathLike], out_csv, out_md) -> pd.DataFrame:
    """results/tables/clusters.{csv,md}: cluster sizes and how well clusters match classes."""
    table = cluster_table(summary_files)
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    header = ("**Clusters of the base features** (NMI/ARI to the classes, reporting only; "
              "kind `random` = the +D ablation's partition)\n\n")
    write_text(out_md, header + table.to_markdown(index=False, floatfmt=".3f") + "\n")
    return table
