"""The hidden uniform prior, measured (from result files only, no torch): the cluster sizes each
method's features imply against the class sizes, and the prototype usage of the methods with
prototypes.

- `results/tables/prior.{csv,md,html}`: per subset and method, mean ± std over seeds of the normalised
  entropy of the k-means cluster sizes (K = classes) beside that of the class sizes, the NMI of
  clusters and classes, and for prototype methods the normalised entropy of the prototype usage
  and the share of prototypes used.
- `figures/prior_cluster_sizes.{png,pdf}`: per imbalanced subset, the sorted cluster sizes of every
  method against the sorted class sizes (log scale); a uniform prior shows as flat lines above the
  steep class curve.
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np
import pandas as pd

from imbssl.clustering.sizes import normalised_entropy
from imbssl.core.artifacts import read_cluster_sizes, read_prototype_usage
from imbssl.data.subsets import order_subsets
from imbssl.methods.catalog import METHODS, label
from imbssl.reporting.plotting import PlotSettings, plot_style, save_figure
from imbssl.reporting.document import Block, Table, write_document
from imbssl.reporting.tables import collapse_mark, collapse_notes, count_cell, std_over_seeds, title_block, write_csv

PRIOR_COLUMNS = ["subset", "n", "method", "seeds", "class_entropy", "cluster_entropy_mean", "cluster_entropy_std",
                 "nmi_mean", "nmi_std", "usage_entropy_mean", "usage_entropy_std", "prototypes_used_mean",
                 "collapsed"]


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return float(np.mean(values)), std_over_seeds(np.asarray(values, float))


def prior_table(cluster_files: Sequence[str | os.PathLike], usage_files: Sequence[str | os.PathLike] = ()
                ) -> pd.DataFrame:
    """One row per subset and method (paper subset order, catalog method order)."""
    runs = [read_cluster_sizes(path) for path in cluster_files]
    usage: dict[tuple[str, str], list] = {}
    for path in usage_files:
        record = read_prototype_usage(path)
        usage.setdefault((record.subset, record.method), []).append(record)
    rows = []
    order = {name: i for i, name in enumerate(METHODS)}
    for subset in order_subsets(run.subset for run in runs):
        for method in sorted({run.method for run in runs if run.subset == subset}, key=lambda m: order.get(m, 99)):
            mine = [run for run in runs if run.subset == subset and run.method == method]
            used = usage.get((subset, method), [])
            cluster = _mean_std([run.cluster_entropy for run in mine])
            nmi = _mean_std([run.nmi for run in mine])
            entropy = _mean_std([normalised_entropy(u.counts) for u in used])
            share = [float(np.count_nonzero(u.counts)) / u.num_prototypes for u in used]
            rows.append({"subset": subset, "n": mine[0].n, "method": label(method), "seeds": len(mine),
                         "class_entropy": mine[0].class_entropy, "cluster_entropy_mean": cluster[0],
                         "cluster_entropy_std": cluster[1], "nmi_mean": nmi[0], "nmi_std": nmi[1],
                         "usage_entropy_mean": entropy[0], "usage_entropy_std": entropy[1],
                         "prototypes_used_mean": float(np.mean(share)) if share else math.nan,
                         "collapsed": sum(run.collapsed for run in mine)})  # seeds whose training collapsed
    return pd.DataFrame(rows, columns=PRIOR_COLUMNS)


def _cell(mean: float, std: float, digits: int = 3) -> str:
    return "n/a" if math.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"


PRIOR_EXPLANATION = (
    "Normalised entropy H / log K of the sizes of K = classes k-means clusters of each model's features "
    "(1 = all clusters equal) beside that of the class sizes; NMI of clusters and classes; for methods "
    "with prototypes, the normalised entropy of their prototype usage and the share of prototypes used. "
    "A uniform cluster prior shows as cluster entropy well above the class entropy on an imbalanced subset.")


def prior_blocks(table: pd.DataFrame, title: str = "") -> list[Block]:
    """The table's title, what it measures, and one row per subset and method (†: collapsed)."""
    rows = [[row.subset, count_cell(row.n), f"{row.class_entropy:.3f}", row.method + collapse_mark(row.collapsed),
             _cell(row.cluster_entropy_mean, row.cluster_entropy_std), _cell(row.nmi_mean, row.nmi_std),
             _cell(row.usage_entropy_mean, row.usage_entropy_std),
             "n/a" if math.isnan(row.prototypes_used_mean) else f"{row.prototypes_used_mean:.0%}"]
            for row in table.itertuples()]
    header = ["Subset", "N", "Class entropy", "Method", "Cluster entropy", "NMI", "Prototype usage entropy", "Used"]
    return [*title_block(title), PRIOR_EXPLANATION,
            Table(header, rows, [False, True, True, False, True, True, True, True]),
            *collapse_notes(table["collapsed"])]


def write_prior_table(cluster_files, usage_files, out_csv, out_md, title: str = "", out_html=None) -> pd.DataFrame:
    table = prior_table(cluster_files, usage_files)
    write_csv(table, out_csv, na_rep="n/a")
    write_document(prior_blocks(table, title), out_md, out_html, title)
    return table


def figure_prior_clusters(cluster_files: Sequence[str | os.PathLike], outs: Sequence[str | os.PathLike],
                          title: str = "", settings: PlotSettings | None = None) -> None:
    """One log-scale panel per imbalanced subset: sorted cluster sizes of every method (mean over
    seeds) and the sorted class sizes (black, dashed)."""
    settings = settings or PlotSettings()
    runs = [read_cluster_sizes(path) for path in cluster_files]
    subsets = [s for s in order_subsets(run.subset for run in runs) if s.startswith("imbalanced-")]
    order = {name: i for i, name in enumerate(METHODS)}
    methods = sorted({run.method for run in runs}, key=lambda m: order.get(m, 99))
    with plot_style(settings) as plt:
        n = max(1, len(subsets))
        fig, axes = plt.subplots(1, n, figsize=(max(settings.width, 3.4 * n), settings.height), squeeze=False,
                                 sharey=True, layout="constrained")
        for ax, subset in zip(axes[0], subsets):
            mine = [run for run in runs if run.subset == subset]
            ranks = np.arange(1, mine[0].k + 1)
            for i, method in enumerate(methods):
                sizes = [run.cluster_sizes for run in mine if run.method == method]
                if sizes:
                    ax.plot(ranks, np.mean(sizes, axis=0), color=f"C{i}", marker="o", markersize=2.5, lw=1.2,
                            label=label(method))
            ax.plot(ranks, mine[0].class_sizes, color="black", ls="--", lw=1.6, label="classes")
            ax.set_yscale("log")
            ax.set_title(subset, fontsize="small")
            ax.set_xlabel("cluster (or class) rank, largest first")
        axes[0, 0].set_ylabel("images (log scale)")
        if not subsets:
            axes[0, 0].text(0.5, 0.5, "no imbalanced subset", ha="center", va="center", transform=axes[0, 0].transAxes)
        else:
            axes[0, -1].legend(fontsize="x-small", frameon=False, loc="upper right", ncols=2)
        if title:
            fig.suptitle(title)
        save_figure(fig, outs, settings.dpi)
