"""How a command string becomes a process, as cheaply as its meaning allows.

A job's command is shell syntax and must behave exactly as `/bin/sh -c` would run it. Most
render commands are plain words, though, and for those the shell is only an extra process:
dash forks the last command of `-c` instead of exec'ing it, so every chunk would cost two
process starts. Like make, a command made only of plain words (no quoting, expansion,
redirection, operators, assignments, comments, keywords or builtins) is split on blanks and
exec'd directly; anything else goes to the shell, untouched.
"""
from __future__ import annotations

import re

SHELL = "/bin/sh"

#: Any of these means the shell has something to do: quoting, expansion, globbing, history,
#: redirection, pipes, lists, subshells, groups, comments, escapes, line breaks.
_SPECIAL = re.compile(r"""[#;"'*?\[\]&|<>(){}$`^~!\\\n\r\v\f]""")

#: Words the shell gives a meaning of its own when they come first (POSIX special builtins,
#: regular builtins that act on the shell itself, reserved words, and common extensions).
_SHELL_WORDS = frozenset("""
    . : alias bg break case cd command continue do done elif else esac eval exec exit export fc
    fg fi for function getopts hash if in jobs kill local logout read readonly return select set
    shift source test then time times trap type typeset ulimit umask unalias unset until wait
    while echo printf pwd true false
""".split())


def argv_for(command: str) -> list[str]:
    """The argv to exec for `command`: its own words when they need no shell, else sh -c."""
    if _SPECIAL.search(command):
        return [SHELL, "-c", command]
    words = [word for word in re.split(r"[ \t]+", command) if word]
    if not words or "=" in words[0] or words[0] in _SHELL_WORDS:
        return [SHELL, "-c", command]
    return words


def exec_failure(argv: list[str], error: OSError) -> tuple[int, str]:
    """What sh would have said and returned when a command cannot be exec'd (127 or 126)."""
    if isinstance(error, FileNotFoundError):
        return 127, f"{argv[0]}: not found"
    return 126, f"{argv[0]}: cannot execute: {error.strerror}"
