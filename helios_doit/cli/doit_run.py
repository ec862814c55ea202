"""The one place that hands a job's task namespace to doit's own `DoitMain`."""
from __future__ import annotations

from typing import Any

from doit.cmd_base import ModuleTaskLoader
from doit.doit_cmd import DoitMain

from ..core.errors import HeliosDoitError
from ..executors import supervise

#: doit's exit codes -> ours: 0 done, 1 a chunk or the merge failed, 2 bad input or arguments.
EXIT_CODES = {0: 0, 1: 1, 2: 1, 3: 2}


class Stopped(HeliosDoitError):
    """The run was stopped by a signal (and said so); `exit_code` is what the CLI exits with (128+N, or 1)."""

    def __init__(self, code: int):
        super().__init__("the run was stopped", exit_code=code)


def run_doit(namespace: dict[str, Any], run_args: list[str]) -> int:
    """doit's exit code for `doit RUN_ARGS` over `namespace`; raises Stopped when a signal stopped it."""
    try:
        return int(DoitMain(ModuleTaskLoader(namespace), config_filenames=()).run(run_args))
    except KeyboardInterrupt:
        supervise.report_stop()
        raise Stopped(supervise.stop_code()) from None
