"""Config errors as one line naming the key and the fix, before Snakemake starts any job.

`snakemake.utils.validate` reports a failed schema check as a multi-line dump of the schema
and the whole config. The Snakefile calls `check_config` first: it runs the same JSON Schema
(draft 2020-12) check, picks the most relevant error with jsonschema's `best_match`, and exits
with one line such as

    config error: subsets.imbalance_factors[0]: 0.5 is less than the minimum of 1 (fix it in config.yaml or --config)

After Snakemake's validation has filled in the defaults, `check_plan` checks what the schema
cannot express (the Experiment II epoch budget, subset names used by other sections, an imbalance
factor that would leave a CIFAR class without images), with the same one-line format.

Only jsonschema and yaml are imported here, so a bad config fails in about a second.
"""

from __future__ import annotations

import difflib
import functools
import itertools
import os
import sys
from typing import Any, Iterable

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

FIX = "fix it in config.yaml or --config"


def load_schema(path: str | os.PathLike) -> dict:
    with open(path) as fh:
        return yaml.safe_load(fh)


def key_path(parts: Iterable[Any]) -> str:
    """('subsets', 'imbalance_factors', 0) -> 'subsets.imbalance_factors[0]'."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


def _unknown_keys(error: ValidationError) -> list[str]:
    allowed = error.schema.get("properties", {})
    return sorted(key for key in error.instance if key not in allowed)


def format_error(error: ValidationError) -> str:
    """One line: the key, what is wrong with it and how to fix it."""
    where = key_path(error.absolute_path)
    if error.validator == "additionalProperties":
        # Name the unknown key itself (not its parent) and suggest the closest allowed one.
        allowed = sorted(error.schema.get("properties", {}))
        unknown = _unknown_keys(error)
        prefix = "" if where == "(top level)" else where + "."
        parts = []
        for key in unknown:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            parts.append(f"unknown key {prefix}{key}{hint}")
        return f"config error: {'; '.join(parts)}; allowed keys: {', '.join(allowed)} ({FIX})"
    return f"config error: {where}: {error.message} ({FIX})"


def _resolve(schema: dict, root: dict) -> dict:
    """Follow a local `$ref: "#/$defs/name"`, keeping the referring schema's own keys."""
    ref = schema.get("$ref", "")
    if not ref.startswith("#/"):
        return schema
    target = root
    for part in ref[2:].split("/"):
        target = target[part]
    return {**_resolve(target, root), **{k: v for k, v in schema.items() if k != "$ref"}}


def _types(schema: dict) -> list[str]:
    kind = schema.get("type", [])
    return [kind] if isinstance(kind, str) else list(kind)


def coerce_strings(value: Any, schema: dict, root: dict | None = None) -> Any:
    """Parse strings where the schema wants a number, boolean, null or list, in place for dicts
    (and spell a YAML boolean as the string a string-valued setting's choices use: true, false).

    Snakemake reads nested `--config` values (`--config 'pretrain={epochs: 5}'`) with YAML's
    BaseLoader, so every scalar arrives as a string; this gives them the type config.yaml would.
    """
    root = schema if root is None else root
    schema = _resolve(schema, root)
    if isinstance(value, bool) and _types(schema) == ["string"] and str(value).lower() in schema.get("enum", []):
        return str(value).lower()  # `data_on_device: true` in YAML is a boolean; the setting spells it "true"
    if isinstance(value, str) and set(_types(schema)) & {"integer", "number", "boolean", "null", "array"}:
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        return value if isinstance(parsed, str) else coerce_strings(parsed, schema, root)
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for key in value:
            if key in properties:
                value[key] = coerce_strings(value[key], properties[key], root)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        value[:] = [coerce_strings(item, schema["items"], root) for item in value]
    return value


