"""The demo preset end to end (Experiments I and II, MSN/PMSN), then what a change reruns.

One demo run in a copy of the repository (module fixture, a few minutes on 2 CPU cores), then:
its tables and figures; dry runs after changing one setting or one module, which must plan
exactly the jobs that depend on it (evaluation or plotting changes retrain nothing); the report.

The copy runs its own package (PYTHONPATH=<copy>/src), so a module can be edited there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from imbssl.cli import COMMANDS
from imbssl.data.subsets import subset_names
from imbssl.methods import catalog

REPO = Path(__file__).resolve().parents[1]

from helpers.repo import copy_repo, job_counts, snakemake

pytestmark = pytest.mark.integration

DEMO = ("--configfile", "config/demo.yaml")
TRAINING_RULES = {"pretrain", "base", "features", "cluster", "partition_random", "expert", "distill",
                  "prototype_usage", "cluster_sizes"}


def demo_config() -> dict:
    """config.yaml with config/demo.yaml merged over it, as Snakemake merges them."""
    import yaml

    def merged(a, b):
        return {**a, **{k: merged(a.get(k, {}), v) if isinstance(v, dict) else v for k, v in b.items()}}

    return merged(yaml.safe_load((REPO / "config.yaml").read_text()),
                  yaml.safe_load((REPO / "config/demo.yaml").read_text()))


CONFIG = demo_config()
METHODS = CONFIG["methods"]
LABELS = [catalog.label(m) for m in METHODS]
SUBSETS = subset_names(CONFIG["subsets"]["imbalance_factors"])
IMBALANCED = CONFIG["clustering"]["subsets"]
PRIOR_SUBSETS = [s for s in SUBSETS if s != "full"]
PROTOTYPE_METHODS = catalog.prototype_methods(METHODS)
K = CONFIG["clustering"]["k"]
EVALUATED = len(SUBSETS) * len(METHODS) + len(IMBALANCED) * len(catalog.STUDENTS)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    workdir = copy_repo(tmp_path_factory.mktemp("demo"))
    # A guard against a hung run, not the demo's time budget: on a 2-core machine shared with other
    # jobs the demo (~6 minutes alone) took 29 minutes of wall time.
    done = snakemake(workdir, "--cores", "2", *DEMO, timeout=3600)
    assert done.returncode == 0, done.stderr[-6000:]
    return workdir


def planned(workdir: Path, *args: str) -> dict[str, int]:
    result = snakemake(workdir, "-n", "--quiet", "rules", *DEMO, *args)
    assert result.returncode == 0, result.stderr[-4000:]
    return job_counts(result.stdout)


def table(demo: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(demo / "results/tables" / f"{name}.csv")


# What reads the result JSONs of each experiment: its table, its table by class group and its
# accuracy-against-frequency figure; and the per-class table, which reads every result.
EXPERIMENT_I_VIEWS = {"table2": 1, "table2_groups": 1, "frequency_table2": 1}
EXPERIMENT_II_VIEWS = {"table3": 1, "table3_groups": 1, "frequency_table3": 1}
PRIOR_VIEWS = {"table4": 1, "table4_groups": 1, "frequency_table4": 1}
PER_CLASS = {"per_class_table": 1}
ALL_VIEWS = {**EXPERIMENT_I_VIEWS, **EXPERIMENT_II_VIEWS, **PRIOR_VIEWS, **PER_CLASS}
# What reads the cluster sizes and the prototype usage: the prior table and figure.
PRIOR_MEASURED = {"prior_table": 1, "prior_figure": 1}
# Training curves of every subset (every method's metrics.csv) and Experiment II's stages.
CURVES = {"training_curves": len(SUBSETS)}
STAGES = {"stage_curves": len(IMBALANCED)}


def one_method_retrained(method: str) -> dict[str, int]:
    """What a change to one method's own settings reruns: its models on every subset, their
    evaluations and prior measurements, and every view that reads them."""
    info = catalog.METHODS[method]
    counts = {"pretrain": len(SUBSETS), "evaluate": len(SUBSETS), "cluster_sizes": len(PRIOR_SUBSETS),
              **PRIOR_VIEWS, **PER_CLASS, **CURVES, **PRIOR_MEASURED}
    if "table2" in info.tables:
        counts.update(EXPERIMENT_I_VIEWS)
    if "table3" in info.tables:
        counts.update(EXPERIMENT_II_VIEWS)
    if info.prototypes:
        counts.update({"prototype_usage": len(PRIOR_SUBSETS), "figure4": 1})
    return counts


def test_the_demo_runs_every_method_of_the_catalog():
    assert METHODS == list(catalog.METHODS)


def test_table2_has_both_baselines_on_every_subset(demo):
    csv = table(demo, "table2")
    assert set(zip(csv.subset, csv.method)) == {(s, m) for s in SUBSETS for m in ("SimSiam", "SimCLR")}
    assert csv.top1_mean.between(0, 100).all() and csv.top1_mean.notna().all()
    assert (csv.seeds == 1).all() and (csv.top1_std == 0).all()  # the demo's one seed


def test_group_tables_split_every_imbalanced_subset_into_head_medium_tail(demo):
    csv = table(demo, "table2_groups")
    assert len(csv) == len(SUBSETS) * 2 * 2  # subsets x methods, linear probe and kNN
    assert set(csv.probe) == {"linear", "knn"}
    grouped = csv[csv.subset != "full"]  # balanced-pX takes its imbalanced twin's groups
    for column in ("head_mean", "medium_mean", "tail_mean", "balancedness_mean", "worst_mean"):
        assert grouped[column].between(0, 100).all(), column
    assert (csv.worst_mean <= csv.top1_mean + 1e-9).all()
    assert "| imbalanced-p100 |" in (demo / "results/tables/table2_groups.md").read_text()
    for name in ("table3_groups", "table4_groups"):
        assert not table(demo, name).empty


def test_per_class_table_has_every_class_of_every_run(demo):
    import numpy as np

    csv = table(demo, "per_class")
    assert len(csv) == EVALUATED * 10  # every evaluated run x the 10 digit classes
    imbalanced = csv[(csv.subset == "imbalanced-p100") & (csv.method == "SimSiam")].sort_values("class")
    labels = pd.read_csv(demo / "results/subsets/imbalanced-p100.csv")["label"]
    assert imbalanced.train_images.tolist() == np.bincount(labels, minlength=10).tolist()
    assert imbalanced.group.tolist()[:4] == ["head"] * 4 and imbalanced.group.tolist()[-3:] == ["tail"] * 3


def test_table3_has_the_four_methods_on_the_imbalanced_subsets(demo):
    csv = table(demo, "table3")
    methods = ("SimCLR", "SimSiam", "SimSiam+C+D", "SimSiam+D")
    assert sorted(zip(csv.subset, csv.method)) == sorted((s, m) for s in IMBALANCED for m in methods)
    assert csv.top1_mean.between(0, 100).all()
    md = (demo / "results/tables/table3.md").read_text()
    results_table = md.split("**Paired differences**")[0]  # the intervals below it are n/a with one seed
    assert "| Subset | N | SimCLR | SimSiam | SimSiam+C+D | SimSiam+D |" in results_table
    assert "n/a" not in results_table


def test_table4_has_every_method_on_every_subset_with_its_imbalance_gap(demo):
    csv = table(demo, "table4")
    assert set(zip(csv.subset, csv.method)) == {(s, m) for s in SUBSETS for m in LABELS}
    assert csv.top1_mean.between(0, 100).all()
    gaps = table(demo, "table4_differences")
    assert sorted(zip(gaps.subset_a, gaps.subset_b, gaps.method_a)) == sorted(
        (s, s.replace("imbalanced-", "balanced-"), m) for s in SUBSETS if s.startswith("imbalanced-") for m in LABELS)
    md = (demo / "results/tables/table4.md").read_text()
    assert "| Subset | N | " + " | ".join(LABELS) + " |" in md and "**Paired differences**" in md


# Issue 24 (open): at demo scale DINO's teacher targets go uniform by epoch 2 (lightly's DINO does
# the same on the same inputs; RESULTS.md). SwAV and power-law SwAV train with hard codes in the demo
# (config/demo.yaml: SwAV's README workaround), without which their predictions go uniform too. The
# test below is a strict xfail: it fails CI the day DINO trains without collapse here, so that this
# list gets shortened.
COLLAPSES_AT_DEMO_SCALE = ["dino"]


def assert_trained_without_collapse_and_above_chance(demo: Path, methods: list[str]) -> None:
    """No collapse (result files and tables), kNN above chance (10 classes)."""
    import json

    table4 = table(demo, "table4")
    assert (table4[table4.method.isin([catalog.label(m) for m in methods])].collapsed == 0).all()
    for method in methods:
        for subset in SUBSETS:
            result = json.loads((demo / f"results/eval/{subset}/{method}/seed0.json").read_text())
            assert result["collapsed"] is False, (method, subset)
        metrics = pd.read_csv(demo / f"results/pretrain/imbalanced-p100/{method}/seed0/metrics.csv")
        assert metrics.knn_top1.dropna().iloc[-1] > 15, method  # chance is 10%


def test_every_other_method_trained_without_collapse_and_above_chance(demo):
    assert_trained_without_collapse_and_above_chance(
        demo, [m for m in METHODS if m not in COLLAPSES_AT_DEMO_SCALE])


@pytest.mark.xfail(strict=True, reason="issue 24: uniform targets or predictions at demo scale (RESULTS.md)")
@pytest.mark.parametrize("method", COLLAPSES_AT_DEMO_SCALE)
def test_known_collapse_at_demo_scale(demo, method):
    assert_trained_without_collapse_and_above_chance(demo, [method])


def test_the_prior_table_and_figure_measure_every_method(demo):
    csv = table(demo, "prior")
    assert set(zip(csv.subset, csv.method)) == {(s, m) for s in PRIOR_SUBSETS for m in LABELS}
    assert csv.cluster_entropy_mean.between(0, 1).all() and csv.nmi_mean.between(0, 1).all()
    imbalanced = csv[csv.subset.str.startswith("imbalanced-")]
    balanced = csv[csv.subset.str.startswith("balanced-")]
    assert (imbalanced.class_entropy < 0.95).all() and (balanced.class_entropy > 0.99).all()
    prototypes = {catalog.label(m) for m in PROTOTYPE_METHODS}
    assert csv[csv.method.isin(prototypes)].usage_entropy_mean.notna().all()
    assert csv[~csv.method.isin(prototypes)].usage_entropy_mean.isna().all()
    png = demo / "results/figures/prior_cluster_sizes.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_cluster_table_has_nmi_of_both_partitions(demo):
    csv = table(demo, "clusters")
    assert set(zip(csv.subset, csv.kind)) == {(s, k) for s in IMBALANCED for k in ("kmeans", "random")}
    assert csv.nmi.between(0, 1).all() and (csv.k == 2).all() and (csv.normalize == "none").all()
    # Each expert's steps, from its own metrics.csv: expert epochs x (cluster size // min(batch, size)).
    epochs, batch = CONFIG["clustering"]["expert_epochs"], CONFIG["pretrain"]["batch_size"]
    for row in csv.itertuples():
        sizes = [int(s) for s in row.sizes.split(" / ")]
        assert row.expert_steps == " / ".join(str(epochs * (n // min(batch, n))) for n in sizes)
    # Both partitions of a subset have the same part sizes (the +D ablation copies them).
    for _, group in csv.groupby("subset"):
        assert group.sizes.nunique() == 1


def test_paired_differences_follow_tables_2_and_3(demo):
    gaps = table(demo, "table2_differences")
    assert sorted(zip(gaps.subset_a, gaps.subset_b, gaps.method_a)) == sorted(
        (s, s.replace("imbalanced-", "balanced-"), m) for s in PRIOR_SUBSETS if s.startswith("imbalanced-")
        for m in ("SimSiam", "SimCLR"))
    gains = table(demo, "table3_differences")
    assert sorted(zip(gains.subset_a, gains.method_a, gains.method_b)) == sorted(
        (s, m, "SimSiam") for s in IMBALANCED for m in ("SimSiam+C+D", "SimSiam+D"))
    assert (gains.pairs == 1).all() and gains.ci_low.isna().all()  # one seed: no interval
    t3 = table(demo, "table3").set_index(["subset", "method"]).top1_mean
    for row in gains.itertuples():
        assert row.mean == pytest.approx(t3[(row.subset_a, row.method_a)] - t3[(row.subset_b, row.method_b)], abs=1e-3)
    assert f"| SimSiam+C+D on {IMBALANCED[0]} | SimSiam on {IMBALANCED[0]} | 1 |" in \
        (demo / "results/tables/table3.md").read_text()


@pytest.mark.parametrize("name", ["figure1_class_distribution", "figure3_imbalanced-p100", "figure4_prototype_usage",
                                  "accuracy_vs_frequency_table2", "accuracy_vs_frequency_table3",
                                  "accuracy_vs_frequency_table4", "curves/imbalanced-p100",
                                  "curves/experiment2_imbalanced-p100", "prior_cluster_sizes"])
def test_figures_are_written_as_png_and_pdf(demo, name):
    png, pdf = (demo / "results/figures" / f"{name}.{ext}" for ext in ("png", "pdf"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 5_000


def test_prototype_usage_counts_every_image_of_the_subset(demo):
    import json

    n = len(pd.read_csv(demo / "results/subsets/imbalanced-p100.csv"))
    priors = {"msn": "uniform", "pmsn": "powerlaw", "swav": "uniform", "pswav": "powerlaw", "dino": "uniform"}
    assert set(PROTOTYPE_METHODS) == set(priors)
    for method, prior in priors.items():
        usage = json.loads((demo / f"results/prototypes/imbalanced-p100/{method}/seed0.json").read_text())
        assert usage["prior"] == prior and sum(usage["counts"]) == n == usage["num_images"]


def test_nothing_to_do_after_the_run(demo):
    assert planned(demo) == {}


def nothing_to_do(workdir: Path, *args: str) -> str:
    """The dry run's output, asserted to plan no job."""
    result = snakemake(workdir, "-n", *args)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Nothing to be done" in result.stdout + result.stderr, result.stdout[-4000:]
    return result.stdout


