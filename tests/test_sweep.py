"""Accuracy against the imbalance factor (reporting/sweep.py), from hand-made result files."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from imbssl.core.artifacts import write_subset as write_subset_csv
from imbssl.reporting.per_class import per_class_frame, run_table
from imbssl.reporting.sweep import factor_of, figure_accuracy_vs_imbalance, sweep_table

from helpers.forge import forge_result


def test_factor_of_subset_names():
    assert factor_of("imbalanced-p100") == 100.0 and factor_of("balanced-p2.5") == 2.5
    assert factor_of("full") is None and factor_of("imbalanced-given") is None


# Per-class accuracies (3 classes, 10 test images each) of SimSiam: imbalanced top-1 falls with p.
RUNS = {  # (subset, seed) -> per-class accuracy
    ("imbalanced-p10", 0): [90.0, 60.0, 30.0], ("imbalanced-p10", 1): [80.0, 60.0, 40.0],
    ("balanced-p10", 0): [70.0, 70.0, 70.0], ("balanced-p10", 1): [80.0, 70.0, 60.0],
    ("imbalanced-p100", 0): [90.0, 30.0, 0.0], ("imbalanced-p100", 1): [90.0, 45.0, 15.0],
    ("balanced-p100", 0): [60.0, 60.0, 60.0], ("balanced-p100", 1): [50.0, 50.0, 50.0],
    ("full", 0): [95.0, 95.0, 95.0],
}


@pytest.fixture
def sweep_runs(tmp_path):
    for factor, counts in ((10, [10, 3, 1]), (100, [100, 10, 1])):
        write_subset_csv(tmp_path / f"imbalanced-p{factor}.csv", np.arange(sum(counts)), np.repeat([0, 1, 2], counts))
        write_subset_csv(tmp_path / f"balanced-p{factor}.csv", np.arange(sum(counts) // 3 * 3),
                         np.repeat([0, 1, 2], sum(counts) // 3))
    write_subset_csv(tmp_path / "full.csv", np.arange(300), np.repeat([0, 1, 2], 100))
    results = [forge_result(tmp_path / f"{subset}-{seed}.json", subset, "SimSiam", seed, float(np.mean(acc)),
                            per_class=acc)
               for (subset, seed), acc in RUNS.items()]
    subsets = sorted(tmp_path.glob("*.csv"))
    return results, subsets


def _row(table, kind, factor, metric):
    rows = table[(table["kind"] == kind) & (table["metric"] == metric)
                 & ((table["factor"] == factor) if factor is not None else table["factor"].isna())]
    assert len(rows) == 1, (kind, factor, metric)
    return rows.iloc[0]


def test_sweep_table_by_hand(sweep_runs):
    results, subsets = sweep_runs
    frame, grouping = per_class_frame(results, subsets)
    runs = run_table(frame, grouping)
    table = sweep_table(runs[runs["probe"] == "linear"])
    # imbalanced-p10: top-1 60 and 60 -> mean 60, std 0
    assert _row(table, "imbalanced", 10.0, "top1")["mean"] == pytest.approx(60.0)
    # imbalanced-p100: top-1 40 and 50 -> mean 45, std (ddof 1) = 5 sqrt(2)
    p100 = _row(table, "imbalanced", 100.0, "top1")
    assert p100["mean"] == pytest.approx(45.0) and p100["std"] == pytest.approx(5 * math.sqrt(2))
    assert p100["seeds"] == 2
    # the full set has no factor; one seed: std 0
    assert _row(table, "full", None, "top1")["mean"] == pytest.approx(95.0)
    # paired gaps at p = 100: seed 0: 40 - 60 = -20, seed 1: 50 - 50 = 0 -> mean -10,
    # 95% t-interval -10 +/- t(0.975, 1) * sd([-20, 0]) / sqrt(2)
    gap = _row(table, "gap", 100.0, "top1")
    half = stats.t.ppf(0.975, 1) * np.std([-20.0, 0.0], ddof=1) / math.sqrt(2)
    assert gap["mean"] == pytest.approx(-10.0)
    assert (gap["ci_low"], gap["ci_high"]) == (pytest.approx(-10.0 - half), pytest.approx(-10.0 + half))
    # p = 10: seed 0: 60 - 70 = -10, seed 1: 60 - 70 = -10
    assert _row(table, "gap", 10.0, "top1")["mean"] == pytest.approx(-10.0)
    # the groups of 3 classes by imbalanced-pX's counts: head, medium, tail = classes 0, 1, 2
    assert _row(table, "imbalanced", 100.0, "tail")["mean"] == pytest.approx(7.5)  # (0 + 15) / 2
    assert _row(table, "gap", 100.0, "tail")["mean"] == pytest.approx((0 - 60 + 15 - 50) / 2)
    assert _row(table, "gap", 10.0, "head")["mean"] == pytest.approx((90 - 70 + 80 - 80) / 2)


def test_sweep_figure_is_written(sweep_runs, tmp_path):
    results, subsets = sweep_runs
    outs = [tmp_path / "sweep.png", tmp_path / "sweep.pdf"]
    figure_accuracy_vs_imbalance(results, subsets, outs, title="Experiment I")
    assert all(path.stat().st_size > 1000 for path in outs)
    assert outs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and outs[1].read_bytes()[:4] == b"%PDF"
