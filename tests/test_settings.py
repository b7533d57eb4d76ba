"""The rules' params: canonical flags from the config, code hashes of the modules a rule runs."""

from __future__ import annotations

import copy
import shlex
from pathlib import Path

import pytest
import yaml

from imbssl.config_check import canonicalize, coerce_strings
from imbssl.settings import cli_flags, code_hash, flag_value, forget_code, hashed_modules

REPO = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())


def test_flag_values_have_one_spelling():
    assert flag_value(True) == "true" and flag_value(False) == "false"
    assert flag_value(1e-5) == flag_value(0.00001) == flag_value(float("1.0e-5")) == "1e-05"
    assert flag_value(30.0) == "30.0" and flag_value(30) == "30" and flag_value("sgd") == "sgd"


def test_cli_flags_renders_keys_as_flags_in_order():
    assert cli_flags({"batch_size": 64, "amp": True, "device": None, "classes": ["a b", "c"]}) == \
        "--batch-size 64 --amp true --classes 'a b' c"


def reversed_keys(value):
    """The same config with every mapping's keys in reverse order."""
    if isinstance(value, dict):
        return {key: reversed_keys(value[key]) for key in reversed(list(value))}
    return value


def merged(*configs):
    """Later configs over earlier ones, recursively (as Snakemake merges --configfile files)."""
    out: dict = {}
    for config in configs:
        for key, value in config.items():
            out[key] = merged(out.get(key, {}), value) if isinstance(value, dict) else copy.deepcopy(value)
    return out


def section_flags(config):
    config = canonicalize(copy.deepcopy(config), SCHEMA)
    return {key: cli_flags(value) for key, value in config.items() if isinstance(value, dict)}


def test_the_same_settings_render_the_same_flags_whatever_the_key_order():
    paper = yaml.safe_load((REPO / "config.yaml").read_text())
    demo = yaml.safe_load((REPO / "config/demo.yaml").read_text())
    expected = section_flags(merged(paper, demo))
    assert section_flags(merged(reversed_keys(paper), reversed_keys(demo))) == expected
    # Whatever order a file lists them in, a section's keys come out in the schema's order.
    for section in ("pretrain", "model", "evaluation"):
        assert list(canonicalize(reversed_keys(merged(demo)), SCHEMA)[section]) == \
            [key for key in SCHEMA["properties"][section]["properties"] if key in demo[section]], section


def test_numbers_are_typed_by_the_schema():
    # `--config 'evaluation={lr: 30}'` repeats lr 30.0 as an integer; an integer key may arrive as 20.0.
    a = canonicalize({"evaluation": {"lr": 30, "epochs": 20.0}, "subsets": {"imbalance_factors": [10, 100]}}, SCHEMA)
    b = canonicalize({"evaluation": {"epochs": 20, "lr": 30.0}, "subsets": {"imbalance_factors": [10.0, 100.0]}},
                     SCHEMA)
    assert a == b and cli_flags(a["evaluation"]) == cli_flags(b["evaluation"]) == "--epochs 20 --lr 30.0"
    assert type(a["evaluation"]["epochs"]) is int and type(a["evaluation"]["lr"]) is float
    assert cli_flags(a["subsets"]) == "--imbalance-factors 10.0 100.0"
    assert canonicalize({"pretrain": {"amp": True}}, SCHEMA)["pretrain"]["amp"] is True  # bools stay bools


def test_command_line_strings_end_up_like_the_file_values():
    typed = canonicalize(coerce_strings({"pretrain": {"epochs": "20", "amp": "true"}}, SCHEMA), SCHEMA)
    from_file = canonicalize({"pretrain": {"amp": True, "epochs": 20}}, SCHEMA)
    assert cli_flags(typed["pretrain"]) == cli_flags(from_file["pretrain"]) == "--epochs 20 --amp true"


def test_flags_parse_back_with_the_cli():
    """Every flag the params render is one the command's parser reads back to the same value."""
    import argparse

    from imbssl.evaluation.evaluate import EvalSettings
    from imbssl.settings import add_flags, from_args

    config = canonicalize({"evaluation": {"lr": 30, "weight_decay": 1e-5, "feature_norm": "l2"}}, SCHEMA)
    defaults = {key: spec["default"] for key, spec in SCHEMA["properties"]["evaluation"]["properties"].items()}
    section = canonicalize({"evaluation": {**defaults, **config["evaluation"]}}, SCHEMA)["evaluation"]
    parser = argparse.ArgumentParser()
    add_flags(parser, EvalSettings)
    parsed = from_args(EvalSettings, parser.parse_args(shlex.split(cli_flags(section))))
    assert parsed.lr == 30.0 and parsed.weight_decay == 1e-5 and parsed.feature_norm == "l2"


