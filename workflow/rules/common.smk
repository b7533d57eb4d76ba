"""Shared by all rules files — the experiment grid, config slices rendered as CLI flags, code hashes.

The one hop from a setting to its use: config key (`pretrain.batch_size`) -> the params of the
rule that uses it -> CLI flag of the same name (`--batch-size`) -> dataclass field. A rule's params
carry only its own config slices, rendered canonically (imbssl.settings.cli_flags over the config
that the Snakefile put in the schema's order), plus a hash of the package modules the rule runs,
so Snakemake's params trigger reruns exactly the jobs whose settings or code changed (and,
through their outputs, what depends on them).
"""

import re

from imbssl.cli import command_code_hash
from imbssl.data.subsets import eval_subset_name, subset_names
from imbssl.methods import catalog
from imbssl.methods.catalog import label as method_label
from imbssl.reporting.overview import Expected
from imbssl.settings import cli_flags

SUBSETS = subset_names(
    config["subsets"]["imbalance_factors"], config["subsets"]["profile"]
)
METHODS = config["methods"]  # pretrained by the pretrain rule
SEEDS = config["seeds"]
# Experiment I baselines (Table 2), every method of Table 4, in the configured order, and the
# methods with prototypes (their usage: Figure 4 and the prior table), as the method catalog says.
BASELINES = catalog.table_methods("table2", METHODS)
PRIOR_METHODS = catalog.table_methods("table4", METHODS)
PROTOTYPE_METHODS = catalog.prototype_methods(METHODS)
# Accuracy against the imbalance factor needs two factors or more (not `subsets.profile: given`).
SWEPT = (
    config["subsets"]["profile"] != "given"
    and len(config["subsets"]["imbalance_factors"]) >= 2
)
# The hidden-prior measurement runs on every imbalanced subset and its balanced twin.
PRIOR_SUBSETS = [subset for subset in SUBSETS if subset != "full"]

# Experiment II: distilled students, saved under results/pretrain/ like the baselines so that
# one evaluate rule serves all; each is named after the partition its experts trained on.
STUDENT_PARTITION = {name: info.partition for name, info in catalog.STUDENTS.items()}
CLUSTERING_METHOD = catalog.CLUSTERING_METHOD  # the base's and the experts' method
CLUSTER_SUBSETS = config["clustering"]["subsets"]
KINDS = list(STUDENT_PARTITION.values())
K = config["clustering"]["k"]


wildcard_constraints:
    subset="|".join(map(re.escape, SUBSETS)),
    method="|".join(map(re.escape, [*METHODS, *STUDENT_PARTITION])),
    student="|".join(map(re.escape, STUDENT_PARTITION)),
    kind="|".join(KINDS),
    cluster=r"\d+",
    seed=r"\d+",


def method_settings(method):
    """The method's own section without its `model` and `augment` subsections (the method's
    dataclass fields)."""
    return {
        key: value
        for key, value in config[method].items()
        if key not in ("model", "augment")
    }


def method_model(method):
    """The global `model` section with the method's own `model` subsection (if any) merged over it."""
    return {**config["model"], **config[method].get("model", {})}


def method_augment(method):
    """The global `augment` section with the method's own `augment` subsection merged over it: a
    change to one method's recipe reruns that method only."""
    return {**config["augment"], **config[method].get("augment", {})}


# Keys of `pretrain` that say where a training job runs, not what it computes: they become the
# job's resources and launcher (gpu_resources), never training flags or params, so moving a run
# to more GPUs reruns nothing.
LAUNCH_KEYS = ("gpus", "nodes", "gpu_slots")


def train_settings(epochs=None):
    """The `pretrain` section as training flags (TrainSettings), `epochs` replaced for Experiment II."""
    settings = {
        key: value
        for key, value in config["pretrain"].items()
        if key not in LAUNCH_KEYS
    }
    return settings if epochs is None else {**settings, "epochs": epochs}


