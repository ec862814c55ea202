"""doit commands that cannot mean anything over helios-doit's runs, replaced by one line each.

doit loads a project's command plugins from the pyproject.toml of the folder it runs in
(`[tool.doit.plugins.command]` in the repository's). `doit dumpdb` needs it: unlike `doit
ignore`, which `tasks.session.dodo` refuses as it loads the tasks, it never loads the dodo
file, and would trace back on a database that was never written (helios-doit keeps doit's in
memory).
"""
from __future__ import annotations

import os
from typing import Any

from doit import get_var
from doit.cmd_base import Command

from ..core.usage import one_line
from ..tasks.session import EXAMPLE_JOB, REFUSED_COMMANDS


class DumpDB(Command):
    name = "dumpdb"
    doc_purpose = "not with helios-doit: `helios-doit status JOB` shows where tasks stand"
    doc_usage = ""

    def execute(self, opt_values: dict[str, Any], pos_args: list[str]) -> int:
        job = get_var("job") or os.path.relpath(EXAMPLE_JOB)  # the repository's dodo.py renders the example
        return one_line("helios-doit", "doit dumpdb: " + REFUSED_COMMANDS["dumpdb"].format(job=job))
