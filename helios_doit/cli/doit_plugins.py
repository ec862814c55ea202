"""doit commands that cannot mean anything over helios-doit's runs, replaced by one line each.

`doit dumpdb` never loads the dodo file (unlike `doit ignore`, which `tasks.session.dodo`
refuses as it loads the tasks), and traces back on a database that was never written, which is
always so under helios-doit: it keeps doit's in memory. The replacement is registered as an
entry point (`doit.COMMAND`), so it holds in every folder (the repository's, one `helios-doit
init` wrote); in a folder whose doit project has a database, doit's own dump runs as before.
"""
from __future__ import annotations

from dbm import whichdb
from typing import Any

from doit import get_var
from doit.cmd_dumpdb import DumpDB as DoitDumpDB

from ..core.usage import one_line
from ..tasks.session import REFUSED_COMMANDS


class DumpDB(DoitDumpDB):
    doc_purpose = "dump doit's database; helios-doit keeps none: `helios-doit status JOB` shows where tasks stand"

    def execute(self, opt_values: dict[str, Any], pos_args: list[str]) -> int:
        if whichdb(opt_values["dep_file"]):  # a database there: another doit project's
            return super().execute(opt_values, pos_args)
        job = get_var("job") or "JOB"
        return one_line("helios-doit", "doit dumpdb: " + REFUSED_COMMANDS["dumpdb"].format(job=job))