def reversed_keys(value):
    if isinstance(value, dict):
        return {key: reversed_keys(value[key]) for key in reversed(list(value))}
    return value


def test_the_same_settings_through_another_invocation_rerun_nothing(demo):
    """The rerun contract: the same settings reached another way render the same params."""
    import yaml

    nothing_to_do(demo, *DEMO)
    nothing_to_do(demo, "--configfile", "config.yaml", "config/demo.yaml")
    shuffled = demo / "demo-reordered.yaml"
    shuffled.write_text(yaml.safe_dump(reversed_keys(yaml.safe_load((demo / "config/demo.yaml").read_text())),
                                       sort_keys=False))
    nothing_to_do(demo, "--configfile", str(shuffled))
    # Values already set, repeated on the command line (an integer where the file has a float,
    # a schema default spelled out).
    nothing_to_do(demo, *DEMO, "--config", "pretrain={epochs: 12, batch_size: 128}", "evaluation={lr: 30}",
                  "augment={crop_max_scale: 1}", "seeds=[0]")


def test_where_jobs_run_reruns_nothing(demo):
    """GPUs, nodes and GPU slots are resources of the jobs, not their settings."""
    nothing_to_do(demo, *DEMO, "--config", "pretrain={gpus: 2, nodes: 2, gpu_slots: 1}", "gpu_slots_per_device=2",
                  "clustering={expert_gpus: 2, expert_gpu_slots: 2}")


