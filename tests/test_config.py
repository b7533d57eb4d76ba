"""The config schema: one key per dataclass field, one-line errors before any job, expected job counts."""

from __future__ import annotations

import dataclasses
import importlib
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import get_type_hints

import pytest
import yaml

import typing

from imbssl.config_check import coerce_strings, config_error
from imbssl.methods import catalog
from imbssl.settings import _without_none, choices_of

from helpers.repo import copy_workflow, dry_run, job_counts

REPO = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())

# config section (dotted path) -> (module, dataclass) whose fields it must list exactly; every
# method's section comes from the method catalog.
SECTIONS = {
    "dataset": ("imbssl.data.store", "DatasetSettings"),
    "subsets": ("imbssl.data.subsets", "SubsetSettings"),
    "model": ("imbssl.models.backbones", "ModelConfig"),
    "augment": ("imbssl.data.augment", "AugmentConfig"),
    "pretrain": ("imbssl.training.loop", "TrainSettings"),
    **{name: (f"imbssl.methods.{info.module}", info.config_class) for name, info in catalog.METHODS.items()},
    "clustering.distill": ("imbssl.methods.distill", "DistillConfig"),
    "evaluation": ("imbssl.evaluation.linear", "EvalSettings"),
    "plots": ("imbssl.reporting.plotting", "PlotSettings"),
    "analysis": ("imbssl.reporting.analysis", "AnalysisSettings"),
}
# Keys of a section that are not fields of its dataclass, and fields kept out of the config:
# a method's own `model` subsection is merged over `model` (ModelConfig flags), the MSN prior
# is the method's identity (msn = uniform, pmsn = power law), not a setting, and where a training
# job runs (GPUs, nodes, GPU slots) is its launcher's business, not the training loop's.
NOT_FIELDS = {**{name: {"model", "augment"} for name in catalog.METHODS}, "pretrain": {"gpus", "nodes", "gpu_slots"}}
NOT_KEYS = {name: {"prior"} for name in ("msn", "pmsn", "swav", "pswav")}
JSON_TYPES = {int: "integer", float: "number", bool: "boolean", str: "string"}


def json_type(kind) -> set[str]:
    """The JSON types a dataclass field's type allows (a Literal is a string, X | None adds null)."""
    base, optional = _without_none(kind)
    if choices_of(base) is not None:
        types = {"string"}
    elif typing.get_origin(base) is list:
        types = {"array"}
    else:
        types = {JSON_TYPES[base]}
    return types | ({"null"} if optional else set())


def dataclass_of(section: str) -> type:
    module_name, class_name = SECTIONS[section]
    # A moved or renamed dataclass fails here (a skip would let the section go unchecked).
    module = importlib.import_module(module_name)
    assert hasattr(module, class_name), f"{module_name} has no {class_name}: update SECTIONS"
    return getattr(module, class_name)


