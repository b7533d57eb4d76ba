"""Accuracy against class frequency, from result files only: per-class linear-probe accuracy over
the class's training images, imbalanced-pX vs balanced-pX, per method, mean and std over seeds
(one figure per experiment)."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import pandas as pd

from imbssl.data.subsets import eval_subset_name, order_subsets
from imbssl.reporting.analysis import GROUPS
from imbssl.reporting.per_class import per_class_frame
from imbssl.reporting.plotting import PlotSettings, log_counts, plot_style, save_figure


def frequency_curve(frame: pd.DataFrame, column: str = "accuracy") -> pd.DataFrame:
    """One subset's runs of one method -> per distinct training-image count x: the accuracy
    averaged over the classes with that count (per seed), then mean and std (ddof 1, 0 for one
    seed) over seeds. Untested classes (NaN) are left out."""
    per_seed = frame.dropna(subset=[column]).groupby(["seed", "x"])[column].mean().reset_index()
    curve = per_seed.groupby("x")[column].agg(["mean", "std", "count"]).reset_index()
    curve["std"] = curve["std"].fillna(0.0)
    return curve.sort_values("x", ascending=False)


def _group_boundaries(counts: np.ndarray, groups: Sequence[str]) -> list[tuple[float, str]]:
    """Where one group ends and the next begins on the count axis (geometric midpoints), and the
    name of the group that starts there, head first."""
    order = np.argsort(-counts, kind="stable")
    marks = []
    for a, b in zip(order[:-1], order[1:]):
        if groups[a] != groups[b] and counts[a] > 0 and counts[b] > 0:
            marks.append((float(np.sqrt(counts[a] * counts[b])), groups[b]))
    return marks


def figure_accuracy_vs_frequency(result_jsons, subset_csvs, outs: Sequence[str | os.PathLike], title: str = "",
                                 settings: PlotSettings | None = None, analysis=None) -> None:
    """Per imbalance factor X, one panel: per-class linear-probe accuracy against the class's
    training images in imbalanced-pX (log scale, head on the left), one colour per method,
    imbalanced-pX solid and balanced-pX dashed at the same classes' positions; lines are the mean
    over seeds, bands +- one std. Group boundaries (head / medium / tail) are dotted lines.
    Subsets with no imbalanced twin (full) are left out."""
    from matplotlib.lines import Line2D

    settings = settings or PlotSettings()
    frame, grouping = per_class_frame(result_jsons, subset_csvs, analysis)
    twins = {subset: grouping.source(subset) for subset in frame["subset"].unique()}
    factors = [s for s in order_subsets(twins.values()) if s.startswith("imbalanced-")]
    methods = list(dict.fromkeys(frame["method"]))
    colours = {method: f"C{i}" for i, method in enumerate(methods)}
    with plot_style(settings) as plt:
        n = max(1, len(factors))
        # The panels, then a narrow column that holds the legend: beside the curves, never over them
        # (their tails run into every corner), and out of the way of the titles.
        fig, row = plt.subplots(1, n + 1, figsize=(max(settings.width, 3.2 * n) + 1.6, settings.height),
                                squeeze=False, sharey=True, layout="constrained", width_ratios=[1] * n + [0.45])
        axes, legend_ax = row[:, :n], row[0, n]
        legend_ax.axis("off")
        for ax, source in zip(axes[0], factors):
            x_of = grouping.train_images(source)
            for subset in (s for s in order_subsets(twins) if twins[s] == source):
                for method in methods:
                    runs = frame[(frame["subset"] == subset) & (frame["method"] == method)].copy()
                    if runs.empty:
                        continue
                    runs["x"] = x_of[runs["class"].to_numpy()]
                    curve = frequency_curve(runs[runs["x"] > 0])
                    dashed = subset.startswith("balanced-")
                    ax.plot(curve["x"], curve["mean"], color=colours[method], ls="--" if dashed else "-",
                            marker="o", markersize=2.5, lw=1.4)
                    ax.fill_between(curve["x"], curve["mean"] - curve["std"], curve["mean"] + curve["std"],
                                    color=colours[method], alpha=0.12 if dashed else 0.2, lw=0)
            groups = grouping.groups(source)
            if groups is not None:
                ax.text(0.0, 1.0, f" {GROUPS[0]}", transform=ax.transAxes, va="top", fontsize="x-small", color="0.35")
                for position, name in _group_boundaries(x_of, groups):
                    ax.axvline(position, color="0.5", ls=":", lw=0.8)
                    ax.text(position, 1.0, f" {name}", transform=ax.get_xaxis_transform(), va="top",
                            fontsize="x-small", color="0.35")
            ax.set_xscale("log")
            log_counts(ax.xaxis)  # 5000, 200, 1 (not 10^3, 1.0)
            ax.invert_xaxis()  # head (many images) on the left
            twin = eval_subset_name(source)  # balanced-pX
            ax.set_title(f"{source} (solid) vs {twin} (dashed)" if twin in twins else source, fontsize="small")
        # One legend entry per method (colour) and per kind of subset (line style).
        handles = [Line2D([], [], color=colours[m], lw=1.4, marker="o", markersize=2.5, label=m) for m in methods]
        if any(subset.startswith("balanced-") and twins[subset] != subset for subset in twins):
            handles += [Line2D([], [], color="0.3", lw=1.4, ls=ls, label=kind)
                        for ls, kind in (("-", "pretrained on imbalanced-pX"), ("--", "pretrained on balanced-pX"))]
        legend_ax.legend(handles=handles, fontsize="x-small", frameon=False, loc="center left")
        fig.supxlabel("training images of the class in imbalanced-pX (log scale; balanced-pX drawn at the same "
                      "classes)", fontsize="small")
        if not factors:
            axes[0, 0].text(0.5, 0.5, "no imbalanced subset among these runs", ha="center", va="center",
                            transform=axes[0, 0].transAxes)
        axes[0, 0].set_ylabel("linear-probe accuracy of the class (%)")
        if title:
            fig.suptitle(title)
        save_figure(fig, outs, settings.dpi)