def test_evaluation_settings_rerun_evaluations_and_tables_only(demo):
    assert planned(demo, "--config", "evaluation={epochs: 5}") == {"evaluate": EVALUATED, **ALL_VIEWS}
    # the reference protocol (augmented probe) instead of the demo's precomputed features: no training
    assert planned(demo, "--config", "evaluation={augment: true}") == {"evaluate": EVALUATED, **ALL_VIEWS}


def test_the_expert_step_threshold_rewrites_the_cluster_table_only(demo):
    assert planned(demo, "--config", "clustering={min_expert_steps: 10}") == {"cluster_table": 1}


def test_the_student_init_reruns_the_students_only(demo):
    students = len(IMBALANCED) * len(catalog.STUDENTS)
    assert planned(demo, "--config", "clustering={distill: {init: scratch}}") == {
        "distill": students, "evaluate": students, **EXPERIMENT_II_VIEWS, **PER_CLASS, **STAGES}


# Experiment II from the clusters on: per clustered subset one k-means, one random partition,
# k experts of each partition, a student of each, evaluated.
EXPERIMENT_II_AFTER_CLUSTERING = {"cluster": len(IMBALANCED), "partition_random": len(IMBALANCED),
                                  "expert": 2 * K * len(IMBALANCED), "distill": 2 * len(IMBALANCED),
                                  "evaluate": 2 * len(IMBALANCED), **EXPERIMENT_II_VIEWS, **PER_CLASS,
                                  "cluster_table": 1, "figure3": len(IMBALANCED), **STAGES}
