import math

import numpy as np
import pytest

from imbssl import UserError
from imbssl.data.subsets import (balanced_counts, build_subsets, draw, empty_class_error, eval_subset_name, exponential_counts, imbalanced_counts, step_counts, subset_names)
from imbssl.core.artifacts import read_subset as read_csv, write_subset as write_csv
from imbssl.data.subsets import SubsetSettings, write_all

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


def test_one_subset_per_job_is_the_same_file_as_all_at_once(digits_data, tmp_path):
    """The subsets rule writes one subset per job, its factor read from its name: the file is the
    one `write_all` writes, whatever other factors the config lists (each factor draws from its
    own stream), so adding a factor rewrites no subset that exists."""
    from imbssl import cli

    train, _, subsets_dir = digits_data  # write_all with factors 10 and 100
    for name in ("imbalanced-p10", "balanced-p10", "imbalanced-p100", "balanced-p100", "full"):
        out = tmp_path / f"{name}.csv"
        assert cli.main(["subsets", "--train-data", str(train), "--subset", name, "--seed", "0",
                         "--out", str(out)]) == 0
        assert out.read_bytes() == (subsets_dir / f"{name}.csv").read_bytes(), name
    # p = 2.5 alone and with others: the same draw.
    one, both = tmp_path / "one", tmp_path / "both"
    cli.main(["subsets", "--train-data", str(train), "--subset", "imbalanced-p2.5", "--out", str(one / "a.csv")])
    write_all(train, both, SubsetSettings([2.5, 10.0]))
    assert (one / "a.csv").read_bytes() == (both / "imbalanced-p2.5.csv").read_bytes()


def test_a_subset_name_the_profile_does_not_have_is_one_line(digits_data, tmp_path, capsys):
    from imbssl import cli

    train, _, _ = digits_data
    assert cli.main(["subsets", "--train-data", str(train), "--subset", "balanced-given", "--out",
                     str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "subset balanced-given: not a subset of subsets.profile: exponential" in err


# --- CIFAR-100-LT and the step profile (issue 13) ---------------------------------------------

CIFAR100 = [500] * 100


@pytest.mark.parametrize(("factor", "total"), [(10, 19573), (50, 12608), (100, 10847)])
def test_cifar100_lt_exponential_totals(factor, total):
    # Sum over c = 0..99 of floor(500 * p**(-c/99)), as published for CIFAR-100-LT.
    counts = exponential_counts(CIFAR100, factor)
    assert sum(counts) == total
    assert counts[0] == 500 and counts[-1] == 500 // factor


def test_step_counts_by_hand():
    # CIFAR-10, p = 10: 5 classes keep 5,000, 5 keep 500 -> 25,000 + 2,500.
    assert step_counts(CIFAR, 10) == [5000] * 5 + [500] * 5
    assert sum(step_counts(CIFAR, 10)) == 27500
    # p = 100: 25,000 + 5 x 50.
    assert sum(step_counts(CIFAR, 100)) == 25250
    # Odd C: the first ceil(5/2) = 3 classes keep all, the other 2 floor(100/10) = 10.
    assert step_counts([100] * 5, 10) == [100, 100, 100, 10, 10]
    # floor, per class: 33 / 4 -> 8, 7 / 4 -> 1.
    assert step_counts([40, 40, 33, 7], 4) == [40, 40, 8, 1]
    assert step_counts(CIFAR, 1) == CIFAR


def test_step_subsets_and_their_balanced_twins_have_the_same_total():
    labels = np.repeat(np.arange(10), 5000)
    subsets = build_subsets(labels, 10, [10, 100], seed=0, profile="step")
    assert list(subsets) == subset_names([10, 100])  # names stay imbalanced-pX / balanced-pX
    sizes = {name: len(idx) for name, idx in subsets.items()}
    assert sizes == {"imbalanced-p10": 27500, "imbalanced-p100": 25250, "balanced-p10": 27500,
                     "balanced-p100": 25250, "full": 50000}
    assert np.bincount(labels[subsets["imbalanced-p100"]], minlength=10).tolist() == [5000] * 5 + [50] * 5
    assert np.bincount(labels[subsets["balanced-p100"]], minlength=10).tolist() == [2525] * 10
    for idx in subsets.values():
        assert len(np.unique(idx)) == len(idx)


def test_step_and_exponential_subsets_differ_only_in_the_imbalanced_counts():
    labels = np.repeat(np.arange(4), 50)
    exponential = build_subsets(labels, 4, [10], seed=0)
    step = build_subsets(labels, 4, [10], seed=0, profile="step")
    assert np.bincount(labels[exponential["imbalanced-p10"]]).tolist() == [50, 23, 10, 5]
    assert np.bincount(labels[step["imbalanced-p10"]]).tolist() == [50, 50, 5, 5]
    assert np.array_equal(exponential["full"], step["full"])


def test_a_factor_that_empties_a_class_names_the_largest_valid_one():
    # Exponential over 3 classes of 100: class 2 keeps floor(100 / p), class 1 floor(100 / sqrt(p)),
    # so p = 100 keeps one image of class 2 and p = 101 none; the largest valid factor is 100.
    assert imbalanced_counts([100] * 3, 100) == [100, 10, 1]
    assert empty_class_error([100] * 3, 100) is None
    with pytest.raises(UserError) as err:
        imbalanced_counts([100] * 3, 101)
    message = str(err.value)
    assert message.startswith("subsets.imbalance_factors: 101 with subsets.profile: exponential")
    assert "1 of 3 classes with 0 images (class 2)" in message
    assert "at most 100 " in message and "\n" not in message
    # Step over [100, 100, 20, 30]: the tail classes keep floor(20 / p) and floor(30 / p), so
    # p = 21 empties class 2 only and the largest valid factor is 20.
    message = empty_class_error([100, 100, 20, 30], 21, "step")
    assert message.startswith("subsets.imbalance_factors: 21 with subsets.profile: step")
    assert "1 of 4 classes with 0 images (class 2)" in message and "at most 20 " in message
    assert empty_class_error([100, 100, 20, 30], 20, "step") is None
    # 31 empties both tail classes.
    assert "2 of 4 classes with 0 images (classes 2, 3)" in empty_class_error([100, 100, 20, 30], 31, "step")
    # CIFAR-100, exponential: p = 1000 gives the last class floor(500 / 1000) = 0; at most 500.
    message = empty_class_error(CIFAR100, 1000)
    assert "at most 500 " in message and "\n" not in message
    with pytest.raises(UserError, match="subsets.imbalance_factors"):
        build_subsets(np.repeat(np.arange(100), 500), 100, [10, 1000], seed=0)


def test_the_subsets_command_reports_an_emptied_class_in_one_line(digits_data, tmp_path, monkeypatch, capsys):
    from imbssl import cli

    train, _, _ = digits_data
    monkeypatch.setattr("sys.argv", ["imbssl", "subsets", "--train-data", str(train), "--imbalance-factors",
                                     "10", "1000", "--profile", "step", "--out-dir", str(tmp_path / "out")])
    assert cli.main() == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("imbssl: error: subsets.imbalance_factors: 1000 with subsets.profile: step")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
