"""`imbssl <command> --help`: every command answers, and every flag it lists has a one-line help and,
when it has one, its default, so that a researcher can read a setting's meaning and value at the
terminal (the method flags with `--method NAME --help`)."""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest

from imbssl.cli import COMMANDS, build_parser
from imbssl.methods.catalog import METHODS


def help_of(*argv: str) -> tuple[str, argparse.ArgumentParser]:
    """The help text `imbssl argv --help` prints, and the command's parser."""
    argv = [*argv, "--help"]
    parser = build_parser(argv)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as stop:
        parser.parse_args(argv)
    assert stop.value.code == 0
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return out.getvalue(), subparsers.choices[argv[0]]


def undocumented(parser: argparse.ArgumentParser) -> list[str]:
    """The flags of `parser` with no help text, or with a default that the help does not show."""
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or not action.option_strings:
            continue
        text = action.help or ""
        if not text.strip():
            missing.append(f"{action.option_strings[0]}: no help")
        elif action.default not in (None, argparse.SUPPRESS) and not action.required:
            shown = parser.formatter_class(parser.prog)._get_help_string(action)
            if "%(default)" not in shown:
                missing.append(f"{action.option_strings[0]}: default not shown")
    return missing


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_answers_help_with_every_flag_explained(command):
    text, parser = help_of(command)
    assert text.startswith("usage: imbssl " + command)
    assert COMMANDS[command].help.split()[0] in text  # the command's one-line description
    assert undocumented(parser) == []


@pytest.mark.parametrize("method", METHODS)
def test_method_flags_are_listed_with_their_defaults(method):
    text, parser = help_of("pretrain", "--method", method)
    assert undocumented(parser) == []
    assert "--base-lr" in text and "(default: " in text


def test_pretrain_help_without_a_method_says_how_to_see_its_flags():
    text, _ = help_of("pretrain")
    assert "--method NAME --help" in text
    for method in METHODS:
        assert method in text


def test_a_defaults_help_shows_the_value_config_yaml_would_pass():
    # One flag read by hand: SimCLR's LARS trust coefficient, default 0.001 (its dataclass field).
    text, _ = help_of("pretrain", "--method", "simclr")
    flag = text[text.index("\n  --lars-eta LARS_ETA"):]  # its entry in the option list, not the usage line
    assert "(default: 0.001)" in " ".join(flag[:400].split())