FIGURES = {"figure1": 1, "figure3": len(IMBALANCED), "figure4": 1, "frequency_table2": 1, "frequency_table3": 1,
           "frequency_table4": 1, "prior_figure": 1, **CURVES, **STAGES}


def test_plot_settings_redraw_figures_only(demo):
    assert planned(demo, "--config", "plots={dpi: 80}") == FIGURES


@pytest.mark.parametrize("override", ["analysis={groups: thresholds, head_above: 60, tail_below: 30}",
                                      "analysis={tail_below: 5}"])
def test_group_settings_rewrite_the_class_tables_and_figures_only(demo, override):
    """Head/medium/tail are computed from the result files: no training, no evaluation."""
    counts = planned(demo, "--config", override)
    assert counts == {"table2_groups": 1, "table3_groups": 1, "table4_groups": 1, "per_class_table": 1,
                      "frequency_table2": 1, "frequency_table3": 1, "frequency_table4": 1}
    assert not (TRAINING_RULES | {"evaluate"}) & set(counts)


def test_a_simclr_setting_retrains_simclr_and_what_depends_on_it(demo):
    assert planned(demo, "--config", "simclr={temperature: 0.2}") == one_method_retrained("simclr")


@pytest.mark.parametrize("override", ["swav={temperature: 0.2}", "swav={augment: {blur_p: [0.2]}}"])
def test_a_swav_setting_or_augmentation_retrains_swav_only(demo, override):
    """A method's own section, its augmentation recipe included, reruns that method alone
    (power-law SwAV's section inherits swav's in config.yaml, but is its own section)."""
    counts = planned(demo, "--config", override)
    assert counts == one_method_retrained("swav")
    assert counts["pretrain"] == len(SUBSETS)  # not pswav's


