"""The rules' params: canonical flags from the config, code hashes of the modules a rule runs."""

from __future__ import annotations

import copy
import shlex
from pathlib import Path

import pytest
import yaml

from imbssl.config_check import canonicalize, coerce_strings
from imbssl.settings import cli_flags, code_hash, flag_value

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
    """A throwaway package to hash: two modules."""
    root = tmp_path / "pkg"
    root.mkdir()
    (root / "a.py").write_text('"""Doc."""\n\ndef f(x):\n    # why\n    return x + 1\n')
    (root / "b.py").write_text("def g():\n    return 2\n")
    return root


def test_code_hash_ignores_comments_docstrings_and_formatting(package):
    before = code_hash("a.py", package_dir=package)
    code_hash.cache_clear()  # one Snakemake invocation hashes once; here the files change in between
    (package / "a.py").write_text('"""Another doc."""\n\n\ndef f(x):  # a new comment\n    """Doc."""\n'
                                  '    return (x + 1)\n')
    assert code_hash("a.py", package_dir=package) == before


def test_code_hash_changes_with_the_code_of_the_hashed_modules_only(package):
    a, both = code_hash("a.py", package_dir=package), code_hash("a.py", "b.py", package_dir=package)
    (package / "b.py").write_text("def g():\n    return 3\n")
    code_hash.cache_clear()
    assert code_hash("a.py", package_dir=package) == a  # b.py is not a's code
    assert code_hash("a.py", "b.py", package_dir=package) != both
    (package / "a.py").write_text("def f(x):\n    return x - 1\n")
    code_hash.cache_clear()
    assert code_hash("a.py", package_dir=package) != a


def test_code_hash_of_nothing_is_an_error(package):
    with pytest.raises(ValueError, match="no module matches"):
        code_hash("missing.py", package_dir=package)
