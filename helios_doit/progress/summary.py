"""The end of a run as a person reads it: each failure and what to do about it, what was not run
and why, and one line that says what the run did and how long it took.

doit's reporter gets failures as doit sees them: `UnmetDependency: chunk` for a merge that did
not run because a chunk failed, its own group task `chunk` failing the same way. Those are said
here in the user's words (`merge: not run, because chunk 1 failed`), from the run's failures
and their records, never from doit's text.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from doit.exceptions import TaskFailed, UnmetDependency

from ..state.folder import StateDir
from ..state.names import CHUNK, TaskName
from ..state.outcome import Failure, TaskStopped
from .model import Progress, clock_text, first_line

#: The group task doit makes of every chunk: its failures say nothing a chunk's own do not.
_GROUP = CHUNK


def failure_lines(failures: list[dict[str, Any]], runtime_errors: list[str], state_root: Path | None,
                  run_id: str | None) -> list[str]:
    """What went wrong, for the end of a run: the failed tasks with their records, the chunks
    stopped because of them, what was not run and why, doit's own errors."""
    ours = [f for f in failures if isinstance(f["exception"], TaskFailed) and _name(f["task"]) is not None]
    stopped = [f for f in ours if isinstance(f["exception"], TaskStopped)]
    failed = [f for f in ours if f not in stopped]
    records = {f["task"].name: _record(f["task"], state_root, run_id) for f in failed}
    lines: list[str] = []
    if failed:
        wrong = [f for f in failed if (record := records[f["task"].name]) is not None and record.wrong]
        lines.append(f"helios-doit: {_what_failed(failed)} failed; {_advice(failed, wrong)}:")
        for result in failed:
            lines += _describe(result["task"], result["exception"], records[result["task"].name])
    if stopped:
        names = ", ".join(sorted((f["task"].name for f in stopped), key=lambda n: (len(n), n)))
        lines.append(f"helios-doit: stopped because of that (their partial outputs removed): {names}")
    causes = [f["task"] for f in failed if _name(f["task"]) is not None]
    for result in failures:
        task, exc = result["task"], result["exception"]
        if isinstance(exc, TaskFailed) and _name(task) is not None:
            continue
        if isinstance(exc, UnmetDependency):
            if task.name != _GROUP:  # the group's line would only repeat the merge's
                lines.append(f"helios-doit: {_label(task.name)}: not run, because {_because(exc, causes)}")
            continue
        lines.append(f"helios-doit: {task.name}: {exc.get_name()}: {exc.get_msg().strip()}")
    if runtime_errors:
        lines.append("helios-doit: run aborted: " + "\n".join(runtime_errors))
    return lines


def end_line(progress: Progress, failures: list[dict[str, Any]], stopped: bool, elapsed: float,
             merged: str | None) -> str:
    """The run in one line: what it did and how long it took, or why it did nothing."""
    states: dict[str, int] = {}
    for task in progress.chunks().values():
        states[task.state] = states.get(task.state, 0) + 1
    rendered, already = states.get("done", 0), states.get("skipped", 0)
    cut = sum(1 for f in failures if isinstance(f["exception"], TaskStopped))
    if stopped:  # the chunks that were rendering when the stop came
        cut += states.get("running", 0) + states.get("retrying", 0)
    failed = max(0, states.get("failed", 0) - sum(1 for f in failures if isinstance(f["exception"], TaskStopped)))
    waiting = len(progress.chunks()) - rendered - already - failed - cut
    merge = progress.tasks.get("merge")
    merge_state = merge.state if merge is not None else None
    where = f" ({merged})" if merged and merge_state else ""
    if not failures and not stopped and rendered == 0 and merge_state in (None, "skipped"):
        what = _count(already, "chunk") + (" and the merge" if merge_state else "")
        return f"helios-doit: nothing to do: {what} {'were' if already != 1 or merge_state else 'was'} done already{where}"
    took = f"{elapsed:.1f} s" if elapsed < 60 else clock_text(elapsed)
    parts = [f"{_count(rendered, 'chunk')} rendered", f"{already} already done"]
    parts += [f"{n} {word}" for n, word in ((failed, "failed"), (cut, "stopped"), (waiting, "not started")) if n]
    how = "stopped" if stopped else "failed" if failures else "done"
    line = f"helios-doit: {how} {'in' if how == 'done' else 'after'} {took}: {', '.join(parts)}"
    if merge_state == "done":
        return line + (f"; merged into {merged}" if merged else "; merged")
    if merge_state == "skipped":
        return line + f"; the merge was done already{where}"
    if merge_state == "failed":
        return line + "; the merge failed"
    return line + ("; not merged" if merge_state is not None else "")