def resolved(prop: dict) -> dict:
    """A property schema with its local $ref merged in (recursively)."""
    if "$ref" in prop:
        target = SCHEMA
        for part in prop["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return {**resolved(target), **{k: v for k, v in prop.items() if k != "$ref"}}
    return prop


def section_properties(section: str) -> dict:
    """The property schemas of a (dotted) config section."""
    spec = SCHEMA
    for part in section.split("."):
        spec = resolved(spec["properties"][part])
    return spec["properties"]


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_schema_section_lists_exactly_the_dataclass_fields(section):
    cls = dataclass_of(section)
    keys = [key for key in section_properties(section) if key not in NOT_FIELDS.get(section, set())]
    assert keys == [f.name for f in dataclasses.fields(cls) if f.name not in NOT_KEYS.get(section, set())]


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_schema_types_and_defaults_match_the_dataclass(section):
    cls = dataclass_of(section)
    hints = get_type_hints(cls)
    props = section_properties(section)
    for field in dataclasses.fields(cls):
        if field.name in NOT_KEYS.get(section, set()):
            continue
        prop = resolved(props[field.name])
        types = {prop["type"]} if isinstance(prop["type"], str) else set(prop["type"])
        assert types == json_type(hints[field.name]), f"{section}.{field.name}"
        if "array" in types:  # the items' type too
            item = typing.get_args(_without_none(hints[field.name])[0])[0]
            assert resolved(prop["items"])["type"] == JSON_TYPES[item], f"{section}.{field.name}"
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        assert prop["default"] == pytest.approx(default), f"{section}.{field.name}"


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_schema_enums_are_the_dataclass_choices(section):
    """An enumerated setting is typed (Literal) once in its dataclass: argparse's choices and the
    schema's enum both come from it."""
    hints = get_type_hints(dataclass_of(section))
    props = section_properties(section)
    for name, kind in hints.items():
        if name in NOT_KEYS.get(section, set()):
            continue
        choices = choices_of(kind)
        enum = resolved(props[name]).get("enum")
        if choices is None:
            assert enum is None, f"{section}.{name} has a schema enum but a free type in its dataclass"
        else:
            assert [v for v in enum if v is not None] == list(choices), f"{section}.{name}"


def test_the_schema_lists_exactly_the_catalogued_methods():
    assert SCHEMA["properties"]["methods"]["items"]["enum"] == list(catalog.METHODS)
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    for name in catalog.METHODS:
        assert name in SCHEMA["properties"], f"the schema has no section for method {name}"
        assert name in config, f"config.yaml has no section for method {name}"


def test_clustering_kmeans_keys_are_the_kmeans_settings():
    from imbssl.clustering.kmeans import KMeansSettings

    props = section_properties("clustering")
    for field in dataclasses.fields(KMeansSettings):
        assert resolved(props[field.name])["default"] == field.default, field.name


def test_paper_config_lists_every_key_with_the_schema_default():
    """config.yaml documents every setting; its values are the schema's (= the paper's) defaults."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())

    def check(value, spec, where):
        override = spec.get("$ref") in ("#/$defs/method_model", "#/$defs/method_augment")
        spec = resolved(spec)
        if override:  # a method's `model` / `augment`: only the keys it sets, as the schema's default
            assert (value or {}) == spec["default"], where
            return
        if spec.get("type") == "object" and "properties" in spec:
            if "default" in spec and spec["default"]:  # e.g. msn.model: only the keys it sets
                assert value == spec["default"], where
                return
            assert set(value) <= set(spec["properties"]), where
            for key, prop in spec["properties"].items():
                overrides = prop.get("$ref") in ("#/$defs/method_model", "#/$defs/method_augment")
                assert key in value or overrides, f"{where}.{key} is missing from config.yaml"
                check(value.get(key), prop, f"{where}.{key}")
        else:
            assert value == pytest.approx(spec["default"]), where

    for section, spec in SCHEMA["properties"].items():
        check(config[section], spec, section)


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
        ({"methods": ["simsam"]}, f"config error: methods[0]: 'simsam' is not one of {list(catalog.METHODS)}"),
        ({"pswav": {"tau": 0}}, "config error: pswav.tau: 0 is less than or equal to the minimum of 0"),
        ({"byol": {"augment": {"blurr_p": [0.5]}}},
         "config error: unknown key byol.augment.blurr_p (did you mean 'blur_p'?)"),
        ({"dino": {"augment": {"solarize_p": [0.0, 1.5]}}},
         "config error: dino.augment.solarize_p[1]: 1.5 is greater than the maximum of 1"),
        ({"augment": {"blur_p": [-0.1]}}, "config error: augment.blur_p[0]: -0.1 is less than the minimum of 0"),
        ({"clustering": {"k": 0}}, "config error: clustering.k: 0 is less than the minimum of 1"),
        ({"msn": {"model": {"arch": "vit_huge"}}}, "config error: msn.model.arch: 'vit_huge' is not one of"),
    ],
)
def test_config_error_is_one_line_naming_the_key(config, expected):
    message = config_error(config, SCHEMA)
    assert message.startswith(expected)
    assert message.endswith("(fix it in config.yaml or --config)")
    assert "\n" not in message


def test_valid_configs_have_no_error():
    assert config_error({}, SCHEMA) is None
    for path in ("config.yaml", "config/demo.yaml", "config/cifar100-lt.yaml"):
        assert config_error(yaml.safe_load((REPO / path).read_text()), SCHEMA) is None, path


# --- Snakemake dry runs in a copy of the workflow ------------------------------------------------

@pytest.fixture
def workdir(tmp_path):
    return copy_workflow(tmp_path / "wf")


@pytest.mark.parametrize(
    ("bad", "key"),
    [
        ({"pretrain": {"epoch": 5}}, "pretrain.epoch"),
        ({"pretrain": {"epochs": "ten"}}, "pretrain.epochs"),
        ({"subsets": {"imbalance_factors": [0.5]}}, "subsets.imbalance_factors[0]"),
        ({"pretrain": {"batch_size": 1}}, "pretrain.batch_size"),
        ({"pretrain": {"gpu_slots": "half"}}, "pretrain.gpu_slots"),
        ({"clustering": {"expert_gpus": 0}}, "clustering.expert_gpus"),
        ({"gpu_slots_per_device": 0}, "gpu_slots_per_device"),
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


def expected_plan(subsets: int, clustered: int, k: int, methods: int = len(catalog.METHODS),
                  prototype_methods: int = len(catalog.prototype_methods())) -> dict[str, int]:
    """Jobs per rule of a run: every method pretrained on every subset; Experiment II on `clustered`
    subsets (a base, its features and k-means, a random partition, k experts per partition, a
    student per partition); every model evaluated; the prior measured on every subset but `full`
    (and the prototype usage of the methods with prototypes there); the tables and figures, with
    the accuracy-against-imbalance figures when there are two imbalance factors or more."""
    prior_subsets = subsets - 1
    swept = {"imbalance_table2": 1, "imbalance_table4": 1} if (subsets - 1) // 2 >= 2 else {}
    return swept | {
        "prepare_data": 1, "subsets": subsets, "pretrain": subsets * methods, "evaluate": subsets * methods + 2 * clustered,
        "base": clustered, "features": clustered, "cluster": clustered, "partition_random": clustered,
        "expert": 2 * k * clustered, "distill": 2 * clustered, "prototype_usage": prior_subsets * prototype_methods,
        "cluster_sizes": prior_subsets * methods, "prior_table": 1, "prior_figure": 1,
        "table2": 1, "table3": 1, "table4": 1, "cluster_table": 1, "table2_groups": 1, "table3_groups": 1,
        "table4_groups": 1, "per_class_table": 1, "frequency_table2": 1, "frequency_table3": 1, "frequency_table4": 1,
        "training_curves": subsets, "stage_curves": clustered, "figure1": 1, "figure3": clustered, "figure4": 1,
    }


def test_paper_config_plans_every_experiment(workdir):
    result = dry_run(workdir)
    assert result.returncode == 0, result.stderr
    # 5 subsets (p = 10, 100) x 9 methods; Experiment II on both imbalanced subsets with k = 5.
    assert job_counts(result.stdout) == expected_plan(subsets=5, clustered=2, k=5)


def test_demo_config_plans_every_experiment_small(workdir):
    result = dry_run(workdir, "--configfile", "config/demo.yaml")
    assert result.returncode == 0, result.stderr
    # 3 subsets (p = 100) x 9 methods; Experiment II on imbalanced-p100 with k = 2.
    assert job_counts(result.stdout) == expected_plan(subsets=3, clustered=1, k=2)
    assert sum(expected_plan(subsets=3, clustered=1, k=2).values()) == 118  # + `all`: the 119 of the README


def planned_jobs(workdir: Path, *args: str) -> list[dict[str, object]]:
    """The jobs of a dry run's log: rule, input and output paths, and wildcards of each."""
    result = subprocess.run([sys.executable, "-m", "snakemake", "-n", *args],
                            cwd=workdir, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    jobs = []
    for line in result.stdout.splitlines():
        if line.startswith(("rule ", "localrule ")):
            jobs.append({"rule": line.split()[1].rstrip(":"), "input": [], "output": [], "wildcards": {}})
        elif jobs and line.startswith(("    input: ", "    output: ")):
            key, _, paths = line.strip().partition(": ")
            jobs[-1][key] = paths.split(", ")
        elif jobs and line.startswith("    wildcards: "):
            jobs[-1]["wildcards"] = dict(item.split("=", 1) for item in line.strip()[11:].split(", "))
    return jobs


def test_paper_config_runs_k_independent_experts_per_subset_partition_and_seed(workdir):
    jobs = planned_jobs(workdir)
    experts = [job for job in jobs if job["rule"] == "expert"]
    groups = {}
    for job in experts:
        wildcards = job["wildcards"]
        groups.setdefault((wildcards["subset"], wildcards["kind"], wildcards["seed"]), set()).add(wildcards["cluster"])
    k = yaml.safe_load((workdir / "config.yaml").read_text())["clustering"]["k"]
    assert groups == {(subset, kind, "0"): {str(j) for j in range(k)}
                      for subset in ("imbalanced-p10", "imbalanced-p100") for kind in ("kmeans", "random")}
    # No expert job needs another expert's output: they can all run at once.
    expert_outputs = {path for job in experts for path in job["output"]}
    assert not [path for job in experts for path in job["input"] if path in expert_outputs]
    # Each distill job waits for exactly the k experts of its own partition.
    distills = [job for job in jobs if job["rule"] == "distill"]
    assert len(distills) == 4
    for job in distills:
        kind = {"simsiam-c-d": "kmeans", "simsiam-d": "random"}[job["wildcards"]["student"]]
        prefix = f"results/experts/{job['wildcards']['subset']}/{kind}/seed0/"
        assert sorted(path for path in job["input"] if path in expert_outputs) == \
            [f"{prefix}cluster{j}/model.pt" for j in range(k)]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (["clustering={expert_epochs: 100}"],
         "config error: clustering.base_epochs + clustering.expert_epochs + clustering.distill_epochs "
         "= 40 + 100 + 80 = 220 but pretrain.epochs = 300"),
        (["clustering={subsets: [imbalanced-p50]}"],
         "config error: clustering.subsets: imbalanced-p50 not among the configured subsets"),
        (["prior_figure={subset: imbalanced-p7}"], "config error: prior_figure.subset: imbalanced-p7"),
        (["pretrain={gpus: 3}"], "config error: pretrain.batch_size = 1024 does not split evenly over "
                                 "pretrain.gpus x pretrain.nodes = 3 processes"),
        (["pretrain={gpus: 2, nodes: 3}"], "config error: pretrain.batch_size = 1024 does not split evenly over "
                                           "pretrain.gpus x pretrain.nodes = 6 processes"),
        (["clustering={expert_gpus: 3}"], "config error: pretrain.batch_size = 1024 does not split evenly over "
                                          "clustering.expert_gpus = 3"),
        (["clustering={expert_gpu_slots: 2}"], "config error: clustering.expert_gpu_slots = 2 but a GPU has "
                                               "gpu_slots_per_device = 1 slots"),
        (["simsiam={warmup_epochs: 40}"],
         "config error: simsiam.warmup_epochs = 40 is not less than clustering.base_epochs = 40"),
        (["clustering={distill: {warmup_epochs: 80}}"],
         "config error: clustering.distill.warmup_epochs = 80 is not less than clustering.distill_epochs = 80"),
    ],
)
def test_plan_errors_stop_snakemake_in_one_line(workdir, override, message):
    result = dry_run(workdir, "--config", *override)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("config error:")]
    assert len(errors) == 1 and errors[0].startswith(message), result.stderr
    assert "Traceback" not in result.stderr


