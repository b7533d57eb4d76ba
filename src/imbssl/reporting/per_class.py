"""Where the accuracy goes, from result files only (no torch): per-class accuracy against the
class's training images, and head / medium / tail, balancedness and worst-class tables.

- `results/tables/per_class.{csv,md}`: one row per run and class (long format), with the class's
  images in the pretraining subset, its group and its test images; a class without test images
  has accuracy n/a, never 0 or 100.
- `results/tables/table{2,3,4}_groups.{csv,md}`: per subset and method, for the linear probe and
  for kNN, top-1 of each group, balancedness and worst-class accuracy, mean ± std over seeds.

The groups and the metrics are defined in analysis.py; the grouping counts come from the subset
files (a balanced-pX subset takes its imbalanced-pX twin's, subsets.grouping_subset).
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np
import pandas as pd

from imbssl import UserError
from imbssl.reporting.analysis import (GROUPS, AnalysisSettings, class_groups, empty_groups_error, is_uniform, run_metrics)
from imbssl.core.artifacts import read_result
from imbssl.data.subsets import grouping_subset, order_subsets, subset_class_counts
from imbssl.reporting.document import Block, Table, write_document
from imbssl.reporting.tables import accuracy_cell, count_cell, std_over_seeds, title_block, write_csv

PROBES = {"linear": "per_class", "knn": "knn_per_class"}  # probe -> per-class key of a result JSON
PER_CLASS_COLUMNS = ["subset", "method", "seed", "class", "class_name", "train_images", "group", "test_images",
                     "accuracy", "knn_accuracy"]
METRICS = ["top1", *GROUPS, "balancedness", "worst"]
GROUP_COLUMNS = ["subset", "n", "method", "probe", *(f"{m}_{s}" for m in METRICS for s in ("mean", "std")), "seeds"]


class Grouping:
    """The group of every class of every subset, from the subsets' class counts."""

    def __init__(self, subset_csvs: Sequence[str | os.PathLike], num_classes: int, settings: AnalysisSettings):
        self.counts = subset_class_counts(subset_csvs, num_classes)
        self.settings = settings
        self._groups: dict[str, list[str] | None] = {}

    def train_images(self, subset: str) -> np.ndarray:
        if subset not in self.counts:
            raise UserError(f"no subset file for {subset}: pass results/subsets/{subset}.csv with --subsets")
        return self.counts[subset]

    def source(self, subset: str) -> str:
        return grouping_subset(subset, self.counts)

    def groups(self, subset: str) -> list[str] | None:
        """Head/medium/tail of each class of `subset`; None when its grouping counts are all equal."""
        if subset not in self._groups:
            source = self.source(subset)
            counts = self.train_images(source)
            if is_uniform(counts):
                self._groups[subset] = None
            else:
                message = empty_groups_error(counts.tolist(), self.settings, source)
                if message:
                    raise UserError(message)
                self._groups[subset] = class_groups(counts.tolist(), self.settings)
        return self._groups[subset]

    def describe(self, subset: str) -> str:
        """How `subset`'s classes are grouped, in words (for the Markdown tables)."""
        groups = self.groups(subset)
        source = self.source(subset)
        by = "its own" if source == subset else f"{source}'s"
        if groups is None:
            return f"{subset}: every class has {int(self.train_images(source)[0]):,} images, no head or tail (n/a)"
        counts = self.train_images(source)
        parts = []
        for name in GROUPS:
            members = counts[[g == name for g in groups]]
            parts.append(f"{name} {len(members)} classes ({members.max():,}–{members.min():,} images)")
        return f"{subset} (by {by} training images): " + ", ".join(parts)


def per_class_frame(result_jsons: Sequence[str | os.PathLike], subset_csvs: Sequence[str | os.PathLike],
                    settings: AnalysisSettings | None = None) -> tuple[pd.DataFrame, Grouping]:
    """The long per-class table of every run, and the grouping it used."""
    records = [read_result(path) for path in result_jsons]
    num_classes = max((len(r.per_class) for r in records), default=0)
    grouping = Grouping(subset_csvs, num_classes, settings or AnalysisSettings())
    rows = []
    for record in records:
        subset = record.subset
        train_images = grouping.train_images(subset)
        groups = grouping.groups(subset)
        names = record.classes or [str(c) for c in range(len(record.per_class))]
        for c, (linear, knn) in enumerate(zip(record.per_class, record.knn_per_class)):
            rows.append({"subset": subset, "method": record.method, "seed": int(record.seed), "class": c,
                         "class_name": names[c], "train_images": int(train_images[c]),
                         "group": "n/a" if groups is None else groups[c],
                         "test_images": int(record.test_class_counts[c]),
                         "accuracy": math.nan if linear is None else float(linear),
                         "knn_accuracy": math.nan if knn is None else float(knn)})
    frame = pd.DataFrame(rows, columns=PER_CLASS_COLUMNS)
    order = {s: i for i, s in enumerate(order_subsets(frame["subset"]))}
    frame = frame.sort_values(["subset", "method", "seed", "class"], key=lambda col: col.map(order)
                              if col.name == "subset" else col, kind="stable")
    return frame.reset_index(drop=True), grouping