def test_the_prior_measurement_settings_rerun_the_measurement_only(demo):
    assert planned(demo, "--config", "prior_clusters={n_init: 2}") == {"cluster_sizes": len(PRIOR_SUBSETS) * len(METHODS),
                                                                       **PRIOR_MEASURED}


@pytest.mark.parametrize("override", ["clustering={n_init: 2}", "clustering={normalize: l2}"])
def test_a_clustering_setting_reruns_experiment_ii_from_the_clusters_on(demo, override):
    assert planned(demo, "--config", override) == EXPERIMENT_II_AFTER_CLUSTERING


def test_the_test_view_reruns_evaluations_and_tables_only(demo):
    """evaluation.test_transform changes the images evaluation sees, never what was trained."""
    assert planned(demo, "--config", "evaluation={test_transform: none}") == {"evaluate": EVALUATED, **ALL_VIEWS}


def test_an_added_imbalance_factor_trains_its_new_subsets_only(demo):
    """p = 10 beside the demo's p = 100: its two subsets are drawn and every method trains and is
    measured on them; nothing that ran reruns (each subset is its own job, drawn from its own
    stream), only the views that read every subset file (the subset figure, the group tables and
    frequency figures, which place each class in its group) or now show the new rows, and the
    accuracy-against-imbalance figures that two factors make possible."""
    new = 2  # imbalanced-p10, balanced-p10
    counts = planned(demo, "--config", "subsets={imbalance_factors: [10, 100]}")
    assert counts == {"subsets": new, "pretrain": new * len(METHODS), "evaluate": new * len(METHODS),
                      "cluster_sizes": new * len(METHODS), "prototype_usage": new * len(PROTOTYPE_METHODS),
                      "training_curves": new, **EXPERIMENT_I_VIEWS, **PRIOR_VIEWS, **PER_CLASS, **PRIOR_MEASURED,
                      "figure1": 1, "table3_groups": 1, "frequency_table3": 1,
                      "imbalance_table2": 1, "imbalance_table4": 1}


