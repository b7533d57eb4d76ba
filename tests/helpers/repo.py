"""Copies of the repository and Snakemake runs in them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WORKFLOW_FILES = ("Snakefile", "config.yaml")
WORKFLOW_DIRS = ("config", "workflow", "envs")


def repo_files() -> list[str]:
    """Tracked files and untracked ones git does not ignore (new modules, rules, tests)."""
    listing = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                             cwd=REPO, capture_output=True, text=True, check=True)
    return [name for name in listing.stdout.split("\0") if name and (REPO / name).is_file()]


def copy_repo(dest: Path) -> Path:
    """The whole working tree (what git would commit) in `dest`: its own package under src/, which
    Snakemake runs through PYTHONPATH (see `snakemake`), so a module can be edited there."""
    for name in repo_files():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, dest / name)
    return dest


def copy_workflow(dest: Path) -> Path:
    """Just what `snakemake -n` reads (the Snakefile, configs, rules, schema, envs)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        shutil.copy(REPO / name, dest / name)
    for name in WORKFLOW_DIRS:
        shutil.copytree(REPO / name, dest / name)
    return dest


def snakemake(workdir: Path, *args: str, timeout: int = 120, **env: str) -> subprocess.CompletedProcess:
    """`python -m snakemake ARGS` in `workdir`, running the copy's own package when it has one."""
    environment = {**os.environ, **env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    if (workdir / "src" / "imbssl").is_dir():
        environment["PYTHONPATH"] = str(workdir / "src")
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=workdir, env=environment,
                          capture_output=True, text=True, timeout=timeout)


def dry_run(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return snakemake(workdir, "-n", "--quiet", "rules", *args)


def job_counts(stdout: str) -> dict[str, int]:
    """Rule -> jobs, from the `--quiet rules` table of a dry run (without `all` and `total`)."""
    counts = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("all", "total"):
            counts[parts[0]] = int(parts[1])
    return counts
