"""The conda environments in envs/, checked by structure only (conda cannot be reached from CI)."""

from __future__ import annotations

import re
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


@pytest.mark.parametrize("env_file", ["pytorch.yaml", "cuml.yaml"])
def test_env_installs_this_project_editable(env_file):
    requirements = pip_requirements(load_env(env_file))
    assert requirements == ["-e .."], f"{env_file}: pip section {requirements}"
    # conda runs pip from the environment file's folder: `..` must be the project root.
    assert (ENVS / ".." / "pyproject.toml").resolve() == REPO / "pyproject.toml"


def test_cuml_env_has_rapids_from_its_channel():
    env = load_env("cuml.yaml")
    packages = conda_packages(env)
    assert {"cuml", "cupy", "cuda-version"} <= set(packages)
    # RAPIDS packages are on rapidsai only, and it must take priority over conda-forge.
    assert env["channels"].index("rapidsai") < env["channels"].index("conda-forge")


def test_env_names_are_distinct():
    assert load_env("pytorch.yaml")["name"] != load_env("cuml.yaml")["name"]
