"""The papers' figures, from result files only (CSV, JSON, the prepared split's class names): no
torch, no model, so a plot setting redraws in seconds.

- Figure 1: images per class of every pretraining subset.
- Figure 3: the base features' 2-D PCA coloured by k-means cluster, beside the cluster x class
  table as a heatmap (class labels are for reporting only; clustering never sees them).
- Figure 4: prototype usage of MSN and PMSN, sorted, log-log, against each model's prior.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from imbssl import UserError
from imbssl.core.artifacts import read_cluster_summary, read_prototype_usage
from imbssl.data.store import class_names
from imbssl.data.subsets import subset_class_counts, subset_kind_and_factor
from imbssl.methods.catalog import label as method_label
from imbssl.reporting.plotting import PlotSettings, class_ticks, log_counts, plot_style, save_figure


# ---------------------------------------------------------------------------------------------
# Figure 1


def figure_class_distribution(subset_csvs, train_data, outs, settings: PlotSettings | None = None) -> None:
    """Figure 1: images per class, one line per subset, classes named as in the prepared split."""
    settings = settings or PlotSettings()
    counts = subset_class_counts(subset_csvs)
    names = class_names(train_data)
    num_classes = len(next(iter(counts.values()))) if counts else 0
    if num_classes > len(names):
        raise UserError(f"the subsets have labels up to {num_classes - 1} but {train_data} names {len(names)} "
                        f"classes: rerun the subsets rule on this split")
    x = np.arange(len(names))
    with plot_style(settings) as plt:
        fig, ax = plt.subplots(figsize=(settings.width, settings.height), layout="constrained")
        # One colour per imbalance factor: imbalanced-pX solid, its balanced twin dashed.
        colours = {}
        for name, per_class in counts.items():
            kind, factor = subset_kind_and_factor(name)
            colour = colours.setdefault(factor or name, f"C{len(colours)}")
            per_class = np.pad(per_class, (0, len(names) - len(per_class)))
            ax.plot(x, per_class, marker="o", markersize=3, color=colour,
                    linestyle="--" if kind == "balanced" else "-", label=f"{name} (N={int(per_class.sum()):,})")
        class_ticks(ax, names)
        ax.set_xlabel("class")
        ax.set_ylabel("images")
        if settings.log_y:
            ax.set_yscale("log")
        ax.set_ylim(bottom=None if settings.log_y else 0)
        ax.legend(fontsize="small", frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.set_title("Images per class in each pretraining subset")
        save_figure(fig, outs, settings.dpi)


# ---------------------------------------------------------------------------------------------
# Figure 3


def _read_csv(path: str | os.PathLike, columns: Sequence[str]) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist: run the cluster rule first")
    frame = pd.read_csv(path)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise UserError(f"{path} lacks columns {missing}: rerun the cluster rule")
    return frame


def figure3(pca_file, contingency_file, outs: Sequence[str | os.PathLike], settings: PlotSettings | None = None,
            summary_file=None) -> None:
    """Figure 3 to every path in `outs` (format from the suffix): PCA scatter by cluster (left) and
    the cluster x class heatmap, cells = counts, colour = share of the cluster (right).
    With `summary_file`, the title reports the subset, NMI and ARI."""
    settings = settings or PlotSettings()
    points = _read_csv(pca_file, ["x", "y", "cluster"])
    table = _read_csv(contingency_file, ["cluster"]).set_index("cluster")
    counts = table.to_numpy(np.int64)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    k = len(table)
    with plot_style(settings) as plt:
        colours = plt.get_cmap("tab10" if k <= 10 else "tab20")
        # Taller with more clusters, so that each row of the heatmap keeps room for its counts.
        height = max(settings.height, 1.6 + 0.35 * k)
        fig, (scatter, heat) = plt.subplots(1, 2, figsize=(settings.width * 1.6, height),
                                            layout="constrained", width_ratios=[1, 1.3])
        for j in range(k):
            members = points["cluster"].to_numpy() == j
            scatter.scatter(points["x"][members], points["y"][members], s=2, color=colours(j % colours.N),
                            label=f"{j} ({members.sum():,})", rasterized=True, linewidths=0)
        scatter.set_xlabel("PC 1")
        scatter.set_ylabel("PC 2")
        scatter.set_title("base features, by cluster")
        scatter.legend(title="cluster (images)", fontsize="small", markerscale=4, frameon=False)
        image = heat.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto")
        class_ticks(heat, list(table.columns))
        heat.set_yticks(range(k), [str(j) for j in table.index])
        heat.set_xlabel("class (reporting only)")
        heat.set_ylabel("cluster")
        heat.set_title("images per cluster and class")
        fig.colorbar(image, ax=heat, label="share of the cluster")
        if summary_file is not None:
            summary = read_cluster_summary(summary_file)
            fig.suptitle(f"{summary.get('subset', '')} seed {summary.get('seed', '')}: k={summary['k']}, "
                         f"NMI {summary['nmi']:.3f}, ARI {summary['ari']:.3f}")
        _write_counts(fig, heat, counts, share, settings.font_size)
        save_figure(fig, outs, settings.dpi)


def count_font_size(cell_width: float, cell_height: float, counts: np.ndarray, largest: float) -> float | None:
    """The font size (points) at which every count fits its heatmap cell (cell sizes in points), at
    most `largest` (the figure's font); None when even 5 points do not fit: the colour alone then
    tells the share (CIFAR-100's 100 classes)."""
    digits = max((len(str(int(n))) for n in counts.flat), default=1)
    size = min(largest, cell_height * 0.55, cell_width / (0.62 * digits + 0.5))
    return size if size >= 5 else None


def _write_counts(fig, heat, counts: np.ndarray, share: np.ndarray, largest: float) -> None:
    """Each cell's image count in it, as large as the cells allow (measured once the layout is done)."""
    fig.canvas.draw()  # lays the figure out: the heatmap's size on the page is known from here
    box = heat.get_window_extent()
    points = 72 / fig.dpi
    size = count_font_size(box.width * points / counts.shape[1], box.height * points / counts.shape[0], counts,
                           largest)
    if size is None:
        return
    for (j, c), n in np.ndenumerate(counts):
        heat.text(c, j, f"{n}", ha="center", va="center", fontsize=size,
                  color="white" if share[j, c] > 0.6 else "black")


# ---------------------------------------------------------------------------------------------
# Figure 4


def sorted_usage(counts: list[int]) -> np.ndarray:
    """Counts from the most used prototype down; unused prototypes (0) cannot sit on a log axis."""
    values = np.sort(np.asarray(counts, dtype=float))[::-1]
    return values[values > 0]


def figure_prototype_usage(usage_paths: Sequence[str | os.PathLike], outs: Sequence[str | os.PathLike],
                           title: str = "", settings: PlotSettings | None = None) -> None:
    """Figure 4, one log-log panel: each model's sorted usage (solid) and the images per prototype
    its prior expects (dashed), from the usage files alone."""
    settings = settings or PlotSettings()
    with plot_style(settings) as plt:
        fig, ax = plt.subplots(figsize=(settings.width, settings.height))
        for i, path in enumerate(usage_paths):
            usage = read_prototype_usage(path)
            color = f"C{i}"
            label = method_label(usage.method)
            used = sorted_usage(usage.counts)
            ax.loglog(np.arange(1, len(used) + 1), used, color=color, lw=1.8,
                      label=f"{label} ({len(used)}/{usage.num_prototypes} used)")
            expected = np.asarray(usage.expected, dtype=float)
            prior_name = "uniform" if usage.prior == "uniform" else f"power law, τ = {usage.tau:g}"
            ax.loglog(np.arange(1, len(expected) + 1), expected, color=color, ls="--", lw=1.0,
                      label=f"{label} prior ({prior_name})")
        ax.set_xlabel("prototype rank (most used first)")
        ax.set_ylabel("images won")
        for axis in (ax.xaxis, ax.yaxis):
            log_counts(axis)
        if title:
            ax.set_title(title)
        ax.legend(fontsize=7, frameon=False)
        fig.tight_layout()
        save_figure(fig, outs, settings.dpi)
