"""The run options as CLI flags: built from the one options table, read back through it."""
from __future__ import annotations

import argparse

from ..tasks.options import OPTIONS, RunOptions, parse


def add_option_flags(parser: argparse.ArgumentParser) -> None:
    for option in OPTIONS:
        if option.switch:
            parser.add_argument(option.flag, dest=option.field, action="store_true", help=option.help)
        else:
            parser.add_argument(option.flag, dest=option.field, metavar=option.metavar, help=option.help)


def options_from_flags(args: argparse.Namespace, doit_args: list[str]) -> RunOptions:
    """Raises JobError naming the flag for a bad value."""
    given: dict[str, str | None] = {}
    for option in OPTIONS:
        value = getattr(args, option.field)
        given[option.variable] = ("1" if value else None) if option.switch else value
    return parse(given, doit_args, as_flags=True)