def test_what_k_means_sees_reruns_experiment_ii_from_the_features_on(demo):
    """The base model is kept; its features, the clusters and everything after them rerun."""
    assert planned(demo, "--config", "clustering={features: projector}") == {
        "features": len(IMBALANCED), **EXPERIMENT_II_AFTER_CLUSTERING}


def test_the_regression_target_reruns_the_students_only(demo):
    students = len(IMBALANCED) * len(catalog.STUDENTS)
    assert planned(demo, "--config", "clustering={distill: {target: projector}}") == {
        "distill": students, "evaluate": students, **EXPERIMENT_II_VIEWS, **PER_CLASS, **STAGES}


def test_one_schedule_over_the_stages_reruns_experiment_ii_from_the_base_on(demo):
    """A continuous schedule changes how the base trains (its cosine runs over the whole budget):
    the base and all that follows it rerun, Experiment I's models do not."""
    counts = planned(demo, "--config", "clustering={schedule: continuous}")
    assert counts == {"base": len(IMBALANCED), "features": len(IMBALANCED), **EXPERIMENT_II_AFTER_CLUSTERING}
    assert "pretrain" not in counts


@dataclass(frozen=True)
class PlannedJob:
    rule: str
    output: str  # its first output file
    command: str  # the imbssl command its shell runs
    method: str | None  # --method of a pretrain job


def every_job(workdir: Path) -> list[PlannedJob]:
    """Every job of the demo with the imbssl command it runs, from a dry run of all of them."""
    done = snakemake(workdir, "-n", "-p", "--forceall", *DEMO)
    assert done.returncode == 0, done.stderr[-4000:]
    jobs, rule, output = [], None, None
    for line in done.stdout.splitlines():
        if match := re.match(r"(?:local)?rule (\w+):$", line):
            rule, output = match.group(1), None
        elif line.startswith("    output: "):
            output = line.removeprefix("    output: ").split(", ")[0]
        elif line.startswith("Shell command: ") and (command := re.search(r"imbssl ([a-z-]+)", line)):
            method = re.search(r"--method (\S+)", line)
            jobs.append(PlannedJob(rule, output, command.group(1), method.group(1) if method else None))
    return jobs


