"""The config schema: one key per dataclass field, one-line errors before any job, expected job counts."""

from __future__ import annotations

import dataclasses
import importlib
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import get_type_hints

import pytest
import yaml

from imbssl.config_check import coerce_strings, config_error

REPO = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())

# config section -> (module, dataclass) whose fields it must list exactly.
SECTIONS = {
    "model": ("imbssl.models", "ModelConfig"),
    "augment": ("imbssl.augment", "AugmentConfig"),
    "pretrain": ("imbssl.train", "TrainSettings"),
    "simsiam": ("imbssl.methods.simsiam", "SimSiamConfig"),
    "simclr": ("imbssl.methods.simclr", "SimCLRConfig"),
    "evaluation": ("imbssl.evaluate", "EvalSettings"),
    "plots": ("imbssl.report", "PlotSettings"),
}
JSON_TYPES = {int: "integer", float: "number", bool: "boolean", str: "string"}


def dataclass_of(section: str) -> type:
    module_name, class_name = SECTIONS[section]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError:
        pytest.skip(f"{module_name} not written yet")
    if not hasattr(module, class_name):
        pytest.skip(f"{module_name}.{class_name} not written yet")
    return getattr(module, class_name)


def resolved(prop: dict) -> dict:
    """A property schema with its local $ref merged in."""
    if "$ref" in prop:
        target = SCHEMA
        for part in prop["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return {**target, **prop}
    return prop


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_schema_section_lists_exactly_the_dataclass_fields(section):
    cls = dataclass_of(section)
    assert list(SCHEMA["properties"][section]["properties"]) == [f.name for f in dataclasses.fields(cls)]


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_schema_types_and_defaults_match_the_dataclass(section):
    cls = dataclass_of(section)
    hints = get_type_hints(cls)
    props = SCHEMA["properties"][section]["properties"]
    for field in dataclasses.fields(cls):
        prop = resolved(props[field.name])
        assert prop["type"] == JSON_TYPES[hints[field.name]], f"{section}.{field.name}"
        assert prop["default"] == pytest.approx(field.default), f"{section}.{field.name}"


def test_paper_config_lists_every_key_with_the_schema_default():
    """config.yaml documents every setting; its values are the schema's (= the paper's) defaults."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    for section, spec in SCHEMA["properties"].items():
        if spec["type"] == "object":
            assert set(config[section]) == set(spec["properties"]), section
            for key, prop in spec["properties"].items():
                assert config[section][key] == pytest.approx(resolved(prop)["default"]), f"{section}.{key}"
        else:
            assert config[section] == spec["default"], section


def test_nested_command_line_strings_are_typed_by_the_schema():
    # `--config 'pretrain={epochs: 5, amp: false}' 'seeds=[0,1]'` arrives as strings.
    config = {"pretrain": {"epochs": "5", "amp": "false", "compile": "off"}, "seeds": ["0", "1"],
              "dataset": {"image_size": "null"}}
    coerce_strings(config, SCHEMA)
    assert config == {"pretrain": {"epochs": 5, "amp": False, "compile": "off"}, "seeds": [0, 1],
                      "dataset": {"image_size": None}}


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"pretrain": {"epoch": 5}}, "config error: unknown key pretrain.epoch (did you mean 'epochs'?)"),
        ({"pretrain": {"epochs": "ten"}}, "config error: pretrain.epochs: 'ten' is not of type 'integer'"),
        ({"subsets": {"imbalance_factors": [10, 0.5]}},
         "config error: subsets.imbalance_factors[1]: 0.5 is less than the minimum of 1"),
        ({"pretrain": {"batch_size": 1}}, "config error: pretrain.batch_size: 1 is less than the minimum of 2"),
        ({"methods": ["simsam"]}, "config error: methods[0]: 'simsam' is not one of ['simsiam', 'simclr']"),
    ],
)
def test_config_error_is_one_line_naming_the_key(config, expected):
    message = config_error(config, SCHEMA)
    assert message.startswith(expected)
    assert message.endswith("(fix it in config.yaml or --config)")
    assert "\n" not in message


def test_valid_configs_have_no_error():
    assert config_error({}, SCHEMA) is None
    for path in ("config.yaml", "config/demo.yaml"):
        assert config_error(yaml.safe_load((REPO / path).read_text()), SCHEMA) is None, path


# --- Snakemake dry runs in a copy of the workflow ------------------------------------------------

@pytest.fixture
def workdir(tmp_path):
    for name in ("Snakefile", "config.yaml"):
        shutil.copy(REPO / name, tmp_path / name)
    for name in ("config", "workflow", "envs"):
        shutil.copytree(REPO / name, tmp_path / name)
    return tmp_path


def dry_run(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--quiet", "rules", *args],
        cwd=workdir, capture_output=True, text=True, timeout=120,
    )


def job_counts(stdout: str) -> dict[str, int]:
    """The `--quiet rules` summary table of a dry run: rule -> number of jobs."""
    counts = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    return counts


@pytest.mark.parametrize(
    ("bad", "key"),
    [
        ({"pretrain": {"epoch": 5}}, "pretrain.epoch"),
        ({"pretrain": {"epochs": "ten"}}, "pretrain.epochs"),
        ({"subsets": {"imbalance_factors": [0.5]}}, "subsets.imbalance_factors[0]"),
        ({"pretrain": {"batch_size": 1}}, "pretrain.batch_size"),
    ],
)
def test_bad_config_stops_snakemake_before_any_job(workdir, bad, key):
    (workdir / "bad.yaml").write_text(yaml.safe_dump(bad))
    result = dry_run(workdir, "--configfile", "bad.yaml")
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("config error:")]
    assert len(errors) == 1 and f" {key}" in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert "Job stats" not in result.stdout + result.stderr  # no DAG was built


def test_command_line_override_is_validated_too(workdir):
    result = dry_run(workdir, "--config", "subsets={imbalance_factors: [0.5]}")
    assert result.returncode != 0
    assert "config error: subsets.imbalance_factors[0]: 0.5 is less than the minimum of 1" in result.stderr


def test_paper_config_plans_five_subsets_times_two_methods(workdir):
    result = dry_run(workdir)
    assert result.returncode == 0, result.stderr
    assert job_counts(result.stdout) == {
        "prepare_data": 1, "subsets": 1, "pretrain": 10, "evaluate": 10,
        "table2": 1, "figure1": 1, "all": 1, "total": 25,
    }


def test_demo_config_plans_two_seeds(workdir):
    result = dry_run(workdir, "--configfile", "config/demo.yaml")
    assert result.returncode == 0, result.stderr
    assert job_counts(result.stdout) == {
        "prepare_data": 1, "subsets": 1, "pretrain": 20, "evaluate": 20,
        "table2": 1, "figure1": 1, "all": 1, "total": 45,
    }


def test_pretrain_command_carries_its_config_slices_as_flags(workdir):
    """config key -> rule params -> CLI flag of the same name, and only the rule's own slices."""
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "results/pretrain/imbalanced-p10/simclr/seed1/model.pt",
         "-n", "-p", "--configfile", "config/demo.yaml"],
        cwd=workdir, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    command = next(line for line in result.stdout.splitlines() if "imbssl pretrain" in line)
    demo = yaml.safe_load((workdir / "config/demo.yaml").read_text())
    assert f"--epochs {demo['pretrain']['epochs']} --batch-size {demo['pretrain']['batch_size']}" in command
    assert f"--arch {demo['model']['arch']} --width {demo['model']['width']}" in command
    assert "--optimizer lars --base-lr 0.3" in command and "--temperature 0.5" in command
    assert "--proj-hidden-dim" in command and "--pred-hidden-dim" not in command  # simsiam's stay out
    assert "--seed 1" in command and "--subset results/subsets/imbalanced-p10.csv" in command
    assert "--eval" not in command and "--dpi" not in command  # other stages' settings stay out


