"""How a run's events are said to people: task names, first lines, retries, times."""
from __future__ import annotations

from typing import Any, Mapping

from ..state.names import TaskName

Event = Mapping[str, Any]


def task_key(event: Event) -> str | None:
    """"chunk-3" / "merge" from an event (or a doit name "chunk:3")."""
    task = event.get("task")
    if isinstance(task, str) and task:
        name = TaskName.parse(task)
        return name.key if name is not None else task
    if isinstance(event.get("chunkId"), int):
        return TaskName(event["chunkId"]).key
    return None


def label(task: str) -> str:
    """doit's name for a state key: "chunk-3" -> "chunk:3"."""
    name = TaskName.parse(task)
    return name.doit if name is not None else task


def retry_line(event: Event) -> str | None:
    """The plain line for a worker's retry: which attempt failed, why, and when the next one starts."""
    if event.get("event") != "task-retry" or task_key(event) is None:
        return None
    delay = event.get("delay")
    when = f" in {float(delay):.1f}s" if delay is not None else ""
    return f"R  {label(task_key(event) or '')} attempt {event.get('attempt', '?')} failed: {first_line(event.get('message'))}; retrying{when}"


def first_line(message: Any) -> str:
    text = str(message or "failed").strip()
    return text.splitlines()[0] if text else "failed"


def clock_text(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
