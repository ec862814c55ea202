"""What the tests share: jobs on disk run as a user would (real doit, real shell commands, real
processes), and ways to watch and kill processes.

Jobs for tests:

Each job's chunk command is a small shell script (`stand-in renderer`) that writes its
output a frame at a time and appends to `runs.log` when it starts and when it finishes, so
a test can say exactly which chunks ran. Files in the job folder steer it: `fail-<id>`
makes chunk <id> write part of its output and exit 3; `slow` makes every frame take 0.3 s (or
the seconds it holds);
`pid-lines` ends every line with the writer's pid; `pause-<id>` (or `pause-merge`) holds the
command after its first write until the file is removed (or the test kills it there).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
DOIT = [sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py")]
CLI = [sys.executable, "-m", "helios_doit"]
#: The console script of this installation, as job commands call it.
HELIOS_DOIT = str(Path(sys.executable).parent / "helios-doit")

#: The stand-in renderer: a shell script (a job of them starts no Python per chunk).
RENDER = r'''#!/bin/sh
out=$1 cid=$2 start=$3 count=$4
shift 4
extra="$*"
echo "chunk $cid start $$" >> runs.log
delay=0; [ -f slow ] && delay=$(cat slow); [ -z "$delay" ] && delay=0.3  # seconds a frame
mark=""; [ -f pid-lines ] && mark=" pid=$$"  # which process wrote each line
: > "$out"
frame=$start
while [ "$frame" -lt $((start + count)) ]; do
    printf 'frame %s %s%s\n' "$frame" "$extra" "$mark" >> "$out"
    while [ -f "pause-$cid" ]; do sleep 0.02; done  # a test kills us here, mid-output
    if [ -f "fail-$cid" ]; then echo "chunk $cid: renderer crashed at frame $frame" >&2; exit 3; fi
    [ "$delay" = 0 ] || sleep "$delay"
    frame=$((frame + 1))
done
echo "chunk $cid: wrote frames $start-$((start + count - 1))"
echo "chunk $cid done $$" >> runs.log
'''

MERGE = r'''#!/bin/sh
out=$1
shift
echo "merge start" >> runs.log
if [ -f fail-merge ]; then printf half > "$out"; exit 4; fi
: > "$out"
for part in "$@"; do
    cat "$part" >> "$out"
    while [ -f pause-merge ]; do sleep 0.02; done  # a test kills us here, mid-output
done
'''


@dataclass
class Job:
    """A job folder on disk and ways to run it as a user would."""

    folder: Path
    file: Path
    data: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)
    background: list[subprocess.Popen[str]] = field(default_factory=list)

    def runs(self) -> list[str]:
        """'chunk 3' or 'merge' for every command that started, in order; cleared after reading."""
        log = self.folder / "runs.log"
        if not log.exists():
            return []
        lines = [line.split(" start")[0] for line in log.read_text().splitlines() if " start" in line]
        log.unlink()
        return lines

    def started(self) -> list[str]:
        log = self.folder / "runs.log"
        return log.read_text().splitlines() if log.exists() else []

    def save(self) -> None:
        self.file.write_text(json.dumps(self.data, indent=2))

    def doit(self, *args: str, timeout: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return _run([*DOIT, *args, f"job={self.file}"], cwd or REPO, timeout, self.env)

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return _run([*CLI, "job", "run", str(self.file), *args], REPO, timeout, self.env)

    def start_doit(self, *args: str) -> subprocess.Popen[str]:
        """A run in the background, in its own session so a test can signal the runner alone."""
        return self.start([*DOIT, *args, f"job={self.file}"])

    def start_cli(self, *args: str) -> subprocess.Popen[str]:
        return self.start([*CLI, *args])

    def start(self, argv: list[str]) -> subprocess.Popen[str]:
        """In a session of its own (a test can signal the runner alone), marked in the environment
        of everything it starts (see `gone`)."""
        env = {**_env(self.env), TEST_TAG: os.urandom(8).hex()}
        proc = subprocess.Popen(argv, cwd=REPO, env=env, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        proc.tag = env[TEST_TAG]  # type: ignore[attr-defined]
        self.background.append(proc)
        return proc

    def output(self, chunk_id: int) -> Path:
        return self.folder / f"part_{chunk_id}.txt"

    @property
    def merged(self) -> Path:
        return self.folder / "out.txt"

    @property
    def state(self) -> Path:
        return self.folder / ".helios-doit" / self.file.name

    def copy_to(self, folder: Path) -> Job:
        """The job folder copied whole (state included, modification times kept) to `folder`."""
        shutil.copytree(self.folder, folder, symlinks=True)
        return Job(folder, folder / self.file.name, json.loads(json.dumps(self.data)), dict(self.env))

    def recorded(self) -> set[str]:
        """Tasks the runner has recorded as complete: "chunk 3", "merge"."""
        records = self.state / "records"
        return {p.stem.replace("-", " ") for p in records.glob("*.json")} if records.exists() else set()

    def expected_merge(self) -> str:
        return "".join(self.output(c["id"]).read_text() for c in self.data["chunks"])


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env


def _run(argv: list[str], cwd: Path, timeout: float, extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=_env(extra), text=True, capture_output=True, timeout=timeout)


def run(argv: list[str], cwd: Path = REPO, timeout: float = 300, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, **kw)


def new_job(root: Path, chunks: int = 4, frames: int = 8, name: str = "job.json") -> Job:
    """A valid job in `root`: `chunks` chunks of `frames` frames by the stand-in renderer, merged by
    the stand-in merge into out.txt; the renderer script is the job's one input."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "render.sh").write_text(RENDER)
    (root / "merge.sh").write_text(MERGE)
    spec_chunks = [
        {"id": i, "startFrame": i * frames, "frameCount": frames, "outputFile": f"part_{i}.txt",
         "command": chunk_command(i, i * frames, frames)}
        for i in range(chunks)
    ]
    data = {
        "metadata": {"totalFrames": chunks * frames, "fps": 24, "width": 320, "height": 180,
                     "duration": chunks * frames / 24},
        "chunks": spec_chunks,
        "mergeCommand": "sh merge.sh out.txt " + " ".join(c["outputFile"] for c in spec_chunks),
        "outputFile": "out.txt",
        "inputs": ["render.sh"],
    }
    job = Job(root, root / name, data)
    job.save()
    return job