def hashed_by(job: PlannedJob) -> set[str]:
    """The modules whose code the job's `code` param hashes (what its command imports)."""
    from imbssl.methods import catalog
    from imbssl.settings import hashed_modules

    entries = [COMMANDS[job.command].module]
    if job.command in ("pretrain", "prototype-usage"):  # the rules that add the method's module
        entries.append(f"imbssl.methods.{catalog.METHODS[job.method].module}")
    return set(hashed_modules(*entries))


def rerun_after_editing(workdir: Path, module: str) -> dict[str, int]:
    """What a dry run plans once the code of `module` changed in the copy."""
    path = workdir / "src" / Path(*module.split(".")).with_suffix(".py")
    original = path.read_text()
    try:
        path.write_text(original + "\n_RERUN_TEST = None\n")
        return planned(workdir)
    finally:
        path.write_text(original)


def test_a_comment_edit_reruns_nothing_and_a_code_edit_reruns_evaluations_not_training(demo):
    module = demo / "src/imbssl/evaluation/linear.py"
    original = module.read_text()
    try:
        module.write_text(original + "\n# A comment or docstring edit changes nothing.\n")
        assert planned(demo) == {}
    finally:
        module.write_text(original)
    counts = rerun_after_editing(demo, "imbssl.evaluation.linear")
    # Checked by hand: 9 methods x 3 subsets, and the 2 students of Experiment II on its one subset
    # (the derived rule below agrees).
    assert counts == {"evaluate": 9 * 3 + 2, **ALL_VIEWS}
    assert not TRAINING_RULES & set(counts)


# Modules across the layers; what an edit to each reruns is derived, not listed: the jobs whose
# command imports the module (their code params change) and everything built on their outputs,
# which is what Snakemake plans when exactly those jobs are forced (`--forcerun` their outputs).
EDITED_MODULES = ["imbssl.methods.simclr", "imbssl.methods.msn", "imbssl.methods.simsiam", "imbssl.methods.swav",
                  "imbssl.methods.ema", "imbssl.methods.distill", "imbssl.methods.prototypes", "imbssl.training.loop",
                  "imbssl.training.distill", "imbssl.clustering.partitions", "imbssl.clustering.prior",
                  "imbssl.evaluation.features", "imbssl.data.subsets", "imbssl.reporting.tables",
                  "imbssl.reporting.document", "imbssl.reporting.per_class", "imbssl.reporting.analysis",
                  "imbssl.reporting.figures", "imbssl.reporting.frequency", "imbssl.reporting.curves",
                  "imbssl.reporting.prior"]


@pytest.fixture(scope="module")
def demo_jobs(demo) -> list[PlannedJob]:
    jobs = every_job(demo)
    assert len(jobs) == sum(planned(demo, "--forceall").values())  # every job seen, each with its command
    return jobs


@pytest.mark.parametrize("module", EDITED_MODULES)
def test_a_code_edit_reruns_exactly_the_jobs_that_run_the_module(demo, demo_jobs, module):
    affected = [job.output for job in demo_jobs if module in hashed_by(job)]
    assert affected, f"no job of the demo runs {module}"
    expected = planned(demo, "--forcerun", *affected)
    assert rerun_after_editing(demo, module) == expected


def test_an_edit_to_one_method_reruns_that_method_only(demo, demo_jobs):
    """An anchor for the derivation above, counted by hand: SimCLR's module retrains its models on
    every subset, their evaluations and prior measurements and the views that read them, nothing of
    the other methods."""
    counts = rerun_after_editing(demo, "imbssl.methods.simclr")
    assert counts == one_method_retrained("simclr")
    assert counts["pretrain"] == len(SUBSETS) == 3


def test_the_progress_display_reruns_nothing(demo):
    """How a bar or a log line looks is not part of any job's code."""
    assert rerun_after_editing(demo, "imbssl.training.progress") == {}


