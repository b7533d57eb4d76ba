"""The workflow as a Snakemake module of another workflow (README, "Use as a Snakemake module").

A caller Snakefile in a folder outside the repository takes every rule with
`use rule * from imbssl as imbssl_*` and the demo config through `config:`; its dry run must plan
what a dry run of the repository itself plans, rule by rule, with the same rules kept local.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
PREFIX = "imbssl_"

# What both runs print after parsing, so that the test can compare them: the rules Snakemake keeps
# on the submitting host (its own set, which a dry run does not show), and for the module, where
# the conda envs install the package from and where one output lands.
PROBE = """
import os
print("LOCALRULES", *sorted(workflow._localrules))
print("WORKFLOW_DIR", os.environ["IMBSSL_WORKFLOW_DIR"])
"""

# The caller: the demo preset merged over the paper's config.yaml, handed to the module.
CALLER = """
from pathlib import Path

IMBSSL = Path({repo!r})


configfile: str(IMBSSL / "config.yaml")
configfile: str(IMBSSL / "config" / "demo.yaml")


module imbssl:
    snakefile:
        str(IMBSSL / "Snakefile")
    config:
        config


use rule * from imbssl as imbssl_*

print("OUTPUT", rules.imbssl_prepare_data.output.train)
"""


def dry_run(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "snakemake", *args, "-n", "--quiet", "rules"],
                            cwd=workdir, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def job_counts(stdout: str) -> dict[str, int]:
    """Rule -> jobs (and `total`), from the `--quiet rules` table of a dry run."""
    counts = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    return counts


def printed(stdout: str, key: str) -> list[str]:
    (line,) = {line for line in stdout.splitlines() if line.startswith(f"{key} ")}
    return line.split()[1:]


def unprefixed(names, prefix: str = PREFIX) -> set[str]:
    assert all(name.startswith(prefix) or name == "total" for name in names), names
    return {name.removeprefix(prefix) for name in names}


@pytest.fixture(scope="module")
def repo_plan(tmp_path_factory) -> subprocess.CompletedProcess:
    """A dry run of the repository itself (a copy of it) with --configfile config/demo.yaml."""
    copy = tmp_path_factory.mktemp("repo")
    for name in ("Snakefile", "config.yaml"):
        shutil.copy(REPO / name, copy / name)
    for name in ("config", "workflow", "envs"):
        shutil.copytree(REPO / name, copy / name)
    (copy / "probe.smk").write_text('include: "Snakefile"\n' + PROBE)
    # The target named: an included Snakefile's `default_target` does not make it the default.
    return dry_run(copy, "all", "-s", "probe.smk", "--configfile", "config/demo.yaml")


@pytest.fixture(scope="module")
def module_plan(tmp_path_factory) -> subprocess.CompletedProcess:
    caller = tmp_path_factory.mktemp("caller")
    assert REPO not in caller.parents and caller != REPO
    (caller / "Snakefile").write_text(CALLER.format(repo=str(REPO)) + PROBE)
    return dry_run(caller)


def test_module_plans_the_demo_as_the_repository_does(repo_plan, module_plan):
    expected = job_counts(repo_plan.stdout)
    assert expected["total"] > 1 and "pretrain" in expected
    planned = {(name if name == "total" else name.removeprefix(PREFIX)): count
               for name, count in job_counts(module_plan.stdout).items()}
    assert unprefixed(job_counts(module_plan.stdout)) == set(expected)
    assert planned == expected


def test_module_keeps_the_same_rules_local(repo_plan, module_plan):
    local = set(printed(repo_plan.stdout, "LOCALRULES"))
    assert {"table2", "figure1", "partition_random", "table3_groups"} <= local
    assert unprefixed(printed(module_plan.stdout, "LOCALRULES")) == local
    assert "not present in the Snakefile" not in module_plan.stderr


def test_module_finds_its_files_in_the_repository_and_writes_under_the_callers_folder(module_plan):
    assert Path(printed(module_plan.stdout, "WORKFLOW_DIR")[0]) == REPO
    assert printed(module_plan.stdout, "OUTPUT") == ["results/data/train.npz"]
