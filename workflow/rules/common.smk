"""Shared by all rules files — the experiment grid, config slices rendered as CLI flags, code hashes.

The one hop from a setting to its use: config key (`pretrain.batch_size`) -> the params of the
rule that uses it -> CLI flag of the same name (`--batch-size`) -> dataclass field. A rule's params
carry only its own config slices, so Snakemake's params trigger reruns exactly the jobs whose
settings changed (and, through their outputs, what depends on them).
"""

import ast
import functools
import hashlib
import importlib.util
import re
import shlex
from pathlib import Path

from imbssl.report import method_label
from imbssl.subsets import eval_subset_name, subset_names

SUBSETS = subset_names(config["subsets"]["imbalance_factors"])
METHODS = config["methods"]  # pretrained by the pretrain rule
SEEDS = config["seeds"]
# Experiment I baselines (Table 2) and the MSN family (Table 4), in the configured order.
BASELINES = [method for method in METHODS if method in ("simsiam", "simclr")]
PRIOR_METHODS = [method for method in METHODS if method in ("msn", "pmsn")]

# Experiment II: distilled students, saved under results/pretrain/ like the baselines so that
# one evaluate rule serves all; each is named after the partition its experts trained on.
STUDENT_PARTITION = {"simsiam-c-d": "kmeans", "simsiam-d": "random"}
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


def cli_flags(settings):
    """{"batch_size": 64, "amp": True} -> "--batch-size 64 --amp true", shell-quoted.

    Keys are dataclass fields, so the flags are exactly those of `imbssl.settings.add_flags`.
    None means "the command's default" and is left out; lists become space-separated values.
    """
    words = []
    for key, value in settings.items():
        if value is None:
            continue
        words.append(f"--{key.replace('_', '-')}")
        if isinstance(value, bool):
            words.append(str(value).lower())
        elif isinstance(value, (list, tuple)):
            words.extend(str(item) for item in value)
        else:
            words.append(str(value))
    return " ".join(shlex.quote(word) for word in words)


def method_settings(method):
    """The method's own section without its `model` subsection (the method's dataclass fields)."""
    return {key: value for key, value in config[method].items() if key != "model"}


def method_model(method):
    """The global `model` section with the method's own `model` subsection (if any) merged over it."""
    return {**config["model"], **config[method].get("model", {})}


def pretrain_flags(method, epochs=None):
    """Training loop (with `epochs` replaced, for Experiment II stages) + backbone + augmentations
    + the method's own section."""
    train = (
        config["pretrain"]
        if epochs is None
        else {**config["pretrain"], "epochs": epochs}
    )
    return " ".join(
        cli_flags(section)
        for section in (
            train,
            method_model(method),
            config["augment"],
            method_settings(method),
        )
    )


def _code_without_docs(path):
    """The module's code with comments, docstrings and formatting dropped."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree)


# The installed package the rules' commands run (found without importing it).
PACKAGE_DIR = Path(importlib.util.find_spec("imbssl").origin).parent


@functools.cache
def code_hash(*patterns):
    """Hash of the installed package modules a rule runs, as a param.

    Snakemake does not track imported modules; with this param, an edit to the code of
    evaluate.py (say) reruns the evaluation jobs but a comment or docstring edit does not.
    """
    digest = hashlib.sha256()
    for pattern in patterns:
        for path in sorted(PACKAGE_DIR.glob(pattern)):
            digest.update(path.relative_to(PACKAGE_DIR).as_posix().encode())
            digest.update(_code_without_docs(path).encode())
    return digest.hexdigest()[:16]


def pretrain_code(method):
    """The training loop and what it builds on, plus this method's module (not the other methods')."""
    own = f"methods/{method}.py"
    return code_hash(
        "train.py",
        "augment.py",
        "models.py",
        "vit.py",
        "optim.py",
        "features.py",
        "knn.py",
        "methods/__init__.py",
        "methods/registry.py",
        own if (PACKAGE_DIR / own).exists() else "methods/*.py",
    )


EVALUATE_CODE = code_hash("evaluate.py", "features.py", "knn.py")
REPORT_CODE = code_hash("report.py")
FEATURES_CODE = code_hash("features.py", "models.py", "vit.py")
CLUSTER_CODE = code_hash("cluster.py")
DISTILL_CODE = code_hash(
    "distill.py", "train.py", "augment.py", "models.py", "vit.py", "optim.py"
)
FIGURES_CODE = code_hash("figures.py", "report.py")
PROTOTYPES_CODE = code_hash("prototypes.py", "methods/msn.py", "features.py", "vit.py")
PLOT_PROTOTYPES_CODE = code_hash("plot_prototypes.py", "report.py")


# Every GPU rule's command starts with `python -m imbssl.gpu_lease --`: on a workstation it leases
# a free GPU per job (Snakemake hands out no device ids, snakemake#281); under SLURM or without a
# GPU it only runs the command.


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


def result_jsons(subsets=SUBSETS, methods=BASELINES, seeds=SEEDS):
    return expand(
        "results/eval/{subset}/{method}/seed{seed}.json",
        subset=subsets,
        method=methods,
        seed=seeds,
    )


# --- Experiment II paths and inputs (cluster.smk, distill.smk) ---

# One folder per subset and seed: base model, features, partitions.
CLUSTER_DIR = "results/clusters/{subset}/seed{seed}"


def partition_files(kind):
    """What the cluster / partition_random rules write into CLUSTER_DIR/{kind}/."""
    files = ["assignments.csv", "summary.json", "contingency.csv"]
    files += [f"cluster{j}.csv" for j in range(K)]
    return [f"{CLUSTER_DIR}/{kind}/{name}" for name in files]


def expert_inputs(wildcards):
    inputs = {
        "train": rules.prepare_data.output.train,
        "test": rules.prepare_data.output.test,
        "subset": f"{CLUSTER_DIR}/{{kind}}/cluster{{cluster}}.csv".format(**wildcards),
    }
    if config["clustering"]["expert_init"] == "base":
        inputs["init"] = rules.base.output.model.format(**wildcards)
    return inputs


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
