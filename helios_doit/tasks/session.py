"""A run of a job's graph: the task namespace doit loads, and what starting a run does to the world.

Loading tasks only reads, so `doit list`, `doit info` and `status` never touch the job folder.
Every side effect of a run starts when doit starts the run (the reporter's `initialize`, in the
main process, before doit forks its workers): the state folder, the inputs' cache, signal
handlers, the worker watchdog, a local Dask cluster, the progress file's path.
"""
from __future__ import annotations

import difflib
import gc
import os
import sys
from pathlib import Path
from typing import Any

from ..executors import supervise
from ..executors.local import command_env
from ..executors.own import lookup
from ..executors.spawn import argv_for, own_command
from ..progress.model import PROGRESS_ENV
from ..progress.reporter import reporter_for
from ..core.errors import os_fault
from ..spec.errors import JobError
from ..spec.model import Job
from ..state import events
from ..state.content import save_inputs_cache
from ..state.names import TaskName
from ..state.places import Place
from ..video import THREADS_ENV
from ..video import commands as _own_commands  # noqa: F401  (registers render and merge with the executors)
from .graph import Graph, TaskDicts, build, chunk_tasks, merge_task
from .options import OPTIONS, RunOptions, from_vars
from .uptodate import remember
from .work import Work, shown
from .refuse import load_or_exit, refuse_bad

#: The job `doit` renders when no `job=` is given.
EXAMPLE_JOB = Path(__file__).resolve().parent.parent.parent / "examples" / "orbit" / "job.json"


