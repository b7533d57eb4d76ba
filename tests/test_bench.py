import json
import statistics

import pytest
import torch

from imbssl.bench.engine import BenchSettings, _images_per_s, paper_estimate, run, timed_windows

TINY = dict(arch="resnet10", width=4, image_size=16, batch_size=16, num_images=64, warmup_steps=1,
            window_steps=1, windows=3, workers=0, kmeans_points=200, kmeans_dim=8, kmeans_ks=[5],
            kmeans_n_init=2, linear_epochs=1,
            linear_points=512)


def test_bench_runs_both_pipelines_and_reports_their_ratio(tmp_path, capsys):
    report = run(BenchSettings(**TINY), str(tmp_path / "bench.json"))
    printed = capsys.readouterr().out
    for method in ("simsiam", "simclr"):
        entry = report["training"][method]
        assert entry["engine"]["images_per_s"] > 0 and entry["reference"]["images_per_s"] > 0
        assert entry["ratio"] == entry["engine"]["images_per_s"] / entry["reference"]["images_per_s"]
        assert f"{method:8s} engine/reference" in printed
    assert {"sklearn k=5", "torch-cpu k=5"} <= set(report["kmeans"]) and report["linear_eval"]["train_n"] == 512
    linear = report["linear_eval"]
    assert linear["ratio"] == linear["augmented"]["seconds"] / linear["precomputed"]["seconds"]
    assert linear["seconds"] == linear["augmented"]["seconds"]  # the paper config's protocol sets the estimate
    assert "linear eval augmented/precomputed" in printed
    assert json.loads((tmp_path / "bench.json").read_text())["settings"]["batch_size"] == 16
    # Each rate is window_steps x batch_size images over the median window, for both pipelines.
    for method in ("simsiam", "simclr"):
        for pipeline in ("engine", "reference"):
            entry = report["training"][method][pipeline]
            assert len(entry["window_seconds"]) == 3
            assert entry["images_per_s"] == pytest.approx(1 * 16 / statistics.median(entry["window_seconds"]))
        ratio = report["training"][method]["ratio"]
        assert f"{method:8s} {'engine/reference':18s} {ratio:10.2f}x" in printed
    rates = {m: report["training"][m]["engine"]["images_per_s"] for m in ("simsiam", "simclr")}
    assert report["paper_estimate"] == pytest.approx(paper_estimate(rates, report["linear_eval"]["seconds"]))
    assert json.loads((tmp_path / "bench.json").read_text()) == json.loads(json.dumps(report))


def test_timed_windows_runs_the_warmup_then_each_window():
    calls = []
    settings = BenchSettings(warmup_steps=2, window_steps=4, windows=3)
    seconds = timed_windows(lambda: calls.append(1), torch.device("cpu"), settings)
    assert len(calls) == 2 + 3 * 4 and len(seconds) == 3
    assert _images_per_s([1.0, 4.0, 2.0], BenchSettings(window_steps=4, batch_size=8)) == 4 * 8 / 2.0


def test_paper_estimate_by_hand():
    # 115,674 images x 300 epochs per method at 1,000 images/s; Table 3: (40 + 2 x 260) x 32,837
    est = paper_estimate({"simsiam": 1000.0, "simclr": 1000.0}, linear_seconds=6.0)
    assert abs(est["table2_minutes"] - 2 * 300 * 115674 / 1000 / 60) < 1e-6
    assert abs(est["table3_minutes"] - 560 * 32837 / 1000 / 60) < 1e-6
    assert abs(est["linear_eval_minutes"] - 14 * 6.0 / 60) < 1e-9
    assert est["two_view_samples"] == 2 * 300 * 115674 + 560 * 32837
    assert abs(est["total_minutes"] - (est["table2_minutes"] + est["table3_minutes"]
                                       + est["linear_eval_minutes"])) < 1e-9


def test_paper_estimate_without_simsiam_has_no_table3_time():
    # `imbssl bench --methods simclr`: Table 2's SimCLR half only; Table 3 needs SimSiam's rate.
    est = paper_estimate({"simclr": 500.0}, linear_seconds=6.0)
    assert abs(est["table2_minutes"] - 300 * 115674 / 500 / 60) < 1e-6
    assert est["table3_minutes"] is None
    assert abs(est["total_minutes"] - (est["table2_minutes"] + 14 * 6.0 / 60)) < 1e-9
    assert est["two_view_samples"] == 2 * 300 * 115674 + 560 * 32837


def test_bench_gpus_runs_the_engine_on_several_processes_and_reports_its_scaling(tmp_path, capsys):
    """`imbssl bench --gpus 2` on the CPU: the same global batch on 2 processes (gloo), its
    images/s against one process, the step time at batch B/2 with and without the process group
    and one all-reduce of the gradients."""
    settings = BenchSettings(**{**TINY, "methods": ["simsiam"], "reference": False, "gpus": 2})
    report = run(settings, str(tmp_path / "bench.json"))
    one, scaling = report["training"]["simsiam"]["engine"], report["training"]["simsiam"]["scaling"]
    assert scaling["processes"] == 2 and scaling["backend"] == "gloo" and scaling["per_process_batch"] == 8
    assert scaling["images_per_s"] > 0
    assert scaling["efficiency"] == scaling["images_per_s"] / (2 * one["images_per_s"])
    assert scaling["allreduce_ms"] > 0 and scaling["step_ms_per_process_batch"]["without_process_group"] > 0
    assert scaling["gradient_mib"] > 0 and len(scaling["window_seconds"]) == TINY["windows"]
    printed = capsys.readouterr().out
    assert "simsiam  2 processes" in printed and "scaling efficiency" in printed and "all-reduce" in printed


def test_data_paths_bench_times_resident_streamed_and_dataloader_against_the_dataloader():
    from imbssl.bench.data_paths import DataBenchSettings
    from imbssl.bench.data_paths import run as run_data_paths

    settings = DataBenchSettings(arch="resnet10", width=4, image_size=16, store_size=18, batch_size=8,
                                 num_images=32, workers=0, warmup_steps=1, window_steps=2, windows=3)
    report = run_data_paths(settings, torch.device("cpu"))
    assert report["decode_images_per_s"] > 0 and report["settings"]["store_size"] == 18
    for name in ("resident", "streamed", "dataloader"):
        entry = report[name]
        assert len(entry["window_step_s"]) == 3 and entry["gpu_step_s"] is None  # no CUDA events on the CPU
        assert entry["wall_step_s"] == statistics.median(entry["window_step_s"])
        assert entry["images_per_s"] == pytest.approx(8 / entry["wall_step_s"])
    for name in ("resident", "streamed"):
        assert report[name]["vs_dataloader"] == report[name]["images_per_s"] / report["dataloader"]["images_per_s"]
    assert "vs_dataloader" not in report["dataloader"]
