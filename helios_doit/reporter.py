"""doit reporter: doit's console lines, then a summary a person can act on.

It is also the hook that runs in the main process when a run starts, which is where the
worker watchdog belongs; `doit -n 4 job=...` and the CLI both get it through DOIT_CONFIG.
"""
from __future__ import annotations

from typing import Any, TextIO

from doit.exceptions import BaseFail, TaskFailed
from doit.reporter import ConsoleReporter

from . import supervise


class Reporter(ConsoleReporter):
    desc = "helios-doit: console lines and a failure summary"

    def __init__(self, outstream: TextIO, options: dict[str, Any]):
        super().__init__(outstream, options)
        self.done: list[str] = []

    def write(self, text: str) -> None:
        # Chunk output reaches the terminal by write(2); flush so that lines stay in order.
        self.outstream.write(text)
        self.outstream.flush()

    def initialize(self, tasks: dict[str, Any], selected_tasks: list[str]) -> None:
        supervise.ensure_handlers()
        supervise.start_watchdog()

    def add_failure(self, task: Any, fail: BaseFail) -> None:
        self.failures.append({"task": task, "exception": fail})

    def add_success(self, task: Any) -> None:
        self.done.append(task.name)

    def complete_run(self) -> None:
        failed = [f for f in self.failures if isinstance(f["exception"], TaskFailed)]
        other = [f for f in self.failures if not isinstance(f["exception"], TaskFailed)]
        if failed:
            chunks = [f for f in failed if f["task"].name.startswith("chunk:")]
            what = f"{len(chunks)} chunk(s)" if chunks else ""
            if len(chunks) != len(failed):
                what = f"{what} and the merge" if what else "the merge"
            self.write(f"helios-doit: {what} failed; rerun to retry what is not done:\n")
            for result in failed:
                self.write(f"  {result['exception'].message}\n")
        for result in other:
            exc = result["exception"]
            self.write(f"helios-doit: {result['task'].name}: {exc.get_name()}: {exc.get_msg().strip()}\n")
        if self.runtime_errors:
            self.write("helios-doit: run aborted: " + "\n".join(self.runtime_errors) + "\n")
