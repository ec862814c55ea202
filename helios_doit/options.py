"""How a run treats failures: retries, timeouts, keep-going, progress file.

One dataclass, filled from doit variables (`retries=3 chunk_timeout=600 ...`) by dodo.py or
from flags by the CLI, and carried to every worker inside each task's plain data.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable

from .errors import JobError


@dataclass(frozen=True)
class RunOptions:
    retries: int = 0  # extra attempts after the first
    retry_delay: float = 1.0  # base of the exponential backoff, seconds
    fatal_exit_codes: tuple[int, ...] = ()  # exit codes that are final at once
    chunk_timeout: float | None = None  # seconds; the chunk's whole process tree is killed
    keep_going: bool = False  # other chunks finish after one fails; merge does not run
    progress_json: str | None = None
    executor: str = "local"  # where chunk commands run: a name in worker.ADAPTERS
    scheduler: str | None = None  # the executor's address (Dask: tcp://HOST:PORT); None: start one
    merge_executor: str = "local"  # the merge runs here, never on the chunk executor unless asked

    @property
    def attempts(self) -> int:
        return self.retries + 1


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise ValueError
    return value


def _codes(text: str) -> tuple[int, ...]:
    return tuple(sorted({int(part) for part in text.split(",") if part.strip()}))


def _executor(text: str) -> str:
    from .worker import ADAPTERS

    if text not in ADAPTERS:
        raise ValueError
    return text


def _flag(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off", ""):
        return False
    raise ValueError


#: doit variable -> (option, parser)
_VARS: dict[str, tuple[str, Callable[[str], object]]] = {
    "retries": ("retries", _count),
    "retry_delay": ("retry_delay", _seconds),
    "fatal_exit_codes": ("fatal_exit_codes", _codes),
    "chunk_timeout": ("chunk_timeout", _seconds),
    "keep_going": ("keep_going", _flag),
    "progress": ("progress_json", str),
    "executor": ("executor", _executor),
    "scheduler": ("scheduler", str),
    "merge_executor": ("merge_executor", _executor),
}

_HOW = {
    "retries": "a whole number of extra attempts, e.g. retries=2",
    "retry_delay": "seconds greater than 0, e.g. retry_delay=1.5",
    "fatal_exit_codes": "exit codes separated by commas, e.g. fatal_exit_codes=2,64",
    "chunk_timeout": "seconds greater than 0, e.g. chunk_timeout=600",
    "keep_going": "1 or 0",
    "progress": "a file path",
    "executor": "local or dask",
    "scheduler": "an address such as tcp://10.0.0.5:8786",
    "merge_executor": "local or dask",
}


def from_vars(get: Callable[[str], str | None], argv: list[str] | None = None) -> RunOptions:
    """From doit variables; doit's own `-c/--continue` also means keep going."""
    values: dict[str, object] = {}
    for name, (field, parse) in _VARS.items():
        text = get(name)
        if text is None:
            continue
        try:
            values[field] = parse(text)
        except ValueError:
            raise JobError([f"{name}={text}: not valid; give {_HOW[name]}"]) from None
    if argv and ("-c" in argv or "--continue" in argv):
        values["keep_going"] = True
    return RunOptions(**values)  # type: ignore[arg-type]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--retries", metavar="N", help="extra attempts for a chunk that fails (default 0)")
    parser.add_argument("--retry-delay", metavar="SECONDS", help="base delay of the exponential backoff (default 1)")
    parser.add_argument("--fatal-exit-codes", metavar="CODES", help="exit codes never retried, e.g. 2,64")
    parser.add_argument("--chunk-timeout", metavar="SECONDS", help="kill a chunk's whole process tree after this long")
    parser.add_argument("--keep-going", action="store_true", help="let other chunks finish after one fails (no merge)")
    parser.add_argument("--progress-json", metavar="PATH", help="keep a JSON progress file current")
    parser.add_argument("--executor", metavar="NAME", help="where chunk commands run: local (default) or dask")
    parser.add_argument("--scheduler", metavar="ADDRESS", help="the executor's scheduler, e.g. tcp://HOST:8786")
    parser.add_argument("--merge-executor", metavar="NAME", help="where the merge runs (default local)")


def from_args(args: argparse.Namespace, doit_args: list[str]) -> RunOptions:
    given = {
        "retries": args.retries, "retry_delay": args.retry_delay, "fatal_exit_codes": args.fatal_exit_codes,
        "chunk_timeout": args.chunk_timeout, "keep_going": "1" if args.keep_going else None,
        "progress": args.progress_json, "executor": args.executor, "scheduler": args.scheduler,
        "merge_executor": args.merge_executor,
    }
    try:
        return from_vars(given.get, doit_args)
    except JobError as err:  # say it with the flag's name
        name = err.lines[0].split("=", 1)[0]
        flag = "--progress-json" if name == "progress" else "--" + name.replace("_", "-")
        raise JobError([err.lines[0].replace(f"{name}=", f"{flag} ", 1).replace(f"e.g. {name}=", f"e.g. {flag} ")]) from None
