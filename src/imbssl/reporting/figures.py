"""Figures from result files only (CSV, JSON, the prepared split's class names): no torch, no
model, so a plot setting redraws in seconds.

- Figure 1: images per class of every pretraining subset.
- Figure 3: the base features' 2-D PCA coloured by k-means cluster, beside the cluster x class
  table as a heatmap (class labels are for reporting only; clustering never sees them).
- Figure 4: prototype usage of MSN and PMSN, sorted, log-log, against each model's prior.
- Accuracy against class frequency: per-class linear-probe accuracy over the class's training
  images, imbalanced-pX vs balanced-pX, per method, mean and std over seeds (one per experiment).
- Training curves: loss, kNN monitor and output std per epoch from metrics.csv, per subset; and
  Experiment II's stages (base -> experts -> student) on one epoch axis.

Every figure follows `PlotSettings` through matplotlib's context managers (no global rcParams
change) and is written by `save_figure`. matplotlib is imported inside the plotting functions
(Agg backend), so importing this module costs nothing.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from imbssl import UserError
from imbssl.core.atomic import atomic_path
from imbssl.data.store import class_names
from imbssl.data.subsets import eval_subset_name, order_subsets, subset_class_counts, subset_kind_and_factor
from imbssl.reporting.tables import METHOD_LABELS, read_summary


@dataclass
class PlotSettings:
    """Figure style. Output formats are chosen by the output paths' suffixes (.png, .pdf, .svg)."""

    dpi: int = 200
    width: float = 6.0  # inches
    height: float = 3.5  # inches
    font_size: float = 9.0
    style: str = "default"  # a name from matplotlib.style.available
    log_y: bool = False  # logarithmic image-count axis in Figure 1


@contextmanager
def plot_style(settings: PlotSettings):
    """pyplot inside the settings' style and font size (Agg backend, nothing global changed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with plt.style.context(settings.style), plt.rc_context({"font.size": settings.font_size}):
        yield plt


def save_figure(fig, outs: Sequence[str | os.PathLike], dpi: int) -> None:
    """Write `fig` atomically to every path in `outs` (format from each suffix), then close it."""
    import matplotlib.pyplot as plt

    for out in outs:
        with atomic_path(out) as tmp:
            # The temporary name has no image suffix: name the format explicitly.
            fig.savefig(tmp, format=Path(out).suffix.lstrip(".") or "png", dpi=dpi)
    plt.close(fig)


def _class_ticks(ax, names: Sequence[str]) -> None:
    """Class names on the x axis, slanted when they are words (e.g. CIFAR-10's "automobile")."""
    long_names = max(map(len, names), default=0) > 3
    ax.set_xticks(range(len(names)), names, rotation=45 if long_names else 0, ha="right" if long_names else "center")


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
        _class_ticks(ax, names)
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
        _class_ticks(heat, list(table.columns))
        heat.set_yticks(range(k), [str(j) for j in table.index])
        heat.set_xlabel("class (reporting only)")
        heat.set_ylabel("cluster")
        heat.set_title("images per cluster and class")
        fig.colorbar(image, ax=heat, label="share of the cluster")
        if summary_file is not None:
            summary = read_summary(summary_file)
            fig.suptitle(f"{summary.get('subset', '')} seed {summary.get('seed', '')}: k={summary['k']}, "
                         f"NMI {summary['nmi']:.3f}, ARI {summary['ari']:.3f}")
        save_figure(fig, outs, settings.dpi)


# ---------------------------------------------------------------------------------------------
# Figure 4


def sorted_usage(counts: list[int]) -> np.ndarray:
    """Counts from the most used prototype down; unused prototypes (0) cannot sit on a log axis."""
    values = np.sort(np.asarray(counts, dtype=float))[::-1]
    return values[values > 0]


USAGE_KEYS = ("method", "prior", "tau", "num_prototypes", "num_images", "counts", "expected")


def read_usage(path: str | os.PathLike) -> dict:
    """A prototype-usage JSON (prototypes.write_usage), with every key the figure draws."""
    try:
        usage = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read prototype-usage file {path} ({type(err).__name__}): rerun the "
                        f"prototype_usage rule") from err
    missing = [key for key in USAGE_KEYS if key not in usage]
    if missing:
        raise UserError(f"prototype-usage file {path} lacks {missing}: rerun the prototype_usage rule")
    return usage


