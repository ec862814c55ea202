"""Our own subcommands (`helios-doit render`, `helios-doit merge`), as functions.

The layer that owns one registers it here (`video.commands`); the executors reach it by name:
a chunk whose command is `helios-doit render ...` of this installation, or the built-in merge,
is forked from the runner and the child calls the function, instead of starting a new Python
and coming back up through the command line. `preload` imports what the function needs, once,
before a runner forks its workers or its first render.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class OwnCommand:
    main: Callable[[list[str]], int]  # `helios-doit NAME ARGS...` in this process: its exit code
    preload: Callable[[], None]  # import what `main` needs (PyAV, numpy)


_COMMANDS: dict[str, OwnCommand] = {}


def register(name: str, main: Callable[[list[str]], int], preload: Callable[[], None]) -> None:
    _COMMANDS[name] = OwnCommand(main, preload)


def lookup(name: str) -> OwnCommand | None:
    """The registered subcommand `name`, if there is one (only `render` and `merge` are)."""
    return _COMMANDS.get(name)
