"""Tables and Figure 1 from synthetic result files (no torch, no model)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from imbssl import UserError
from imbssl.reporting.figures import figure_class_distribution
from imbssl.reporting.plotting import PlotSettings
from imbssl.core.artifacts import write_subset as write_csv
from imbssl.data.subsets import order_subsets
from helpers.forge import forge_result
from imbssl.reporting.tables import write_table


def prepared_split(tmp_path, classes):
    """A prepared train split as prepare-data writes it (only its class names are read by figures)."""
    path = tmp_path / "train.npz"
    np.savez(path, images=np.zeros((len(classes), 1, 1, 3), np.uint8), labels=np.arange(len(classes)),
             classes=np.asarray(classes))
    return path


def result(tmp_path, subset, method, seed, n, top1, knn_top1):
    return forge_result(tmp_path / "eval" / subset / method / f"seed{seed}.json", subset, method, seed, top1, n=n,
                        knn_top1=knn_top1)


@pytest.fixture
def table(tmp_path):
    paths = [
        result(tmp_path, "full", "SimSiam", 0, 1000, 80.0, 70.0),
        result(tmp_path, "full", "SimSiam", 1, 1000, 84.0, 72.0),
        result(tmp_path, "full", "SimSiam", 2, 1000, 85.0, 71.0),
        result(tmp_path, "full", "SimCLR", 0, 1000, 75.5, 60.0),
        result(tmp_path, "imbalanced-p10", "SimSiam", 0, 400, 60.0, 50.0),
        result(tmp_path, "imbalanced-p10", "SimSiam", 1, 400, 62.0, 52.0),
        result(tmp_path, "balanced-p10", "SimCLR", 0, 400, 66.0, 55.0),
        result(tmp_path, "imbalanced-p100", "SimCLR", 0, 250, 50.0, 40.0),
        result(tmp_path, "balanced-p100", "SimSiam", 0, 250, 55.0, 45.0),
    ]
    out_csv, out_md = tmp_path / "tables/table2.csv", tmp_path / "tables/table2.md"
    write_table(paths[::-1], ["SimSiam", "SimCLR"], out_csv, out_md, title="Table 2")
    return pd.read_csv(out_csv), out_md.read_text()


def test_csv_has_mean_and_sample_std_over_seeds(table):
    csv, _ = table
    full = csv[(csv.subset == "full") & (csv.method == "SimSiam")].iloc[0]
    # 80, 84, 85: mean 83; deviations -3, 1, 2 -> sum of squares 14, ddof=1 -> sqrt(7).
    assert full.top1_mean == pytest.approx(83.0)
    assert full.top1_std == pytest.approx(math.sqrt(7), abs=1e-4)
    assert full.knn_top1_mean == pytest.approx(71.0)
    assert full.knn_top1_std == pytest.approx(1.0)
    assert full.seeds == 3 and full.n == 1000
    imb = csv[(csv.subset == "imbalanced-p10") & (csv.method == "SimSiam")].iloc[0]
    assert imb.top1_mean == pytest.approx(61.0) and imb.top1_std == pytest.approx(math.sqrt(2), abs=1e-4)


def test_single_seed_has_zero_std(table):
    csv, _ = table
    row = csv[(csv.subset == "full") & (csv.method == "SimCLR")].iloc[0]
    assert (row.top1_mean, row.top1_std, row.seeds) == (75.5, 0.0, 1)


def test_csv_is_long_format_in_paper_row_order(table):
    csv, _ = table
    assert list(csv.columns) == ["subset", "n", "method", "top1_mean", "top1_std",
                                 "knn_top1_mean", "knn_top1_std", "seeds"]
    assert len(csv) == 6  # one row per (subset, method) that has results
    assert list(dict.fromkeys(csv.subset)) == ["imbalanced-p10", "balanced-p10", "imbalanced-p100",
                                               "balanced-p100", "full"]


def test_markdown_rows_are_subsets_with_n_and_cells_mean_pm_std(table):
    _, md = table
    lines = md.splitlines()
    assert lines[0] == "**Table 2**"
    header = lines.index("| Subset | N | SimSiam | SimCLR |")
    rows = lines[header + 2:]
    assert rows == [
        "| imbalanced-p10 | 400 | 61.00 ± 1.41 | n/a |",
        "| balanced-p10 | 400 | n/a | 66.00 ± 0.00 |",
        "| imbalanced-p100 | 250 | n/a | 50.00 ± 0.00 |",
        "| balanced-p100 | 250 | 55.00 ± 0.00 | n/a |",
        "| full | 1,000 | 83.00 ± 2.65 | 75.50 ± 0.00 |",
    ]


def test_subset_order_sorts_factors_numerically():
    names = ["full", "balanced-p100", "imbalanced-p100", "balanced-p5", "imbalanced-p10", "imbalanced-p5"]
    assert order_subsets(names) == ["imbalanced-p5", "balanced-p5", "imbalanced-p10",
                                    "imbalanced-p100", "balanced-p100", "full"]


def test_runs_of_one_subset_must_agree_on_n(tmp_path):
    paths = [result(tmp_path, "full", "SimSiam", 0, 1000, 80.0, 70.0),
             result(tmp_path, "full", "SimSiam", 1, 999, 80.0, 70.0)]
    with pytest.raises(UserError, match="disagree on the subset size"):
        write_table(paths, ["SimSiam"], tmp_path / "t.csv", tmp_path / "t.md")
    assert not (tmp_path / "t.csv").exists()


def test_figure_writes_png_and_pdf_without_torch(tmp_path):
    labels = [0] * 10 + [1] * 5 + [2] * 2
    subsets = []
    for name, indices in [("imbalanced-p5", range(17)), ("full", range(17))]:
        path = tmp_path / f"{name}.csv"
        write_csv(path, np.array(list(indices)), np.array(labels))
        subsets.append(path)
    outs = [tmp_path / "fig/figure1.png", tmp_path / "fig/figure1.pdf"]
    figure_class_distribution(subsets, prepared_split(tmp_path, ["cat", "dog", "emu"]), outs, PlotSettings(dpi=50))
    assert outs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert outs[1].read_bytes()[:5] == b"%PDF-"
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == ["figure1.pdf", "figure1.png"]


@pytest.mark.parametrize("module", ["imbssl.reporting.tables", "imbssl.reporting.figures", "imbssl.reporting.per_class", "imbssl.reporting.analysis"])
def test_tables_and_figures_do_not_import_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_figure_rejects_subsets_with_more_classes_than_the_split(tmp_path):
    path = tmp_path / "full.csv"
    write_csv(path, np.arange(4), np.array([0, 0, 1, 2]))
    with pytest.raises(UserError, match="labels up to 2 but .* names 2 classes"):
        figure_class_distribution([path], prepared_split(tmp_path, ["a", "b"]), [tmp_path / "f.png"],
                                  PlotSettings())


def test_figure1_labels_the_classes_with_the_prepared_splits_names(tmp_path, monkeypatch):
    import matplotlib.axes

    labels = np.array([0, 0, 1, 1, 2])
    write_csv(tmp_path / "full.csv", np.arange(5), labels)
    ticks = []
    set_xticks = matplotlib.axes.Axes.set_xticks
    monkeypatch.setattr(matplotlib.axes.Axes, "set_xticks",
                        lambda ax, positions, names=None, **kw: (ticks.append(list(names)),
                                                                 set_xticks(ax, positions, names, **kw))[1])
    names = ["airplane", "automobile", "bird"]
    figure_class_distribution([tmp_path / "full.csv"], prepared_split(tmp_path, names), [tmp_path / "f.png"],
                              PlotSettings(dpi=30))
    assert ticks == [names]


def test_class_counts_per_subset_in_paper_order(tmp_path):
    from imbssl.data.subsets import subset_class_counts as class_counts

    labels = np.array([0, 0, 0, 1, 1, 2])
    write_csv(tmp_path / "full.csv", np.arange(6), labels)
    write_csv(tmp_path / "imbalanced-p3.csv", np.array([0, 1, 2, 3, 5]), labels)
    counts = class_counts([tmp_path / "full.csv", tmp_path / "imbalanced-p3.csv"])
    assert list(counts) == ["imbalanced-p3", "full"]
    assert counts["imbalanced-p3"].tolist() == [3, 1, 1] and counts["full"].tolist() == [3, 2, 1]


def test_class_names_come_from_the_prepared_split(tmp_path):
    from imbssl.data.store import class_names

    assert class_names(prepared_split(tmp_path, ["airplane", "automobile"])) == ["airplane", "automobile"]
    with pytest.raises(UserError, match="run `imbssl prepare-data`"):
        class_names(tmp_path / "missing.npz")


def test_method_labels_name_experiment_ii_students_as_the_paper():
    from imbssl.methods.catalog import label as method_label

    assert [method_label(m) for m in ("simclr", "simsiam", "simsiam-c-d", "simsiam-d", "msn", "pmsn")] == \
        ["SimCLR", "SimSiam", "SimSiam+C+D", "SimSiam+D", "MSN", "PMSN"]


def test_table3_columns_follow_the_method_list_with_n_a_for_methods_not_run(tmp_path):
    paths = [result(tmp_path, "imbalanced-p10", "SimSiam", 0, 400, 60.0, 50.0),
             result(tmp_path, "imbalanced-p10", "SimSiam+C+D", 0, 400, 63.0, 52.0),
             result(tmp_path, "imbalanced-p100", "SimSiam+D", 0, 250, 51.5, 40.0)]
    write_table(paths, ["SimCLR", "SimSiam", "SimSiam+C+D", "SimSiam+D"], tmp_path / "t3.csv", tmp_path / "t3.md")
    lines = (tmp_path / "t3.md").read_text().splitlines()
    assert lines == [
        "| Subset | N | SimCLR | SimSiam | SimSiam+C+D | SimSiam+D |",
        "|---|---:|---:|---:|---:|---:|",
        "| imbalanced-p10 | 400 | n/a | 60.00 ± 0.00 | 63.00 ± 0.00 | n/a |",
        "| imbalanced-p100 | 250 | n/a | n/a | n/a | 51.50 ± 0.00 |",
    ]


# --- accuracy against class frequency, training curves ---


def test_frequency_curve_averages_classes_of_one_count_then_seeds():
    from imbssl.reporting.frequency import frequency_curve

    runs = pd.DataFrame({"seed": [0, 0, 0, 1, 1, 1], "x": [100, 10, 10, 100, 10, 10],
                         "accuracy": [90.0, 40.0, 60.0, 80.0, 30.0, float("nan")]})
    curve = frequency_curve(runs).set_index("x")
    assert list(curve.index) == [100, 10]  # head first
    # x=100: seeds 90, 80 -> mean 85, std (ddof 1) 7.07; x=10: seed 0 (40+60)/2 = 50, seed 1 30 (NaN left out)
    assert curve.loc[100, "mean"] == pytest.approx(85.0) and curve.loc[100, "std"] == pytest.approx(np.std([90, 80], ddof=1))
    assert curve.loc[10, "mean"] == pytest.approx(40.0) and curve.loc[10, "count"] == 2


def _metrics_csv(path, epochs, knn_every=2, offset=0.0):
    rows = ["epoch,lr,steps,loss,out_std,images_per_s,seconds,knn_top1"]
    for e in range(1, epochs + 1):
        knn = f"{50 + e}" if e % knn_every == 0 else ""
        rows.append(f"{e},0.1,{e * 3},{offset + 1 / e},{0.06 + e / 1000},100,1,{knn}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_frequency_figure_and_training_curves_are_drawn(tmp_path):
    from imbssl.reporting.curves import figure_stage_curves, figure_training_curves
    from imbssl.reporting.frequency import figure_accuracy_vs_frequency

    write_csv(tmp_path / "imbalanced-p4.csv", np.arange(7), np.repeat([0, 1, 2], [4, 2, 1]))
    write_csv(tmp_path / "balanced-p4.csv", np.arange(6), np.repeat([0, 1, 2], 2))
    results = []
    for subset, seed in (("imbalanced-p4", 0), ("imbalanced-p4", 1), ("balanced-p4", 0)):
        results.append(forge_result(tmp_path / f"{subset}-{seed}.json", subset, "SimSiam", seed, 50.0, n=7,
                                    per_class=[90.0, 50.0, 10.0 + seed], knn_per_class=[80.0, 40.0, None],
                                    test_class_counts=[5, 5, 5]))
    outs = [tmp_path / "f.png", tmp_path / "f.pdf"]
    figure_accuracy_vs_frequency(results, [tmp_path / "imbalanced-p4.csv", tmp_path / "balanced-p4.csv"], outs,
                                 "title", PlotSettings(dpi=40))
    assert outs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and outs[1].read_bytes()[:5] == b"%PDF-"
    metrics = [_metrics_csv(tmp_path / f"m{i}.csv", 4) for i in range(2)]
    figure_training_curves(metrics, ["SimSiam", "SimCLR"], [tmp_path / "c.png"], "t", PlotSettings(dpi=40))
    assert (tmp_path / "c.png").stat().st_size > 1000
    with pytest.raises(UserError, match="2 metrics files for 1 labels"):
        figure_training_curves(metrics, ["SimSiam"], [tmp_path / "x.png"])
    figure_stage_curves(metrics[0], [[metrics[0], metrics[1]], [metrics[1], metrics[0]]], metrics, ["kmeans", "random"],
                        [tmp_path / "s.png"], "t", PlotSettings(dpi=40))
    assert (tmp_path / "s.png").stat().st_size > 1000


def test_training_curves_need_a_metrics_file_with_epochs_and_loss(tmp_path):
    from imbssl.core.artifacts import read_metrics

    (tmp_path / "m.csv").write_text("epoch,lr\n1,0.1\n")
    with pytest.raises(UserError, match=r"lack columns \['loss'\]: rerun its training job"):
        read_metrics(tmp_path / "m.csv")
    with pytest.raises(UserError, match="cannot read training metrics"):
        read_metrics(tmp_path / "missing.csv")


def test_figure_stages_cli_splits_the_experts_by_kind(tmp_path):
    from imbssl.cli import main

    metrics = [str(_metrics_csv(tmp_path / f"m{i}.csv", 3)) for i in range(3)]
    assert main(["figure-stages", "--base", metrics[0], "--kinds", "kmeans", "random", "--experts", *metrics,
                 "--students", metrics[0], metrics[1], "--out", str(tmp_path / "s.png")]) == 2  # 3 experts, 2 kinds
    assert main(["figure-stages", "--base", metrics[0], "--kinds", "kmeans", "random", "--experts", *metrics[:2],
                 "--students", metrics[0], metrics[1], "--out", str(tmp_path / "s.png"), "--dpi", "40"]) == 0
    assert (tmp_path / "s.png").exists()
