"""Tables from result files only (JSON, CSV): no torch, no model, so a new table takes seconds.

- Tables 2, 3 and 4: linear-evaluation top-1 (and kNN) per subset and method, mean and sample
  std over seeds, as a long-format CSV and a table laid out like the paper's, in Markdown and as
  an HTML page for the report (document.py; every number formatted once, here).
- Paired differences under Tables 2 and 3 (a method's gain over another on the same subset, or
  the imbalanced - balanced gap of one method): mean and 95% t-interval over seeds paired by seed
  (analysis.paired_difference), as a CSV and a second Markdown table.
- The cluster table: sizes of each partition of Experiment II, how well they match classes, and
  how many optimizer steps each expert took (with a warning below `min_expert_steps`).
"""

from __future__ import annotations

import math
import os
import sys
from typing import Sequence

import numpy as np
import pandas as pd

from imbssl import UserError
from imbssl.core.artifacts import atomic_csv, optimizer_steps, read_cluster_summary, read_result
from imbssl.data.subsets import order_subsets, subset_order_key
from imbssl.reporting.analysis import paired_difference
from imbssl.reporting.document import Block, Table, write_document

TABLE_COLUMNS = ["subset", "n", "method", "top1_mean", "top1_std", "knn_top1_mean", "knn_top1_std", "seeds",
                 "collapsed"]
DIFFERENCE_COLUMNS = ["subset_a", "method_a", "subset_b", "method_b", "pairs", "mean", "ci_low", "ci_high", "seeds"]
CLUSTER_TABLE_COLUMNS = ["subset", "seed", "kind", "k", "n", "normalize", "sizes", "expert_steps", "nmi", "ari",
                         "backend"]
CONFIDENCE = 0.95
UNDERTRAINED_HINT = ("Experts with that few steps are barely trained: a cluster smaller than the batch trains on "
                     "one batch per epoch. More clustering.expert_epochs, a smaller clustering.k or (for clusters "
                     "larger than a batch) a smaller pretrain.batch_size give them more steps.")


def std_over_seeds(values: np.ndarray) -> float:
    """Sample standard deviation (ddof=1) over seeds; 0.0 for a single seed (no spread measured)."""
    return float(np.std(values, ddof=1)) if len(values) >= 2 else 0.0


def load_results(paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """The columns of the result files that Tables 2-4 summarise, one row per run."""
    columns = ["subset", "method", "seed", "n", "top1", "knn_top1", "collapsed"]
    rows = [{key: getattr(read_result(path), key) for key in columns} for path in paths]
    return pd.DataFrame(rows, columns=columns)


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
            "top1_std": std_over_seeds(group["top1"].to_numpy(float)),
            "knn_top1_mean": float(knn.mean()) if len(knn) else float("nan"),
            "knn_top1_std": std_over_seeds(knn) if len(knn) else float("nan"),
            "seeds": len(group),
            "collapsed": int(group["collapsed"].sum()),  # seeds whose training collapsed
        })
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    order = {s: i for i, s in enumerate(order_subsets(table["subset"]))}
    return table.sort_values("subset", key=lambda col: col.map(order), kind="stable").reset_index(drop=True)


def title_block(title: str) -> list[Block]:
    """The table's title as its first paragraph (none without a title)."""
    return [f"**{title}**"] if title else []


def accuracy_cell(mean: float, std: float) -> str:
    """An accuracy over seeds, as every table shows it: "mean ± std" with 2 decimals (n/a when missing)."""
    return "n/a" if math.isnan(mean) else f"{mean:.2f} ± {std:.2f}"


def count_cell(n: int) -> str:
    """An image count, with thousands separators (50,000)."""
    return f"{int(n):,}"


COLLAPSE_NOTE = ("† the training of at least one seed collapsed (its output std stayed near 0, or its per-image "
                 "targets or predictions uniform; see its job log)")


def collapse_mark(collapsed_seeds: int) -> str:
    """The suffix of a cell or name whose training collapsed in at least one seed."""
    return " †" if collapsed_seeds else ""


def collapse_notes(collapsed_seeds: pd.Series) -> list[str]:
    """The footnote that explains †, where a table has any."""
    return [COLLAPSE_NOTE] if collapsed_seeds.any() else []


