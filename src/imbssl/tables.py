"""Tables from result files only (JSON, CSV): no torch, no model, so a new table takes seconds.

- Tables 2, 3 and 4: linear-evaluation top-1 (and kNN) per subset and method, mean and sample
  std over seeds, as a long-format CSV and a Markdown table laid out like the paper's.
- The cluster table: sizes of each partition of Experiment II and how well they match classes.
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
from .subsets import order_subsets, subset_order_key

# Display names of method config names (and of Experiment II's students), as in the paper's tables.
METHOD_LABELS = {"simsiam": "SimSiam", "simclr": "SimCLR", "msn": "MSN", "pmsn": "PMSN",
                 "simsiam-c-d": "SimSiam+C+D", "simsiam-d": "SimSiam+D"}

TABLE_COLUMNS = ["subset", "n", "method", "top1_mean", "top1_std", "knn_top1_mean", "knn_top1_std", "seeds"]
CLUSTER_TABLE_COLUMNS = ["subset", "seed", "kind", "k", "n", "sizes", "nmi", "ari", "backend"]


def method_label(name: str) -> str:
    return METHOD_LABELS.get(name, name)


def _std(values: np.ndarray) -> float:
    """Sample standard deviation (ddof=1) over seeds; 0.0 for a single seed (no spread measured)."""
    return float(np.std(values, ddof=1)) if len(values) >= 2 else 0.0


def load_results(paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    rows = []
    for path in paths:
        try:
            record = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise UserError(f"cannot read result file {path}: {err}; rerun its evaluate job") from err
        missing = [key for key in ("subset", "method", "seed", "n", "top1") if key not in record]
        if missing:
            raise UserError(f"result file {path} lacks {missing}; rerun its evaluate job")
        rows.append({key: record.get(key) for key in ("subset", "method", "seed", "n", "top1", "knn_top1")})
    return pd.DataFrame(rows, columns=["subset", "method", "seed", "n", "top1", "knn_top1"])


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
            "top1_std": _std(group["top1"].to_numpy(float)),
            "knn_top1_mean": float(knn.mean()) if len(knn) else float("nan"),
            "knn_top1_std": _std(knn) if len(knn) else float("nan"),
            "seeds": len(group),
        })
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    order = {s: i for i, s in enumerate(order_subsets(table["subset"]))}
    return table.sort_values("subset", key=lambda col: col.map(order), kind="stable").reset_index(drop=True)


def markdown_table(summary: pd.DataFrame, methods: Sequence[str], title: str = "") -> str:
    """Rows: subsets with N; columns: methods; cells "mean ± std"; `n/a` where a run is missing."""
    cells = {(r.subset, r.method): f"{r.top1_mean:.2f} ± {r.top1_std:.2f}" for r in summary.itertuples()}
    sizes = dict(zip(summary["subset"], summary["n"]))
    columns = list(methods) + [m for m in dict.fromkeys(summary["method"]) if m not in methods]
    lines = [f"**{title}**", ""] if title else []
    lines.append("| Subset | N | " + " | ".join(columns) + " |")
    lines.append("|---|---:|" + "---:|" * len(columns))
    for subset in order_subsets(summary["subset"]):
        row = [cells.get((subset, method), "n/a") for method in columns]
        lines.append(f"| {subset} | {sizes[subset]:,} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def write_table(result_jsons, methods, out_csv, out_md, title: str = "") -> pd.DataFrame:
    """Table 2 from per-run result JSONs: long-format CSV and a Markdown table like the paper's."""
    summary = summarize(load_results(result_jsons))
    write_csv(summary, out_csv)
    write_text(out_md, markdown_table(summary, methods, title))
    return summary


def write_csv(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.4f")


def read_summary(path: str | os.PathLike) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read cluster summary {path}: {err}; rerun the cluster rule") from err


def cluster_table(summary_files: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """One row per partition (summary.json), paper subset order, then seed and kind."""
    rows = []
    for path in summary_files:
        summary = read_summary(path)
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
    write_csv(table, out_csv)
    header = ("**Clusters of the base features** (NMI/ARI to the classes, reporting only; "
              "kind `random` = the +D ablation's partition)\n\n")
    write_text(out_md, header + table.to_markdown(index=False, floatfmt=".3f") + "\n")
    return table
