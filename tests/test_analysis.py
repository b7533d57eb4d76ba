"""Paired differences over seeds (analysis.py) and the tables that report them (no torch)."""

import json
import math

import pandas as pd
import pytest

from imbssl.analysis import paired_difference
from imbssl.tables import write_table


def test_paired_t_interval_by_hand():
    a = {0: 10.0, 1: 12.0, 2: 11.0, 3: 50.0}  # seed 3 has no partner: left out
    b = {2: 11.5, 0: 9.0, 1: 10.0, 4: 3.0}
    diff = paired_difference(a, b)
    # differences by seed: 1, 2, -0.5 -> mean 5/6; sd = sqrt(((1/6)^2 + (7/6)^2 + (4/3)^2) / 2) = sqrt(19/12);
    # t_{0.975, 2} = 4.302653 (t table); half-width = 4.302653 * sqrt(19/12) / sqrt(3) = 3.125799
    assert diff.pairs == 3 and diff.seeds == (0, 1, 2)
    assert diff.mean == pytest.approx(5 / 6)
    assert diff.ci_low == pytest.approx(5 / 6 - 3.125799, abs=1e-5)
    assert diff.ci_high == pytest.approx(5 / 6 + 3.125799, abs=1e-5)
    # the same interval from scipy's paired t-test
    from scipy import stats

    ci = stats.ttest_rel([10.0, 12.0, 11.0], [9.0, 10.0, 11.5]).confidence_interval(0.95)
    assert (diff.ci_low, diff.ci_high) == pytest.approx((ci.low, ci.high))


def test_pairing_is_by_seed_not_by_position():
    # Sorted by value the differences would be 1 - 0 = 1 and 5 - 2 = 3 either way; by seed they are
    # a[0] - b[0] = 1 - 2 and a[1] - b[1] = 5 - 0.
    diff = paired_difference({0: 1.0, 1: 5.0}, {1: 0.0, 0: 2.0})
    assert diff.mean == pytest.approx((-1 + 5) / 2)


def test_one_seed_has_a_mean_but_no_interval():
    diff = paired_difference({0: 3.0}, {0: 1.0})
    assert (diff.pairs, diff.mean, diff.ci_low, diff.ci_high) == (1, 2.0, None, None)
    empty = paired_difference({0: 3.0}, {1: 1.0})
    assert empty.pairs == 0 and math.isnan(empty.mean)


def _results(tmp_path, runs):
    paths = []
    for i, (subset, method, seed, top1) in enumerate(runs):
        path = tmp_path / f"r{i}.json"
        path.write_text(json.dumps({"subset": subset, "method": method, "seed": seed, "n": 100, "top1": top1,
                                    "knn_top1": top1}))
        paths.append(path)
    return paths


def test_table3_differences_per_subset(tmp_path):
    runs = [("imbalanced-p100", "SimSiam", s, v) for s, v in enumerate([50.0, 52.0, 51.0])]
    runs += [("imbalanced-p100", "SimSiam+C+D", s, v) for s, v in enumerate([51.0, 54.0, 50.5])]
    runs += [("imbalanced-p100", "SimSiam+D", s, v) for s, v in enumerate([49.0, 51.0, 50.0])]
    runs += [("imbalanced-p10", "SimSiam", 0, 60.0), ("imbalanced-p10", "SimSiam+C+D", 0, 61.5)]
    write_table(_results(tmp_path, runs), ["SimSiam", "SimSiam+C+D", "SimSiam+D"], tmp_path / "t.csv",
                tmp_path / "t.md", differences=[("SimSiam+C+D", "SimSiam"), ("SimSiam+D", "SimSiam")],
                out_differences=tmp_path / "d.csv")
    diffs = pd.read_csv(tmp_path / "d.csv")
    # paper order: p10 first; +D was not run on p10, so no row for it
    assert list(zip(diffs.subset_a, diffs.method_a, diffs.method_b)) == [
        ("imbalanced-p10", "SimSiam+C+D", "SimSiam"), ("imbalanced-p100", "SimSiam+C+D", "SimSiam"),
        ("imbalanced-p100", "SimSiam+D", "SimSiam")]
    assert diffs.pairs.tolist() == [1, 3, 3]
    assert diffs["mean"].tolist() == pytest.approx([1.5, 5 / 6, -1.0], abs=1e-4)
    assert diffs.ci_low.iloc[1] == pytest.approx(5 / 6 - 3.125799, abs=1e-4)
    # +D - SimSiam is -1 for every seed: no spread, a zero-width interval
    assert diffs.ci_low.iloc[2] == pytest.approx(-1.0) and diffs.ci_high.iloc[2] == pytest.approx(-1.0)
    assert pd.isna(diffs.ci_low.iloc[0])
    md = (tmp_path / "t.md").read_text()
    assert "| SimSiam+C+D on imbalanced-p10 | SimSiam on imbalanced-p10 | 1 | +1.50 | n/a |" in md
    assert "| SimSiam+C+D on imbalanced-p100 | SimSiam on imbalanced-p100 | 3 | +0.83 | [-2.29, +3.96] |" in md


def test_table2_imbalance_gaps_pair_each_factor_with_its_balanced_set(tmp_path):
    runs = [("imbalanced-p10", "SimSiam", 0, 70.0), ("balanced-p10", "SimSiam", 0, 73.0),
            ("imbalanced-p10", "SimCLR", 0, 65.0), ("balanced-p10", "SimCLR", 0, 64.0),
            ("imbalanced-p100", "SimSiam", 0, 60.0), ("full", "SimSiam", 0, 80.0)]  # p100 has no balanced run
    write_table(_results(tmp_path, runs), ["SimSiam", "SimCLR"], tmp_path / "t.csv", tmp_path / "t.md",
                imbalance_gaps=True, out_differences=tmp_path / "d.csv")
    diffs = pd.read_csv(tmp_path / "d.csv")
    assert list(zip(diffs.subset_a, diffs.subset_b, diffs.method_a)) == [
        ("imbalanced-p10", "balanced-p10", "SimSiam"), ("imbalanced-p10", "balanced-p10", "SimCLR")]
    assert diffs["mean"].tolist() == pytest.approx([-3.0, 1.0])


def test_tables_module_stays_torch_free():
    import subprocess
    import sys

    code = "import sys, imbssl.tables, imbssl.analysis; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