def run_table(frame: pd.DataFrame, grouping: Grouping) -> pd.DataFrame:
    """One row per run and probe: the subset's size n (its images, from the subset file), top-1
    (test-image weighted, as the main tables), head / medium / tail, balancedness and worst-class
    accuracy."""
    rows = []
    for (subset, method, seed), run in frame.groupby(["subset", "method", "seed"], sort=False):
        groups = grouping.groups(subset)
        for probe, column in (("linear", "accuracy"), ("knn", "knn_accuracy")):
            accuracy = [None if math.isnan(a) else a for a in run[column]]
            tested = run["test_images"].to_numpy(float)
            known = ~np.isnan(run[column].to_numpy(float))
            top1 = float(np.average(run[column].to_numpy(float)[known], weights=tested[known])) if known.any() \
                else math.nan
            rows.append({"subset": subset, "n": int(grouping.train_images(subset).sum()), "method": method, "seed": seed, "probe": probe,
                         "top1": top1, **run_metrics(accuracy, groups)})
    return pd.DataFrame(rows)


def _std(values: np.ndarray) -> float:
    """Sample std over seeds as in the main tables, NaN when a value is missing (n/a)."""
    return math.nan if np.isnan(values).any() else std_over_seeds(values)


def summarize_groups(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of every metric, per subset, method and probe."""
    rows = []
    for (subset, method, probe), group in runs.groupby(["subset", "method", "probe"], sort=False):
        row = {"subset": subset, "n": int(group["n"].iloc[0]), "method": method, "probe": probe}
        for metric in METRICS:
            values = group[metric].to_numpy(float)
            row[f"{metric}_mean"] = math.nan if np.isnan(values).any() else float(values.mean())
            row[f"{metric}_std"] = _std(values)
        row["seeds"] = len(group)
        rows.append(row)
    table = pd.DataFrame(rows, columns=GROUP_COLUMNS)
    order = {s: i for i, s in enumerate(order_subsets(table["subset"]))}
    return table.sort_values(["subset", "probe"], key=lambda col: col.map(order) if col.name == "subset"
                             else col.map({"linear": 0, "knn": 1}), kind="stable").reset_index(drop=True)


GROUP_HEADER = ["Subset", "N", "Method", "Top-1", "Head", "Medium", "Tail", "Balancedness ↓", "Worst"]


def groups_blocks(summary: pd.DataFrame, grouping: Grouping, methods: Sequence[str], title: str) -> list[Block]:
    """A table per probe: rows subset x method, columns top-1, head, medium, tail, balancedness, worst."""
    present = list(dict.fromkeys(summary["method"]))
    methods = [m for m in methods if m in present] + [m for m in present if m not in methods]
    groups = "Groups:\n" + "\n".join(f"- {grouping.describe(s)}" for s in order_subsets(summary["subset"]))
    notes = ("Balancedness = std of the per-class accuracy over classes (lower is more even); worst = the "
             "lowest per-class accuracy; a group's accuracy is the mean over its classes.")
    blocks: list[Block] = [*title_block(title), groups, notes]
    cells = {(r.subset, r.method, r.probe): r for r in summary.itertuples()}
    for probe, heading in (("linear", "Linear probe"), ("knn", "kNN")):
        rows = []
        for subset in order_subsets(summary["subset"]):
            for method in methods:
                row = cells.get((subset, method, probe))
                if row is not None:
                    rows.append([subset, count_cell(row.n), method,
                                 *(accuracy_cell(getattr(row, f"{m}_mean"), getattr(row, f"{m}_std")) for m in METRICS)])
        blocks += [f"*{heading}*", Table(GROUP_HEADER, rows, [False, True, False, *[True] * len(METRICS)])]
    return blocks


def write_group_table(result_jsons, subset_csvs, methods: Sequence[str], out_csv, out_md, title: str = "",
                      settings: AnalysisSettings | None = None, out_html=None) -> pd.DataFrame:
    """table{2,3,4}_groups.{csv,md,html}: the group metrics of one experiment's runs."""
    frame, grouping = per_class_frame(result_jsons, subset_csvs, settings)
    summary = summarize_groups(run_table(frame, grouping))
    write_csv(summary, out_csv, na_rep="n/a")
    write_document(groups_blocks(summary, grouping, methods, title), out_md, out_html, title)
    return summary


PER_CLASS_TITLE = "Per-class linear-probe accuracy (%)"


def per_class_blocks(frame: pd.DataFrame) -> list[Block]:
    """Per subset, a table of classes (train images, group, test images) by method: linear-probe
    accuracy, mean ± std over seeds."""
    blocks: list[Block] = [f"**{PER_CLASS_TITLE}**, mean ± std over seeds (n/a: no test images of the class)"]
    for subset in order_subsets(frame["subset"]):
        rows = frame[frame["subset"] == subset]
        methods = list(dict.fromkeys(rows["method"]))
        table_rows = []
        for c, per_class in rows.groupby("class", sort=True):
            first = per_class.iloc[0]
            cells = []
            for method in methods:
                values = per_class.loc[per_class["method"] == method, "accuracy"].to_numpy(float)
                cells.append(accuracy_cell(float(values.mean()) if len(values) and not np.isnan(values).any()
                                           else math.nan, _std(values) if len(values) else math.nan))
            table_rows.append([str(first.class_name), count_cell(first.train_images), str(first.group),
                               count_cell(first.test_images), *cells])
        header = ["Class", "Train images", "Group", "Test images", *methods]
        blocks += [f"*{subset}*", Table(header, table_rows, [False, True, False, True, *[True] * len(methods)])]
    return blocks


def write_per_class_table(result_jsons, subset_csvs, out_csv, out_md,
                          settings: AnalysisSettings | None = None, out_html=None) -> pd.DataFrame:
    """results/tables/per_class.{csv,md,html}."""
    frame, _ = per_class_frame(result_jsons, subset_csvs, settings)
    write_csv(frame, out_csv, na_rep="n/a")
    write_document(per_class_blocks(frame), out_md, out_html, PER_CLASS_TITLE)
    return frame
