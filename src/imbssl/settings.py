"""Settings in one place: dataclasses <-> command-line flags <-> the rules' params strings.

One hop from a config key to its use: config key `batch_size` -> rule params (`cli_flags`) ->
CLI flag `--batch-size` (`add_flags`) -> dataclass field / function argument `batch_size`.

Snakemake compares a job's params as strings to decide whether to rerun it, so the params must
be a canonical rendering of the settings: `cli_flags` writes a section in its key order (the
Snakefile first puts every section of the config in the schema's order, which tests keep equal to
the dataclass field order: `config_check.canonicalize`) and every value in one spelling. The
hash of the modules a rule runs (`code_hash`) is a param too, so a code edit reruns its jobs.

Nothing here imports torch: the Snakefile imports this module on every invocation.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import hashlib
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_type_hints

PACKAGE_DIR = Path(__file__).resolve().parent


def parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_flags(parser: argparse.ArgumentParser, cls: type, title: str | None = None) -> None:
    """One `--field-name` flag per dataclass field, typed and defaulted from the dataclass."""
    group = parser.add_argument_group(title or cls.__name__)
    hints = get_type_hints(cls)
    for field in dataclasses.fields(cls):
        kind = hints[field.name]
        flag = "--" + field.name.replace("_", "-")
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        if kind is bool:
            group.add_argument(flag, type=parse_bool, default=default, metavar="BOOL")
        elif kind in (int, float, str):
            group.add_argument(flag, type=kind, default=default)
        else:  # lists: space-separated values of the element type
            elem = getattr(kind, "__args__", (str,))[0]
            group.add_argument(flag, type=elem, nargs="+", default=default)


def from_args(cls: type, namespace: argparse.Namespace) -> Any:
    return cls(**{f.name: getattr(namespace, f.name) for f in dataclasses.fields(cls)})


def flag_value(value: Any) -> str:
    """The one spelling of a setting's value on the command line.

    Booleans are true/false; floats are Python's shortest round-trip repr, so 1e-5, 0.00001 and
    1.0e-5 all read 1e-05. The config's numbers are typed by the schema before they get here
    (an integer key never holds 30.0, a number key always holds a float).
    """
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    return str(value)


def cli_flags(settings: Mapping[str, Any]) -> str:
    """{"batch_size": 64, "amp": True} -> "--batch-size 64 --amp true", shell-quoted.

    Keys are dataclass fields, so the flags are exactly those of `add_flags`; they are written in
    the mapping's order (the schema's, once the config is canonical). None means "the command's
    default" and is left out; lists become space-separated values.
    """
    words = []
    for key, value in settings.items():
        if value is None:
            continue
        words.append(f"--{key.replace('_', '-')}")
        values = value if isinstance(value, (list, tuple)) else [value]
        words.extend(flag_value(item) for item in values)
    return " ".join(shlex.quote(word) for word in words)


def _code_without_docs(path: Path) -> str:
    """The module's code with comments, docstrings and formatting dropped."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree)


@functools.cache
def code_hash(*patterns: str, package_dir: Path = PACKAGE_DIR) -> str:
    """Hash of the package modules matching `patterns` (globs relative to the package), as a param.

    Snakemake does not track imported modules; with this param an edit to the code of
    evaluate.py (say) reruns the evaluation jobs, while an edit to a comment or docstring does not.
    """
    digest = hashlib.sha256()
    paths = sorted({path for pattern in patterns for path in package_dir.glob(pattern)})
    if not paths:
        raise ValueError(f"code_hash: no module matches {patterns} in {package_dir}")
    for path in paths:
        digest.update(path.relative_to(package_dir).as_posix().encode())
        digest.update(_code_without_docs(path).encode())
    return digest.hexdigest()[:16]
