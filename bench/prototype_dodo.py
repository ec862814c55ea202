"""Prototypes of the speed-ups proposed in BENCHMARKS.md, to measure them before anyone writes them.

    HELIOS_PROTO=A,B,C,... doit -f bench/prototype_dodo.py -n 2 job=path/to/job.json

The same as the repository's dodo.py, except that the listed changes are patched into
helios_doit in this process (and so in the doit workers it forks) before the tasks are made.
Nothing in the repository is edited. Written against commit 22219c7 (the code the numbers in
BENCHMARKS.md come from); a later helios_doit may not have the names it patches, and then
the patch is reported on stderr and skipped. Evidence for the proposals only, not a
supported way to run jobs: the shortcuts here are not all as careful as the real changes
would have to be (each says what it leaves out).

  A  progress: the "ok chunk:N [k/n chunks, f/F frames]" line from running counters, not a
     full Progress.snapshot() over every chunk per finished chunk (O(n) -> O(1))
  B  reporter: no read of the event log in doit's per-task callbacks; the 0.1 s ticker
     still reads it (left out: the done line then lacks the worker's duration; the real change
     would return it in the task's values)
  C  reporter: no "task-skip" event written per up-to-date task (one open/write/close each);
     the progress model is still fed (the real change: one summary event)
  D  chunk uptodate decided when the tasks are made, as a bool, from one listing of records/
     (a chunk without a record is not done, without opening anything); no callable, so doit
     skips inspect.signature and the call (the merge keeps its callable: it depends on this run)
  E  doit's dep file: the json backend (one read, one write) instead of sqlite3 (one SELECT per
     task); helios-doit does not rely on doit's state
  F  commands without shell syntax run without /bin/sh (shlex.split; conservative character
     set; left out: mapping "not found" to exit 127 as sh does -- here it falls back to sh)
  G  records and markers: tmp file named by pid + os.write + os.replace, instead of
     tempfile.mkstemp + a text file object (same atomicity)
  H  event log: one O_APPEND descriptor per process instead of open/write/close per event
"""
import json
import os
import re
import shlex
import sys

from doit import get_var, loader

WANTED = {x.strip().upper() for x in os.environ.get("HELIOS_PROTO", "").split(",") if x.strip()}


def _skip(letter: str, exc: Exception) -> None:
    sys.stderr.write(f"prototype {letter}: not applied ({type(exc).__name__}: {exc})\n")


if "A" in WANTED:
    try:
        from helios_doit import progress as _progress

        _orig_apply = _progress.Progress.apply

        def _apply(self, event):
            key = _progress.task_key(event)
            task = self.tasks.get(key) if key else None
            before = task.finished if task is not None else None
            changed = _orig_apply(self, event)
            task = self.tasks.get(key) if key else None
            if task is not None and task.chunk_id is not None and task.finished and not before:
                self._proto_done = getattr(self, "_proto_done", 0) + 1
                self._proto_frames = getattr(self, "_proto_frames", 0) + task.frames
            return changed

        def _done_line(self, key):
            if not hasattr(self, "_proto_total"):
                chunks = [t for t in self.tasks.values() if t.chunk_id is not None]
                self._proto_total, self._proto_total_frames = len(chunks), sum(t.frames for t in chunks)
            task = self.tasks.get(key)
            counts = (f"{getattr(self, '_proto_done', 0)}/{self._proto_total} chunks, "
                      f"{getattr(self, '_proto_frames', 0)}/{self._proto_total_frames} frames")
            if task is not None and task.state == "skipped":
                return f"-- {_progress.label(key)} (done by another runner) [{counts}]"
            took = f" in {task.duration:.2f}s" if task is not None and task.duration is not None else ""
            tries = f" after {task.attempt} attempts" if task is not None and task.attempt > 1 else ""
            return f"ok {_progress.label(key)}{took}{tries} [{counts}]"

        _progress.Progress.apply = _apply
        _progress.Progress.done_line = _done_line
    except Exception as exc:  # noqa: BLE001
        _skip("A", exc)

if "B" in WANTED:
    try:
        from helios_doit import reporter as _reporter

        _R = _reporter.Reporter

        def _execute_task(self, task):
            with self.lock:
                if _reporter._is_work(task):
                    self._feed({"event": "task-start", "task": task.name})
                _reporter.ConsoleReporter.execute_task(self, task)

        def _add_success(self, task):
            with self.lock:
                self.done.append(task.name)
                if _reporter._is_work(task):
                    self._feed({"event": "task-done", "task": task.name})
                    self.write(self.progress.done_line(_reporter._key(task)) + "\n")

        _R.execute_task, _R.add_success = _execute_task, _add_success
    except Exception as exc:  # noqa: BLE001
        _skip("B", exc)

