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
from imbssl.settings import cli_flags

SUBSETS = subset_names(
    config["subsets"]["imbalance_factors"], config["subsets"]["profile"]
)
METHODS = config["methods"]  # pretrained by the pretrain rule
SEEDS = config["seeds"]
# Experiment I baselines (Table 2) and the prior methods (Table 4), in the configured order, and
# the methods with prototypes (their usage: Figure 4), as the method catalog says.
BASELINES = catalog.table_methods("table2", METHODS)
PRIOR_METHODS = catalog.table_methods("table4", METHODS, references=False)
PROTOTYPE_METHODS = catalog.prototype_methods(METHODS)

# Experiment II: distilled students, saved under results/pretrain/ like the baselines so that
# one evaluate rule serves all; each is named after the partition its experts trained on.
STUDENT_PARTITION = {name: info.partition for name, info in catalog.STUDENTS.items()}
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
    """The method's own section without its `model` subsection (the method's dataclass fields)."""
    return {key: value for key, value in config[method].items() if key != "model"}


def method_model(method):
    """The global `model` section with the method's own `model` subsection (if any) merged over it."""
    return {**config["model"], **config[method].get("model", {})}


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


def pretrain_flags(method, epochs=None):
    """Training loop (with `epochs` replaced, for Experiment II stages) + backbone + augmentations
    + the method's own section."""
    train = train_settings(epochs)
    return " ".join(
        cli_flags(section)
        for section in (
            train,
            method_model(method),
            config["augment"],
            method_settings(method),
        )
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
    """A results table as CSV and Markdown, both in the report under the table's caption."""
    return {
        ext: report(
            f"results/tables/{name}.{ext}",
            caption=f"../report/{name}.rst",
            category=category,
            subcategory=subcategory,
        )
        for ext in ("csv", "md")
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
