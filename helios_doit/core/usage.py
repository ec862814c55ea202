"""argparse as a render tool's users expect it: no silent prefix matching (`--no-merg` is not
`--no-merge`), and every usage error one line that names the subcommand, says what is wrong and
suggests the flag that was probably meant."""
from __future__ import annotations

import argparse
import difflib
import sys
from typing import Any, Iterable, NoReturn


class Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")

    def flags(self) -> list[str]:
        return [flag for action in self._actions for flag in action.option_strings]

    def unknown_command(self, name: str, commands: list[str]) -> NoReturn:
        close = difflib.get_close_matches(name, commands, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}? " if close else ""
        self.error(f"unknown command {name!r}; {hint}commands: {', '.join(commands)}")

    def unknown(self, extra: list[str], also: Iterable[str] = ()) -> NoReturn:
        """Refuse arguments the parser did not know, suggesting the closest flag."""
        first = extra[0]
        name = first.split("=", 1)[0]
        if not name.startswith("-"):
            self.error(f"unexpected argument {first!r}")
        close = difflib.get_close_matches(name, [*self.flags(), *also], n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        self.error(f"unknown option {name}{hint}")


def one_line(prog: str, message: str, code: int = 2) -> int:
    """Say what is wrong in one line on stderr; returns the exit code (2: bad input, 1: the environment)."""
    sys.stderr.write(f"{prog}: {message}\n")
    return code
