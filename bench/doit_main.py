"""`python -m doit` plus a resource report: what bench/run.py launches for every doit run.

    python bench/doit_main.py [--rusage-out=FILE] [--profile-out=FILE] DOIT-ARGS...

Exactly doit's own entry point (`DoitMain().run(argv)`), then, as the process ends, writes
JSON with the main process' own peak RSS and CPU time (RUSAGE_SELF) and those of the
processes it waited for (RUSAGE_CHILDREN: doit's workers and their commands). With
`--profile-out` the main process runs under cProfile (for bench/profile.py only; never
while timing).
"""
from __future__ import annotations

import json
import os
import resource
import sys
import time


def main() -> int:
    if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
        sys.path.pop(0)  # bench/'s own modules must never shadow anything doit or the dodo imports
    argv = sys.argv[1:]
    out = prof_out = None
    while argv and argv[0].startswith(("--rusage-out=", "--profile-out=")):
        key, value = argv.pop(0).split("=", 1)
        if key == "--rusage-out":
            out = value
        else:
            prof_out = value
    started = time.perf_counter()
    code = 1
    try:
        from doit.doit_cmd import DoitMain

        if prof_out:
            import cProfile

            import doit.runner

            loop = doit.runner.MRunner.execute_task_subprocess

            def unprofiled_worker(*args, **kwargs):
                sys.setprofile(None)  # a forked worker inherits the profiler; profile the main process only
                return loop(*args, **kwargs)

            doit.runner.MRunner.execute_task_subprocess = unprofiled_worker
            profiler = cProfile.Profile()
            try:
                code = profiler.runcall(DoitMain().run, argv)
            finally:
                profiler.dump_stats(prof_out)
        else:
            code = DoitMain().run(argv)
    finally:
        if out:
            me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
            with open(out, "w") as handle:
                json.dump({
                    "wall": time.perf_counter() - started,
                    "self_maxrss_mb": me.ru_maxrss / 1024, "self_user": me.ru_utime, "self_sys": me.ru_stime,
                    "children_maxrss_mb": kids.ru_maxrss / 1024, "children_user": kids.ru_utime,
                    "children_sys": kids.ru_stime,
                }, handle)
    return code


if __name__ == "__main__":
    sys.exit(main())
