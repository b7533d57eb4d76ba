import math

import numpy as np
import pytest

from imbssl import UserError
from imbssl.subsets import (balanced_counts, build_subsets, draw, eval_subset_name, exponential_counts,
                            read_csv, subset_names, write_all, write_csv)

CIFAR = [5000] * 10


def test_cifar10_totals_match_the_paper():
    assert sum(exponential_counts(CIFAR, 10)) == 20431
    assert sum(exponential_counts(CIFAR, 100)) == 12406


def test_exponential_counts_by_hand():
    # floor(100 * 4**(-c/2)) for c = 0, 1, 2: 100, 50, 25
    assert exponential_counts([100, 100, 100], 4) == [100, 50, 25]
    # head class keeps everything, tail keeps n/p
    counts = exponential_counts(CIFAR, 100)
    assert counts[0] == 5000 and counts[-1] == 50
    assert counts == [math.floor(5000 * 100 ** (-c / 9)) for c in range(10)]
    assert exponential_counts(CIFAR, 1) == CIFAR


def test_imbalance_factor_below_one_is_an_error():
    with pytest.raises(UserError, match="imbalance_factors"):
        exponential_counts(CIFAR, 0.5)


def test_balanced_counts_give_remainder_to_first_classes():
    assert balanced_counts(20431, CIFAR) == [2044] + [2043] * 9
    assert balanced_counts(12406, CIFAR) == [1241] * 6 + [1240] * 4
    with pytest.raises(UserError):
        balanced_counts(100, [5, 5])


def test_subsets_have_exact_counts_and_no_duplicates():
    labels = np.repeat(np.arange(10), 5000)
    subsets = build_subsets(labels, 10, [10, 100], seed=0)
    assert list(subsets) == subset_names([10, 100])
    expected = {"imbalanced-p10": 20431, "imbalanced-p100": 12406, "balanced-p10": 20431,
                "balanced-p100": 12406, "full": 50000}
    for name, idx in subsets.items():
        assert len(idx) == expected[name], name
        assert len(np.unique(idx)) == len(idx), name
    per_class = np.bincount(labels[subsets["imbalanced-p100"]], minlength=10)
    assert per_class.tolist() == exponential_counts(CIFAR, 100)
    assert np.bincount(labels[subsets["balanced-p10"]], minlength=10).tolist() == balanced_counts(20431, CIFAR)


def test_same_seed_gives_byte_identical_files_and_other_seed_differs(tmp_path):
    labels = np.repeat(np.arange(4), 50)
    for run in ("a", "b"):
        for name, idx in build_subsets(labels, 4, [10], seed=3).items():
            write_csv(tmp_path / run / f"{name}.csv", idx, labels)
    for name in subset_names([10]):
        assert (tmp_path / "a" / f"{name}.csv").read_bytes() == (tmp_path / "b" / f"{name}.csv").read_bytes()
    other = build_subsets(labels, 4, [10], seed=4)["imbalanced-p10"]
    assert not np.array_equal(other, build_subsets(labels, 4, [10], seed=3)["imbalanced-p10"])


def test_csv_roundtrip(tmp_path):
    labels = np.array([3, 1, 2, 0, 1])
    write_csv(tmp_path / "s.csv", np.array([0, 2, 4]), labels)
    assert (tmp_path / "s.csv").read_text().splitlines() == ["index,label", "0,3", "2,2", "4,1"]
    idx, lab = read_csv(tmp_path / "s.csv")
    assert idx.tolist() == [0, 2, 4] and lab.tolist() == [3, 2, 1]


def test_draw_is_within_class():
    labels = np.array([0, 1, 0, 1, 0, 1])
    idx = draw(labels, [2, 1], seed=0)
    assert sorted(labels[idx].tolist()) == [0, 0, 1]


def test_eval_subset_is_the_balanced_set_of_the_same_size():
    assert eval_subset_name("imbalanced-p10") == "balanced-p10"
    assert eval_subset_name("balanced-p100") == "balanced-p100"
    assert eval_subset_name("full") == "full"


def test_write_all_on_digits(digits_data):
    train, _, subsets_dir = digits_data
    counts = {p.stem: len(read_csv(p)[0]) for p in subsets_dir.glob("*.csv")}
    assert counts["imbalanced-p10"] == counts["balanced-p10"] < counts["full"]
    assert counts["imbalanced-p100"] == counts["balanced-p100"] < counts["imbalanced-p10"]
