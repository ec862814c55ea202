"""doit with timers around the steps of a helios-doit run, in the main process and in every worker.

    python bench/phases.py OUTDIR DOIT-ARGS...

Used by bench/profile_runner.py, never while benchmarking. Functions of doit and helios_doit
are wrapped in place (nothing in the repository is edited); each process writes
OUTDIR/phases-<pid>.json with, per step, its number of calls and inclusive seconds, plus its
own CPU time. Forked workers start from a copy of the main process' wrappers and reset the
counts. A step missing in this version of the code is listed under "missing" and skipped.
Times are inclusive (a step contains the steps it calls), as wall time and as the calling
thread's CPU time; on a busy 2-core machine the wall time of a step includes time spent
descheduled, so its CPU time is the cost. The wrappers cost about 1-2 us a call.
"""
from __future__ import annotations

import collections
import contextlib
import functools
import importlib
import json
import os
import resource
import sys
import time

T: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0, 0.0])  # calls, wall s, thread CPU s
_cpu = time.thread_time
MISSING: list[str] = []
ROLE = {"role": "main"}


def _timed(name, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t, c = time.perf_counter(), _cpu()
        try:
            return fn(*args, **kwargs)
        finally:
            entry = T[name]
            entry[0] += 1
            entry[1] += time.perf_counter() - t
            entry[2] += _cpu() - c
    return wrapper


def _timed_gen(name, fn):
    """A generator function: time each step of the iteration, not just creating the generator."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        gen = fn(*args, **kwargs)
        while True:
            t, c = time.perf_counter(), _cpu()
            try:
                item = next(gen)
            except StopIteration:
                T[name][1] += time.perf_counter() - t
                T[name][2] += _cpu() - c
                T[name][0] += 1
                return
            T[name][1] += time.perf_counter() - t
            T[name][2] += _cpu() - c
            yield item
    return wrapper


def _timed_cm(name, fn):
    """A context-manager function: time __enter__ and __exit__ (not the body)."""
    @functools.wraps(fn)
    @contextlib.contextmanager
    def wrapper(*args, **kwargs):
        t, c = time.perf_counter(), _cpu()
        cm = fn(*args, **kwargs)
        value = cm.__enter__()
        T[name][1] += time.perf_counter() - t
        T[name][2] += _cpu() - c
        T[name][0] += 1
        try:
            yield value
        except BaseException:
            t, c = time.perf_counter(), _cpu()
            suppressed = cm.__exit__(*sys.exc_info())
            T[name][1] += time.perf_counter() - t
            T[name][2] += _cpu() - c
            if not suppressed:
                raise
        else:
            t, c = time.perf_counter(), _cpu()
            cm.__exit__(None, None, None)
            T[name][1] += time.perf_counter() - t
            T[name][2] += _cpu() - c
    return wrapper


def patch(target: str, kind: str = "fn", also: tuple[str, ...] = ()) -> None:
    """Wrap `module:attr` or `module:Class.attr`; `also` names other modules that imported it by name."""
    module_name, _, path = target.partition(":")
    try:
        owner = importlib.import_module(module_name)
        *parents, attr = path.split(".")
        for part in parents:
            owner = getattr(owner, part)
        original = getattr(owner, attr)
    except (ImportError, AttributeError):
        MISSING.append(target)
        return
    wrap = {"fn": _timed, "gen": _timed_gen, "cm": _timed_cm}[kind]
    if isinstance(owner, type) and isinstance(owner.__dict__.get(attr), classmethod):
        setattr(owner, attr, classmethod(wrap(target, original.__func__)))
    elif isinstance(owner, type) and isinstance(owner.__dict__.get(attr), staticmethod):
        setattr(owner, attr, staticmethod(wrap(target, original)))
    else:
        wrapped = wrap(target, original)
        setattr(owner, attr, wrapped)
        for other in also:
            mod = sys.modules.get(other) or importlib.import_module(other)
            if getattr(mod, attr, None) is original:
                setattr(mod, attr, wrapped)


def dump(outdir: str) -> None:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    data = {
        "role": ROLE["role"], "pid": os.getpid(),
        "cpu_self": me.ru_utime + me.ru_stime, "cpu_user": me.ru_utime, "cpu_sys": me.ru_stime,
        "cpu_children": kids.ru_utime + kids.ru_stime, "maxrss_mb": me.ru_maxrss / 1024,
        "steps": {k: {"calls": int(v[0]), "seconds": v[1], "cpu": v[2]} for k, v in T.items()}, "missing": MISSING,
    }
    with open(os.path.join(outdir, f"phases-{os.getpid()}.json"), "w") as handle:
        json.dump(data, handle, indent=1)


MAIN_STEPS = [
    # job loading (inside dodo.py)
    ("helios_doit.tasks.refuse:load_or_exit", "fn", ()),
    ("helios_doit.spec.load:_read", "fn", ()),
    ("helios_doit.spec.load:_parse", "fn", ()),
    ("helios_doit.spec.model:JobSpec.model_validate", "fn", ()),
    ("helios_doit.spec.load:check_job", "fn", ()),
    ("helios_doit.tasks.session:namespace", "fn", ()),
    ("helios_doit.tasks.graph:chunk_tasks", "gen", ()),
    ("helios_doit.tasks.graph:fingerprint", "fn", ()),
    ("pydantic:BaseModel.model_dump", "fn", ()),
    # doit: loading and the graph
    ("doit.loader:get_module", "fn", ("doit.cmd_base",)),
    ("doit.loader:load_tasks", "fn", ("doit.cmd_base",)),
    ("doit.loader:generate_tasks", "fn", ()),
    ("doit.task:Task.__init__", "fn", ()),
    ("doit.control:TaskControl.__init__", "fn", ()),
    ("doit.control:TaskControl.process", "fn", ()),
    ("doit.dependency:Dependency.__init__", "fn", ()),
    # doit: the run loop in the main process
    ("doit.runner:Runner.run_all", "fn", ()),
    ("doit.runner:MRunner.get_next_job", "fn", ()),
    ("doit.runner:Runner.select_task", "fn", ()),
    ("doit.dependency:Dependency.get_status", "fn", ()),
    ("doit.task:Task.overwrite_verbosity", "fn", ()),
    ("doit.dependency:Dependency.status_is_ignore", "fn", ()),
    ("doit.dependency:Dependency.get_values", "fn", ()),
    ("doit.runner:JobTaskPickle.__init__", "fn", ()),
    ("doit.runner:JobTask.__init__", "fn", ()),
    ("doit.task:Task.pickle_safe_dict", "fn", ()),
    ("doit.task:Task.update_from_pickle", "fn", ()),
    ("doit.runner:MRunner._process_result", "fn", ()),
    ("doit.runner:Runner.process_task_result", "fn", ()),
    ("doit.dependency:Dependency.save_success", "fn", ()),
    ("doit.task:Task.save_extra_values", "fn", ()),
    ("doit.runner:Runner.finish", "fn", ()),
    ("doit.dependency:Dependency.close", "fn", ()),
    ("multiprocessing.queues:Queue.get", "fn", ()),
    ("multiprocessing.queues:Queue.put", "fn", ()),
    ("multiprocessing.reduction:ForkingPickler.dumps", "fn", ()),
    ("inspect:signature", "fn", ()),
    # our uptodate check and reporter
    ("helios_doit.tasks.uptodate:task_done", "fn", ()),
    ("helios_doit.state.files:read_json", "fn", ("helios_doit.tasks.complete",)),
    ("helios_doit.state.content:content_changed", "fn", ("helios_doit.tasks.complete",)),
    ("helios_doit.progress.reporter:Reporter.initialize", "fn", ()),
    ("helios_doit.progress.reporter:Reporter.get_status", "fn", ()),
    ("helios_doit.progress.reporter:Reporter.execute_task", "fn", ()),
    ("helios_doit.progress.reporter:Reporter.skip_uptodate", "fn", ()),
    ("helios_doit.progress.reporter:Reporter.add_success", "fn", ()),
    ("helios_doit.progress.reporter:Reporter.complete_run", "fn", ()),
    ("helios_doit.progress.reporter:Reporter.write", "fn", ()),
    ("helios_doit.progress.reporter:Reporter._tick", "fn", ()),
    ("helios_doit.progress.reporter:Reporter._drain", "fn", ()),
    ("helios_doit.progress.reporter:Reporter._write_json", "fn", ()),
]

WORKER_STEPS = [
    ("doit.runner:MRunner.execute_task", "fn", ()),
    ("doit.task:Task.execute", "fn", ()),
    ("doit.action:PythonAction.execute", "fn", ()),
    ("inspect:getfullargspec", "fn", ()),
    ("helios_doit.tasks.action:do_task", "fn", ("helios_doit.tasks.graph",)),
    ("helios_doit.executors.supervise:ensure_handlers", "fn", ("helios_doit.tasks.action",)),
    ("helios_doit.tasks.action:task_lock", "cm", ()),
    ("helios_doit.tasks.action:_until_done", "fn", ()),
    ("helios_doit.tasks.attempt:one_attempt", "fn", ()),
    ("helios_doit.tasks.attempt:remove", "fn", ()),
    ("helios_doit.executors.output:open_log", "fn", ()),
    ("helios_doit.tasks.attempt:write_json_atomic", "fn", ()),
    ("helios_doit.tasks.attempt:stamp", "fn", ()),
    ("helios_doit.tasks.attempt:_verify", "fn", ()),
    ("helios_doit.tasks.attempt:_record", "fn", ()),
    ("helios_doit.state.events:emit", "fn", ()),
    ("helios_doit.state.events:run_id", "fn", ()),
    ("helios_doit.executors.supervise:active", "cm", ()),
    ("helios_doit.executors.output:LogSink.__call__", "fn", ()),
    ("helios_doit.executors.output:LogSink.close", "fn", ()),
    ("helios_doit.executors.local:LocalAdapter.execute", "fn", ()),
    ("helios_doit.executors.local:command_env", "fn", ()),
    ("helios_doit.executors.local:_pump", "fn", ()),
    ("helios_doit.executors.local:_kill_group", "fn", ()),
    ("subprocess:Popen.__init__", "fn", ()),
    ("subprocess:Popen._execute_child", "fn", ()),
    ("subprocess:Popen.wait", "fn", ()),
    ("socket:gethostname", "fn", ()),
    ("pathlib:Path.mkdir", "fn", ()),
    ("pathlib:Path.exists", "fn", ()),
    ("tempfile:mkstemp", "fn", ("helios_doit.state.atomic",)),
    ("os:replace", "fn", ()),
]


def main() -> int:
    if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
        sys.path.pop(0)
    outdir, argv = sys.argv[1], sys.argv[2:]
    os.makedirs(outdir, exist_ok=True)
    import doit.runner

    for target, kind, also in MAIN_STEPS + WORKER_STEPS:
        patch(target, kind, also)

    original = doit.runner.MRunner.execute_task_subprocess

    def worker_loop(self, job_q, result_q, reporter_class):
        T.clear()
        ROLE["role"] = "worker"
        t = time.perf_counter()
        try:
            return original(self, job_q, result_q, reporter_class)
        finally:
            T["worker loop (total)"] = [1, time.perf_counter() - t, _cpu()]
            dump(outdir)

    doit.runner.MRunner.execute_task_subprocess = worker_loop
    from doit.doit_cmd import DoitMain

    t = time.perf_counter()
    try:
        code = DoitMain().run(argv)
    finally:
        T["DoitMain.run (total)"] = [1, time.perf_counter() - t, _cpu()]
        dump(outdir)
    return code


if __name__ == "__main__":
    sys.exit(main())
