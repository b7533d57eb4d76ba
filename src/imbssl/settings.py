"""Settings in one place: dataclasses <-> command-line flags <-> the rules' params strings, and
the code hash of what a command runs.

One hop from a config key to its use: config key `batch_size` -> rule params (`cli_flags`) ->
CLI flag `--batch-size` (`add_flags`) -> dataclass field / function argument `batch_size`.

Snakemake compares a job's params as strings to decide whether to rerun it, so the params must
be a canonical rendering of the settings: `cli_flags` writes a section in its key order (the
Snakefile first puts every section of the config in the schema's order, which tests keep equal to
the dataclass field order: `config_check.canonicalize`) and every value in one spelling. The
hash of the modules a command really imports (`code_hash`) is a param too, so a code edit reruns
exactly the jobs whose command runs the edited code.

Nothing here imports torch: the Snakefile imports this module on every invocation.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import hashlib
import inspect
import re
import shlex
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_type_hints

PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGE = "imbssl"


# ---------------------------------------------------------------------------------------------
# Dataclass fields as command-line flags


def parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _without_none(kind: Any) -> tuple[Any, bool]:
    """(X, True) for `X | None`, (kind, False) otherwise."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(kind) if arg is not type(None)]
        if len(args) == 1:
            return args[0], True
    return kind, False


def choices_of(kind: Any) -> tuple | None:
    """The allowed values of a `Literal[...]` field (or `Literal[...] | None`), else None."""
    kind, _ = _without_none(kind)
    return typing.get_args(kind) if typing.get_origin(kind) is Literal else None


def field_comments(cls: type) -> dict[str, str]:
    """Each field's comment in the dataclass's source: the one on its line, or the comment lines
    right above it (the help text of its flag). Base classes are read first, so an inherited field
    keeps its base's comment unless the subclass gives it a comment of its own."""
    comments: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        comments.update({name: text for name, text in _own_field_comments(klass).items() if text})
    return comments


def _own_field_comments(cls: type) -> dict[str, str]:
    """`field_comments` of the fields written in `cls`'s own source (its bases not read)."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    comments: dict[str, str] = {}
    above: list[str] = []
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("#").strip())
            continue
        match = re.match(r"(\w+)\s*:[^=]*(=.*)?$", stripped)
        if match and not stripped.startswith(("def ", "class ", "@")):
            inline = stripped.split("  # ", 1)[1].strip() if "  # " in stripped else ""
            comments[match.group(1)] = " ".join([*above, inline]).strip()
        above = []
    return comments


def add_flags(parser: argparse.ArgumentParser, cls: type, title: str | None = None) -> None:
    """One `--field-name` flag per dataclass field, typed, defaulted and documented from the
    dataclass: a `Literal` field gets argparse `choices`, a list field space-separated values, an
    optional field (`X | None`) the default None."""
    group = parser.add_argument_group(title or cls.__name__)
    hints = get_type_hints(cls)
    comments = field_comments(cls)
    for field in dataclasses.fields(cls):
        kind, _ = _without_none(hints[field.name])
        flag = "--" + field.name.replace("_", "-")
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        options: dict[str, Any] = {"default": default, "help": comments.get(field.name, "").replace("%", "%%")}
        choices = choices_of(kind)
        if choices is not None:
            group.add_argument(flag, type=type(choices[0]), choices=choices, **options)
        elif kind is bool:
            group.add_argument(flag, type=parse_bool, metavar="BOOL", **options)
        elif kind in (int, float, str):
            group.add_argument(flag, type=kind, **options)
        else:  # lists: space-separated values of the element type
            elem = (typing.get_args(kind) or (str,))[0]
            group.add_argument(flag, type=elem, nargs="+", **options)


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


# ---------------------------------------------------------------------------------------------
# Code hashes: what a command really imports


# Modules that no code hash includes: the command line only parses (its flags are the params) and
# the method catalog is read by the rules themselves (what it decides reaches a job as params:
# method names and labels). Hashing the catalog would rerun every trained model when a method is
# added to it. The training progress display (bar, log lines) computes nothing a job writes: a
# change to how it looks must not retrain every model.
NOT_HASHED = {f"{PACKAGE}.cli", f"{PACKAGE}.methods.catalog", f"{PACKAGE}.training.progress"}


def module_file(name: str, package_dir: Path = PACKAGE_DIR) -> Path | None:
    """The source file of package module `name` (imbssl.a.b -> a/b.py or a/b/__init__.py), or None."""
    parts = name.split(".")[1:]
    base = package_dir.joinpath(*parts)
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _absolute(node: ast.ImportFrom, name: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = name.split(".") if is_package else name.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _with_parents(name: str) -> list[str]:
    """imbssl.a.b -> [imbssl, imbssl.a, imbssl.a.b]: importing a module runs its packages' __init__."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def direct_imports(name: str, package_dir: Path = PACKAGE_DIR) -> set[str]:
    """The package modules that module `name` imports anywhere in its code (function-level imports
    included): `import imbssl.x`, `from imbssl.x import y` (y itself when it is a module), relative
    imports."""
    path = module_file(name, package_dir)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node, name, path.name == "__init__.py")
            targets = [module, *(f"{module}.{alias.name}" for alias in node.names)]
        else:
            continue
        for target in targets:
            if target.split(".")[0] == PACKAGE and module_file(target, package_dir) is not None:
                found.update(_with_parents(target))
    return found


@functools.cache
def import_closure(name: str, package_dir: Path = PACKAGE_DIR) -> frozenset[str]:
    """Module `name` and every package module it imports, directly or through others."""
    seen: set[str] = set()
    todo = _with_parents(name)
    while todo:
        current = todo.pop()
        if current in seen or module_file(current, package_dir) is None:
            continue
        seen.add(current)
        todo.extend(direct_imports(current, package_dir) - seen)
    return frozenset(seen)


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


def hashed_modules(*entries: str, package_dir: Path = PACKAGE_DIR) -> list[str]:
    """The modules `code_hash(*entries)` covers, sorted."""
    missing = [entry for entry in entries if module_file(entry, package_dir) is None]
    if missing:
        raise ValueError(f"code_hash: no module {', '.join(missing)} in {package_dir}")
    modules = set().union(*(import_closure(entry, package_dir) for entry in entries))
    return sorted(modules - NOT_HASHED)


@functools.cache
def code_hash(*entries: str, package_dir: Path = PACKAGE_DIR) -> str:
    """Hash of the code of the entry modules and everything they import (`import_closure`), as a
    param: Snakemake does not track imported modules; with this param an edit to the code of any
    module a job runs reruns the job, while an edit to a comment or docstring does not."""
    digest = hashlib.sha256()
    for name in hashed_modules(*entries, package_dir=package_dir):
        path = module_file(name, package_dir)
        digest.update(path.relative_to(package_dir).as_posix().encode())
        digest.update(_code_without_docs(path).encode())
    return digest.hexdigest()[:16]


def forget_code() -> None:
    """Drop the cached closures and hashes (one Snakemake invocation hashes once; tests edit code)."""
    import_closure.cache_clear()
    code_hash.cache_clear()