def _typed_number(value: Any, schema: dict) -> Any:
    """An int where the schema wants an integer, a float where it wants a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    types = _types(schema)
    if "integer" in types and float(value).is_integer():
        return int(value)
    if "number" in types:
        return float(value)
    return value


def canonicalize(value: Any, schema: dict, root: dict | None = None) -> Any:
    """The config in one canonical form, in place for dicts: every section's keys in the schema's
    order (= the settings dataclass's field order) and every number typed by the schema.

    Snakemake compares a job's params as strings; the rules render params from the config in its
    key order (`settings.cli_flags`). Without this, the same settings reached through another
    order of config files, a `--config` override or a schema-filled default would render
    differently and rerun jobs whose settings did not change. `lr: 30` and `lr: 30.0` likewise.
    """
    root = schema if root is None else root
    schema = _resolve(schema, root)
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        order = [key for key in properties if key in value] + sorted(k for k in value if k not in properties)
        items = {key: value.pop(key) for key in order}
        for key, item in items.items():
            value[key] = canonicalize(item, properties[key], root) if key in properties else item
        return value
    if isinstance(value, list):
        if isinstance(schema.get("items"), dict):
            value[:] = [canonicalize(item, schema["items"], root) for item in value]
        return value
    return _typed_number(value, schema)


def config_error(config: dict, schema: dict) -> str | None:
    """The one-line message for the most relevant schema violation, or None if the config is valid."""
    error = best_match(Draft202012Validator(schema).iter_errors(config))
    return None if error is None else format_error(error)


def check_config(config: dict, schema_path: str | os.PathLike) -> None:
    """Type the strings of nested `--config` values, then exit with a one-line message (status 1)
    if `config` violates the schema."""
    schema = load_schema(schema_path)
    coerce_strings(config, schema)
    message = config_error(config, schema)
    if message is not None:
        print(message, file=sys.stderr)
        sys.exit(1)


BUDGET_KEYS = ("clustering.base_epochs", "clustering.expert_epochs", "clustering.distill_epochs")


def plan_error(config: dict) -> str | None:
    """The one-line message for a config the schema accepts but the experiments cannot run, or None.

    `config` has every key (after `snakemake.utils.validate(..., set_default=True)`).
    """
    from imbssl.data.subsets import subset_names
    from imbssl.methods.catalog import prototype_methods

    subsets = subset_names(config["subsets"]["imbalance_factors"], config["subsets"]["profile"])
    empty = dataset_plan_error(config) or empty_class_plan_error(config) or analysis_plan_error(config)
    if empty is not None:
        return empty
    clustering = config["clustering"]
    unknown = [name for name in clustering["subsets"] if name not in subsets]
    if unknown:
        return (f"config error: clustering.subsets: {', '.join(unknown)} not among the configured subsets "
                f"({', '.join(subsets)}); name subsets from subsets.imbalance_factors ({FIX})")
    if clustering["subsets"] and not clustering["allow_budget_mismatch"]:
        epochs = [clustering[key.split(".")[1]] for key in BUDGET_KEYS]
        if sum(epochs) != config["pretrain"]["epochs"]:
            return (f"config error: {' + '.join(BUDGET_KEYS)} = {' + '.join(map(str, epochs))} = {sum(epochs)} "
                    f"but pretrain.epochs = {config['pretrain']['epochs']}: make them equal (the baselines' "
                    f"budget) or set clustering.allow_budget_mismatch: true ({FIX})")
    launch = launch_error(config) or augment_error(config["augment"]) or method_augment_error(config)
    if launch is not None:
        return launch
    warmup = warmup_error(config)
    if warmup:
        return warmup
    if prototype_methods(config["methods"]) and config["prior_figure"]["subset"] not in subsets:
        return (f"config error: prior_figure.subset: {config['prior_figure']['subset']} is not among the "
                f"configured subsets ({', '.join(subsets)}) ({FIX})")
    return None


@functools.lru_cache(maxsize=8)
def _list_counts(path: str, setting: str, mtime_ns: int, size: int) -> tuple[int, ...]:
    """A list file's images per label, read once per Snakemake start however many checks ask
    (keyed by the file's mtime and size, so an edited list is read again)."""
    from imbssl.data.sources import list_class_counts

    return tuple(list_class_counts(path, setting))


def _list_class_counts(path: str, setting: str) -> list[int]:
    stat = os.stat(path) if os.path.isfile(path) else None
    return list(_list_counts(path, setting, stat.st_mtime_ns if stat else 0, stat.st_size if stat else 0))


def known_class_counts(dataset: dict) -> tuple[list[int], list[int]] | None:
    """(images per class of the train list, of everything stored) for the datasets whose train
    counts are known without decoding: CIFAR (data.TRAIN_CLASS_COUNTS) and image lists (their
    labels are read, the images are not); None for the others."""
    from imbssl.data.sources import TRAIN_CLASS_COUNTS

    name = dataset["name"]
    if name in TRAIN_CLASS_COUNTS:
        return TRAIN_CLASS_COUNTS[name], TRAIN_CLASS_COUNTS[name]
    if name != "imagelist" or dataset["train_list"] is None:
        return None
    listed = _list_class_counts(dataset["train_list"], "dataset.train_list")
    stored = listed
    if dataset["extra_train_list"] is not None:
        extra = _list_class_counts(dataset["extra_train_list"], "dataset.extra_train_list")
        # An upper bound: images both lists name are stored once (prepare dedupes them).
        stored = [a + b for a, b in itertools.zip_longest(listed, extra, fillvalue=0)]
    return listed, stored


def dataset_plan_error(config: dict) -> str | None:
    """Dataset settings that no job could run with: an image list without its list files, a crop
    larger than the stored images, `profile: given` on a balanced source, or a given train list
    whose balanced twin cannot be drawn."""
    from imbssl.data.store import crop_size_error
    from imbssl.data.subsets import GIVEN, given_balanced_error

    dataset, profile = config["dataset"], config["subsets"]["profile"]
    if dataset["name"] == "imagelist":
        for key in ("train_list", "test_list"):
            if dataset[key] is None:
                return (f"config error: dataset.name: imagelist needs dataset.{key}, a file with one "
                        f"'relative/path.jpg label' per line ({FIX})")
        for key in ("train_list", "test_list", "extra_train_list", "class_names"):
            if dataset[key] is not None and not os.path.isfile(dataset[key]):
                return f"config error: dataset.{key}: {dataset[key]} does not exist ({FIX})"
    crop = crop_size_error(dataset["image_size"], dataset["store_size"])
    if crop is not None:
        return f"config error: {crop} ({FIX})"
    if (config["evaluation"]["test_transform"] == "resize_crop" and dataset["name"] in ("folder", "imagelist")
            and dataset["store_size"] is None and dataset["image_size"] is None):
        return (f"config error: evaluation.test_transform: resize_crop needs square images, but dataset.name: "
                f"{dataset['name']} keeps the files' own sizes; set dataset.store_size (stored square) or "
                f"evaluation.test_transform: none ({FIX})")
    if profile == GIVEN and dataset["name"] not in ("imagelist", "folder"):
        return (f"config error: subsets.profile: given takes the train split as it is, but dataset.name: "
                f"{dataset['name']} is balanced; use exponential or step, or an imagelist with a long-tailed "
                f"train list ({FIX})")
    counts = known_class_counts(dataset)
    if profile == GIVEN and counts is not None:
        message = given_balanced_error(*counts)
        if message is not None:
            return f"config error: {message} ({FIX})"
    return None


def empty_class_plan_error(config: dict) -> str | None:
    """An imbalance factor that would leave a class without images, for the datasets whose train
    counts are known without decoding (known_class_counts); the subsets job reports the same for
    any other dataset."""
    from imbssl.data.subsets import GIVEN, empty_class_error

    name = config["dataset"]["name"]
    profile = config["subsets"].get("profile", "exponential")
    counts = known_class_counts(config["dataset"]) if profile != GIVEN else None
    if counts is None:
        return None
    class_counts = counts[1]
    per_class = sorted(set(class_counts))
    images = str(per_class[0]) if len(per_class) == 1 else f"{per_class[0]}-{per_class[-1]}"
    for factor in config["subsets"]["imbalance_factors"]:
        message = empty_class_error(class_counts, factor, profile)
        if message is not None:
            return (f"config error: {message} (dataset.name: {name} has {images} train images per class; "
                    f"{FIX})")
    return None


def analysis_plan_error(config: dict) -> str | None:
    """Head / medium / tail settings that cannot give three groups: crossed thresholds always; a
    group left empty on an imbalanced subset for the datasets whose train counts are known (the
    group tables report the same for any other dataset)."""
    from imbssl.reporting.analysis import AnalysisSettings, empty_groups_error, settings_error
    from imbssl.data.subsets import GIVEN, imbalanced_counts

    settings = AnalysisSettings(**config["analysis"])
    message = settings_error(settings)
    counts = known_class_counts(config["dataset"]) if message is None else None
    profile = config["subsets"].get("profile", "exponential")
    if counts is not None and profile == GIVEN:
        message = empty_groups_error(counts[0], settings, f"imbalanced-{GIVEN} (dataset.train_list)")
    elif counts is not None:
        class_counts = counts[1]
        for factor in config["subsets"]["imbalance_factors"]:
            subset_counts = imbalanced_counts(class_counts, factor, profile)
            message = empty_groups_error(subset_counts, settings, f"imbalanced-p{factor:g} of {config['dataset']['name']}")
            if message:
                break
    return None if message is None else f"config error: {message} ({FIX})"


def launch_error(config: dict) -> str | None:
    """Where jobs run: the global batch must split evenly over a job's processes, and a job's GPU
    slots must exist."""
    pretrain, clustering = config["pretrain"], config["clustering"]
    per_device = config["gpu_slots_per_device"]
    processes = pretrain["gpus"] * pretrain["nodes"]
    if pretrain["batch_size"] % processes:
        return (f"config error: pretrain.batch_size = {pretrain['batch_size']} does not split evenly over "
                f"pretrain.gpus x pretrain.nodes = {processes} processes: make it a multiple of {processes} ({FIX})")
    if clustering["subsets"] and pretrain["batch_size"] % clustering["expert_gpus"]:
        return (f"config error: pretrain.batch_size = {pretrain['batch_size']} does not split evenly over "
                f"clustering.expert_gpus = {clustering['expert_gpus']} processes: make it a multiple ({FIX})")
    for key, slots in (("pretrain.gpu_slots", pretrain["gpu_slots"]),
                       ("clustering.expert_gpu_slots", clustering["expert_gpu_slots"])):
        if slots != "all" and slots > per_device:
            return (f"config error: {key} = {slots} but a GPU has gpu_slots_per_device = {per_device} slots: "
                    f"use at most {per_device}, or all ({FIX})")
    return None


def augment_error(augment: dict, where: str = "augment") -> str | None:
    """What the schema cannot say about an augmentation section (it checks each value's range):
    the relations between its values."""
    relations = [
        (0 < augment["crop_min_scale"] <= augment["crop_max_scale"], "crop_min_scale",
         f"need 0 < crop_min_scale <= crop_max_scale, got {augment['crop_min_scale']} and {augment['crop_max_scale']}"),
        (augment["crop_min_ratio"] <= augment["crop_max_ratio"], "crop_min_ratio",
         f"need crop_min_ratio <= crop_max_ratio, got {augment['crop_min_ratio']} and {augment['crop_max_ratio']}"),
        (augment["blur_sigma_min"] <= augment["blur_sigma_max"], "blur_sigma_min",
         f"need blur_sigma_min <= blur_sigma_max, got {augment['blur_sigma_min']} and {augment['blur_sigma_max']}"),
        (augment["blur_kernel"] % 2 == 1 or augment["blur_kernel"] == 0, "blur_kernel",
         f"{augment['blur_kernel']} is even: give an odd number of pixels, or 0 (image_size // 20 * 2 + 1)"),
    ]
    for holds, key, message in relations:
        if not holds:
            return f"config error: {where}.{key}: {message} ({FIX})"
    return None


def method_augment_error(config: dict) -> str | None:
    """Each configured method's augmentations: its `augment` subsection merged over `augment`."""
    for method in config["methods"]:
        override = config[method].get("augment", {})
        if override:
            message = augment_error({**config["augment"], **override}, f"{method}.augment")
            if message:
                return message
    return None


def warmup_error(config: dict) -> str | None:
    """A warm-up as long as the job it belongs to would leave nothing of the cosine schedule. Under
    `clustering.schedule: continuous` Experiment II has one warm-up, the base's, which must end
    within the base stage."""
    clustering = config["clustering"]
    jobs = [(f"{method}.warmup_epochs", config[method]["warmup_epochs"], "pretrain.epochs",
             config["pretrain"]["epochs"]) for method in config["methods"]]
    if clustering["subsets"]:
        jobs.append(("simsiam.warmup_epochs", config["simsiam"]["warmup_epochs"], "clustering.base_epochs",
                     clustering["base_epochs"]))
        if clustering["schedule"] == "per_stage":
            jobs.append(("simsiam.warmup_epochs", config["simsiam"]["warmup_epochs"], "clustering.expert_epochs",
                         clustering["expert_epochs"]))
            jobs.append(("clustering.distill.warmup_epochs", clustering["distill"]["warmup_epochs"],
                         "clustering.distill_epochs", clustering["distill_epochs"]))
    for key, warmup, epochs_key, epochs in jobs:
        if warmup >= epochs:
            where = (" (under clustering.schedule: continuous the one warm-up of base, experts and student must "
                     "end within the base stage)" if clustering["schedule"] == "continuous" and
                     epochs_key == "clustering.base_epochs" else "")
            return (f"config error: {key} = {warmup} is not less than {epochs_key} = {epochs}: the warm-up "
                    f"must end before the job does{where}; lower it ({FIX})")
    return None


def check_plan(config: dict) -> None:
    """Exit with a one-line message (status 1) if `plan_error` finds a problem."""
    message = plan_error(config)
    if message is not None:
        print(message, file=sys.stderr)
        sys.exit(1)