def pretrain_sections(method, epochs=None):
    """Training loop (with `epochs` replaced, for Experiment II stages) + backbone + augmentations
    + the method's own section: what a pretrain job of `method` runs with."""
    return [
        train_settings(epochs),
        method_model(method),
        method_augment(method),
        method_settings(method),
    ]


def pretrain_flags(method, epochs=None):
    return " ".join(cli_flags(section) for section in pretrain_sections(method, epochs))


def distill_sections():
    """What a student of Experiment II is distilled with (the distill rule's settings): its section,
    the training loop, the augmentations and its slice of a continuous schedule."""
    return [
        config["clustering"]["distill"],
        train_settings(config["clustering"]["distill_epochs"]),
        config["augment"],
        stage_schedule("distill"),
    ]


def trained_with(method):
    """Every training setting of a model of `method` (a student too), by its flag's name: what its
    model.pt records as provenance when this config made it."""
    sections = (
        distill_sections() if method in STUDENT_PARTITION else pretrain_sections(method)
    )
    return {key: value for section in sections for key, value in section.items()}


# Experiment II's stages: base, experts, student. Under `clustering.schedule: continuous` each runs
# its slice of one warm-up + cosine over all three (training.loop.StageSchedule); per_stage: its own.
STAGE_EPOCHS = {
    stage: config["clustering"][f"{stage}_epochs"]
    for stage in ("base", "expert", "distill")
}


def stage_schedule(stage):
    """The StageSchedule fields of a stage (empty under per_stage: each stage its own schedule)."""
    if config["clustering"]["schedule"] == "per_stage":
        return {}
    stages = list(STAGE_EPOCHS)
    start = sum(STAGE_EPOCHS[s] for s in stages[: stages.index(stage)])
    return {
        "schedule_start_epoch": start,
        "schedule_epochs": sum(STAGE_EPOCHS.values()),
    }


def stage_flags(stage):
    """A SimSiam stage's flags (base, expert): SimSiam's pretraining with the stage's epochs and its
    slice of the schedule."""
    return " ".join(
        flags
        for flags in (
            pretrain_flags(CLUSTERING_METHOD, epochs=STAGE_EPOCHS[stage]),
            cli_flags(stage_schedule(stage)),
        )
        if flags
    )


# The code hash of each command: what the module doing its work imports (imbssl.cli.COMMANDS),
# with a method, also that method's module (a change to SimCLR's code reruns SimCLR only).
def pretrain_code(method):
    return command_code_hash("pretrain", method)


def gpu_resources(gpus=1, nodes=1, slots="all"):
    """Resources of a GPU job on `gpus` GPUs per node, `nodes` nodes, and `slots` slots of a GPU
    ("all": whole GPUs; a job on several GPUs always takes them whole).

    `gpu` is what Snakemake counts against `--resources gpu=...` on a workstation, in GPU slots
    (GPUs x gpu_slots_per_device), and what the SLURM executor asks for (`--gpus`); a job on
    several nodes asks SLURM for `gres: gpu:<gpus>` per node instead. `launch` holds the options
    of `imbssl.orchestration.launch` (resources, not params: where a job runs never reruns it).
    """
    per_device = config["gpu_slots_per_device"]
    whole = slots == "all" or gpus > 1
    held = gpus * per_device if whole else int(slots)
    launch = (
        f"--gpus {gpus} --nodes {nodes} --slots {'all' if whole else slots}"
        f" --slots-per-device {per_device}"
    )
    if nodes > 1:
        return {"gpu": 0, "gres": f"gpu:{gpus}", "nodes": nodes, "launch": launch}
    return {"gpu": held, "nodes": 1, "launch": launch}


PRETRAIN_GPUS = gpu_resources(
    config["pretrain"]["gpus"],
    config["pretrain"]["nodes"],
    config["pretrain"]["gpu_slots"],
)
EXPERT_GPUS = gpu_resources(
    config["clustering"]["expert_gpus"], 1, config["clustering"]["expert_gpu_slots"]
)
# Features, k-means, evaluation, prototype usage: minutes on one GPU; they share it when
# gpu_slots_per_device > 1.
SMALL_GPU_JOB = gpu_resources(1, 1, 1)


