"""Training curves from metrics.csv: loss, kNN monitor and output std per epoch, per subset; and
Experiment II's stages (base -> experts -> student) on one epoch axis.

Panels meant to be compared share their y-range: the kNN monitor and the output std of every
method (a 1-point kNN wobble must not look like the 20-point gap beside it), and both columns of
Experiment II. Each method's loss keeps its own range (losses of different methods are on
different scales); the student's distillation loss gets its own axis, on the right of the stage
it belongs to, since it is not the SimSiam loss before it.
"""

from __future__ import annotations

import math
import os
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from imbssl import UserError
from imbssl.core.artifacts import read_metrics
from imbssl.reporting.plotting import PlotSettings, plain_ticks, plot_style, save_figure

CURVE_ROWS = (("loss", "loss"), ("knn_top1", "kNN top-1 (%)"), ("out_std", "output std"))
SHARED_ROWS = ("knn_top1", "out_std")  # compared across methods: one y-range per row
KNN_MIN_SPAN = 10.0  # percentage points: the narrowest kNN range drawn, so seed noise looks like noise


def _plot_metric(ax, frame: pd.DataFrame, column: str, offset: int = 0, **style) -> None:
    ax.grid(axis="y", color="0.9", lw=0.6)  # a level read across the panels that share the range
    ax.set_axisbelow(True)
    if column in frame.columns:
        rows = frame.dropna(subset=[column])
        ax.plot(rows["epoch"] + offset, rows[column], marker="o" if column == "knn_top1" else None,
                markersize=2.5, **style)


def _values(frames: Iterable[pd.DataFrame], column: str) -> np.ndarray:
    parts = [frame[column].dropna().to_numpy(float) for frame in frames if column in frame.columns]
    values = np.concatenate(parts) if parts else np.array([])
    return values[np.isfinite(values)]


def metric_limits(column: str, values: np.ndarray) -> tuple[float, float] | None:
    """The y-range of a metric shared by panels: kNN over at least KNN_MIN_SPAN points within
    0-100 %, the output std from 0 (collapse) to above its largest value, anything else its
    values with a margin; None without values."""
    if len(values) == 0:
        return None
    low, high = float(values.min()), float(values.max())
    if column == "knn_top1":
        middle, span = (low + high) / 2, max(high - low, KNN_MIN_SPAN) * 1.1
        low, high = middle - span / 2, middle + span / 2
        if low < 0:
            low, high = 0.0, high - low
        if high > 100:
            low, high = max(0.0, low - (high - 100)), 100.0
        return math.floor(low), math.ceil(high)
    if column == "out_std":
        return 0.0, high * 1.15 if high > 0 else 1.0
    margin = (high - low) * 0.05 or abs(high) * 0.05 or 1.0
    return low - margin, high + margin


def share_row(axes: Sequence, column: str, frames: Sequence[pd.DataFrame]) -> None:
    """One y-range for a row of panels (from every frame drawn in it), tick labels on the first only."""
    limits = metric_limits(column, _values(frames, column))
    if limits is not None:
        axes[0].set_ylim(*limits)
    for ax in axes[1:]:
        ax.sharey(axes[0])
        ax.tick_params(labelleft=False)


def figure_training_curves(metrics_csvs: Sequence[str | os.PathLike], labels: Sequence[str],
                           outs: Sequence[str | os.PathLike], title: str = "",
                           settings: PlotSettings | None = None) -> None:
    """One column per method (`labels`), rows: training loss (each method its own scale), kNN
    monitor top-1 and the output std (a collapse indicator: it falls towards 0 when every image
    maps to the same output), these two on one y-range across methods."""
    if len(metrics_csvs) != len(labels):
        raise UserError(f"figure-curves: {len(metrics_csvs)} metrics files for {len(labels)} labels")
    settings = settings or PlotSettings()
    frames = [read_metrics(path) for path in metrics_csvs]
    with plot_style(settings) as plt:
        n = max(1, len(labels))
        fig, axes = plt.subplots(len(CURVE_ROWS), n, figsize=(max(settings.width, 2.4 * n), settings.height * 1.8),
                                 squeeze=False, sharex="col", layout="constrained")
        for j, (frame, label) in enumerate(zip(frames, labels)):
            for i, (column, name) in enumerate(CURVE_ROWS):
                _plot_metric(axes[i, j], frame, column, color=f"C{j}", lw=1.4)
                plain_ticks(axes[i, j])
                if j == 0:
                    axes[i, j].set_ylabel(name)
            axes[0, j].set_title(label, fontsize="medium")
            axes[-1, j].set_xlabel("epoch")
        for i, (column, _) in enumerate(CURVE_ROWS):
            if column in SHARED_ROWS:
                share_row(axes[i], column, frames)
        if title:
            fig.suptitle(title)
        save_figure(fig, outs, settings.dpi)