@pytest.fixture
def package(tmp_path):
    """A throwaway `imbssl` package to hash: a imports b (relative, inside a function) and the
    subpackage sub.c (absolute); d is imported by nobody."""
    root = tmp_path / "imbssl"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "sub" / "__init__.py").write_text('"""A subpackage."""\n')
    (root / "a.py").write_text('"""Doc."""\n\nimport imbssl.sub.c\n\n\ndef f(x):\n    # why\n'
                               '    from . import b\n    return b.g(x) + 1\n')
    (root / "b.py").write_text("def g(x):\n    return 2 * x\n")
    (root / "sub" / "c.py").write_text("K = 3\n")
    (root / "d.py").write_text("def h():\n    return 4\n")
    forget_code()
    yield root
    forget_code()


def edited(package, name, text):
    (package / name).write_text(text)
    forget_code()


def test_code_hash_ignores_comments_docstrings_and_formatting(package):
    before = code_hash("imbssl.a", package_dir=package)
    edited(package, "a.py", '"""Another doc."""\n\nimport imbssl.sub.c  # a comment\n\n\ndef f(x):\n'
                            '    """Doc."""\n    from . import b\n\n    return (b.g(x) + 1)\n')
    assert code_hash("imbssl.a", package_dir=package) == before


def test_the_hash_covers_what_a_module_imports_and_nothing_else(package):
    assert hashed_modules("imbssl.a", package_dir=package) == ["imbssl", "imbssl.a", "imbssl.b", "imbssl.sub",
                                                                "imbssl.sub.c"]
    before = code_hash("imbssl.a", package_dir=package)
    edited(package, "d.py", "def h():\n    return 5\n")  # imported by nobody
    assert code_hash("imbssl.a", package_dir=package) == before
    edited(package, "b.py", "def g(x):\n    return 3 * x\n")  # a's function-level relative import
    changed = code_hash("imbssl.a", package_dir=package)
    assert changed != before
    edited(package, "sub/c.py", "K = 4\n")  # an absolute import into a subpackage
    assert code_hash("imbssl.a", package_dir=package) != changed


def test_a_new_import_joins_the_hash(package):
    before = code_hash("imbssl.b", package_dir=package)
    edited(package, "b.py", "from imbssl import d\n\n\ndef g(x):\n    return 2 * x\n")
    assert code_hash("imbssl.b", package_dir=package) != before
    assert "imbssl.d" in hashed_modules("imbssl.b", package_dir=package)


def test_code_hash_of_nothing_is_an_error(package):
    with pytest.raises(ValueError, match="no module imbssl.missing"):
        code_hash("imbssl.missing", package_dir=package)


def test_commands_hash_the_modules_they_really_import():
    """The gaps of the hand-kept lists this replaced: the evaluate rule reaches models and the ViT
    through the backbone it restores; prototype usage reaches the models and the augmentations."""
    from imbssl.cli import COMMANDS

    evaluate = hashed_modules(COMMANDS["evaluate"].module)
    assert {"imbssl.models.backbones", "imbssl.models.vit", "imbssl.evaluation.linear",
            "imbssl.evaluation.knn", "imbssl.core.artifacts"} <= set(evaluate)
    assert not {m for m in evaluate if m.startswith(("imbssl.training", "imbssl.reporting", "imbssl.clustering"))}
    usage = hashed_modules(COMMANDS["prototype-usage"].module)
    assert {"imbssl.models.backbones", "imbssl.data.augment", "imbssl.methods.registry"} <= set(usage)
    # The method's own module is not imported by the command: the rule adds it per method
    # (command_code_hash("prototype-usage", method)), as the pretrain rule does.
    assert "imbssl.methods.msn" not in usage
    # Tables and figures never hash (nor import) the training side.
    for command in ("table", "group-table", "figure-frequency", "figure-curves"):
        assert not any(m.startswith(("imbssl.training", "imbssl.models")) for m in
                       hashed_modules(COMMANDS[command].module)), command
    # The command line and the method catalog are never hashed: adding a method reruns nothing; nor
    # is the training progress display: how a bar looks retrains nothing.
    assert not {"imbssl.cli", "imbssl.methods.catalog", "imbssl.training.progress"} & set().union(
        *(hashed_modules(c.module) for c in COMMANDS.values()))


def test_an_import_added_to_an_evaluation_module_changes_the_evaluate_hash(tmp_path):
    import shutil

    from imbssl.cli import COMMANDS
    from imbssl.settings import PACKAGE_DIR

    copy = tmp_path / "imbssl"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    entry = COMMANDS["evaluate"].module
    forget_code()
    before = code_hash(entry, package_dir=copy)
    assert "imbssl.clustering.kmeans" not in hashed_modules(entry, package_dir=copy)
    linear = copy / "evaluation" / "linear.py"
    linear.write_text(linear.read_text() + "\n\ndef _cluster():\n    from imbssl.clustering import kmeans\n")
    forget_code()
    assert "imbssl.clustering.kmeans" in hashed_modules(entry, package_dir=copy)
    assert code_hash(entry, package_dir=copy) != before
    forget_code()