def on_gpu(command):
    """A GPU rule's shell command, run by imbssl.orchestration.launch with the rule's `launch` resource: on a
    workstation it leases the job's GPUs or GPU slots (Snakemake hands out no device ids,
    snakemake#281); with several GPUs it runs the command under torchrun (srun + torchrun across
    SLURM nodes); under SLURM or without a GPU it leases nothing.

    `exec`: the shell makes way for the job, so that a SIGTERM (preemption, the time
    limit) reaches the training processes, which checkpoint at their step, and no shell
    dies of it first (SLURM signals every process of the job step; bash would end the
    job early)."""
    launch = "exec python -m imbssl.orchestration.launch {resources.launch}"
    return f"{launch} -- {command}"


def runtime_for(epochs):
    """Minutes for SLURM of a training job of `epochs` epochs: generous for a GPU at paper scale,
    longer on each retry."""

    def runtime(wildcards, attempt):
        return attempt * (30 + epochs // 2)

    return runtime


pretrain_runtime = runtime_for(config["pretrain"]["epochs"])


def eval_subset_csv(wildcards):
    """Models trained on imbalanced-pX are evaluated on balanced-pX (same size); others on themselves."""
    return f"results/subsets/{eval_subset_name(wildcards.subset)}.csv"


def table_title(title):
    """A table's title, saying so when one seed leaves the std unmeasured."""
    if len(SEEDS) < 2:
        title += " (one seed: std is 0; it needs at least two seeds)"
    return title


def result_jsons(subsets, methods, seeds=SEEDS):
    return expand(
        "results/eval/{subset}/{method}/seed{seed}.json",
        subset=subsets,
        method=methods,
        seed=seeds,
    )


# The result JSONs of each experiment's tables, and every evaluated run (the per-class table).
# Table 3 is Experiment II's (its subsets); the others span every subset.
TABLE_SUBSETS = {"table2": SUBSETS, "table3": CLUSTER_SUBSETS, "table4": SUBSETS}
EXPERIMENT_RESULTS = {
    table: result_jsons(TABLE_SUBSETS[table], catalog.table_runs(table, METHODS))
    for table in catalog.TABLES
}
ALL_RESULTS = sorted(set().union(*EXPERIMENT_RESULTS.values()))
# The hidden-prior measurement of every model on every imbalanced subset and its balanced twin, and
# the prototype usage of the methods with prototypes there.
PRIOR_CLUSTER_FILES = expand(
    "results/prior/{subset}/{method}/seed{seed}.json",
    subset=PRIOR_SUBSETS,
    method=METHODS,
    seed=SEEDS,
)
PRIOR_USAGE_FILES = expand(
    "results/prototypes/{subset}/{method}/seed{seed}.json",
    subset=PRIOR_SUBSETS,
    method=PROTOTYPE_METHODS,
    seed=SEEDS,
)


def expected_result(subset, method, seed):
    """What this config says made the result file of (subset, method, seed): the dataset, its
    evaluate job's settings and its model's training settings (a student's: also its experts, one
    per cluster, so clustering.k is compared too)."""
    training = trained_with(method)
    if method in STUDENT_PARTITION:
        training["experts"] = expand(
            rules.expert.output.model,
            subset=subset,
            kind=STUDENT_PARTITION[method],
            seed=seed,
            cluster=range(K),
        )
    return Expected(config["dataset"]["name"], config["evaluation"], training)


def report_expectations():
    """Every result file the report shows, with what made it, for `snakemake --report` to compare
    with the provenance the files record (imbssl.reporting.overview)."""
    return {
        f"results/eval/{subset}/{method}/seed{seed}.json": expected_result(
            subset, method, seed
        )
        for table in catalog.TABLES
        for subset in TABLE_SUBSETS[table]
        for method in catalog.table_runs(table, METHODS)
        for seed in SEEDS
    }


SUBSET_CSVS = expand("results/subsets/{subset}.csv", subset=SUBSETS)


# --- Experiment II paths and inputs (cluster.smk, distill.smk) ---

# One folder per subset and seed: base model, features, partitions.
CLUSTER_DIR = "results/clusters/{subset}/seed{seed}"


def partition_files(kind):
    """What the cluster / partition_random rules write into CLUSTER_DIR/{kind}/, by name."""
    folder = f"{CLUSTER_DIR}/{kind}"
    return {
        "assignments": f"{folder}/assignments.csv",
        "summary": f"{folder}/summary.json",
        "contingency": f"{folder}/contingency.csv",
        "clusters": [f"{folder}/cluster{j}.csv" for j in range(K)],
    }


def table_outputs(name, category, subcategory):
    """A results table as CSV, Markdown and HTML: in the report under the table's caption, the HTML
    page shown inline and the CSV to download (the Markdown, the same table, stays beside them).
    """

    def in_report(path):
        return report(
            path,
            caption=f"../report/{name}.rst",
            category=category,
            subcategory=subcategory,
        )

    return {
        "csv": in_report(f"results/tables/{name}.csv"),
        "md": f"results/tables/{name}.md",
        "html": in_report(f"results/tables/{name}.html"),
    }


def frequency_outputs(name, category):
    """An accuracy-against-class-frequency figure (PNG in the report, PDF beside it)."""
    return {
        "png": report(
            f"results/figures/accuracy_vs_frequency_{name}.png",
            caption="../report/accuracy_vs_frequency.rst",
            category=category,
            subcategory="Accuracy against class frequency",
        ),
        "pdf": f"results/figures/accuracy_vs_frequency_{name}.pdf",
    }


def imbalance_outputs(name, category):
    """An accuracy-against-imbalance-factor figure (PNG in the report, PDF beside it)."""
    return {
        "png": report(
            f"results/figures/accuracy_vs_imbalance_{name}.png",
            caption="../report/accuracy_vs_imbalance.rst",
            category=category,
            subcategory="Accuracy against imbalance factor",
        ),
        "pdf": f"results/figures/accuracy_vs_imbalance_{name}.pdf",
    }


def expert_inputs(wildcards):
    inputs = {
        "train": rules.prepare_data.output.train,
        "test": rules.prepare_data.output.test,
        "subset": f"{CLUSTER_DIR}/{{kind}}/cluster{{cluster}}.csv".format(**wildcards),
    }
    if config["clustering"]["expert_init"] == "base":
        inputs["init"] = rules.base.output.model.format(**wildcards)
    return inputs


def cluster_table_inputs(wildcards):
    """Every partition's summary.json and, in the same order (cluster 0 first), the metrics.csv of
    each of its experts (their optimizer steps go into the table)."""
    partitions = [
        (subset, seed, kind)
        for subset in CLUSTER_SUBSETS
        for seed in SEEDS
        for kind in KINDS
    ]
    return {
        "summaries": [
            f"results/clusters/{subset}/seed{seed}/{kind}/summary.json"
            for subset, seed, kind in partitions
        ],
        "experts": [
            rules.expert.output.metrics.format(
                subset=subset, kind=kind, seed=seed, cluster=j
            )
            for subset, seed, kind in partitions
            for j in range(K)
        ],
    }


def distill_inputs(wildcards):
    kind = STUDENT_PARTITION[wildcards.student]
    return {
        "base": rules.base.output.model.format(**wildcards),
        "experts": expand(
            rules.expert.output.model,
            subset=wildcards.subset,
            kind=kind,
            seed=wildcards.seed,
            cluster=range(K),
        ),
        "clusters": f"{CLUSTER_DIR}/{kind}/assignments.csv".format(**wildcards),
        "train": rules.prepare_data.output.train,
        "test": rules.prepare_data.output.test,
        "subset": f"results/subsets/{wildcards.subset}.csv",
    }