def test_budget_mismatch_can_be_allowed(workdir):
    result = dry_run(workdir, "--config", "clustering={expert_epochs: 100, allow_budget_mismatch: true}")
    assert result.returncode == 0, result.stderr
    # Every Experiment II job is planned, each stage with its own configured epochs.
    printed = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-p", "--config",
         "clustering={expert_epochs: 100, allow_budget_mismatch: true}"],
        cwd=workdir, capture_output=True, text=True, timeout=120,
    )
    assert printed.returncode == 0, printed.stderr
    epochs = {}
    stages = (("base", "pretrain", "results/clusters/"), ("expert", "pretrain", "results/experts/"),
              ("distill", "distill", "results/pretrain/"), ("pretrain", "pretrain", "results/pretrain/"))
    for stage, command, out_dir in stages:
        jobs = [line for line in printed.stdout.splitlines()
                if f"imbssl {command} " in line and f"--out-dir {out_dir}" in line]
        epochs[stage] = sorted({re.search(r"--epochs (\d+)", line).group(1) for line in jobs})
        epochs[stage + " jobs"] = len(jobs)
    assert epochs == {"base": ["40"], "base jobs": 2, "expert": ["100"], "expert jobs": 20,
                      "distill": ["80"], "distill jobs": 4, "pretrain": ["300"],
                      "pretrain jobs": 5 * len(catalog.METHODS)}


