"""When does class imbalance hurt? Accuracy against the imbalance factor, from result files only.

The first research question of the seed paper ("when does class imbalance in pretraining hurt
SimCLR and SimSiam?") answered as a curve over every configured imbalance factor p: per method,
linear-probe top-1 (mean ± std over seeds) after pretraining on imbalanced-pX (solid) and on its
balanced twin balanced-pX (dashed), the full set as a horizontal line; below, the paired gap
imbalanced-pX − balanced-pX with its 95% t-interval. The same for the head, medium and tail
classes (the groups of imbalanced-pX, `analysis.*`), from the per-class results.
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np
import pandas as pd

from imbssl.data.subsets import subset_kind_and_factor
from imbssl.reporting.analysis import GROUPS, AnalysisSettings, paired_difference
from imbssl.reporting.per_class import per_class_frame, run_table
from imbssl.reporting.plotting import PlotSettings, plot_style, save_figure
from imbssl.reporting.tables import CONFIDENCE, std_over_seeds

METRICS = ("top1", *GROUPS)  # panels, left to right
TITLES = {"top1": "all classes", "head": "head classes", "medium": "medium classes", "tail": "tail classes"}


def factor_of(subset: str) -> float | None:
    """imbalanced-p100 -> 100.0; None for full, given and unknown names."""
    _, factor = subset_kind_and_factor(subset)
    try:
        return float(factor.removeprefix("p"))
    except ValueError:
        return None


def sweep_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per method, subset kind (imbalanced, balanced, full), factor and metric: mean and std over
    seeds; and per method, factor and metric the paired gap imbalanced - balanced (mean, 95%
    interval). `runs`: one row per run of the linear probe (per_class.run_table)."""
    rows = []
    for (method, subset), group in runs.groupby(["method", "subset"], sort=False):
        kind, _ = subset_kind_and_factor(subset)
        for metric in METRICS:
            values = group[metric].to_numpy(float)
            values = values[~np.isnan(values)]
            if len(values):
                rows.append({"method": method, "kind": kind, "factor": factor_of(subset), "metric": metric,
                             "mean": float(values.mean()), "std": std_over_seeds(values), "seeds": len(values)})
    for (method, subset), imbalanced in runs.groupby(["method", "subset"], sort=False):
        if not subset.startswith("imbalanced-") or factor_of(subset) is None:
            continue
        balanced = runs[(runs["method"] == method) & (runs["subset"] == "balanced-" + subset.removeprefix("imbalanced-"))]
        for metric in METRICS:
            gap = paired_difference(dict(zip(imbalanced["seed"], imbalanced[metric])),
                                    dict(zip(balanced["seed"], balanced[metric])), CONFIDENCE)
            if gap.pairs and not math.isnan(gap.mean):
                rows.append({"method": method, "kind": "gap", "factor": factor_of(subset), "metric": metric,
                             "mean": gap.mean, "ci_low": gap.ci_low, "ci_high": gap.ci_high, "seeds": gap.pairs})
    return pd.DataFrame(rows)


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("factor")


def figure_accuracy_vs_imbalance(result_jsons: Sequence[str | os.PathLike], subset_csvs: Sequence[str | os.PathLike],
                                 outs: Sequence[str | os.PathLike], title: str = "",
                                 settings: PlotSettings | None = None, analysis: AnalysisSettings | None = None) -> None:
    """Columns: all classes, head, medium, tail; rows: top-1 against p, and the paired gap against p
    (log-scale p, one colour per method; imbalanced solid, balanced dashed, full dotted)."""
    settings = settings or PlotSettings()
    frame, grouping = per_class_frame(result_jsons, subset_csvs, analysis)
    runs = run_table(frame, grouping)
    table = sweep_table(runs[runs["probe"] == "linear"])
    methods = list(dict.fromkeys(frame["method"]))
    colours = {method: f"C{i}" for i, method in enumerate(methods)}
    with plot_style(settings) as plt:
        fig, axes = plt.subplots(2, len(METRICS), figsize=(max(settings.width, 3.0 * len(METRICS)), settings.height * 1.8),
                                 sharex=True, sharey="row", squeeze=False, layout="constrained")
        for column, metric in enumerate(METRICS):
            top, bottom = axes[0, column], axes[1, column]
            for method in methods:
                mine = table[(table["method"] == method) & (table["metric"] == metric)]
                _draw_accuracy(top, mine, colours[method])
                _draw_gap(bottom, mine[mine["kind"] == "gap"], colours[method])
            top.set_title(TITLES[metric], fontsize="medium")
            bottom.axhline(0.0, color="0.5", lw=0.8)
            bottom.set_xlabel("imbalance factor p (log scale)")
            bottom.set_xscale("log")
        axes[0, 0].set_ylabel("linear top-1 (%)")
        axes[1, 0].set_ylabel(f"imbalanced − balanced (pts, {CONFIDENCE:.0%} CI)")
        _legend(axes[0, -1], methods, colours)
        if title:
            fig.suptitle(title)
        save_figure(fig, outs, settings.dpi)


def _draw_accuracy(ax, mine: pd.DataFrame, colour: str) -> None:
    for kind, style in (("imbalanced", "-"), ("balanced", "--")):
        curve = _sorted(mine[(mine["kind"] == kind) & mine["factor"].notna()])
        if not curve.empty:
            ax.errorbar(curve["factor"], curve["mean"], yerr=curve["std"], color=colour, ls=style, marker="o",
                        markersize=3, lw=1.3, capsize=2)
    full = mine[mine["kind"] == "full"]
    if not full.empty:
        ax.axhline(float(full["mean"].iloc[0]), color=colour, ls=":", lw=1.0)


def _draw_gap(ax, gaps: pd.DataFrame, colour: str) -> None:
    gaps = _sorted(gaps)
    if gaps.empty:
        return
    known = gaps["ci_low"].notna()
    lower = (gaps["mean"] - gaps["ci_low"]).where(known, 0.0)
    upper = (gaps["ci_high"] - gaps["mean"]).where(known, 0.0)
    ax.errorbar(gaps["factor"], gaps["mean"], yerr=[lower, upper], color=colour, marker="o", markersize=3, lw=1.3,
                capsize=2)


def _legend(ax, methods: list[str], colours: dict[str, str]) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colours[m], lw=1.3, marker="o", markersize=3, label=m) for m in methods]
    handles += [Line2D([], [], color="0.3", ls=ls, lw=1.3, label=label)
                for ls, label in (("-", "imbalanced-pX"), ("--", "balanced-pX"), (":", "full"))]
    ax.legend(handles=handles, fontsize="x-small", frameon=False, loc="lower left")
