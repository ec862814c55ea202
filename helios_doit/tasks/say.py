"""One line for the user from a task, on stderr, in one write: doit's worker processes share the terminal."""
from __future__ import annotations

import os


def say(line: str) -> None:
    try:
        os.write(2, f"helios-doit: {line}\n".encode(errors="replace"))
    except OSError:
        pass