def test_msn_pretrain_uses_its_own_model_section_and_no_prior_flag(workdir):
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "results/pretrain/imbalanced-p100/pmsn/seed0/model.pt",
         "-n", "-p", "--configfile", "config/demo.yaml"],
        cwd=workdir, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    command = next(line for line in result.stdout.splitlines() if "imbssl pretrain" in line)
    assert "--arch vit_mini --width 8" in command  # msn.model.arch over model.arch, model.width kept
    assert "--arch resnet10" not in command and "--model " not in command and "--prior " not in command
    assert "--num-prototypes 64" in command and "--tau 0.25" in command


def test_pretrain_command_carries_its_config_slices_as_flags(workdir):
    """config key -> rule params -> CLI flag of the same name, and only the rule's own slices."""
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "results/pretrain/imbalanced-p100/simclr/seed1/model.pt",
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
    assert "--seed 1" in command and "--subset results/subsets/imbalanced-p100.csv" in command
    assert "--eval" not in command and "--dpi" not in command  # other stages' settings stay out


def test_pretrain_flags_parse_back_to_the_configured_settings(workdir, monkeypatch):
    """The printed command, parsed by the real CLI, gives the dataclasses the merged config's values."""
    pytest.importorskip("imbssl.training.loop")
    from imbssl.data.augment import AugmentConfig
    from imbssl.cli import build_parser
    from imbssl.methods.simclr import SimCLRConfig
    from imbssl.models.backbones import ModelConfig
    from imbssl.settings import from_args
    from imbssl.training.loop import TrainSettings

    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "results/pretrain/full/simclr/seed0/model.pt",
         "-n", "-p", "--configfile", "config/demo.yaml"],
        cwd=workdir, capture_output=True, text=True, timeout=120,
    )
    command = next(line for line in result.stdout.splitlines() if "imbssl pretrain" in line)
    argv = shlex.split(command[command.index("imbssl pretrain"):].split(" > ")[0])[1:]
    args = build_parser(argv).parse_args(argv)

    config = yaml.safe_load((workdir / "config.yaml").read_text())
    demo = yaml.safe_load((workdir / "config/demo.yaml").read_text())
    # SimCLR's own augmentation recipe (simclr.augment) is merged over the global section
    simclr_augment = {**config["simclr"].get("augment", {}), **demo.get("simclr", {}).get("augment", {})}
    assert simclr_augment, "config.yaml gives SimCLR its own augmentation"
    for section, cls in [("pretrain", TrainSettings), ("model", ModelConfig),
                         ("augment", AugmentConfig), ("simclr", SimCLRConfig)]:
        expected = {key: value for key, value in {**config[section], **demo.get(section, {})}.items()
                    if key not in NOT_FIELDS.get(section, set())}
        if section == "augment":
            expected.update(simclr_augment)
        parsed = dataclasses.asdict(from_args(cls, args))
        assert parsed.keys() == expected.keys(), section
        for key, value in expected.items():
            assert parsed[key] == pytest.approx(value), f"{section}.{key}"

    # ... and reaches the batched ops: their jitter ranges and blur draws are SimCLR's
    import torch

    from imbssl.data.augment import BatchAugment

    augment = BatchAugment(from_args(AugmentConfig, args), mean=(0.5,) * 3, std=(0.25,) * 3, image_size=16)
    params = augment.sample_params(20000, 16, 16, torch.Generator().manual_seed(0), view=0)
    strengths = [simclr_augment[k] for k in ("brightness", "contrast", "saturation")]
    factors = params.factors
    for column, strength in enumerate(strengths):  # uniform on [1 - s, 1 + s]
        assert factors[:, column].min() >= 1 - strength and factors[:, column].max() <= 1 + strength
        assert factors[:, column].min() < 1 - 0.99 * strength and factors[:, column].max() > 1 + 0.99 * strength
    assert factors[:, 3].abs().max() <= simclr_augment["hue"] and factors[:, 3].abs().max() > 0.99 * simclr_augment["hue"]
    assert params.blur is not None and params.blur.float().mean() == pytest.approx(simclr_augment["blur_p"][0], abs=0.02)


