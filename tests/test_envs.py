"""The conda environments in envs/: their structure, and that pip installs this repository from
where Snakemake hands the files to conda (conda and its channels cannot be reached from CI, so no
conda solve is tested)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ENVS = REPO / "envs"

# PyPI name in pyproject.toml -> conda-forge name, where they differ.
CONDA_NAME = {"torch": "pytorch", "matplotlib": "matplotlib-base"}
# Dependencies of the pipeline driver, not of the jobs running inside an environment.
NOT_IN_JOB_ENVS = {"snakemake"}
# name, optional version constraint (e.g. ">=2.2", "=3.11", ">=12.0,<13")
MATCH_SPEC = re.compile(r"^[a-z0-9][a-z0-9_.-]*(?:\s*(?:[<>=!~]=?|==)[0-9][0-9a-z.*]*(?:,[<>=!]=?[0-9][0-9a-z.*]*)*)?$")


def load_env(name: str) -> dict:
    return yaml.safe_load((ENVS / name).read_text())


def conda_packages(env: dict) -> dict[str, str]:
    """package name -> its full match spec, for the conda (non-pip) dependencies."""
    specs = [d for d in env["dependencies"] if isinstance(d, str)]
    return {re.split(r"[<>=!~\s]", spec, maxsplit=1)[0]: spec for spec in specs}


def pip_requirements(env: dict) -> list[str]:
    return [req for d in env["dependencies"] if isinstance(d, dict) for req in d.get("pip", [])]


def project_requirements() -> dict[str, str]:
    """conda name -> minimum version, from pyproject.toml's dependencies."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    required = {}
    for dep in deps:
        name, version = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", dep).groups()
        if name not in NOT_IN_JOB_ENVS:
            required[CONDA_NAME.get(name, name)] = version
    return required


@pytest.mark.parametrize("env_file", ["pytorch.yaml", "cuml.yaml"])
def test_env_file_structure(env_file):
    env = load_env(env_file)
    assert set(env) == {"name", "channels", "dependencies"}, f"{env_file}: keys {sorted(env)}"
    assert env["name"].startswith("imbssl-")
    assert "conda-forge" in env["channels"] and "defaults" not in env["channels"]
    assert env["channels"][-1] == "nodefaults", f"{env_file}: end channels with nodefaults (no Anaconda defaults)"
    for dep in env["dependencies"]:
        assert isinstance(dep, str) or set(dep) == {"pip"}, f"{env_file}: unexpected entry {dep!r}"
        if isinstance(dep, str):
            assert MATCH_SPEC.match(dep), f"{env_file}: {dep!r} is not a conda match spec"


@pytest.mark.parametrize("env_file", ["pytorch.yaml", "cuml.yaml"])
def test_env_has_every_project_dependency_at_the_same_minimum(env_file):
    packages = conda_packages(load_env(env_file))
    for name, version in project_requirements().items():
        assert name in packages, f"{env_file} lacks {name} (a dependency in pyproject.toml)"
        assert f">={version}" in packages[name], f"{env_file}: {packages[name]!r} but pyproject.toml says >={version}"
    assert "pytorch-gpu" in packages, f"{env_file}: the CUDA build of PyTorch (pytorch-gpu) is missing"
    assert "pip" in packages


# What the Snakefile sets to its own folder, for pip to expand in the envs' requirements.
WORKFLOW_DIR_VAR = "IMBSSL_WORKFLOW_DIR"


def copy_as_snakemake_does(env_file: Path, workdir: Path) -> Path:
    """Snakemake's step before `conda env create` (snakemake/deployment/conda.py, Env.create): the
    env file is copied to .snakemake/conda/<hash>.yaml and conda is given that copy."""
    target = workdir / ".snakemake" / "conda" / "0123456789abcdef.yaml"
    target.parent.mkdir(parents=True)
    shutil.copy(env_file, target)
    return target


def pip_install_report(env_copy: Path, **env_vars: str) -> dict:
    """What conda's pip installer (conda/env/installers/pip.py) does with the copy's pip section:
    the requirements go to a file beside the copy, and pip runs in the copy's folder; here as a
    dry run with pip's JSON report instead of an install."""
    requirements = env_copy.parent / "condaenv.test.requirements.txt"
    requirements.write_text("\n".join(pip_requirements(yaml.safe_load(env_copy.read_text()))))
    report = env_copy.parent / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--no-build-isolation",
         "--ignore-installed", "--quiet", "--report", str(report), "-r", str(requirements)],
        cwd=env_copy.parent, env={**os.environ, **env_vars}, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(report.read_text())


def installed_project(report: dict) -> tuple[str, Path, bool]:
    """(name, source folder, editable) of the one package a pip report installs."""
    (item,) = report["install"]
    url = item["download_info"]["url"]
    assert url.startswith("file://"), url
    editable = item["download_info"].get("dir_info", {}).get("editable", False)
    return item["metadata"]["name"], Path(url.removeprefix("file://")), editable


