"""`helios-doit`: the command line, with the render service's commands. The entry point sits here,
at the top of the package, so that the command line below knows nothing of the service."""
from __future__ import annotations

from ..cli.main import main as cli_main
from ..cli.main import register
from . import commands

register("serve", "run the render service: a queue of jobs, its HTTP API and dashboard", lambda: commands.SERVE)
register("submit", "queue a job on a running render service", lambda: commands.SUBMIT)
register("jobs", "list the render service's jobs, or pause|resume|cancel|retry|delete one", lambda: commands.JOBS)


def main(argv: list[str] | None = None) -> int:
    return cli_main(argv)