def test_plan_error_checks_the_epoch_budget_only_when_experiment_ii_runs():
    from imbssl.config_check import plan_error

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    assert plan_error(config) is None
    config["pretrain"]["epochs"] = 200
    assert plan_error(config).startswith(
        "config error: clustering.base_epochs + clustering.expert_epochs + clustering.distill_epochs "
        "= 40 + 180 + 80 = 300 but pretrain.epochs = 200")
    config["clustering"]["allow_budget_mismatch"] = True
    assert plan_error(config) is None
    config["clustering"]["allow_budget_mismatch"] = False
    config["clustering"]["subsets"] = []  # no Experiment II: no budget to keep
    assert plan_error(config) is None


def test_cifar100_lt_preset_plans_the_seven_subsets(workdir):
    preset = ("--configfile", "config/cifar100-lt.yaml")
    jobs = planned_jobs(workdir, *preset)
    subsets = ["imbalanced-p10", "imbalanced-p50", "imbalanced-p100",
               "balanced-p10", "balanced-p50", "balanced-p100", "full"]
    pretrain = [job["wildcards"] for job in jobs if job["rule"] == "pretrain"]
    methods = yaml.safe_load((workdir / "config.yaml").read_text())["methods"]
    assert sorted((w["subset"], w["method"]) for w in pretrain) == \
        sorted((subset, method) for subset in subsets for method in methods)
    experts = {job["wildcards"]["subset"] for job in jobs if job["rule"] == "expert"}
    assert experts == {"imbalanced-p10", "imbalanced-p50", "imbalanced-p100"}
    printed = subprocess.run([sys.executable, "-m", "snakemake", "results/subsets/imbalanced-p50.csv", "-n", "-p",
                              *preset], cwd=workdir, capture_output=True, text=True, timeout=120)
    assert printed.returncode == 0, printed.stderr
    assert "imbssl prepare-data --name cifar100 --root data/cifar100 " in printed.stdout
    # one job per subset: its name gives the factor, the draw's settings come from the config
    assert "imbssl subsets --train-data results/data/train.npz --subset imbalanced-p50 " \
           "--profile exponential --seed 0 --out results/subsets/imbalanced-p50.csv" in printed.stdout


