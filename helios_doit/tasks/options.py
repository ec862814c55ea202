"""How a run treats failures: retries, timeouts, keep-going, executors, progress file.

One table (`OPTIONS`) names each option once: its doit variable (`retries=3`), its CLI flag
(`--retries 3`), how its text is read and what a valid value looks like. dodo.py fills
`RunOptions` from doit variables, the CLI from flags built from the same table; the result is
carried to every worker inside each task's plain data.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..executors.registry import ADAPTERS
from ..spec.errors import JobError


@dataclass(frozen=True)
class RunOptions:
    retries: int = 0  # extra attempts after the first
    retry_delay: float = 1.0  # base of the exponential backoff, seconds
    fatal_exit_codes: tuple[int, ...] = ()  # exit codes that are final at once
    chunk_timeout: float | None = None  # seconds; the chunk's whole process tree is killed
    keep_going: bool = False  # other chunks finish after one fails; merge does not run
    progress_json: str | None = None
    executor: str = "local"  # where chunk commands run: a name in executors.registry.ADAPTERS
    scheduler: str | None = None  # the executor's address (Dask: tcp://HOST:PORT); None: start one
    merge_executor: str = "local"  # the merge runs here, never on the chunk executor unless asked
    workers: int = 1  # chunks doit runs at once here (its -n): each render gets its share of the cores
    retime: bool = False  # a chunk whose frame rate is all that is wrong is remuxed to the job's (no re-encoding)

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


def _delay(text: str) -> float:
    """A wait: 0 means at once; a negative, nan or infinite one is no wait anyone means."""
    value = float(text)
    if not 0 <= value < float("inf"):
        raise ValueError
    return value


def _codes(text: str) -> tuple[int, ...]:
    codes = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    if any(not 0 <= code <= 255 for code in codes):
        raise ValueError  # an exit code is 0 to 255
    return codes


def _executor(text: str) -> str:
    if text not in ADAPTERS:
        raise ValueError
    return text


def _flag(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off", ""):
        return False
    raise ValueError


@dataclass(frozen=True)
class Option:
    variable: str  # the doit variable: `retries=2`
    flag: str  # the CLI flag: `--retries 2`
    field: str  # in RunOptions
    parse: Callable[[str], object]
    example: str  # a valid value, said as "give <how>, e.g. <variable>=<example>"
    how: str
    help: str
    metavar: str = ""  # the flag's value, in its help; "" for a switch
    switch: bool = False  # a CLI flag without a value (keep-going)


OPTIONS: tuple[Option, ...] = (
    Option("retries", "--retries", "retries", _count, "2", "a whole number of extra attempts",
           "extra attempts for a chunk that fails (default 0)", "N"),
    Option("retry_delay", "--retry-delay", "retry_delay", _delay, "1.5", "seconds, 0 or more",
           "base delay of the exponential backoff (default 1; 0: retry at once)", "SECONDS"),
    Option("fatal_exit_codes", "--fatal-exit-codes", "fatal_exit_codes", _codes, "2,64", "exit codes (0-255) separated by commas",
           "exit codes never retried, e.g. 2,64", "CODES"),
    Option("chunk_timeout", "--chunk-timeout", "chunk_timeout", _seconds, "600", "seconds greater than 0",
           "kill a chunk's whole process tree after this long", "SECONDS"),
    Option("keep_going", "--keep-going", "keep_going", _flag, "1", "1 or 0",
           "let other chunks finish after one fails (no merge)", switch=True),
    Option("progress", "--progress-json", "progress_json", str, "progress.json", "a file path",
           "keep a JSON progress file current", "PATH"),
    Option("executor", "--executor", "executor", _executor, "dask", "local or dask",
           "where chunk commands run: local (default) or dask", "NAME"),
    Option("scheduler", "--scheduler", "scheduler", str, "tcp://10.0.0.5:8786", "an address",
           "the executor's scheduler, e.g. tcp://HOST:8786", "ADDRESS"),
    Option("merge_executor", "--merge-executor", "merge_executor", _executor, "local", "local or dask",
           "where the merge runs (default local)", "NAME"),
    Option("retime", "--retime", "retime", _flag, "1", "1 or 0",
           "remux chunks whose frame rate is all that is wrong (Helios' canvas path: 25 fps) to the job's rate, "
           "without re-encoding", switch=True),
)


def parse(given: dict[str, str | None], argv: list[str] | None = None, as_flags: bool = False) -> RunOptions:
    """RunOptions from text by doit variable name (None: not given); doit's own `-c/--continue`
    in `argv` also means keep going. A bad value is a JobError that names the variable, or the
    flag when `as_flags`."""
    values: dict[str, object] = {}
    for option in OPTIONS:
        text = given.get(option.variable)
        if text is None:
            continue
        try:
            values[option.field] = option.parse(text)
        except ValueError:
            name, example = ((f"{option.flag} {text}", f"{option.flag} {option.example}") if as_flags
                             else (f"{option.variable}={text}", f"{option.variable}={option.example}"))
            raise JobError([f"{name}: not valid; give {option.how}, e.g. {example}"]) from None
    if argv and ("-c" in argv or "--continue" in argv):
        values["keep_going"] = True
    values["workers"] = _workers(argv or [])
    return RunOptions(**values)  # type: ignore[arg-type]


#: More doit workers than this is no render farm's machine: a typo, or a fork bomb.
MAX_WORKERS = 1024


def _workers(argv: list[str]) -> int:
    """doit's `-n N` (`-nN`, `--process N`, `--process=N`) in its command line; 1 without. A run
    starts no more workers than it has chunks to run (see `session`); a value that no machine
    could mean is refused here, before anything runs."""
    found, given = "1", "-n"
    for index, word in enumerate(argv):
        if word in ("-n", "--process") and index + 1 < len(argv):
            found, given = argv[index + 1], word
        elif word.startswith("--process="):
            found, given = word.split("=", 1)[1], "--process"
        elif word.startswith("-n") and len(word) > 2 and not word.startswith("--"):
            found, given = word[2:], "-n"
    try:
        value = int(found)
    except ValueError:
        value = -1
    if value == 0:
        return 1  # doit's own meaning: no worker processes
    if not 1 <= value <= MAX_WORKERS:
        raise JobError([f"{given} {found}: not a number of chunks at once; give a whole number from 1 to {MAX_WORKERS} "
                        f"(a run never starts more workers than it has chunks to run)"])
    return value


#: doit's own options that would undo what a run stands on: another reporter never starts the run
#: (state folder, stops, worker bound); doit's own database would come back, to be locked by one runner.
REFUSED = {"--reporter": "helios-doit's reporter starts the run", "-r": "helios-doit's reporter starts the run",
           "--db-file": "helios-doit keeps no doit database", "--backend": "helios-doit keeps no doit database"}


def refusal(word: str) -> str | None:
    """Why a word of doit's command line (`--reporter=json`, `-rjson`) is refused, in one line; None
    if it is not one of the `REFUSED` options."""
    name = word.split("=", 1)[0] if word.startswith("--") else word[:2] if word.startswith("-r") else word
    return f"{name}: not with helios-doit ({REFUSED[name]}); leave it out" if name in REFUSED else None


def from_vars(get: Callable[[str], str | None], argv: list[str] | None = None) -> RunOptions:
    """From doit variables (dodo.py: `get_var`) and doit's own command line."""
    for word in argv or []:
        if (why := refusal(word)) is not None:
            raise JobError([why])
    return parse({option.variable: get(option.variable) for option in OPTIONS}, argv)