def report_items(html: str) -> list[str]:
    """The paths of the files a Snakemake report holds (its `results` object)."""
    import json

    script = html.split('<script id="results">', 1)[1]
    return list(json.loads(script.split("var results = ", 1)[1].split(";\n", 1)[0]))


def test_report_holds_every_table_and_figure(demo):
    done = snakemake(demo, "--report", "results/report.html", *DEMO)
    assert done.returncode == 0, done.stderr[-4000:]
    html = (demo / "results/report.html").read_text()
    items = {Path(path).name if "curves/" not in path else path.split("figures/")[1] for path in report_items(html)}
    tables = ("table2", "table3", "table4", "clusters", "table2_groups", "table3_groups", "table4_groups", "per_class",
              "prior")
    for name in (*(f"{table}.{ext}" for table in tables for ext in ("html", "csv")),
                 "figure1_class_distribution.png",
                 "figure3_imbalanced-p100.png", "figure4_prototype_usage.png", "prior_cluster_sizes.png", "accuracy_vs_frequency_table2.png",
                 "accuracy_vs_frequency_table3.png", "accuracy_vs_frequency_table4.png",
                 "curves/experiment2_imbalanced-p100.png", *(f"curves/{subset}.png" for subset in SUBSETS)):
        assert name in items, name
    assert not any(name.endswith(".md") for name in items)  # the HTML page shows it; the Markdown stays beside it
    for category in ("Experiment I", "Experiment II", "Hidden uniform prior", "Per class", "Training curves"):
        assert f'"{category}"' in html, category
    # The first page describes the run from the results' provenance (the demo's, not config.yaml's).
    for words in ("The run shown here", "from the provenance of its 29 result files", "digits: 10 classes",
                  "ResNet-10 (width 8), 12 epochs, batch 128", "vit_mini, 12 epochs, batch 128, 64 prototypes",
                  "imbalance factor 100", "distilled for 3 epochs from a base model and 2 experts (k = 2)"):
        assert words in html, words


def test_report_under_a_config_the_results_were_not_made_with_stops_in_one_line(demo):
    """The demo's results reported under config.yaml (cifar10, ResNet-18, 300 epochs): no report."""
    done = snakemake(demo, "--report", "results/wrong.html")
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.startswith("snakemake --report:")]
    assert len(lines) == 1, done.stderr[-4000:]
    for mismatch in ("dataset: digits in the results, cifar10 in this config",
                     "training --arch: resnet10 in the results, resnet18 in this config",
                     "training --epochs: 12 in the results, 300 in this config"):
        assert mismatch in lines[0], mismatch
    assert "Traceback" not in done.stderr and not (demo / "results/wrong.html").exists()
    # One setting off is caught too: the kNN k of the evaluation.
    done = snakemake(demo, "--report", "results/wrong.html", *DEMO, "--config", "evaluation={knn_k: 10}")
    assert done.returncode != 0 and "evaluate --knn-k: 20 in the results, 10 in this config" in done.stderr


def test_models_and_results_record_the_code_hash_their_rule_carries(demo):
    import json
    import os
    import subprocess
    import sys

    from imbssl.core.artifacts import read_model

    code = ("from imbssl.cli import command_code_hash as h; import json; "
            "print(json.dumps([h('pretrain', 'simclr'), h('evaluate')]))")
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(demo / "src")},
                          capture_output=True, text=True, check=True)
    pretrain_hash, evaluate_hash = json.loads(done.stdout)
    model = read_model(demo / "results/pretrain/imbalanced-p100/simclr/seed0/model.pt")
    assert model.meta.provenance["code_hash"] == pretrain_hash and model.meta.provenance["command"] == "pretrain"
    result = json.loads((demo / "results/eval/imbalanced-p100/simclr/seed0.json").read_text())
    assert result["provenance"]["code_hash"] == evaluate_hash and result["version"] == 2