def results_blocks(summary: pd.DataFrame, methods: Sequence[str], title: str = "") -> list[Block]:
    """Rows: subsets with N; columns: methods; cells "mean ± std"; `n/a` where a run is missing."""
    cells = {(r.subset, r.method): accuracy_cell(r.top1_mean, r.top1_std) + collapse_mark(r.collapsed)
             for r in summary.itertuples()}
    sizes = dict(zip(summary["subset"], summary["n"]))
    columns = list(methods) + [m for m in dict.fromkeys(summary["method"]) if m not in methods]
    rows = [[subset, count_cell(sizes[subset]), *(cells.get((subset, method), "n/a") for method in columns)]
            for subset in order_subsets(summary["subset"])]
    table = Table(["Subset", "N", *columns], rows, [False, True, *[True] * len(columns)])
    return [*title_block(title), table, *collapse_notes(summary["collapsed"])]


def _by_seed(results: pd.DataFrame, subset: str, method: str) -> dict[int, float]:
    rows = results[(results["subset"] == subset) & (results["method"] == method)]
    return {int(seed): float(top1) for seed, top1 in zip(rows["seed"], rows["top1"])}


def paired_differences(results: pd.DataFrame, comparisons: Sequence[tuple[str, str, str, str]]) -> pd.DataFrame:
    """One row per comparison (subset_a, method_a, subset_b, method_b): top-1 of a minus top-1 of
    b, mean and 95% t-interval over the seeds both have (ci n/a with one pair)."""
    rows = []
    for subset_a, method_a, subset_b, method_b in comparisons:
        diff = paired_difference(_by_seed(results, subset_a, method_a), _by_seed(results, subset_b, method_b),
                                 CONFIDENCE)
        rows.append({"subset_a": subset_a, "method_a": method_a, "subset_b": subset_b, "method_b": method_b,
                     "pairs": diff.pairs, "mean": diff.mean, "ci_low": diff.ci_low, "ci_high": diff.ci_high,
                     "seeds": " ".join(map(str, diff.seeds))})
    return pd.DataFrame(rows, columns=DIFFERENCE_COLUMNS)


def method_comparisons(results: pd.DataFrame, pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str, str, str]]:
    """(method a - method b on the same subset) for every subset where both were run, paper order."""
    present = set(zip(results["subset"], results["method"]))
    return [(subset, a, subset, b) for subset in order_subsets(results["subset"]) for a, b in pairs
            if (subset, a) in present and (subset, b) in present]


def imbalance_comparisons(results: pd.DataFrame) -> list[tuple[str, str, str, str]]:
    """(imbalanced-pX - balanced-pX) for every factor X and method run on both subsets."""
    present = set(zip(results["subset"], results["method"]))
    methods = list(dict.fromkeys(results["method"]))
    return [(subset, method, "balanced-" + subset.removeprefix("imbalanced-"), method)
            for subset in order_subsets(results["subset"]) if subset.startswith("imbalanced-")
            for method in methods
            if (subset, method) in present and ("balanced-" + subset.removeprefix("imbalanced-"), method) in present]


def _interval(row) -> str:
    if row.ci_low is None or pd.isna(row.ci_low):
        return "n/a"
    return f"[{row.ci_low:+.2f}, {row.ci_high:+.2f}]"


def differences_blocks(differences: pd.DataFrame) -> list[Block]:
    """The paired differences as a table under its heading (a note when there are none)."""
    heading = (f"**Paired differences** of top-1 (percentage points): mean over seeds paired by seed and its "
               f"{CONFIDENCE:.0%} t-interval (n/a with fewer than two seeds)")
    if differences.empty:
        return [heading, "No pair of runs to compare."]
    rows = [[f"{row.method_a} on {row.subset_a}", f"{row.method_b} on {row.subset_b}", str(row.pairs),
             f"{row.mean:+.2f}", _interval(row)] for row in differences.itertuples()]
    return [heading, Table(["A", "B", "pairs", "A − B", "95% CI"], rows, [False, False, True, True, False])]


def write_table(result_jsons, methods, out_csv, out_md, title: str = "",
                differences: Sequence[tuple[str, str]] = (), imbalance_gaps: bool = False,
                out_differences: str | os.PathLike | None = None, out_html=None) -> pd.DataFrame:
    """A results table from per-run result JSONs: long-format CSV, and a table like the paper's as
    Markdown and (with `out_html`) as an HTML page. With `differences` (pairs of method labels:
    a - b on each subset) or `imbalance_gaps` (imbalanced-pX - balanced-pX per method), the paired
    differences follow the table and go to `out_differences` as CSV."""
    results = load_results(result_jsons)
    summary = summarize(results)
    write_csv(summary, out_csv)
    blocks = results_blocks(summary, methods, title)
    if differences or imbalance_gaps:
        comparisons = method_comparisons(results, differences) + (imbalance_comparisons(results) if imbalance_gaps
                                                                   else [])
        table = paired_differences(results, comparisons)
        blocks += differences_blocks(table)
        if out_differences is not None:
            write_csv(table, out_differences)
    write_document(blocks, out_md, out_html, title)
    return summary


