"""Training curves from metrics.csv: loss, kNN monitor and output std per epoch, per subset; and
Experiment II's stages (base -> experts -> student) on one epoch axis."""

from __future__ import annotations

import os
from typing import Sequence

import pandas as pd

from imbssl import UserError
from imbssl.core.artifacts import read_metrics
from imbssl.reporting.plotting import PlotSettings, plot_style, save_figure


CURVE_ROWS = (("loss", "loss"), ("knn_top1", "kNN top-1 (%)"), ("out_std", "output std"))


def _plot_metric(ax, frame: pd.DataFrame, column: str, offset: int = 0, **style) -> None:
    if column in frame.columns:
        rows = frame.dropna(subset=[column])
        ax.plot(rows["epoch"] + offset, rows[column], marker="o" if column == "knn_top1" else None,
                markersize=2.5, **style)


def figure_training_curves(metrics_csvs: Sequence[str | os.PathLike], labels: Sequence[str],
                           outs: Sequence[str | os.PathLike], title: str = "",
                           settings: PlotSettings | None = None) -> None:
    """One column per method (`labels`), rows: training loss, kNN monitor top-1 and the output std
    (a collapse indicator: it falls towards 0 when every image maps to the same output)."""
    if len(metrics_csvs) != len(labels):
        raise UserError(f"figure-curves: {len(metrics_csvs)} metrics files for {len(labels)} labels")
    settings = settings or PlotSettings()
    with plot_style(settings) as plt:
        n = max(1, len(labels))
        fig, axes = plt.subplots(len(CURVE_ROWS), n, figsize=(max(settings.width, 2.4 * n), settings.height * 1.8),
                                 squeeze=False, sharex="col", layout="constrained")
        for j, (path, label) in enumerate(zip(metrics_csvs, labels)):
            frame = read_metrics(path)
            for i, (column, name) in enumerate(CURVE_ROWS):
                _plot_metric(axes[i, j], frame, column, color=f"C{j}", lw=1.4)
                if j == 0:
                    axes[i, j].set_ylabel(name)
            axes[0, j].set_title(label, fontsize="medium")
            axes[-1, j].set_xlabel("epoch")
        if title:
            fig.suptitle(title)
        save_figure(fig, outs, settings.dpi)


def figure_stage_curves(base_csv, expert_csvs: Sequence[Sequence[str | os.PathLike]],
                        student_csvs: Sequence[str | os.PathLike], kinds: Sequence[str],
                        outs: Sequence[str | os.PathLike], title: str = "",
                        settings: PlotSettings | None = None) -> None:
    """Experiment II end to end, one column per partition kind (k-means, random): the base
    model's epochs, then each cluster's expert (one line each), then the distilled student, on one
    epoch axis with the stage boundaries marked. Rows as in the training curves; the student's
    loss is its regression loss to base and experts, not comparable to the SimSiam loss before it."""
    if not (len(kinds) == len(expert_csvs) == len(student_csvs)):
        raise UserError(f"figure-stages: {len(kinds)} kinds, {len(expert_csvs)} expert groups and "
                        f"{len(student_csvs)} students; pass one of each per kind")
    settings = settings or PlotSettings()
    base = read_metrics(base_csv)
    base_epochs = int(base["epoch"].max())
    with plot_style(settings) as plt:
        n = max(1, len(kinds))
        fig, axes = plt.subplots(len(CURVE_ROWS), n, figsize=(max(settings.width, 3.6 * n), settings.height * 1.8),
                                 squeeze=False, sharex=True, layout="constrained")
        for j, (kind, experts, student_csv) in enumerate(zip(kinds, expert_csvs, student_csvs)):
            frames = [read_metrics(path) for path in experts]
            expert_epochs = max((int(f["epoch"].max()) for f in frames), default=0)
            student = read_metrics(student_csv)
            for i, (column, name) in enumerate(CURVE_ROWS):
                ax = axes[i, j]
                _plot_metric(ax, base, column, color="0.3", lw=1.6, label="base")
                for c, frame in enumerate(frames):
                    _plot_metric(ax, frame, column, offset=base_epochs, color=f"C{c}", lw=1.0, label=f"expert {c}")
                _plot_metric(ax, student, column, offset=base_epochs + expert_epochs, color="black", lw=1.6,
                             label="student")
                for boundary in (base_epochs + 0.5, base_epochs + expert_epochs + 0.5):
                    ax.axvline(boundary, color="0.5", ls=":", lw=0.8)
                if j == 0:
                    ax.set_ylabel(name)
            axes[0, j].set_title(f"{kind} partition: base → experts → student", fontsize="medium")
            axes[-1, j].set_xlabel("epoch (stages one after another)")
            axes[0, j].legend(fontsize="x-small", frameon=False, ncols=2)
        if title:
            fig.suptitle(title)
        save_figure(fig, outs, settings.dpi)