def test_the_profile_reaches_the_subsets_command(workdir):
    printed = subprocess.run([sys.executable, "-m", "snakemake", "results/subsets/full.csv", "-n", "-p",
                              "--config", "subsets={profile: step}"], cwd=workdir, capture_output=True, text=True, timeout=120)
    assert printed.returncode == 0, printed.stderr
    assert "--subset full --profile step --seed 0 " in printed.stdout


def test_an_imbalance_factor_that_empties_a_cifar_class_stops_snakemake_in_one_line(workdir):
    # CIFAR-100, exponential: class 99 keeps floor(500 / 1000) = 0 images; 500 is the largest valid factor.
    result = dry_run(workdir, "--config", "dataset={name: cifar100, root: data/cifar100}",
                     "subsets={imbalance_factors: [1000]}")
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("config error:")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("config error: subsets.imbalance_factors: 1000 with subsets.profile: exponential "
                                "leaves 10 of 100 classes with 0 images"), errors[0]
    assert "at most 500 " in errors[0] and "dataset.name: cifar100" in errors[0]
    assert "Traceback" not in result.stderr
    assert "Job stats" not in result.stdout + result.stderr  # no DAG was built


def test_plan_error_checks_emptied_classes_where_the_train_counts_are_known():
    from imbssl.config_check import plan_error

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["dataset"]["name"] = "cifar100"
    config["subsets"]["imbalance_factors"] = [1000]
    config["clustering"]["subsets"] = []
    config["prior_figure"]["subset"] = "imbalanced-p1000"
    assert "at most 500 " in plan_error(config)
    config["subsets"]["imbalance_factors"] = [500]  # floor(500 / 500) = 1
    config["prior_figure"]["subset"] = "imbalanced-p500"
    assert plan_error(config) is None
    # CIFAR-10, step: the tail keeps floor(5000 / p), so 5000 is valid and 5001 is not.
    config["dataset"]["name"] = "cifar10"
    config["subsets"]["profile"] = "step"
    config["subsets"]["imbalance_factors"] = [5000]
    config["prior_figure"]["subset"] = "imbalanced-p5000"
    assert plan_error(config) is None
    config["subsets"]["imbalance_factors"] = [5001]
    config["prior_figure"]["subset"] = "imbalanced-p5001"
    message = plan_error(config)
    assert message.startswith("config error: subsets.imbalance_factors: 5001 with subsets.profile: step "
                              "leaves 5 of 10 classes with 0 images") and "at most 5000 " in message
    # Other datasets' counts are only known to the subsets job, which reports the same.
    config["dataset"]["name"] = "folder"
    config["dataset"]["store_size"] = 32  # stored square, as the default test transform needs
    assert plan_error(config) is None


