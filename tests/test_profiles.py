"""The Snakemake profiles: every key is an option Snakemake (or an installed executor plugin) knows,
and a failing job's log reaches the console."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PROFILES = sorted(path.parent.name for path in (REPO / "profiles").glob("*/config.yaml"))


def snakemake_options() -> set[str]:
    """Every long option of `snakemake`, executor plugins' included (e.g. --slurm-requeue)."""
    from snakemake.cli import get_argument_parser

    return {option for action in get_argument_parser()._actions for option in action.option_strings}


def load_profile(name: str) -> dict:
    return yaml.safe_load((REPO / "profiles" / name / "config.yaml").read_text())


def test_both_profiles_are_here():
    assert {"workstation", "slurm"} <= set(PROFILES)


@pytest.mark.parametrize("name", PROFILES)
def test_profile_keys_are_snakemake_options(name):
    unknown = sorted(key for key in load_profile(name) if f"--{key}" not in snakemake_options())
    assert not unknown, f"profiles/{name}/config.yaml: {unknown} are not snakemake options (a typo, or a plugin missing)"


@pytest.mark.parametrize("name", PROFILES)
def test_a_failing_jobs_log_is_shown(name):
    # Every rule writes its command's output to its log file only: without this, a failed job
    # says nothing but the log's path.
    assert load_profile(name).get("show-failed-logs") is True, f"profiles/{name}/config.yaml: set show-failed-logs: true"
