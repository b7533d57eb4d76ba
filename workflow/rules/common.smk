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
METHODS = config["methods"]
SEEDS = config["seeds"]


wildcard_constraints:
    subset="|".join(map(re.escape, SUBSETS)),
    method="|".join(map(re.escape, METHODS)),
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
        words.append("--" + key.replace("_", "-"))
        if isinstance(value, bool):
            words.append(str(value).lower())
        elif isinstance(value, (list, tuple)):
            words.extend(str(item) for item in value)
        else:
            words.append(str(value))
    return " ".join(shlex.quote(word) for word in words)


def pretrain_flags(method):
    """Training loop + backbone + augmentations + the method's own section."""
    sections = ("pretrain", "model", "augment", method)
    return " ".join(cli_flags(config[section]) for section in sections)


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


def pretrain_runtime(wildcards, attempt):
    """Minutes for SLURM: generous for a GPU at paper scale, longer on each retry."""
    return attempt * (30 + config["pretrain"]["epochs"] // 2)


def eval_subset_csv(wildcards):
    """Models trained on imbalanced-pX are evaluated on balanced-pX (same size); others on themselves."""
    return f"results/subsets/{eval_subset_name(wildcards.subset)}.csv"


def result_jsons(subsets=SUBSETS, methods=METHODS, seeds=SEEDS):
    return expand(
        "results/eval/{subset}/{method}/seed{seed}.json",
        subset=subsets,
        method=methods,
        seed=seeds,
    )