if "C" in WANTED:
    try:
        from helios_doit import reporter as _reporter

        def _skip_uptodate(self, task):
            with self.lock:
                if _reporter._is_work(task):
                    self._feed({"event": "task-skip", "task": _reporter._key(task), "chunkId": _reporter._chunk_id(task),
                                "reason": "up to date"})
                _reporter.ConsoleReporter.skip_uptodate(self, task)

        _reporter.Reporter.skip_uptodate = _skip_uptodate
    except Exception as exc:  # noqa: BLE001
        _skip("C", exc)

if "G" in WANTED:
    try:
        from helios_doit import actions as _actions, state as _state

        def _write_json_atomic(path, data):
            tmp = f"{path}.{os.getpid()}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                try:
                    os.write(fd, json.dumps(data, separators=(",", ":")).encode())
                finally:
                    os.close(fd)
                os.replace(tmp, path)
            except BaseException:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
                raise

        _state.write_json_atomic = _actions.write_json_atomic = _write_json_atomic
    except Exception as exc:  # noqa: BLE001
        _skip("G", exc)

if "H" in WANTED:
    try:
        from helios_doit import events as _events

        _fds = {}

        def _emit(state_root, event, **fields):
            path = str(_events.log_path(state_root))
            line = json.dumps({"event": event, "at": round(__import__("time").time(), 3), **fields}, separators=(",", ":")) + "\n"
            fd = _fds.get((os.getpid(), path))
            if fd is None:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                fd = _fds[(os.getpid(), path)] = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            os.write(fd, line.encode())

        _events.emit = _emit
    except Exception as exc:  # noqa: BLE001
        _skip("H", exc)

if "F" in WANTED:
    try:
        import subprocess as _subprocess
        import types

        from helios_doit import worker as _worker

        _SAFE = re.compile(r"[A-Za-z0-9_./,:=+@%^-]+")  # no quotes, globs, $, ~, redirections, ;, &, |, (), {}

        def _popen(args, **kwargs):
            if isinstance(args, list) and args[:2] == ["/bin/sh", "-c"]:
                words = args[2].split()
                if words and all(_SAFE.fullmatch(w) for w in words) and "=" not in words[0] \
                        and words[0] not in ("cd", "exit", "exec", "export", "set", "unset", "ulimit", "umask", "."):
                    try:
                        return _subprocess.Popen(shlex.split(args[2]), **kwargs)
                    except FileNotFoundError:
                        pass  # the real change: exit 127 and sh's message
            return _subprocess.Popen(args, **kwargs)

        proxy = types.ModuleType("subprocess_proxy")
        proxy.__dict__.update({k: getattr(_subprocess, k) for k in dir(_subprocess) if not k.startswith("__")})
        proxy.Popen = _popen
        _worker.subprocess = proxy
    except Exception as exc:  # noqa: BLE001
        _skip("F", exc)

from helios_doit.options import from_vars  # noqa: E402
from helios_doit.tasks import EXAMPLE_JOB, load_or_exit, namespace, refuse_bad  # noqa: E402

if "D" in WANTED:
    try:
        from helios_doit import tasks as _tasks

        _orig_chunk_tasks = _tasks.chunk_tasks

        def _chunk_tasks(job, state, *args, **kwargs):
            records = state.root / "records"
            try:
                present = set(os.listdir(records))
            except FileNotFoundError:
                present = set()
            for task in _orig_chunk_tasks(job, state, *args, **kwargs):
                uptodate = task.get("uptodate")
                if uptodate:
                    check = uptodate[0]
                    if os.path.basename(check.record) not in present:
                        task["uptodate"] = [False]
                    else:
                        task["uptodate"] = [bool(check())]
                yield task

        _tasks.chunk_tasks = _chunk_tasks
    except Exception as exc:  # noqa: BLE001
        _skip("D", exc)

JOB = load_or_exit(get_var("job") or EXAMPLE_JOB, get_var("output_root"), loader.initial_workdir)
OPTIONS = refuse_bad(lambda: from_vars(get_var, sys.argv))
globals().update(namespace(JOB, merge=get_var("merge"), options=OPTIONS))

if "E" in WANTED:
    DOIT_CONFIG = dict(DOIT_CONFIG)  # noqa: F821 (set by namespace())
    DOIT_CONFIG["backend"] = "json"
    DOIT_CONFIG["dep_file"] = DOIT_CONFIG["dep_file"].replace(".sqlite3", ".json")