def chunk_command(chunk_id: int, start: int, count: int, extra: str = "") -> str:
    return f"sh render.sh part_{chunk_id}.txt {chunk_id} {start} {count}" + (f" {extra}" if extra else "")


def wait_for(predicate: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def descendants(pid: int) -> list[int]:
    """Every live process below `pid`, found through /proc (chunk commands run in their own sessions)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    """True for a running process; a zombie (exited, not yet reaped) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


#: Set in the environment of a runner started by `Job.start`, inherited by all it starts.
TEST_TAG = "HELIOS_DOIT_TEST_RUN"


def marked(proc: subprocess.Popen[str]) -> list[int]:
    """Live processes started, at any depth, by a runner from `Job.start` (its own included)."""
    needle = f"{TEST_TAG}={getattr(proc, 'tag', '-')}\0".encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and needle in (entry / "environ").read_bytes() and alive(int(entry.name)):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def kill_runner(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the runner alone (its commands run in sessions of their own), then wait until
    nothing it started is left: then what was done before the kill is known."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    try:
        wait_for(lambda: not marked(proc), 15, "the killed runner's processes to be gone")
    except AssertionError:
        left = {pid: (command_line(pid).replace(b"\0", b" ").decode(errors="replace"),
                      Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[:3]) for pid in marked(proc)}
        raise AssertionError(f"the killed runner's processes are not gone: {left}") from None


def kill_tree(proc: subprocess.Popen[str]) -> None:
    """SIGKILL a runner and everything it started, as a crash or an OOM kill of the box would: all
    are stopped first, so that none can react to another's death (a worker to its runner's), or
    start anything more."""
    stopped: set[int] = set()
    while victims := set([proc.pid, *descendants(proc.pid), *marked(proc)]) - stopped:
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        stopped |= victims
    for pid in stopped:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(10)
    wait_for(lambda: not any(alive(p) for p in stopped) and not marked(proc), 10, "killed processes to go away")


def fake_helios(folder: Path, **env: str) -> dict[str, str]:
    """An environment whose PATH finds a stand-in `helios` (tests/fake_helios.py) in `folder`/bin."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "helios"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{REPO / "tests" / "fake_helios.py"}" "$@"\n')
    script.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", **env}


#: A pids cgroup (v1 here; v2's root where it has the pids controller) for tests that count processes.
_PIDS_V1 = Path("/sys/fs/cgroup/pids")
_PIDS_V2 = Path("/sys/fs/cgroup")


@dataclass
class PidsGroup:
    """A pids cgroup that a test starts processes in: it caps them (no test can fork without end)
    and lists them (`cgroup.procs`)."""

    path: Path

    def procs(self) -> list[int]:
        try:
            return [int(pid) for pid in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def enter(self) -> None:
        """For `preexec_fn`: the new process (and all it starts) joins the group."""
        (self.path / "cgroup.procs").write_text("0")


@contextlib.contextmanager
def pids_group(limit: int) -> Any:
    """A new pids cgroup allowing `limit` tasks (threads count); everything left in it is killed at the end."""
    if (_PIDS_V1 / "cgroup.procs").exists():
        parent = _PIDS_V1
    elif "pids" in (_PIDS_V2 / "cgroup.controllers").read_text().split():
        parent = _PIDS_V2
        with contextlib.suppress(OSError):
            (parent / "cgroup.subtree_control").write_text("+pids")
    else:
        raise AssertionError("no pids cgroup on this machine: these tests run as root on Linux with the pids controller")
    group = PidsGroup(parent / f"helios-test-{os.getpid()}-{os.urandom(3).hex()}")
    group.path.mkdir()
    try:
        (group.path / "pids.max").write_text(str(limit))
        yield group
    finally:
        deadline = time.monotonic() + 10
        while (left := group.procs()) and time.monotonic() < deadline:
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        with contextlib.suppress(OSError):
            group.path.rmdir()


def parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def command_line(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