def _what_failed(failed: list[dict[str, Any]]) -> str:
    chunks = sum(1 for f in failed if not _is_merge(f["task"]))
    what = _count(chunks, "chunk") if chunks else ""
    if chunks != len(failed):
        what = f"{what} and the merge" if what else "the merge"
    return what


def _advice(failed: list[dict[str, Any]], wrong: list[dict[str, Any]]) -> str:
    """What to do: run again, unless the output was whole but wrong, which running it again only
    makes again."""
    if not wrong:
        return "rerun to retry what is not done"
    its = "its output was" if len(wrong) == 1 else "their outputs were"
    if len(wrong) == len(failed):
        return f"fix the renderer or the job, then run again ({its} wrong, the same way every time it runs)"
    names = _labels([f["task"] for f in wrong])
    return f"fix the renderer or the job for {names} ({its} wrong, the same way every time), then rerun to retry what is not done"


def _describe(task: Any, fail: TaskFailed, record: Failure | None) -> list[str]:
    """A failed task from its failure record (this run's), else from doit's message."""
    if record is None:
        return [f"  {line}" for line in fail.message.splitlines()]
    tries = f" after {record.attempts} attempts" if record.attempts > 1 else ""
    log = f"; log: {record.log}" if record.log else ""
    name = _name(task)
    assert name is not None
    lines = [f"  {name.label} failed{tries}: {first_line(record.message or record.how)}{log}"]
    return lines + [f"    | {line}" for line in record.stderrTail[-5:]]


def _record(task: Any, state_root: Path | None, run_id: str | None) -> Failure | None:
    name = _name(task)
    if state_root is None or name is None:
        return None
    record = Failure.read(StateDir(state_root).failure(name.key))
    return record if record is not None and record.runId in (None, run_id) else None


def _because(exc: UnmetDependency, causes: list[Any]) -> str:
    """Why a task did not run: the chunks (or the merge) that failed, else the tasks doit names."""
    if causes:
        return f"{_labels(causes)} failed"
    names = [_label(name) for name in exc.get_msg().split() if name != _GROUP]
    return f"{', '.join(names)} failed" if names else "a chunk failed"


def _labels(tasks: list[Any]) -> str:
    """`chunk 1`, `chunks 1 and 3`, `chunks 1, 3, 5 ... (12 in all)`, `the merge`."""
    ids = sorted(n.chunk_id for n in map(_name, tasks) if n is not None and n.chunk_id is not None)
    said = []
    if ids:
        shown = ", ".join(map(str, ids[:10])) + (f" ... ({len(ids)} in all)" if len(ids) > 10 else "")
        if 1 < len(ids) <= 10:
            shown = ", ".join(map(str, ids[:-1])) + f" and {ids[-1]}"
        said.append(("chunk " if len(ids) == 1 else "chunks ") + shown)
    if any(_is_merge(task) for task in tasks):
        said.append("the merge")
    return " and ".join(said)


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _name(task: Any) -> TaskName | None:
    return TaskName.parse(task.name)


def _is_merge(task: Any) -> bool:
    name = _name(task)
    return name is not None and name.is_merge


def _label(name: str) -> str:
    parsed = TaskName.parse(name)
    return parsed.label if parsed is not None else name