# --- Snakemake's own checks stay clean --------------------------------------------------------

def test_snakemake_lint_reports_nothing(workdir):
    result = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=workdir, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Lints for" not in result.stdout + result.stderr, result.stdout + result.stderr


def test_snakefmt_leaves_the_workflow_unchanged():
    snakefmt = shutil.which("snakefmt", path=str(Path(sys.executable).parent)) or shutil.which("snakefmt")
    assert snakefmt, "snakefmt is part of the test extra: pip install -e '.[test]'"
    result = subprocess.run([snakefmt, "--check", "Snakefile", "workflow/"], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def job_resources(workdir: Path, *args: str) -> dict[str, dict[str, tuple[dict[str, str], str]]]:
    """Rule -> output -> (resources, shell command) of every planned job. Keyed by output because
    Snakemake does not plan the jobs of one rule in the same order from one run to the next."""
    result = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", *args],
                            cwd=workdir, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    jobs: dict[str, dict[str, tuple[dict[str, str], str]]] = {}
    rule = output = resources = None
    for line in result.stdout.splitlines():
        if line.startswith(("rule ", "localrule ")):
            rule, output, resources = line.split()[1].rstrip(":"), None, {}
        elif rule and line.startswith("    output: "):
            output = line.strip()[len("output: "):]
        elif rule and line.startswith("    resources: "):
            resources = dict(item.split("=", 1) for item in line.strip()[11:].split(", "))
        elif rule and line.startswith("Shell command: "):
            jobs.setdefault(rule, {})[output] = (resources, line[len("Shell command: "):])
            rule = None
    return jobs


def first_job(jobs: dict[str, tuple[dict[str, str], str]]) -> tuple[str, tuple[dict[str, str], str]]:
    """The job of a rule with the first output in sorted order: the same job in every plan."""
    output = min(jobs)
    return output, jobs[output]


def test_gpus_and_slots_of_a_job_are_its_resources_and_launcher_never_its_settings(workdir):
    """pretrain.gpus/nodes/gpu_slots and gpu_slots_per_device reach the jobs as resources (what
    Snakemake and SLURM allocate) and `imbssl.orchestration.launch` options; the imbssl command stays the same."""
    baseline = job_resources(workdir)
    jobs = job_resources(workdir, "--config", "pretrain={gpus: 4}", "gpu_slots_per_device=3")
    for rule in ("pretrain", "base", "distill"):
        output, (resources, command) = first_job(jobs[rule])
        assert resources["gpu"] == "12" and resources["nodes"] == "1"  # 4 whole GPUs of 3 slots
        assert command.startswith("exec python -m imbssl.orchestration.launch --gpus 4 --nodes 1 --slots all --slots-per-device 3 -- ")
        imbssl = command.split(" -- ", 1)[1]
        assert imbssl == baseline[rule][output][1].split(" -- ", 1)[1] and "--gpus" not in imbssl
    for rule in ("expert", "features", "cluster", "evaluate", "prototype_usage"):
        _, (resources, command) = first_job(jobs[rule])
        assert resources["gpu"] == "1", rule  # one slot of a GPU shared by three such jobs
        assert command.startswith("exec python -m imbssl.orchestration.launch --gpus 1 --nodes 1 --slots 1 --slots-per-device 3 -- ")
    _, (pretrain_resources, pretrain_command) = first_job(baseline["pretrain"])
    assert pretrain_resources["gpu"] == "1" and first_job(baseline["expert"])[1][0]["gpu"] == "1"
    assert pretrain_command.startswith("exec python -m imbssl.orchestration.launch --gpus 1 --nodes 1 --slots all ")

    _, (resources, command) = first_job(job_resources(workdir, "--config", "pretrain={gpus: 4, nodes: 2}")["pretrain"])
    assert (resources["gres"], resources["nodes"], resources["gpu"]) == ("gpu:4", "2", "0")  # 4 per node
    assert command.startswith("exec python -m imbssl.orchestration.launch --gpus 4 --nodes 2 ")


@pytest.mark.parametrize("override, expected", [
    # ImageNet-LT's > 100 / < 20 on CIFAR-10: imbalanced-p10 keeps 500-5000 images per class, no tail
    ("analysis={groups: thresholds}",
     "config error: analysis.groups: thresholds head > 100 / tail < 20 images leave medium and tail empty on "
     "imbalanced-p10 of cifar10 (its classes have 500 to 5000 training images)"),
    ("analysis={groups: thresholds, head_above: 50, tail_below: 60}",
     "config error: analysis.tail_below (60) is above analysis.head_above (50)"),
])
def test_group_thresholds_that_leave_a_group_empty_stop_snakemake_in_one_line(workdir, override, expected):
    result = dry_run(workdir, "--config", override)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("config error:")]
    assert len(errors) == 1 and errors[0].startswith(expected), result.stderr
    assert "Traceback" not in result.stderr and "Job stats" not in result.stdout + result.stderr


def test_group_thresholds_that_fit_the_subsets_plan():
    from imbssl.config_check import plan_error

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    # head > 1000, tail < 100 images: CIFAR-10 p=10 (5000 ... 1077 | 834, 645, 500) has no tail, an
    # error; p=100 (5000 ... 1077 | 645 ... 139 | 83, 50) has all three groups.
    config["analysis"] = {"groups": "thresholds", "head_above": 1000, "tail_below": 100}
    assert "tail empty on imbalanced-p10 of cifar10" in plan_error(config)
    config["subsets"]["imbalance_factors"] = [100]
    config["prior_figure"]["subset"] = "imbalanced-p100"
    config["clustering"]["subsets"] = ["imbalanced-p100"]
    assert plan_error(config) is None
