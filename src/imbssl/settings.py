"""Dataclass settings <-> command-line flags.

One hop from a config key to its use: config key `batch_size` -> rule params -> CLI flag
`--batch-size` -> dataclass field / function argument `batch_size`.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, get_type_hints


def _parse_bool(text: str) -> bool:
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
            group.add_argument(flag, type=_parse_bool, default=default, metavar="BOOL")
        elif kind in (int, float, str):
            group.add_argument(flag, type=kind, default=default)
        else:  # lists: space-separated values of the element type
            elem = getattr(kind, "__args__", (str,))[0]
            group.add_argument(flag, type=elem, nargs="+", default=default)


def from_args(cls: type, namespace: argparse.Namespace) -> Any:
    return cls(**{f.name: getattr(namespace, f.name) for f in dataclasses.fields(cls)})
