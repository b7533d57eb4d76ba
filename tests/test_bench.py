import json

from imbssl.bench import BenchSettings, paper_estimate, run

TINY = dict(arch="resnet10", width=4, image_size=16, batch_size=16, num_images=64, warmup_steps=1,
            window_steps=1, windows=2, workers=0, kmeans_points=200, kmeans_dim=8, linear_epochs=1,
            linear_points=512)


def test_bench_runs_both_pipelines_and_reports_their_ratio(tmp_path, capsys):
    report = run(BenchSettings(**TINY), str(tmp_path / "bench.json"))
    printed = capsys.readouterr().out
    for method in ("simsiam", "simclr"):
        entry = report["training"][method]
        assert entry["engine"]["images_per_s"] > 0 and entry["reference"]["images_per_s"] > 0
        assert entry["ratio"] == entry["engine"]["images_per_s"] / entry["reference"]["images_per_s"]
        assert f"{method:8s} engine/reference" in printed
    assert "sklearn" in report["kmeans"] and report["linear_eval"]["train_n"] == 512
    assert json.loads((tmp_path / "bench.json").read_text())["settings"]["batch_size"] == 16


def test_paper_estimate_by_hand():
    # 115,674 images x 300 epochs per method at 1,000 images/s; Table 3: (40 + 2 x 260) x 32,837
    est = paper_estimate({"simsiam": 1000.0, "simclr": 1000.0}, linear_seconds=6.0)
    assert abs(est["table2_minutes"] - 2 * 300 * 115674 / 1000 / 60) < 1e-6
    assert abs(est["table3_minutes"] - 560 * 32837 / 1000 / 60) < 1e-6
    assert abs(est["linear_eval_minutes"] - 14 * 6.0 / 60) < 1e-9
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
