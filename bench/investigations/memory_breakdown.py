"""Where the runner's memory goes for an N-chunk job (P5): RSS and tracemalloc, stage by stage.

    .venv/bin/python bench/memory_breakdown.py [--chunks N] [--code REV]

In a fresh process it imports what `doit ... job=` imports, then loads the job as dodo.py
does, builds doit's tasks and its TaskControl, and creates the reporter's progress model,
printing the RSS (VmRSS) after each stage and what tracemalloc attributes to each, by file.
No task runs. (tracemalloc itself adds overhead, so RSS figures come from a second pass
without it.)
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

STAGES = r'''
import gc, os, sys, time, tracemalloc
TRACE = {trace}
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
marks = []
def mark(name):
    gc.collect()
    snap = tracemalloc.take_snapshot() if TRACE else None
    marks.append((name, rss(), snap))
if TRACE:
    tracemalloc.start(1)
mark("python")
import doit.doit_cmd, doit.runner, doit.loader, doit.control, doit.dependency
mark("import doit")
from helios_doit.tasks.refuse import load_or_exit; from helios_doit.tasks.session import namespace
from helios_doit.progress import reporter as _rep
mark("import helios_doit")
job = load_or_exit({job!r})
mark("load_job (JSON, pydantic, validation)")
ns = namespace(job)
mark("namespace (state dir, inputs digest)")
from doit.cmd_base import ModuleTaskLoader
from doit.loader import load_tasks
tasks = load_tasks(ns, command_names=(), allow_delayed=False)
mark("doit tasks (task dicts -> Task objects)")
from doit.control import TaskControl
control = TaskControl(tasks)
control.process(None)
mark("TaskControl (graph, selection)")
try:
    from helios_doit.progress.reporter import Reporter
    import io
    rep = Reporter(io.StringIO(), {{}})
    rep.initialize(control.tasks, control.selected_tasks)
    rep.stop.set()
    mark("reporter.initialize (progress model)")
except Exception as exc:
    print("reporter:", type(exc).__name__, exc)
prev = None
for name, mb, snap in marks:
    line = f"{{name:<42}} RSS {{mb:7.1f}} MB"
    if prev is not None:
        line += f"  (+{{mb - prev[1]:.1f}} MB)"
    print(line)
    if TRACE and prev is not None and snap is not None and prev[2] is not None:
        stats = snap.compare_to(prev[2], "filename")
        for stat in sorted(stats, key=lambda s: -s.size_diff)[:6]:
            if stat.size_diff > 256 * 1024:
                frame = stat.traceback[0]
                print(f"      {{stat.size_diff / 1e6:7.1f}} MB  {{stat.count_diff:>8}} blocks  {{frame.filename.split('site-packages/')[-1]}}")
    prev = (name, mb, snap)
'''


def main() -> int:
    import common
    from jobs import write_touch_workload

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=10000)
    parser.add_argument("--code", default="worktree")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="helios-mem-", dir=common.scratch_root()))
    if args.code != "worktree":
        common.use_snapshot(args.code, work / "code")
    paths = write_touch_workload(work / "job", args.chunks)
    env = common.bench_env()
    for trace in (False, True):
        print(f"--- {'tracemalloc: what each stage allocated, by file' if trace else 'RSS only'} "
              f"({args.chunks:,} chunks, code: {common.CODE['label']})")
        code = STAGES.format(trace=trace, job=str(paths["job"]))
        subprocess.run([common.PYTHON, "-c", code], cwd=work / "job", env=env, check=False)
    subprocess.run(["rm", "-rf", str(work)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