def _student_loss_axis(ax, student: pd.DataFrame, offset: int):
    """The student's distillation loss on an axis of its own (right, dashed), over its stage (shaded)."""
    twin = ax.twinx()
    _plot_metric(twin, student, "loss", offset=offset, color="black", lw=1.6, ls="--")
    ax.axvspan(offset + 0.5, offset + int(student["epoch"].max()) + 0.5, color="0.93", lw=0, zorder=0)
    plain_ticks(twin)
    return twin


def figure_stage_curves(base_csv, expert_csvs: Sequence[Sequence[str | os.PathLike]],
                        student_csvs: Sequence[str | os.PathLike], kinds: Sequence[str],
                        outs: Sequence[str | os.PathLike], title: str = "",
                        settings: PlotSettings | None = None) -> None:
    """Experiment II end to end, one column per partition kind (k-means, random): the base
    model's epochs, then each cluster's expert (one line each), then the distilled student, on one
    epoch axis with the stage boundaries marked. Rows as in the training curves, on the same
    y-range in both columns; the student's loss, a regression loss to base and experts, is drawn
    on its own axis (right, dashed) over the student's stage, not on the SimSiam loss's scale."""
    if not (len(kinds) == len(expert_csvs) == len(student_csvs)):
        raise UserError(f"figure-stages: {len(kinds)} kinds, {len(expert_csvs)} expert groups and "
                        f"{len(student_csvs)} students; pass one of each per kind")
    settings = settings or PlotSettings()
    base = read_metrics(base_csv)
    base_epochs = int(base["epoch"].max())
    experts = [[read_metrics(path) for path in group] for group in expert_csvs]
    students = [read_metrics(path) for path in student_csvs]
    with plot_style(settings) as plt:
        n = max(1, len(kinds))
        fig, axes = plt.subplots(len(CURVE_ROWS), n, figsize=(max(settings.width, 3.6 * n), settings.height * 1.8),
                                 squeeze=False, sharex=True, layout="constrained")
        twins = []
        for j, (kind, frames, student) in enumerate(zip(kinds, experts, students)):
            expert_epochs = max((int(f["epoch"].max()) for f in frames), default=0)
            student_start = base_epochs + expert_epochs
            for i, (column, name) in enumerate(CURVE_ROWS):
                ax = axes[i, j]
                _plot_metric(ax, base, column, color="0.3", lw=1.6, label="base")
                for c, frame in enumerate(frames):
                    _plot_metric(ax, frame, column, offset=base_epochs, color=f"C{c}", lw=1.0, label=f"expert {c}")
                if column != "loss":
                    _plot_metric(ax, student, column, offset=student_start, color="black", lw=1.6, label="student")
                for boundary in (base_epochs + 0.5, student_start + 0.5):
                    ax.axvline(boundary, color="0.5", ls=":", lw=0.8)
                plain_ticks(ax)
                if j == 0:
                    ax.set_ylabel("SimSiam loss" if column == "loss" else name)
            twins.append(_student_loss_axis(axes[0, j], student, student_start))
            axes[0, j].set_title(f"{kind} partition: base → experts → student", fontsize="medium")
            axes[-1, j].set_xlabel("epoch (stages one after another)")
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color="0.3", lw=1.6, label="base"),
                   *(Line2D([], [], color=f"C{c}", lw=1.0, label=f"expert {c}")
                     for c in range(max(len(group) for group in experts))),
                   Line2D([], [], color="black", lw=1.6, label="student"),
                   Line2D([], [], color="black", lw=1.6, ls="--", label="student's distillation loss (right axis)")]
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 5), fontsize="x-small",
                   frameon=False)
        simsiam = [base, *(frame for group in experts for frame in group)]
        share_row(axes[0], "loss", simsiam)
        for i, (column, _) in enumerate(CURVE_ROWS[1:], start=1):
            share_row(axes[i], column, [*simsiam, *students])
        share_row(twins, "loss", students)
        for twin in twins[:-1]:
            twin.tick_params(labelright=False)
        twins[-1].set_ylabel("student's distillation loss")
        if title:
            fig.suptitle(title)
        save_figure(fig, outs, settings.dpi)
