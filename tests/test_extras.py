"""The GPU k-means extras (pyproject.toml: cuml-cu13, cuml-cu12) resolve on PyPI, and everything
they bring is built for one CUDA major: torch's own CUDA libraries, cuML's and CuPy's.

No GPU needed: `pip install --dry-run --report` reads the packages' metadata only. It runs against
PyPI as a user's pip sees it, without this machine's pip configuration (its local wheel folders
and version caps)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
PYPI = "https://pypi.org/simple/"
# extra -> the CUDA major its name promises
EXTRAS = {"cuml-cu13": 13, "cuml-cu12": 12}
# Packages whose version's major is the CUDA major (the others carry it in their names).
VERSIONED_BY_CUDA = {"cuda-toolkit", "cuda-bindings", "nvidia-cuda-runtime"}


def pypi_unreachable_reason() -> str | None:
    try:
        urllib.request.urlopen(PYPI + "cuml-cu13/", timeout=15).close()
    except (urllib.error.URLError, OSError) as err:
        return f"PyPI cannot be reached from here ({err}); these tests resolve the extras against it"
    return None


@pytest.fixture(scope="module")
def pypi():
    reason = pypi_unreachable_reason()
    if reason:
        pytest.skip(reason)


def cuda_major(name: str, version: str | None = None) -> int | None:
    """The CUDA major a package is built for, read from its name (nvidia-nccl-cu13, cuml-cu12,
    cupy-cuda13x) or, for CUDA's own packages, from its version; None if it says nothing."""
    name = name.lower()
    if match := re.fullmatch(r".+-cu(\d+)", name) or re.fullmatch(r"cupy-cuda(\d+)x", name):
        return int(match.group(1))
    if name in VERSIONED_BY_CUDA and version:
        return int(version.split(".")[0])
    return None


def required_cuda_majors(requires_dist: list[str]) -> set[int]:
    """The CUDA majors a package's requirements pin (torch: nvidia-*-cuNN, cuda-toolkit==NN.x)."""
    majors = set()
    for line in requires_dist:
        requirement = Requirement(line)
        pinned = [spec.version for spec in requirement.specifier if spec.operator == "=="]
        major = cuda_major(requirement.name, pinned[0] if pinned else None)
        if major is not None:
            majors.add(major)
    return majors


def extra_requirements(extra: str) -> list[str]:
    """What `pip install imbssl[extra]` asks for: the project's dependencies and the extra's."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"][extra]]


def resolve(requirements: list[str], report: Path) -> dict[str, dict]:
    """name -> metadata of every package pip would install into an empty environment."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("PIP_") or key in ("PIP_CERT", "PIP_DEFAULT_TIMEOUT")}
    env["PIP_CONFIG_FILE"] = os.devnull  # no pip.conf: PyPI only, no local caps or wheel folders
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--disable-pip-version-check", "--report", str(report), *requirements],
        env=env, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, f"pip cannot resolve {requirements}:\n{done.stderr[-3000:]}"
    return {item["metadata"]["name"].lower(): item["metadata"] for item in json.loads(report.read_text())["install"]}


def test_cuda_major_reads_names_and_cuda_versions():
    assert cuda_major("nvidia-cudnn-cu13") == 13 and cuda_major("cuml-cu12") == 12
    assert cuda_major("cupy-cuda13x") == 13 and cuda_major("cuda-toolkit", "13.0.3") == 13
    # Library versions are not CUDA versions: nvidia-cufft 12.2 ships with CUDA 13.
    assert cuda_major("nvidia-cufft", "12.2.0.57") is None and cuda_major("numpy", "2.4.6") is None
    assert required_cuda_majors(['cuda-toolkit[cublas]==13.0.3; platform_system == "Linux"',
                                 'nvidia-nccl-cu13==2.30.7; platform_system == "Linux"', "numpy"]) == {13}


@pytest.mark.network
@pytest.mark.parametrize("extra", sorted(EXTRAS))
def test_gpu_kmeans_extra_brings_one_cuda_major(pypi, extra, tmp_path):
    installed = resolve(extra_requirements(extra), tmp_path / "report.json")
    expected = {EXTRAS[extra]}
    assert {"torch", "cupy-cuda%dx" % EXTRAS[extra], "cuml-cu%d" % EXTRAS[extra]} <= set(installed)
    # torch's CUDA libraries, as the torch wheel pip picked pins them ...
    torch_majors = required_cuda_majors(installed["torch"].get("requires_dist", []))
    assert torch_majors == expected, f"{extra}: torch {installed['torch']['version']} is built on CUDA {torch_majors}"
    # ... and every package of the environment that names a CUDA major: cuML's, CuPy's, torch's.
    mixed = {name: major for name, meta in installed.items()
             if (major := cuda_major(name, meta["version"])) is not None and major != EXTRAS[extra]}
    assert not mixed, f"{extra}: packages built for another CUDA major: {mixed}"
