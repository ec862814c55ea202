"""Shared helpers for bench/run.py: running measured processes, machine facts, summaries.

Every measured command runs as a child of this process under GNU time and is reaped with
`os.wait4`, which gives that run's own CPU time (the command and every descendant it waited
for) without mixing in other runs, unlike `RUSAGE_CHILDREN` deltas (and ru_maxrss is a
maximum, not a sum, so deltas of it mean nothing). Peak RSS comes from GNU time's `%M`: the
command is forked from time's small process, so it does not inherit this process' peak RSS,
which Linux carries over exec.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
VENV_BIN = Path(sys.executable).parent
PYTHON = sys.executable
DOIT_MAIN = BENCH / "doit_main.py"
GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None

def scratch_root() -> Path:
    """Where jobs run: tmpfs (/dev/shm) when there is one, else $TMPDIR or /tmp.

    On ext4, creating a file soon after many files were deleted costs ~0.6 ms of kernel CPU
    (the inode allocator's `recently_deleted` scan; see BENCHMARKS.md), and these benchmarks
    delete tens of thousands of files between repetitions: on disk the figures would depend on
    what was deleted in the last minutes. HELIOS_BENCH_ROOT overrides.
    """
    for candidate in (os.environ.get("HELIOS_BENCH_ROOT"), "/dev/shm", os.environ.get("TMPDIR"), "/tmp"):
        if candidate and os.path.isdir(candidate) and os.access(candidate, os.W_OK):
            return Path(candidate)
    return Path(tempfile.gettempdir())


#: Where helios_doit and dodo.py come from: the working tree, or a snapshot (run.py --code REV).
CODE = {"root": REPO, "label": "working tree"}


def code_root() -> Path:
    return CODE["root"]


def use_snapshot(rev: str, into: Path) -> str:
    """Extract `rev` with `git archive` (read-only) and run everything against it; returns its full sha."""
    sha = subprocess.run(["git", "--no-optional-locks", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=REPO,
                         capture_output=True, text=True)
    if sha.returncode != 0:
        raise SystemExit(f"bench: --code {rev}: not a commit in {REPO}")
    shutil.rmtree(into, ignore_errors=True)
    into.mkdir(parents=True)
    archive = subprocess.Popen(["git", "--no-optional-locks", "archive", sha.stdout.strip()], cwd=REPO, stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(into)], stdin=archive.stdout, check=True)
    if archive.wait() != 0:
        raise SystemExit(f"bench: git archive {rev} failed")
    CODE["root"], CODE["label"] = into, f"snapshot of {rev} ({sha.stdout.strip()[:10]})"
    return sha.stdout.strip()


# -- running ---------------------------------------------------------------------------------

@dataclass
class Measured:
    wall: float  # seconds
    user: float  # CPU seconds of the child and every descendant it waited for
    sys: float
    maxrss_mb: float  # peak RSS of the child, or of its largest waited-for descendant
    code: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cpu(self) -> float:
        return self.user + self.sys


class CommandFailed(RuntimeError):
    pass


def bench_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(VENV_BIN), env.get("PATH", os.defpath)])
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if CODE["root"] != REPO:  # ahead of the editable install's finder, which comes after sys.path
        env["PYTHONPATH"] = os.pathsep.join([str(CODE["root"]), *filter(None, [env.get("PYTHONPATH")])])
    env.update(extra)
    return env


def run_measured(argv: Sequence[str], cwd: Path, env: dict[str, str] | None = None, *, check: bool = True,
                 sampler: "ProcSampler | None" = None, stdout: Any = subprocess.DEVNULL,
                 stderr: Any = None, timeout: float = 3600) -> Measured:
    """Run `argv`, wait for it with wait4, and return its wall time and own resource usage."""
    err_path = None
    if stderr is None:  # keep the tail of stderr for messages, without a pipe that could block
        err_path = scratch_root() / f"helios-bench-stderr-{os.getpid()}.txt"
        stderr_f = open(err_path, "wb")
    else:
        stderr_f = stderr
    # GNU time forks the command from its own small process: a child exec'd straight from this
    # (large) Python process would inherit its peak RSS, because Linux carries ru_maxrss over exec.
    rss_file = scratch_root() / f"helios-bench-rss-{os.getpid()}.txt"
    wrapped = [GNU_TIME, "-f", "%M", "-o", str(rss_file), *map(str, argv)] if GNU_TIME else list(map(str, argv))
    if QUIET["wait"]:
        wait_quiet()
    busy0 = cpu_busy()
    started = time.perf_counter()
    proc = subprocess.Popen(wrapped, cwd=str(cwd), env=env or bench_env(), stdin=subprocess.DEVNULL,
                            stdout=stdout, stderr=stderr_f)
    if sampler is not None:
        sampler.start(proc.pid)
    timer = threading.Timer(timeout, lambda: _kill_quietly(proc.pid))
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    wall = time.perf_counter() - started
    background = max(0.0, cpu_busy() - busy0 - (usage.ru_utime + usage.ru_stime))
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    extra = sampler.stop() if sampler is not None else {}
    if err_path is not None:
        stderr_f.close()
        tail = err_path.read_bytes()[-3000:].decode(errors="replace")
        err_path.unlink(missing_ok=True)
    else:
        tail = ""
    maxrss_kb = usage.ru_maxrss
    if GNU_TIME:
        try:
            maxrss_kb = int(rss_file.read_text().split()[-1])
        except (OSError, ValueError, IndexError):
            pass  # killed by a signal: time wrote a note instead; keep wait4's figure
        rss_file.unlink(missing_ok=True)
    extra["background_cpu"] = round(background, 3)  # CPU seconds other processes used meanwhile
    result = Measured(wall, usage.ru_utime, usage.ru_stime, maxrss_kb / 1024, proc.returncode, extra)
    if check and proc.returncode != 0:
        raise CommandFailed(f"{' '.join(map(str, argv))[:300]} (in {cwd}) exited {proc.returncode}:\n{tail}")
    return result


_TICK = os.sysconf("SC_CLK_TCK")
#: run.py turns this off with --no-wait-quiet
QUIET = {"wait": True, "threshold": 0.35, "max_wait": 4.0, "waited": 0.0}


def cpu_busy() -> float:
    """CPU seconds all CPUs have been busy since boot (from /proc/stat), to see what else ran."""
    fields = (_read("/proc/stat") or "cpu 0 0 0 0").splitlines()[0].split()[1:]
    values = [int(x) for x in fields[:8]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values) - idle) / _TICK


def wait_quiet() -> None:
    """Before a timed run, wait (up to max_wait s) until other processes use under `threshold` of a CPU."""
    deadline = time.monotonic() + QUIET["max_wait"]
    began = time.monotonic()
    while time.monotonic() < deadline:
        before = cpu_busy()
        time.sleep(0.5)
        if (cpu_busy() - before) / 0.5 < QUIET["threshold"]:
            break
    QUIET["waited"] += time.monotonic() - began


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_quiet(argv: Sequence[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Untimed set-up steps; raise with the output on failure."""
    done = subprocess.run(list(map(str, argv)), cwd=str(cwd), env=env or bench_env(), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, errors="replace")
    if done.returncode != 0:
        raise CommandFailed(f"{' '.join(map(str, argv))[:300]} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return done.stdout


class ProcSampler:
    """Polls /proc for the descendants of one process: peak VmHWM and Pss of long-lived ones.

    Used for the memory of doit's worker processes, which wait4 on the main process cannot
    separate from the main process itself. Short-lived processes (the chunk commands) are
    counted but their memory is not the point.
    """

    def __init__(self, interval: float = 0.1, min_age: float = 0.5):
        self.interval = interval
        self.min_age = min_age
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.root = 0
        self.peaks: dict[int, dict[str, Any]] = {}

    def start(self, pid: int) -> None:
        self.root = pid
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread:
            self._thread.join()
        # Under GNU time the runner's main process is time's only child; doit's workers are its children.
        main_pid = self.root
        if GNU_TIME:
            kids = [pid for pid, p in self.peaks.items() if p.get("ppid") == self.root]
            main_pid = min(kids) if kids else self.root
        workers = [p for pid, p in self.peaks.items() if pid != main_pid and p["seen"] >= self.min_age
                   and p.get("ppid") == main_pid]
        main = self.peaks.get(main_pid, {})
        return {
            "main_hwm_mb": main.get("hwm_mb"), "main_pss_mb": main.get("pss_mb"),
            "workers": len(workers),
            "worker_hwm_mb": max((w["hwm_mb"] for w in workers), default=None),
            "worker_pss_mb": max((w.get("pss_mb") or 0 for w in workers), default=None),
        }

    def _loop(self) -> None:
        first_seen: dict[int, float] = {}
        while not self._stop.is_set():
            now = time.monotonic()
            for pid, ppid in self._family():
                first_seen.setdefault(pid, now)
                status = _read(f"/proc/{pid}/status")
                if not status:
                    continue
                fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
                hwm = _kb(fields.get("VmHWM"))
                if hwm is None:
                    continue
                entry = self.peaks.setdefault(pid, {"hwm_mb": 0.0, "pss_mb": None, "seen": 0.0, "ppid": ppid})
                entry["hwm_mb"] = max(entry["hwm_mb"], hwm / 1024)
                entry["seen"] = now - first_seen[pid]
                if entry["seen"] >= self.min_age or ppid == self.root:
                    rollup = _read(f"/proc/{pid}/smaps_rollup")
                    for line in (rollup or "").splitlines():
                        if line.startswith("Pss:"):
                            pss = int(line.split()[1]) / 1024
                            entry["pss_mb"] = max(entry["pss_mb"] or 0, pss)
            self._stop.wait(self.interval)

    def _family(self) -> list[tuple[int, int]]:
        parents: dict[int, int] = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            stat = _read(f"/proc/{name}/stat")
            if not stat:
                continue
            try:
                parents[int(name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (IndexError, ValueError):
                continue
        family = {self.root}
        changed = True
        while changed:
            changed = False
            for pid, ppid in parents.items():
                if ppid in family and pid not in family:
                    family.add(pid)
                    changed = True
        return [(pid, parents.get(pid, 0)) for pid in family]


def _read(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return None


def _kb(text: str | None) -> int | None:
    if not text:
        return None
    try:
        return int(text.split()[0])
    except (IndexError, ValueError):
        return None


def doit_argv(*args: str, rusage_file: Path | None = None) -> list[str]:
    """`doit ARGS` through bench/doit_main.py (doit's own entry point plus a rusage report)."""
    return [PYTHON, str(DOIT_MAIN), *([f"--rusage-out={rusage_file}"] if rusage_file else []), *args]


def read_rusage(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


# -- alternating repetitions --------------------------------------------------------------------

def alternate(reps: int, contenders: dict[str, Callable[[], Measured]], prepare: Callable[[str], None] | None = None,
              log: Callable[[str], None] = print) -> dict[str, list[Measured]]:
    """Run each contender `reps` times, rotating the order every repetition (ABC, BCA, CAB...)."""
    names = list(contenders)
    samples: dict[str, list[Measured]] = {name: [] for name in names}
    for rep in range(reps):
        order = names[rep % len(names):] + names[: rep % len(names)]
        for name in order:
            if prepare:
                prepare(name)
            m = contenders[name]()
            samples[name].append(m)
            log(f"    rep {rep + 1}/{reps} {name:<28} wall {m.wall:7.3f}s  cpu {m.cpu:7.3f}s  maxrss {m.maxrss_mb:6.1f} MB")
    return samples


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"{min(values):.3g}-{max(values):.3g}" if len(values) > 1 else f"{values[0]:.3g}"


# -- facts ----------------------------------------------------------------------------------------

def machine_facts() -> dict[str, Any]:
    facts: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    facts["cpu_count"] = os.cpu_count()
    try:
        facts["cpu_affinity"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    models = [line.split(":", 1)[1].strip() for line in (_read("/proc/cpuinfo") or "").splitlines()
              if line.startswith("model name")]
    facts["cpu_model"] = models[0] if models else platform.processor() or "?"
    mem = _kb(dict(l.split(":", 1) for l in (_read("/proc/meminfo") or "").splitlines() if ":" in l).get("MemTotal"))
    facts["mem_total_gb"] = round(mem / 1024 / 1024, 1) if mem else None
    facts["loadavg_at_start"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    facts["kernel"] = platform.release()
    facts["python"] = platform.python_version()
    versions = _python_versions()
    facts.update(versions)
    make = shutil.which("make")
    facts["make"] = (subprocess.run([make, "--version"], capture_output=True, text=True).stdout.splitlines() or ["?"])[0] if make else None
    facts["ffmpeg"] = _ffmpeg_version()
    facts.update(_git_state())
    return facts


def _python_versions() -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        import doit

        out["doit"] = ".".join(map(str, doit.__version__))
    except Exception:  # noqa: BLE001
        out["doit"] = "?"
    try:
        import av

        out["pyav"] = av.__version__
        libs = getattr(av, "library_versions", {})
        if "libavcodec" in libs:
            out["libavcodec"] = ".".join(map(str, libs["libavcodec"]))
    except Exception:  # noqa: BLE001
        out["pyav"] = "?"
    try:
        import pydantic

        out["pydantic"] = pydantic.VERSION
    except Exception:  # noqa: BLE001
        pass
    return out


def ffmpeg_exe() -> str | None:
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # noqa: BLE001
        return None


def _ffmpeg_version() -> str | None:
    exe = ffmpeg_exe()
    if not exe:
        return None
    first = subprocess.run([exe, "-version"], capture_output=True, text=True).stdout.splitlines()
    return " ".join(first[0].split()[:3]) if first else None


def _git_state() -> dict[str, Any]:
    """Which code was measured. Read-only git: --no-optional-locks, so not even the index is refreshed."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", "--no-optional-locks", *args], cwd=REPO, capture_output=True, text=True)
        return done.stdout if done.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD").strip()
    changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=all").splitlines()
               if not line[3:].startswith(("bench/", "BENCHMARKS.md"))]
    diff = git("diff", "HEAD", "--", "helios_doit", "dodo.py")
    untracked = sorted(p for p in changed if p.startswith("helios_doit/"))
    digest = hashlib.sha256(diff.encode() + "".join(
        (REPO / p).read_text(errors="replace") for p in untracked if (REPO / p).is_file()).encode()).hexdigest()[:10]
    return {"git_head": head or "?", "tree_changes": len(changed), "tree_digest": digest if changed else "clean"}
