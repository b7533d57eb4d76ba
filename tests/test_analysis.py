"""Paired differences over seeds and head/medium/tail groups (analysis.py), and the tables that
report them (tables.py, per_class.py); no torch."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from imbssl import UserError
from imbssl.reporting.analysis import (AnalysisSettings, class_groups, empty_groups_error, paired_difference, run_metrics)
from imbssl.reporting.per_class import write_group_table, write_per_class_table
from imbssl.core.artifacts import write_subset as write_subset_csv
from helpers.forge import forge_result
from imbssl.reporting.tables import write_table


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
        paths.append(forge_result(path, subset, method, seed, top1))
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

    code = "import sys, imbssl.reporting.tables, imbssl.reporting.analysis; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# --- head / medium / tail, balancedness, worst class (analysis.py, per_class.py) ---


# CIFAR-10 imbalanced-p100: floor(5000 * 100 ** (-c / 9)) images of class c.
CIFAR10_P100 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def test_thirds_of_cifar10_p100_by_hand():
    groups = class_groups(CIFAR10_P100, AnalysisSettings())
    # 10 classes, largest first: 4 head (5000-1077), 3 medium (645-232), 3 tail (139-50)
    assert groups == ["head"] * 4 + ["medium"] * 3 + ["tail"] * 3
    # the order of the classes does not matter, only their counts; ties go by class index
    assert class_groups(CIFAR10_P100[::-1], AnalysisSettings()) == ["tail"] * 3 + ["medium"] * 3 + ["head"] * 4
    assert class_groups([5, 5, 5, 5, 1], AnalysisSettings()) == ["head", "head", "medium", "medium", "tail"]


def test_thresholds_of_cifar10_p100_by_hand():
    settings = AnalysisSettings(groups="thresholds", head_above=1000, tail_below=100)
    # > 1000: 5000, 2997, 1796, 1077; 100-1000: 645, 387, 232, 139; < 100: 83, 50
    assert class_groups(CIFAR10_P100, settings) == ["head"] * 4 + ["medium"] * 4 + ["tail"] * 2
    # the boundaries belong to medium (ImageNet-LT: many > 100, medium 20-100, few < 20)
    imagenet_lt = AnalysisSettings(groups="thresholds")
    assert class_groups([101, 100, 20, 19], imagenet_lt) == ["head", "medium", "medium", "tail"]


def test_thresholds_that_leave_a_group_empty_are_one_line_errors():
    # ImageNet-LT's thresholds on CIFAR-10 p=100: every class has >= 50 images, so no tail
    message = empty_groups_error(CIFAR10_P100, AnalysisSettings(groups="thresholds"), "imbalanced-p100")
    assert "tail empty on imbalanced-p100" in message and "50 to 5000" in message and "\n" not in message
    assert "analysis.head_above" in message
    crossed = empty_groups_error(CIFAR10_P100, AnalysisSettings(groups="thresholds", head_above=10, tail_below=50),
                                 "imbalanced-p100")
    assert crossed.startswith("analysis.tail_below (50) is above analysis.head_above (10)")
    assert "at least 3 classes" in empty_groups_error([10, 1], AnalysisSettings(), "two-class")
    assert empty_groups_error(CIFAR10_P100, AnalysisSettings(), "imbalanced-p100") is None


def test_balancedness_and_worst_class_by_hand():
    groups = ["head", "head", "medium", "tail", "tail"]
    metrics = run_metrics([90.0, 70.0, 60.0, 40.0, None], groups)  # class 4: no test images
    # head (90 + 70) / 2; medium 60; tail 40 (class 4 left out)
    assert (metrics["head"], metrics["medium"], metrics["tail"]) == (80.0, 60.0, 40.0)
    # mean 65, deviations 25, 5, -5, -25 -> std (ddof 0) = sqrt((625 + 25 + 25 + 625) / 4) = sqrt(325)
    assert metrics["balancedness"] == pytest.approx(math.sqrt(325))
    assert metrics["worst"] == 40.0
    assert math.isnan(run_metrics([None, None], ["head", "tail"])["tail"])
    assert math.isnan(run_metrics([50.0, 60.0], None)["head"])  # no groups: n/a


def _result(path, subset, method, seed, per_class, knn, test_counts, n):
    tested = [a for a in per_class if a is not None]
    weights = [c for a, c in zip(per_class, test_counts) if a is not None]
    return forge_result(path, subset, method, seed, sum(a * w for a, w in zip(tested, weights)) / sum(weights), n=n,
                        knn_top1=0.0, per_class=per_class, knn_per_class=knn, test_class_counts=test_counts,
                        classes=["cat", "dog", "emu", "fox"])


@pytest.fixture
def four_class_runs(tmp_path):
    """imbalanced-p8 (8/4/2/1 images) and balanced-p8 (4 each) on 4 classes, SimSiam, seeds 0 and 1."""
    write_subset_csv(tmp_path / "imbalanced-p8.csv", np.arange(15), np.repeat([0, 1, 2, 3], [8, 4, 2, 1]))
    write_subset_csv(tmp_path / "balanced-p8.csv", np.arange(16), np.repeat([0, 1, 2, 3], 4))
    test = [10, 10, 10, 0]  # class 3 (fox) has no test images
    runs = [
        _result(tmp_path / "a.json", "imbalanced-p8", "SimSiam", 0, [90.0, 60.0, 30.0, None], [80.0, 50.0, 20.0, None],
                test, 15),
        _result(tmp_path / "b.json", "imbalanced-p8", "SimSiam", 1, [80.0, 60.0, 40.0, None], [70.0, 50.0, 30.0, None],
                test, 15),
        _result(tmp_path / "c.json", "balanced-p8", "SimSiam", 0, [70.0, 60.0, 50.0, None], [60.0, 60.0, 60.0, None],
                test, 16),
    ]
    return runs, [tmp_path / "imbalanced-p8.csv", tmp_path / "balanced-p8.csv"]


def test_group_table_by_hand(four_class_runs, tmp_path):
    runs, subsets = four_class_runs
    summary = write_group_table(runs, subsets, ["SimSiam"], tmp_path / "g.csv", tmp_path / "g.md", "Groups")
    linear = summary[summary["probe"] == "linear"].set_index("subset")
    # thirds of 8/4/2/1: head = cat, dog (4 classes -> 2/1/1), medium = emu, tail = fox (untested: n/a)
    imb = linear.loc["imbalanced-p8"]
    assert imb["head_mean"] == pytest.approx((75 + 70) / 2)  # seed 0: (90+60)/2, seed 1: (80+60)/2
    assert imb["head_std"] == pytest.approx(np.std([75, 70], ddof=1))
    assert imb["medium_mean"] == pytest.approx(35.0) and math.isnan(imb["tail_mean"])
    assert imb["worst_mean"] == pytest.approx(35.0)  # min 30 and 40
    # seed 0: std(90, 60, 30) = sqrt(600); seed 1: std(80, 60, 40) = sqrt(800/3)
    assert imb["balancedness_mean"] == pytest.approx((math.sqrt(600) + math.sqrt(800 / 3)) / 2)
    assert imb["top1_mean"] == pytest.approx(60.0) and imb["seeds"] == 2
    # balanced-p8 is grouped by imbalanced-p8's counts: head = cat, dog although all have 4 images
    bal = linear.loc["balanced-p8"]
    assert bal["head_mean"] == pytest.approx(65.0) and bal["medium_mean"] == pytest.approx(50.0)
    assert bal["seeds"] == 1 and bal["head_std"] == 0.0
    knn = summary[(summary["probe"] == "knn") & (summary["subset"] == "balanced-p8")].iloc[0]
    assert knn["balancedness_mean"] == 0.0 and knn["worst_mean"] == 60.0
    markdown = (tmp_path / "g.md").read_text()
    assert "imbalanced-p8 (by its own training images): head 2 classes (8–4 images)" in markdown
    assert "balanced-p8 (by imbalanced-p8's training images)" in markdown
    assert "| imbalanced-p8 | 15 | SimSiam | 60.00 ± 0.00 | 72.50 ± 3.54 | 35.00 ± 7.07 | n/a |" in markdown
    assert pd.read_csv(tmp_path / "g.csv")["tail_mean"].isna().all()


def test_per_class_table_reports_untested_classes_as_na(four_class_runs, tmp_path):
    runs, subsets = four_class_runs
    frame = write_per_class_table(runs, subsets, tmp_path / "p.csv", tmp_path / "p.md")
    assert len(frame) == 3 * 4
    first = frame[(frame["subset"] == "imbalanced-p8") & (frame["seed"] == 0)]
    assert first["train_images"].tolist() == [8, 4, 2, 1]
    assert first["group"].tolist() == ["head", "head", "medium", "tail"]
    assert first["class_name"].tolist() == ["cat", "dog", "emu", "fox"]
    # the balanced run has 4 training images per class but the imbalanced twin's groups
    balanced = frame[frame["subset"] == "balanced-p8"]
    assert balanced["train_images"].tolist() == [4] * 4 and balanced["group"].tolist()[0] == "head"
    text = (tmp_path / "p.csv").read_text().splitlines()
    fox = [line for line in text if line.startswith("imbalanced-p8,SimSiam,0,3,")][0]
    assert fox.endswith(",0,n/a,n/a")  # 0 test images, accuracy n/a (never 0 or 100)
    markdown = (tmp_path / "p.md").read_text()
    assert "| fox | 1 | tail | 0 | n/a |" in markdown
    assert "| cat | 8 | head | 10 | 85.00 ± 7.07 |" in markdown


def test_a_balanced_full_set_has_no_groups(tmp_path):
    write_subset_csv(tmp_path / "full.csv", np.arange(8), np.repeat([0, 1, 2, 3], 2))
    run = _result(tmp_path / "f.json", "full", "SimSiam", 0, [50.0, 70.0, 90.0, None], [50.0, 70.0, 90.0, None],
                  [1, 1, 1, 0], 8)
    summary = write_group_table([run], [tmp_path / "full.csv"], ["SimSiam"], tmp_path / "g.csv", tmp_path / "g.md")
    row = summary.iloc[0]
    assert math.isnan(row["head_mean"]) and row["worst_mean"] == 50.0
    assert "full: every class has 2 images, no head or tail" in (tmp_path / "g.md").read_text()


def test_old_result_files_ask_for_a_rerun(tmp_path):
    (tmp_path / "old.json").write_text(json.dumps({"subset": "full", "method": "SimSiam", "seed": 0, "n": 1,
                                                   "top1": 1.0, "knn_top1": 1.0, "per_class": [1.0]}))
    write_subset_csv(tmp_path / "full.csv", np.arange(1), np.zeros(1, int))
    with pytest.raises(UserError, match="rerun its evaluate job"):
        write_per_class_table([tmp_path / "old.json"], [tmp_path / "full.csv"], tmp_path / "p.csv", tmp_path / "p.md")
