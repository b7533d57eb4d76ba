"""Tables and Figure 1 from synthetic result files (no torch, no model)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

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
                                 "knn_top1_mean", "knn_top1_std", "seeds", "collapsed"]
    assert (csv.collapsed == 0).all()  # seeds whose training collapsed: none of these results
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


# --- tables as HTML pages (the report shows them inline) ---


def test_html_and_markdown_tables_show_the_same_cells(tmp_path):
    import re

    paths = [result(tmp_path, "imbalanced-p10", "SimSiam", 0, 400, 60.0, 50.0),
             result(tmp_path, "imbalanced-p10", "SimSiam", 1, 400, 62.0, 52.0),
             result(tmp_path, "full", "SimSiam", 0, 1000, 80.0, 70.0),
             result(tmp_path, "full", "SimCLR", 0, 1000, 75.5, 60.0)]
    out_md, out_html = tmp_path / "t.md", tmp_path / "t.html"
    write_table(paths, ["SimSiam", "SimCLR"], tmp_path / "t.csv", out_md, title="Table 2", out_html=out_html)
    page = out_html.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<title>Table 2</title>" in page
    assert "<p><strong>Table 2</strong></p>" in page
    md_cells = [cell.strip() for line in out_md.read_text().splitlines() if line.startswith("| ")
                for cell in line.strip("|").split("|")]
    html_cells = re.findall(r"<t[dh] class=\"\w+\">(.*?)</t[dh]>", page)
    assert html_cells == md_cells  # every number formatted once, shown the same in both
    assert '<td class="num">61.00 ± 1.41</td>' in page and '<td class="num">1,000</td>' in page
    assert '<td class="txt">imbalanced-p10</td>' in page


def test_html_tables_escape_what_they_show(tmp_path):
    from imbssl.reporting.document import Table, html_page, inline_html

    assert inline_html("**Table 2**: `random` vs *kNN*, head > 100 & a * b") == \
        "<strong>Table 2</strong>: <code>random</code> vs <em>kNN</em>, head &gt; 100 &amp; a * b"
    page = html_page(["x <script>"], "a <b>")
    assert "<script>" not in page and "x &lt;script&gt;" in page and "<title>a &lt;b&gt;</title>" in page
    assert "<p>Groups:</p>\n<ul><li>a &gt; b</li><li>c</li></ul>" in html_page(["Groups:\n- a > b\n- c"], "t")
    page = html_page([Table(["Method", "Top-1"], [["A<b>", "1.00"]], [False, True])], "t")
    assert '<td class="txt">A&lt;b&gt;</td><td class="num">1.00</td>' in page


def test_group_per_class_and_cluster_tables_get_html_pages_too(tmp_path):
    from imbssl.reporting.per_class import write_group_table, write_per_class_table
    from imbssl.reporting.tables import write_cluster_table

    write_csv(tmp_path / "imbalanced-p4.csv", np.arange(7), np.repeat([0, 1, 2], [4, 2, 1]))
    run = forge_result(tmp_path / "r.json", "imbalanced-p4", "SimSiam", 0, 50.0, n=7, per_class=[90.0, 50.0, 10.0])
    write_group_table([run], [tmp_path / "imbalanced-p4.csv"], ["SimSiam"], tmp_path / "g.csv", tmp_path / "g.md",
                      "Groups", out_html=tmp_path / "g.html")
    page = (tmp_path / "g.html").read_text()
    assert "<em>Linear probe</em>" in page and '<td class="num">90.00 ± 0.00</td>' in page  # head = class 0
    write_per_class_table([run], [tmp_path / "imbalanced-p4.csv"], tmp_path / "p.csv", tmp_path / "p.md",
                          out_html=tmp_path / "p.html")
    assert '<td class="num">10.00 ± 0.00</td>' in (tmp_path / "p.html").read_text()
    summary = tmp_path / "summary.json"
    summary.write_text('{"subset": "imbalanced-p4", "seed": 0, "kind": "kmeans", "k": 2, "n": 7, '
                       '"normalize": "none", "sizes": [4, 3], "nmi": 0.51234, "ari": 0.25, "backend": "sklearn"}')
    write_cluster_table([summary], tmp_path / "c.csv", tmp_path / "c.md", out_html=tmp_path / "c.html")
    assert '<td class="num">0.512</td>' in (tmp_path / "c.html").read_text()
    assert "| imbalanced-p4 | 0 | kmeans | 2 | 7 | none | 4 / 3 | n/a | 0.512 | 0.250 | sklearn |" in \
        (tmp_path / "c.md").read_text()


# --- the report's overview and its check of the config against the results ---


def _provenance(dataset="digits", eval_epochs=30, arch="resnet10", width=8, epochs=20, batch=128, command="pretrain",
                **trained):
    commit = "abcdef1234567+dirty"
    return {"imbssl_version": "0.1.0", "git_commit": commit, "command": "evaluate",
            "settings": {"dataset_name": dataset, "epochs": eval_epochs, "augment": False, "knn_k": 20, "lr": 30.0,
                         "feature_norm": "none"},
            "model": {"arch": arch, "width": width, "epochs": epochs, "image_size": 16,
                      "provenance": {"imbssl_version": "0.1.0", "git_commit": commit, "command": command,
                                     "settings": {"arch": arch, "width": width, "stem": "auto", "epochs": epochs,
                                                  "batch_size": batch, **trained}}}}


def _demo_results(tmp_path):
    runs = {}
    for subset, n in (("imbalanced-p10", 400), ("balanced-p10", 400), ("imbalanced-p100", 250), ("full", 1000)):
        for method, label in (("simsiam", "SimSiam"), ("simclr", "SimCLR")):
            runs[str(tmp_path / f"eval/{subset}/{method}/seed0.json")] = (subset, label, n, _provenance())
    runs[str(tmp_path / "eval/imbalanced-p10/simsiam-c-d/seed0.json")] = (
        "imbalanced-p10", "SimSiam+C+D", 400,
        _provenance(arch="resnet10", epochs=6, command="distill", experts=["e0/model.pt", "e1/model.pt"]))
    for path, (subset, label, n, provenance) in runs.items():
        forge_result(Path(path), subset, label, 0, 50.0, n=n, provenance=provenance,
                     pretrain_epochs=provenance["model"]["epochs"],
                     settings={"epochs": 30, "augment": False, "knn_k": 20}, classes=[str(c) for c in range(10)],
                     per_class=[50.0] * 10)
    return list(runs)


def _expected(dataset="digits", eval_epochs=30, arch="resnet10", width=8, epochs=20):
    from imbssl.reporting.overview import Expected

    return Expected(dataset, {"epochs": eval_epochs, "augment": False, "knn_k": 20, "lr": 30, "feature_norm": None},
                    {"arch": arch, "width": width, "epochs": epochs, "batch_size": 128, "stem": None})


def test_report_mode_is_read_from_snakemakes_command_line():
    from imbssl.reporting.overview import report_mode

    assert report_mode(["snakemake", "--report", "results/report.html"]) == "report"
    assert report_mode(["snakemake", "--report=results/report.html", "--configfile", "x.yaml"]) == "report"
    assert report_mode(["snakemake", "--cores", "2", "--report", "r.html", "--report-after-run"]) == "after-run"
    assert report_mode(["snakemake", "--cores", "2", "--report-stylesheet", "s.css"]) is None
    assert report_mode(["snakemake", "--cores", "2"]) is None


def test_a_config_the_results_were_made_with_passes_the_report_check(tmp_path):
    from imbssl.reporting.overview import config_mismatch

    paths = _demo_results(tmp_path)
    expected = {path: _expected() for path in paths[:-1]}  # the student's training differs: not compared here
    expected[str(tmp_path / "eval/full/msn/seed0.json")] = _expected(arch="vit_mini")  # missing: Snakemake's to say
    # lr 30 (config, an integer) is the recorded 30.0; None (the command's default) is not compared.
    assert config_mismatch(expected) is None


def test_a_config_the_results_were_not_made_with_stops_the_report_in_one_line(tmp_path):
    from imbssl.reporting.overview import config_mismatch

    paths = _demo_results(tmp_path)[:-1]
    paper = _expected(dataset="cifar10", eval_epochs=100, arch="resnet18", width=64, epochs=300)
    message = config_mismatch({path: paper for path in paths})
    assert "\n" not in message
    assert message.startswith("snakemake --report: this config does not describe the results it would report "
                              "(8 of 8 result files differ")
    for mismatch in ("dataset: digits in the results, cifar10 in this config",
                     "training --arch: resnet10 in the results, resnet18 in this config",
                     "training --width: 8 in the results, 64 in this config",
                     "training --epochs: 20 in the results, 300 in this config",
                     "evaluate --epochs: 30 in the results, 100 in this config"):
        assert mismatch in message, mismatch
    # One setting off in one file is named too, with the file.
    one_off = {path: _expected() for path in paths}
    one_off[paths[3]] = _expected(epochs=21)
    message = config_mismatch(one_off)
    assert f"(1 of 8 result files differ, e.g. {paths[3]}): training --epochs: 20 in the results, 21 in this config" \
        in message


def test_the_report_check_reads_older_results_by_their_pretraining_epochs(tmp_path):
    from imbssl.reporting.overview import config_mismatch

    old = forge_result(tmp_path / "old.json", "full", "SimSiam", 0, 50.0, pretrain_epochs=20)  # no provenance
    assert config_mismatch({str(old): _expected()}) is None
    assert "training --epochs: 20 in the results, 300 in this config" in config_mismatch({str(old): _expected(epochs=300)})
    (tmp_path / "v1.json").write_text("{}")
    assert "format version 1" in config_mismatch({str(tmp_path / "v1.json"): _expected()})


def test_the_overview_describes_the_run_from_its_result_files(tmp_path):
    from docutils.core import publish_parts

    from imbssl.reporting.overview import overview_rst, read_results

    text = overview_rst(read_results(_demo_results(tmp_path)))
    assert "from the provenance of its 9 result files" in text
    assert "imbssl 0.1.0 at commit ``abcdef1234`` with uncommitted changes" in text
    assert "**Dataset**: digits: 10 classes (0, 1, 2, 3, 4, 5, 6, 7, 8, 9), 16 px crops" in text
    assert "imbalanced-p10 (400), balanced-p10 (400), imbalanced-p100 (250), full (1,000); imbalance factors 10, 100" \
        in text  # factors as integers, not 10.0
    assert "**Seeds**: 0 (one seed" in text
    assert "  - SimSiam, SimCLR: ResNet-10 (width 8), 20 epochs, batch 128" in text
    assert "  - SimSiam+C+D: distilled for 6 epochs from a base model and 2 experts (k = 2)" in text
    assert "linear probe trained for 30 epochs on precomputed features; kNN with k = 20" in text
    # Valid reStructuredText: docutils stops on any warning.
    publish_parts(text, writer="html", settings_overrides={"halt_level": 2, "report_level": 2})


def test_the_report_text_keeps_the_overview_verbatim_through_jinja(tmp_path):
    from jinja2 import Environment

    from imbssl.reporting.overview import write_report_text

    paths = _demo_results(tmp_path)
    (tmp_path / "v1.json").write_text("{}")  # an older result file: its evaluate job will rewrite it
    paths += [str(tmp_path / "v1.json"), str(tmp_path / "missing.json")]
    description = tmp_path / "workflow.rst"
    description.write_text("Seeds {{ snakemake.config['seeds'] | join(', ') }}.\n")
    out = write_report_text(paths, description, tmp_path / ".snakemake/imbssl/report.rst")
    rendered = Environment().from_string(out.read_text()).render(snakemake={"config": {"seeds": [0, 1]}})
    assert "**The run shown here**, from the provenance of its 9 result files" in rendered
    assert rendered.rstrip().endswith("Seeds 0, 1.")


# --- the end of every job says what it wrote ---


def test_a_command_ends_by_naming_every_file_it_wrote(tmp_path, capsys):
    from imbssl.cli import main

    path = result(tmp_path, "full", "SimSiam", 0, 1000, 80.0, 70.0)
    outs = [tmp_path / "tables" / f"t.{ext}" for ext in ("csv", "md", "html")]
    assert main(["table", "--results", str(path), "--methods", "SimSiam", "--out-csv", str(outs[0]),
                 "--out-md", str(outs[1]), "--out-html", str(outs[2])]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in lines] == [f"[imbssl] table wrote {out}" for out in outs]
    assert all(line.endswith(" B)") or line.endswith("kB)") for line in lines)


def test_written_files_are_the_outputs_and_what_changed_in_an_output_folder(tmp_path):
    import argparse
    import os
    import time

    from imbssl.cli import written_files

    run = tmp_path / "pretrain"
    run.mkdir()
    (run / "old.csv").write_text("x")
    os.utime(run / "old.csv", (time.time() - 3600, time.time() - 3600))  # from an earlier job: not this one's
    started = time.time() - 1
    (run / "model.pt").write_bytes(b"x")
    (run / "metrics.csv").write_text("x")
    (tmp_path / "train.npz").write_bytes(b"x")
    (tmp_path / "train.images.npy").write_bytes(b"x")  # beside the split it belongs to
    args = argparse.Namespace(command="x", out_dir=str(run), out_train=str(tmp_path / "train.npz"), out=None,
                              other=str(tmp_path / "unrelated.csv"))
    assert written_files(args, started) == [run / "metrics.csv", run / "model.pt", tmp_path / "train.npz",
                                            tmp_path / "train.images.npy"]


# --- figures: readable counts and ticks, shared ranges ---


def test_figure3_counts_are_as_large_as_their_cells_allow():
    from imbssl.reporting.figures import count_font_size

    counts = np.array([[5000, 12], [3, 0]])  # 4 digits at most
    assert count_font_size(40, 60, counts, largest=9) == 9  # room to spare: the figure's font
    # 20 pt wide cells: 4 digits of 0.62 em plus a margin fit at 20 / 2.98 points.
    assert count_font_size(20, 60, counts, largest=9) == pytest.approx(20 / (0.62 * 4 + 0.5))
    assert count_font_size(40, 10, counts, largest=9) == pytest.approx(5.5)  # short rows
    assert count_font_size(4, 60, counts, largest=9) is None  # CIFAR-100's 100 classes: colour only


def test_many_class_names_are_thinned_out_to_stay_apart():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from imbssl.reporting.plotting import class_ticks

    fig, ax = plt.subplots()
    class_ticks(ax, [f"class{c}" for c in range(100)])
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert len(labels) == 25 and labels[:2] == ["class0", "class4"]
    class_ticks(ax, ["airplane", "automobile", "bird"])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["airplane", "automobile", "bird"]
    plt.close(fig)


def test_curves_that_are_compared_share_one_readable_range():
    from imbssl.reporting.curves import metric_limits

    # kNN of 45-47 % beside 24-25 %: one range over both; a 1-point wobble alone still spans 10 points.
    assert metric_limits("knn_top1", np.array([45.0, 47.0, 24.0, 25.0])) == (22, 49)
    low, high = metric_limits("knn_top1", np.array([46.0, 47.0]))
    assert high - low >= 10 and low <= 46 and high >= 47
    assert metric_limits("knn_top1", np.array([99.0, 100.0])) == (89, 100)  # within 0-100 %
    # The output std from 0 (collapse), whatever its wobble.
    assert metric_limits("out_std", np.array([0.06240, 0.06252])) == (0.0, pytest.approx(0.06252 * 1.15))
    assert metric_limits("loss", np.array([])) is None


def _captured_figure(monkeypatch, module):
    figures = []
    monkeypatch.setattr(module, "save_figure", lambda fig, outs, dpi: figures.append(fig))
    return figures


def test_stage_curves_draw_the_distillation_loss_on_its_own_axis(tmp_path, monkeypatch):
    from imbssl.reporting import curves

    figures = _captured_figure(monkeypatch, curves)
    simsiam = [_metrics_csv(tmp_path / f"s{i}.csv", 4) for i in range(3)]  # losses 0.25-1
    students = [_metrics_csv(tmp_path / f"d{i}.csv", 2, offset=100.0) for i in range(2)]  # losses near 100
    curves.figure_stage_curves(simsiam[0], [simsiam[1:], simsiam[1:]], students, ["kmeans", "random"],
                               [tmp_path / "s.png"])
    fig = figures[0]
    loss_axes = [ax for ax in fig.axes if ax.get_ylabel() == "SimSiam loss"]
    main = fig.axes[0]
    assert loss_axes == [main] and main.get_ylim()[1] < 2  # the SimSiam loss keeps its own scale
    twins = [ax for ax in fig.axes if ax is not main and ax.get_shared_x_axes().joined(ax, main)
             and ax.get_ylim()[0] > 50]
    assert twins, "the student's loss (about 100) has an axis of its own"
    assert all(max(line.get_ydata(), default=0) < 2 for line in main.get_lines())  # not drawn on the SimSiam axis
    assert any(min(line.get_ydata(), default=0) > 50 for line in twins[0].get_lines())
    knn = [ax for ax in fig.axes if ax.get_ylabel() == "kNN top-1 (%)"][0]
    rows = [ax for ax in fig.axes if ax.get_position().y0 == pytest.approx(knn.get_position().y0)]
    assert len({ax.get_ylim() for ax in rows}) == 1  # both partitions on one kNN range


def test_training_curves_share_the_knn_and_std_ranges_not_the_loss(tmp_path, monkeypatch):
    from imbssl.reporting import curves

    figures = _captured_figure(monkeypatch, curves)
    metrics = [_metrics_csv(tmp_path / "a.csv", 4), _metrics_csv(tmp_path / "b.csv", 4, offset=10.0)]
    curves.figure_training_curves(metrics, ["SimSiam", "SimCLR"], [tmp_path / "c.png"])
    axes = np.array(figures[0].axes).reshape(3, 2)
    assert axes[0, 0].get_ylim() != axes[0, 1].get_ylim()  # losses on their own scales
    assert axes[1, 0].get_ylim() == axes[1, 1].get_ylim() and axes[2, 0].get_ylim() == axes[2, 1].get_ylim()
    assert axes[2, 0].get_ylim()[0] == 0.0  # the output std from 0