class RunSession:
    """What the reporter needs to know of the job, and `start()`: everything a run starts with."""

    def __init__(self, graph: Graph, options: RunOptions):
        self.graph = graph
        self.options = options
        self.state_root = graph.state.root
        self.chunk_frames = {chunk.id: chunk.frame_count for chunk in graph.job.spec.chunks}
        self.merged = _merged_as_said(graph.job)

    def start(self, in_run: set[str], always: bool = False) -> int:
        """Called once, in the runner's main process, as the run starts (`in_run`: the doit names of
        the tasks it may execute; `always`: doit's -a, from its command line or its configuration).
        Returns how many workers the run needs at most: one per chunk it has to render, at least
        one (the merge), never more than its `-n`."""
        self._prepare_state()
        save_inputs_cache(self.graph.state, self.graph.inputs)
        supervise.watch(self.state_root, self._place_of)
        supervise.ensure_handlers()
        supervise.start_watchdog()
        todo = self._to_render(in_run, always)
        if todo:
            self._preload(todo[0])
        self._share_cores()
        if self.options.progress_json:
            os.environ[PROGRESS_ENV] = os.path.abspath(self.options.progress_json)
        if "dask" in (self.options.executor, self.options.merge_executor) and not self.options.scheduler:
            from ..executors.dask_adapter import local_cluster

            local_cluster()  # one cluster for every doit worker process, which finds it in the environment
        return max(1, len(todo))

    def _to_render(self, in_run: set[str], always: bool) -> list[Work]:
        """The chunks of this run that are not done, as many as it has workers at most: asked in
        the order doit will ask, and each answer kept for doit's own question a moment later
        (`uptodate.remember`), so a no-op run still reads each record once."""
        limit = self.options.workers
        todo: list[Work] = []
        for work in self.graph.chunks:
            if work.task.doit not in in_run:
                continue
            if always or not remember(work):
                todo.append(work)
                if len(todo) >= limit:
                    break
        return todo

    def _share_cores(self) -> None:
        """Renders side by side each get their share of the cores for their encoder, unless the user
        chose (HELIOS_DOIT_THREADS): each encoder taking all of them makes them fight over them."""
        workers = self.options.workers
        if workers > 1 and THREADS_ENV not in os.environ and self.options.executor == "local":
            os.environ[THREADS_ENV] = str(max(1, len(os.sched_getaffinity(0)) // workers))

    def _preload(self, first: Work) -> None:
        """Chunks that run our own renderer are forked from doit's workers (executors.spawn): import
        what it needs once, here, before doit forks its workers, instead of once in each. Only
        when a render will run: a no-op run never loads PyAV or numpy."""
        if self.options.executor != "local" or self.options.workers < 2:
            return  # a serial run forks its renders from this process: imported at the first one
        env = command_env()  # as the chunk will run: this installation's bin first on PATH
        args = own_command(argv_for(first.command, env), env)
        command = lookup(args[0]) if args else None
        if command is not None:
            command.preload()  # the render, and what verifies each chunk in the workers

    def _prepare_state(self) -> None:
        """The state folder. One that cannot be written ends the run before anything ran: one
        line, exit code 1."""
        state = self.graph.state
        try:
            notes = state.create()
            probe = state.root / "runs" / f".writable-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            sys.stderr.write(f"helios-doit: cannot keep the job's state in {state.root}: {os_fault(exc)}; nothing was run\n")
            raise SystemExit(1) from None
        for note in notes:
            sys.stderr.write(f"helios-doit: {note}\n")
        events.prune(state.root)  # the event logs of old runs: the state folder stays proportionate

    def _place_of(self, key: str) -> Place | None:
        """A task's output place, from its key: the watchdog removes a dead worker's partial output.
        Made when needed: 10,000 of them would be a megabyte for the runner to hold all run long."""
        name, job = TaskName.parse(key), self.graph.job
        if name is None:
            return None
        if name.chunk_id is None:
            path = str(job.merge_output) if job.merge_output else None
        else:
            path = job.outputs.get(name.chunk_id)
        return Place(path, job.output_roots, str(self.graph.state.aside)) if path else None


def _merged_as_said(job: Job) -> str | None:
    """The merged output as the end of a run names it: its URL for a job in a bucket, else its
    path from where the user stands when it is under it."""
    if job.merge_output is None:
        return None
    if job.remote is not None and (key := job.remote.key_of(job.merge_output)) is not None:
        return job.remote.url_of(key)
    from doit import loader

    return shown(job.merge_output, loader.initial_workdir or os.getcwd())


def dodo(default_job: str | os.PathLike[str]) -> dict[str, Any]:
    """Everything a dodo file holds, from doit's variables: `job=` (else `default_job`),
    `output_root=`, `merge=` and the run options. The repository's dodo.py and the one
    `helios-doit init` writes are this one call."""
    from doit import get_var, loader

    # Before anything is loaded: a typo in a variable would otherwise be ignored (`jobb=` renders
    # the default job), and doit's database commands would act on a database that is not there.
    command, variables = doit_words(sys.argv[1:])
    given = get_var("job") or shown(default_job, loader.initial_workdir or os.getcwd())
    refuse_bad(lambda: check_command_line(command, variables, given))
    # doit has changed into the dodo file's folder; the user's paths are relative to where they started.
    job = load_or_exit(get_var("job") or default_job, get_var("output_root"), loader.initial_workdir, get_var("storage"))
    # doit's options are read as `run` means them (under `clean`, -n is its dry run, -a all, -c deps).
    options = refuse_bad(lambda: from_vars(get_var, sys.argv if command == "run" else []))
    return namespace(job, merge=get_var("merge"), options=options, clean=command == "clean")


#: The variables a dodo file reads, besides the run options' (`OPTIONS`).
JOB_VARIABLES = ("job", "output_root", "storage", "merge")

#: doit 0.37's own commands: the first word after its loader options that is one of these is the command.
DOIT_COMMANDS = frozenset({"help", "run", "list", "info", "clean", "forget", "ignore", "dumpdb", "strace",
                           "tabcompletion", "reset-dep"})

#: doit's options that may come before its command and take a value (`-f dodo.py`, `-d DIR`).
_LOADER_VALUES = frozenset({"-f", "--file", "-d", "--dir"})

_IN_MEMORY = "helios-doit keeps doit's database in memory"

#: doit's commands that act on its own database, which a run keeps in memory: they would mean nothing.
REFUSED_COMMANDS = {
    "dumpdb": _IN_MEMORY + ", there is none to dump; to see where tasks stand: helios-doit status {job}",
    "ignore": _IN_MEMORY + ", the next run would render the task anyway; to render some chunks only, name them: "
              "doit chunk:0 chunk:2 (helios-doit job run JOB --chunk 0 --chunk 2)",
    "reset-dep": _IN_MEMORY + " and what is done lives in its own records: there is nothing to reset; to render a "
                 "chunk again: doit clean chunk:3 (or -a to render everything again)",
}


def doit_words(argv: list[str]) -> tuple[str, list[str]]:
    """doit's command and its variables in its command line, by doit's rules: a word without a
    leading `-` that holds `=` is a variable; the first other word after the loader's options
    (`-f dodo.py`, `-k`) is the command if it names one, else the command is `run`."""
    index = 0
    while index < len(argv) and argv[index].startswith("-") and argv[index] != "-":
        index += 2 if argv[index] in _LOADER_VALUES else 1
    words = argv[min(index, len(argv)):]
    variables = [word for word in words if not word.startswith("-") and "=" in word]
    rest = [word for word in words if word.startswith("-") or "=" not in word]
    return (rest[0] if rest and rest[0] in DOIT_COMMANDS else "run"), variables


def check_command_line(command: str, variables: list[str], job: str) -> None:
    """A JobError (one line each) for every variable helios-doit does not know, naming the one
    probably meant, and for a doit command that cannot mean anything here."""
    known = [*JOB_VARIABLES, *(option.variable for option in OPTIONS)]
    lines = []
    for word in variables:
        name = word.split("=", 1)[0]
        if name in known:
            continue
        close = difflib.get_close_matches(name.lower(), known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}=?" if close else "known: " + ", ".join(f"{each}=" for each in known)
        lines.append(f"{word}: unknown variable; {hint}")
    if command in REFUSED_COMMANDS:
        lines.append(f"doit {command}: " + REFUSED_COMMANDS[command].format(job=job))
    if lines:
        raise JobError(lines)


def namespace(job: Job, merge: str | None = None, options: RunOptions = RunOptions(), clean: bool = False) -> dict[str, Any]:
    """What a dodo file holds for `job`: DOIT_CONFIG and the task creators; for dodo.py and the CLI.
    `clean`: the tasks carry their `doit clean` actions (only that command uses them).

    Bad values exit 2 like a bad job, before anything is written.
    """
    graph = refuse_bad(lambda: build(job, options, merge))
    # doit is about to make ~200,000 long-lived objects per 10,000 chunks from our task dicts;
    # collecting cycles while they are made only walks them over and over (0.3 s of a no-op
    # run). The reporter freezes them and turns collection back on when the run starts.
    gc.disable()

    def task_chunk() -> TaskDicts:
        yield from chunk_tasks(graph, clean)

    def task_merge() -> dict[str, Any]:
        return merge_task(graph, clean)

    task_chunk.__doc__ = "render one chunk of the job (chunk:<id>)"
    task_merge.__doc__ = "stitch the rendered chunks into the final output"
    return {"DOIT_CONFIG": doit_config(RunSession(graph, options)), "task_chunk": task_chunk, "task_merge": task_merge}


def doit_config(session: RunSession) -> dict[str, Any]:
    config: dict[str, Any] = {
        # Completion lives in our records; doit's own state is only a cache of this run, so it
        # stays in memory: nothing for a second runner to lock, a full disk to break, or a
        # read-only folder to refuse.
        "dep_file": ":memory:",
        "backend": "sqlite3",
        "default_tasks": ["chunk", "merge"],
        "reporter": reporter_for(session),
    }
    if session.options.keep_going:
        config["continue"] = True
    return config