@pytest.mark.parametrize("env_file", ["pytorch.yaml", "cuml.yaml"])
def test_env_installs_this_project_from_where_snakemake_copies_it(env_file, tmp_path):
    pytest.importorskip("setuptools", reason="pip builds the project's metadata with setuptools (no isolation)")
    assert pip_requirements(load_env(env_file)) == [f"-e ${{{WORKFLOW_DIR_VAR}}}"], env_file
    copy = copy_as_snakemake_does(ENVS / env_file, tmp_path)
    name, source, editable = installed_project(pip_install_report(copy, **{WORKFLOW_DIR_VAR: str(REPO)}))
    assert (name, source.resolve(), editable) == ("imbssl", REPO, True)
    assert tomllib.loads((source / "pyproject.toml").read_text())["project"]["name"] == "imbssl"


def test_a_relative_project_path_misses_the_project_once_copied(tmp_path):
    """Why the envs do not say `-e ..`: from the copy's folder it is .snakemake/, not this repo."""
    copy = copy_as_snakemake_does(ENVS / "pytorch.yaml", tmp_path)
    requirements = copy.parent / "condaenv.test.requirements.txt"
    requirements.write_text("-e ..")
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "-r", str(requirements)],
                            cwd=copy.parent, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and ".snakemake" in result.stderr, result.stderr


def test_cuml_env_has_rapids_from_its_channel():
    env = load_env("cuml.yaml")
    packages = conda_packages(env)
    assert {"cuml", "cupy", "cuda-version"} <= set(packages)
    # RAPIDS packages are on rapidsai only, and it must take priority over conda-forge.
    assert env["channels"].index("rapidsai") < env["channels"].index("conda-forge")


def test_env_names_are_distinct():
    assert load_env("pytorch.yaml")["name"] != load_env("cuml.yaml")["name"]


# A stand-in for conda, for Snakemake's own code path (--sdm conda): it answers Snakemake's checks,
# and `env create` does what conda's pip installer does with the file Snakemake hands it (the pip
# section as a requirements file beside it, pip run in its folder), as a dry run whose JSON report
# lands beside the env. conda itself cannot reach its channels here.
FAKE_CONDA = '''#!{python}
import json, subprocess, sys
from pathlib import Path

import yaml

args = sys.argv[1:]
if args == ["info", "--json"]:
    print(json.dumps({{"conda_prefix": str(Path(__file__).resolve().parents[1]), "platform": "linux-64"}}))
elif args == ["--version"]:
    print("conda 25.1.1")
elif args[:2] == ["config", "--get"]:
    print(json.dumps({{"get": {{"channel_priority": "strict"}}}}))
elif args[:1] == ["clean"]:
    pass
elif args[:2] == ["env", "create"]:
    env_file = Path(args[args.index("--file") + 1])
    prefix = Path(args[args.index("--prefix") + 1])
    specs = [req for dep in yaml.safe_load(env_file.read_text())["dependencies"] if isinstance(dep, dict)
             for req in dep.get("pip", [])]
    requirements = env_file.parent / "condaenv.fake.requirements.txt"
    requirements.write_text("\\n".join(specs))
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--no-build-isolation",
                           "--ignore-installed", "--quiet", "--report", f"{{prefix}}.pip-report.json",
                           "-r", str(requirements)], cwd=env_file.parent)
    prefix.mkdir(parents=True, exist_ok=True)
    sys.exit(done.returncode)
else:
    sys.exit(f"fake conda: unexpected arguments {{args}}")
'''


@pytest.mark.integration
def test_snakemake_sdm_conda_installs_this_project_from_another_working_directory(tmp_path):
    """`snakemake -s <repo>/Snakefile --sdm conda` run elsewhere: every env Snakemake creates gets
    this repository, editable (Snakemake's copy step, the Snakefile's variable, conda's pip step)."""
    pytest.importorskip("setuptools", reason="pip builds the project's metadata with setuptools (no isolation)")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "conda").write_text(FAKE_CONDA.format(python=sys.executable))
    (bin_dir / "conda").chmod(0o755)
    workdir = tmp_path / "work"
    workdir.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--configfile",
         str(REPO / "config" / "demo.yaml"), "--sdm", "conda", "--conda-create-envs-only", "--cores", "1"],
        cwd=workdir, env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reports = sorted((workdir / ".snakemake" / "conda").glob("*.pip-report.json"))
    copies = {path.read_text() for path in (workdir / ".snakemake" / "conda").glob("*.yaml")}
    assert copies == {(ENVS / name).read_text() for name in ("pytorch.yaml", "cuml.yaml")}
    assert len(reports) == 2
    for report in reports:
        name, source, editable = installed_project(json.loads(report.read_text()))
        assert (name, source.resolve(), editable) == ("imbssl", REPO, True), report