def test_pretrain_flags_parse_back_to_the_configured_settings(workdir, monkeypatch):
    """The printed command, parsed by the real CLI, gives the dataclasses the merged config's values."""
    pytest.importorskip("imbssl.train")
    from imbssl.augment import AugmentConfig
    from imbssl.cli import build_parser
    from imbssl.methods.simclr import SimCLRConfig
    from imbssl.models import ModelConfig
    from imbssl.settings import from_args
    from imbssl.train import TrainSettings

    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "results/pretrain/full/simclr/seed0/model.pt",
         "-n", "-p", "--configfile", "config/demo.yaml"],
        cwd=workdir, capture_output=True, text=True, timeout=120,
    )
    command = next(line for line in result.stdout.splitlines() if "imbssl pretrain" in line)
    argv = shlex.split(command[command.index("imbssl pretrain"):].split(" > ")[0])[1:]
    monkeypatch.setattr(sys, "argv", ["imbssl", *argv])  # the CLI peeks at --method there
    args = build_parser(argv).parse_args(argv)

    config = yaml.safe_load((workdir / "config.yaml").read_text())
    demo = yaml.safe_load((workdir / "config/demo.yaml").read_text())
    for section, cls in [("pretrain", TrainSettings), ("model", ModelConfig),
                         ("augment", AugmentConfig), ("simclr", SimCLRConfig)]:
        expected = {**config[section], **demo.get(section, {})}
        assert dataclasses.asdict(from_args(cls, args)) == pytest.approx(expected), section