def figure_prototype_usage(usage_paths: Sequence[str | os.PathLike], outs: Sequence[str | os.PathLike],
                           title: str = "", settings: PlotSettings | None = None) -> None:
    """Figure 4, one log-log panel: each model's sorted usage (solid) and the images per prototype
    its prior expects (dashed), from the usage files alone."""
    settings = settings or PlotSettings()
    with plot_style(settings) as plt:
        fig, ax = plt.subplots(figsize=(settings.width, settings.height))
        for i, path in enumerate(usage_paths):
            usage = read_usage(path)
            color = f"C{i}"
            label = METHOD_LABELS.get(usage.get("method"), usage.get("method", Path(path).stem))
            used = sorted_usage(usage["counts"])
            ax.loglog(np.arange(1, len(used) + 1), used, color=color, lw=1.8,
                      label=f"{label} ({len(used)}/{usage['num_prototypes']} used)")
            expected = np.asarray(usage["expected"], dtype=float)
            prior_name = "uniform" if usage["prior"] == "uniform" else f"power law, tau={usage['tau']:g}"
            ax.loglog(np.arange(1, len(expected) + 1), expected, color=color, ls="--", lw=1.0,
                      label=f"{label} prior ({prior_name})")
        ax.set_xlabel("prototype rank (most used first)")
        ax.set_ylabel("images won")
        if title:
            ax.set_title(title)
        ax.legend(fontsize=7, frameon=False)
        fig.tight_layout()
        save_figure(fig, outs, settings.dpi)


# ---------------------------------------------------------------------------------------------
# Accuracy against class frequency


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
    from matplotlib.ticker import FuncFormatter, LogLocator

    from imbssl.reporting.analysis import GROUPS
    from imbssl.reporting.per_class import per_class_frame

    settings = settings or PlotSettings()
    frame, grouping = per_class_frame(result_jsons, subset_csvs, analysis)
    twins = {subset: grouping.source(subset) for subset in frame["subset"].unique()}
    factors = [s for s in order_subsets(twins.values()) if s.startswith("imbalanced-")]
    methods = list(dict.fromkeys(frame["method"]))
    colours = {method: f"C{i}" for i, method in enumerate(methods)}
    with plot_style(settings) as plt:
        n = max(1, len(factors))
        fig, axes = plt.subplots(1, n, figsize=(max(settings.width, 3.2 * n), settings.height), squeeze=False,
                                 sharey=True, layout="constrained")
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
            counts_label = FuncFormatter(lambda value, _: f"{value:g}")  # 5000, 200, 1 (not 10^3, 1.0)
            ax.xaxis.set_major_formatter(counts_label)
            ax.xaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
            ax.xaxis.set_minor_formatter(counts_label)
            ax.tick_params(axis="x", which="minor", labelsize="x-small")
            ax.invert_xaxis()  # head (many images) on the left
            twin = eval_subset_name(source)  # balanced-pX
            ax.set_title(f"{source} (solid) vs {twin} (dashed)" if twin in twins else source, fontsize="small")
        # One legend entry per method (colour) and per kind of subset (line style).
        handles = [Line2D([], [], color=colours[m], lw=1.4, marker="o", markersize=2.5, label=m) for m in methods]
        if any(subset.startswith("balanced-") and twins[subset] != subset for subset in twins):
            handles += [Line2D([], [], color="0.3", lw=1.4, ls=ls, label=kind)
                        for ls, kind in (("-", "pretrained on imbalanced-pX"), ("--", "pretrained on balanced-pX"))]
        axes[0, -1].legend(handles=handles, fontsize="x-small", frameon=False, loc="lower left")
        fig.supxlabel("training images of the class in imbalanced-pX (log scale; balanced-pX drawn at the same "
                      "classes)", fontsize="small")
        if not factors:
            axes[0, 0].text(0.5, 0.5, "no imbalanced subset among these runs", ha="center", va="center",
                            transform=axes[0, 0].transAxes)
        axes[0, 0].set_ylabel("linear-probe accuracy of the class (%)")
        if title:
            fig.suptitle(title)
        save_figure(fig, outs, settings.dpi)


# ---------------------------------------------------------------------------------------------
# Training curves

CURVE_ROWS = (("loss", "loss"), ("knn_top1", "kNN top-1 (%)"), ("out_std", "output std"))


def read_metrics(path: str | os.PathLike) -> pd.DataFrame:
    """A training job's metrics.csv (train.py), with at least its epoch and loss columns."""
    path = Path(path)
    try:
        frame = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise UserError(f"cannot read training metrics {path} ({type(err).__name__}): rerun its training job") from err
    missing = [c for c in ("epoch", "loss") if c not in frame.columns]
    if missing:
        raise UserError(f"training metrics {path} lack columns {missing}: rerun its training job")
    return frame


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