def write_csv(frame: pd.DataFrame, path: str | os.PathLike, na_rep: str = "") -> None:
    atomic_csv(frame, path, float_format="%.4f", na_rep=na_rep)


def cluster_table(summary_files: Sequence[str | os.PathLike],
                  expert_metrics: Sequence[str | os.PathLike] = (),
                  min_expert_steps: int = 50) -> tuple[pd.DataFrame, list[str]]:
    """One row per partition (summary.json), paper subset order, then seed and kind, and the
    warnings about experts that took fewer than `min_expert_steps` optimizer steps.

    `expert_metrics`: the experts' metrics.csv files, partition by partition in the order of
    `summary_files`, clusters 0..k-1 within each (none: no step counts).
    """
    summaries = [read_cluster_summary(path) for path in summary_files]
    metrics = list(expert_metrics)
    needed = sum(int(summary["k"]) for summary in summaries)
    if metrics and len(metrics) != needed:
        raise UserError(f"cluster table: {len(metrics)} expert metrics files for {needed} clusters; "
                        f"pass one per cluster of every partition, in the order of the summaries")
    rows, warnings, position = [], [], 0
    for summary in summaries:
        row = {key: summary.get(key) for key in CLUSTER_TABLE_COLUMNS}
        row["sizes"] = " / ".join(str(s) for s in summary["sizes"])
        if metrics:
            steps = [optimizer_steps(p) for p in metrics[position:position + int(summary["k"])]]
            position += int(summary["k"])
            row["expert_steps"] = " / ".join(map(str, steps))
            for j, (count, size) in enumerate(zip(steps, summary["sizes"])):
                if count < min_expert_steps:
                    warnings.append(
                        f"expert {j} of {summary.get('subset')}/{summary.get('kind')}/seed{summary.get('seed')} "
                        f"({size} images) took {count} optimizer steps, fewer than clustering.min_expert_steps = "
                        f"{min_expert_steps}")
        rows.append(row)
    rows.sort(key=lambda row: (subset_order_key(str(row["subset"])), row["seed"] or 0, str(row["kind"])))
    return pd.DataFrame(rows, columns=CLUSTER_TABLE_COLUMNS), warnings


def cluster_blocks(table: pd.DataFrame, warnings: Sequence[str]) -> list[Block]:
    """The cluster table under its heading, NMI and ARI with 3 decimals, the warnings below it."""
    heading = ("**Clusters of the base features** (NMI/ARI to the classes, reporting only; "
               "kind `random` = the +D ablation's partition; `normalize` = the k-means input; "
               "`expert_steps` = optimizer steps each cluster's expert took)")
    numeric = {"seed", "k", "n", "nmi", "ari"}

    def cell(column: str, value) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "n/a"
        return f"{value:.3f}" if column in ("nmi", "ari") else str(value)

    rows = [[cell(column, value) for column, value in zip(table.columns, row)] for row in table.itertuples(index=False)]
    blocks: list[Block] = [heading, Table(list(table.columns), rows, [c in numeric for c in table.columns])]
    blocks += [f"**Warning:** {warning}" for warning in warnings]
    if warnings:
        blocks.append(UNDERTRAINED_HINT)
    return blocks


def write_cluster_table(summary_files: Sequence[str | os.PathLike], out_csv, out_md,
                        expert_metrics: Sequence[str | os.PathLike] = (), min_expert_steps: int = 50,
                        out_html=None) -> pd.DataFrame:
    """results/tables/clusters.{csv,md,html}: cluster sizes, how well clusters match classes and the
    experts' optimizer steps; each expert below `min_expert_steps` is warned about on stderr (the
    job's log) and under the table."""
    table, warnings = cluster_table(summary_files, expert_metrics, min_expert_steps)
    write_csv(table, out_csv)
    for warning in warnings:
        print(f"[imbssl] warning: {warning}", file=sys.stderr)
    if warnings:
        print(f"[imbssl] {UNDERTRAINED_HINT}", file=sys.stderr)
    write_document(cluster_blocks(table, warnings), out_md, out_html, "Clusters of the base features")
    return table
