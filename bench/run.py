"""helios-doit benchmarks, side by side with their baselines, in one command.

    .venv/bin/python bench/run.py [--quick] [--only P1,P2,...] [--out BENCHMARKS.md] [--work DIR]

P1  fresh 10,000 trivial chunks: helios-doit (doit -n 2 job=... through dodo.py) vs make -j2
P2  no-op rerun of that job: helios-doit vs plain doit on an equivalent hand-written dodo
P7  what the state folder holds after that job: files per chunk, and the event logs' growth per no-op run
P3  orbit composition, 240 frames at 640x360 in 4 chunks (doit -n 2) vs one direct render
P3r the same at 1280x720, 300 frames: speedup and CPU, pinned and default encoder threads
P4  stitching 20 large chunks: built-in stitcher vs ffmpeg -f concat -c copy; peak memory
P5  peak memory of the runner on the 10,000-chunk job
P6  scale-out cost: trivial chunks on a loopback Dask scheduler vs local, per chunk

Repetitions alternate candidate and baseline (the order rotates every repetition), the
table shows medians and ratios of medians, and the figures are written between the
markers in BENCHMARKS.md (the rest of that file is left alone). Results also go to
bench/results/latest.json, so `--only` refreshes some rows and keeps the others (each row
says which run it comes from). `--quick` uses fewer repetitions and smaller jobs and marks
every row it writes as quick.

To add a benchmark: write `def bench_px(ctx) -> Section` and register it in BENCHES.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import (  # noqa: E402
    BENCH, REPO, VENV_BIN, CommandFailed, Measured, ProcSampler, alternate, bench_env, code_root, doit_argv,
    ffmpeg_exe, machine_facts, median, read_rusage, run_measured, run_quiet, scratch_root, use_snapshot,
)
from jobs import clean_touch_outputs, write_touch_workload  # noqa: E402

RESULTS = BENCH / "results" / "latest.json"
BEGIN, END = "<!-- BEGIN bench/run.py results -->", "<!-- END bench/run.py results -->"
NOISE = BENCH / "noise_composition.py"
CACHE = Path(os.environ.get("HELIOS_BENCH_CACHE", "/tmp/helios-bench-cache"))


# -- results ------------------------------------------------------------------------------------

@dataclass
class Row:
    id: str
    what: str
    candidate: str  # e.g. "12.3 s"
    baseline: str
    figure: str  # the number compared with the target, e.g. "2.71x"
    target: str
    passed: bool | None  # None: context only, no target
    notes: str = ""


@dataclass
class Section:
    id: str
    title: str
    rows: list[Row]
    details: list[str] = field(default_factory=list)  # markdown lines: samples, set-up, caveats
    data: dict[str, Any] = field(default_factory=dict)  # raw numbers for the JSON


@dataclass
class Ctx:
    quick: bool
    work: Path
    log: Callable[[str], None]
    shared: dict[str, Any] = field(default_factory=dict)

    @property
    def n_chunks(self) -> int:
        return 1000 if self.quick else 10000


def fmt_s(x: float) -> str:
    return f"{x:.2f} s" if x < 100 else f"{x:.0f} s"


def walls(samples: list[Measured]) -> list[float]:
    return [m.wall for m in samples]


def cpus(samples: list[Measured]) -> list[float]:
    return [m.cpu for m in samples]


def sample_line(name: str, samples: list[Measured]) -> str:
    w = ", ".join(f"{m.wall:.2f}" for m in samples)
    bg = median([m.extra.get("background_cpu", 0) / m.wall for m in samples if m.wall > 0])
    return (f"- {name}: wall median {median(walls(samples)):.3f} s (runs: {w}); CPU (user+sys, with children) "
            f"median {median(cpus(samples)):.2f} s; other processes meanwhile: {bg:.2f} CPUs (median)")


# -- P1 / P2 / P5: the 10,000-chunk touch job ----------------------------------------------------

def touch_dirs(ctx: Ctx) -> dict[str, Path]:
    dirs = ctx.shared.get("touch_dirs")
    if dirs is None:
        base = ctx.work / f"touch-{ctx.n_chunks}"
        dirs = {name: base / name for name in ("make", "helios", "plain")}
        for folder in dirs.values():
            shutil.rmtree(folder, ignore_errors=True)
            write_touch_workload(folder, ctx.n_chunks)
        ctx.shared["touch_dirs"] = dirs
        ctx.shared["touch_done"] = set()
    return dirs


def run_make(folder: Path) -> Measured:
    return run_measured(["make", "-j2"], folder)


def run_helios(folder: Path, rusage: Path | None = None, sampler: ProcSampler | None = None) -> Measured:
    m = run_measured(doit_argv("-f", str(code_root() / "dodo.py"), "-n", "2", f"job={folder / 'job.json'}", rusage_file=rusage),
                     folder, sampler=sampler)
    if rusage:
        m.extra.update(read_rusage(rusage))
    return m


def run_plain(folder: Path, rusage: Path | None = None) -> Measured:
    m = run_measured(doit_argv("-f", "dodo_plain.py", "-n", "2", rusage_file=rusage), folder)
    if rusage:
        m.extra.update(read_rusage(rusage))
    return m


def check_touch_done(folder: Path, n: int, helios: bool) -> None:
    outs = len([name for name in os.listdir(folder / "out") if not name.startswith(".")])  # .helios-doit: the outputs' locks
    if outs != n or not (folder / "merged").exists():
        raise CommandFailed(f"{folder}: expected {n} outputs and merged, found {outs}")
    if helios:
        records = len(os.listdir(folder / ".helios-doit" / "job.json" / "records"))
        if records != n + 1:
            raise CommandFailed(f"{folder}: expected {n + 1} records, found {records}")


def bench_p1(ctx: Ctx) -> Section:
    n, reps = ctx.n_chunks, 2 if ctx.quick else 5
    dirs = touch_dirs(ctx)
    rus = ctx.work / "p1-rusage.json"
    ctx.log(f"  P1: {n} chunks fresh, {reps} alternating repetitions of make -j2 / helios-doit / plain doit")

    def prepare(name: str) -> None:
        clean_touch_outputs(dirs[{"make -j2": "make", "helios-doit -n 2": "helios", "plain doit -n 2": "plain"}[name]])

    def helios() -> Measured:
        m = run_helios(dirs["helios"], rus)
        check_touch_done(dirs["helios"], n, True)
        return m

    def plain() -> Measured:
        m = run_plain(dirs["plain"], rus)
        check_touch_done(dirs["plain"], n, False)
        return m

    samples = alternate(reps, {"make -j2": lambda: run_make(dirs["make"]), "helios-doit -n 2": helios,
                               "plain doit -n 2": plain}, prepare, ctx.log)
    ctx.shared["touch_done"] = {"helios", "plain", "make"}
    mk, hd, pd = (median(walls(samples[k])) for k in ("make -j2", "helios-doit -n 2", "plain doit -n 2"))
    ratio = hd / mk
    per_task = lambda t: f"{t / n * 1000:.2f} ms/chunk"  # noqa: E731
    main_cpu = median([s.extra.get("self_user", 0) + s.extra.get("self_sys", 0) for s in samples["helios-doit -n 2"]])
    kids_cpu = median([s.extra.get("children_user", 0) + s.extra.get("children_sys", 0) for s in samples["helios-doit -n 2"]])
    rows = [
        Row("P1", f"fresh run, {n:,} chunks `touch out/<i>` + merge, -n 2 / -j2", f"{fmt_s(hd)} ({per_task(hd)})",
            f"make -j2: {fmt_s(mk)} ({per_task(mk)})", f"{ratio:.2f}x make", "≤ 1.5x make", ratio <= 1.5),
        Row("P1 ctx", "same job, plain doit (hand-written dodo, CmdAction + targets + config_changed)",
            f"{fmt_s(pd)} ({per_task(pd)})", f"make -j2: {fmt_s(mk)}", f"{pd / mk:.2f}x make; helios-doit = {hd / pd:.2f}x plain doit",
            "context", None),
    ]
    details = [
        f"P1 — {n:,} chunks, fresh (outputs and all runner state removed before every run, untimed). "
        f"helios-doit: `doit -f dodo.py -n 2 job=job.json` (default reporter, output to /dev/null). "
        f"Plain doit: same graph as a hand-written dodo (`sqlite3` backend like ours; this Python has no gdbm, so "
        f"doit's default `dbm` would be dbm.dumb). make: one explicit rule per output, `make -j2`.",
        sample_line("make -j2", samples["make -j2"]),
        sample_line("helios-doit -n 2", samples["helios-doit -n 2"]),
        sample_line("plain doit -n 2", samples["plain doit -n 2"]),
        f"- helios-doit CPU split (medians): main process {main_cpu:.2f} s, workers + commands {kids_cpu:.2f} s "
        f"({(main_cpu + kids_cpu) / n * 1000:.2f} ms CPU per chunk; make: {median(cpus(samples['make -j2'])) / n * 1000:.2f} ms).",
    ]
    data = {k: [asdict(m) for m in v] for k, v in samples.items()}
    return Section("P1", "Fresh 10,000-chunk job", rows, details, data)


def bench_p2(ctx: Ctx) -> Section:
    n, reps = ctx.n_chunks, 3 if ctx.quick else 7
    dirs = touch_dirs(ctx)
    done = ctx.shared.get("touch_done", set())
    for name, runner in (("helios", lambda: run_helios(dirs["helios"])), ("plain", lambda: run_plain(dirs["plain"])),
                         ("make", lambda: run_make(dirs["make"]))):
        if name not in done:
            ctx.log(f"  P2: completing the {name} job first (untimed)")
            clean_touch_outputs(dirs[name])
            runner()
    ctx.shared["touch_done"] = {"helios", "plain", "make"}
    ctx.log(f"  P2: no-op reruns of the completed {n}-chunk job, {reps} alternating repetitions")
    stamp = {k: (dirs[k] / "merged").stat().st_mtime_ns for k in dirs}
    samples = alternate(reps, {"helios-doit no-op": lambda: run_helios(dirs["helios"]),
                               "plain doit no-op": lambda: run_plain(dirs["plain"]),
                               "make no-op": lambda: run_make(dirs["make"])}, None, ctx.log)
    for k in dirs:  # a no-op must not have rebuilt anything
        if (dirs[k] / "merged").stat().st_mtime_ns != stamp[k]:
            raise CommandFailed(f"P2: the {k} no-op run rebuilt the merge")
    hd, pd, mk = (median(walls(samples[k])) for k in ("helios-doit no-op", "plain doit no-op", "make no-op"))
    ratio = hd / pd
    rows = [
        Row("P2", f"no-op rerun of the completed {n:,}-chunk job", fmt_s(hd), f"plain doit: {fmt_s(pd)}",
            f"{ratio:.2f}x plain doit", "≤ 0.6x plain doit", ratio <= 0.6),
        Row("P2 ctx", "same, make -j2", fmt_s(hd), f"make: {mk * 1000:.0f} ms", f"{hd / mk:.0f}x make", "context", None),
    ]
    details = [
        f"P2 — no-op: every run finds all {n:,} chunks and the merge up to date (checked: `merged` is not rebuilt). "
        f"helios-doit reads {n + 1:,} record files and stats the outputs; plain doit compares `config_changed` "
        f"values and target existence from its sqlite3 dep file and checks the merge's {n:,} `file_dep` by mtime.",
        sample_line("helios-doit no-op", samples["helios-doit no-op"]),
        sample_line("plain doit no-op", samples["plain doit no-op"]),
        sample_line("make no-op", samples["make no-op"]),
    ]
    return Section("P2", "No-op rerun", rows, details, {k: [asdict(m) for m in v] for k, v in samples.items()})


def bench_p5(ctx: Ctx) -> Section:
    n, reps = ctx.n_chunks, 1 if ctx.quick else 2
    folder = ctx.work / f"p5-{n}"
    shutil.rmtree(folder, ignore_errors=True)
    write_touch_workload(folder, n)
    rus = ctx.work / "p5-rusage.json"
    ctx.log(f"  P5: peak memory of a fresh {n}-chunk run (-n 2), {reps} run(s) with /proc sampling; plain doit for context")
    runs, plain = [], []
    for rep in range(reps):
        clean_touch_outputs(folder)
        m = run_helios(folder, rus, ProcSampler())
        check_touch_done(folder, n, True)
        runs.append(m)
        ctx.log(f"    rep {rep + 1}/{reps} helios-doit main {m.extra.get('self_maxrss_mb', 0):.1f} MB, workers "
                f"{m.extra.get('worker_hwm_mb') or 0:.1f} MB HWM / {m.extra.get('worker_pss_mb') or 0:.1f} MB PSS ({m.wall:.1f} s)")
    clean_touch_outputs(folder)
    p = run_plain(folder, rus)
    plain.append(p)
    ctx.log(f"    plain doit main {p.extra.get('self_maxrss_mb', 0):.1f} MB")
    main_mb = median([m.extra["self_maxrss_mb"] for m in runs])
    worker_hwm = median([m.extra.get("worker_hwm_mb") or 0 for m in runs])
    worker_pss = median([m.extra.get("worker_pss_mb") or 0 for m in runs])
    plain_mb = p.extra.get("self_maxrss_mb", 0)
    rows = [
        Row("P5", f"peak RSS of the runner's main process, fresh {n:,}-chunk run, -n 2", f"{main_mb:.0f} MB",
            f"plain doit main: {plain_mb:.0f} MB", f"{main_mb:.0f} MB", "≤ 120 MB", main_mb <= 120),
        Row("P5 ctx", "doit worker processes (forked from the main process after the tasks are loaded)",
            f"{worker_hwm:.0f} MB peak RSS, {worker_pss:.0f} MB PSS each", "-", "-", "context", None),
    ]
    details = [
        "P5 — main process: its own `ru_maxrss` (RUSAGE_SELF, written by bench/doit_main.py as it exits). "
        "Workers: VmHWM / PSS of the main process' long-lived children, polled from /proc every 0.1 s. "
        "A forked worker's RSS counts pages it still shares with the main process; PSS splits those.",
        *(f"- run {i + 1}: main {m.extra['self_maxrss_mb']:.1f} MB; workers seen {m.extra.get('workers')}, "
          f"HWM {m.extra.get('worker_hwm_mb') or 0:.1f} MB, PSS {m.extra.get('worker_pss_mb') or 0:.1f} MB; "
          f"children max (RUSAGE_CHILDREN) {m.extra.get('children_maxrss_mb', 0):.1f} MB; wall {m.wall:.1f} s"
          for i, m in enumerate(runs)),
        f"- plain doit, same job: main {plain_mb:.1f} MB, children max {p.extra.get('children_maxrss_mb', 0):.1f} MB",
    ]
    shutil.rmtree(folder, ignore_errors=True)
    return Section("P5", "Runner memory", rows, details, {"helios": [asdict(m) for m in runs], "plain": [asdict(m) for m in plain]})


# -- P3: a real render, chunked vs direct --------------------------------------------------------

def orbit_job(ctx: Ctx, tag: str, *, width: int, height: int, duration: int) -> Path:
    folder = ctx.work / f"p3-{tag}-{time.monotonic_ns()}"
    folder.mkdir(parents=True)
    shutil.copy(code_root() / "examples" / "orbit" / "composition.py", folder / "composition.py")
    run_quiet([VENV_BIN / "helios-doit", "render", "composition.py", "-o", "orbit.mp4", "--width", width, "--height",
               height, "--duration", duration, "--emit-job", "job.json", "--concurrency", 4], folder)
    return folder


def p3_pair(ctx: Ctx, tag: str, reps: int, threads: str | None, *, width: int = 640, height: int = 360,
            duration: int = 8, also: dict[str, str] | None = None) -> tuple[dict[str, list[Measured]], list[dict[str, float]]]:
    """Chunked vs direct; `also` adds chunked runs named "chunked, MODE" with HELIOS_DOIT_FORK=VALUE for each
    MODE: VALUE (0: every chunk a new Python instead of a fork of its doit worker)."""
    env = bench_env(**({"HELIOS_DOIT_THREADS": threads} if threads is not None else {}))
    if threads is None:
        env.pop("HELIOS_DOIT_THREADS", None)
    inner: list[dict[str, float]] = []
    folders: dict[str, Path] = {}

    def prepare(name: str) -> None:
        folders[name] = orbit_job(ctx, tag, width=width, height=height, duration=duration)

    def chunked(name: str = "chunked", extra: dict[str, str] | None = None) -> Measured:
        folder = folders[name]
        m = run_measured(doit_argv("-f", str(code_root() / "dodo.py"), "-n", "2", f"job={folder / 'job.json'}"), folder,
                         {**env, **(extra or {})})
        if name == "chunked":
            records = folder / ".helios-doit" / "job.json" / "records"
            durations = {p.stem: json.loads(p.read_text())["duration"] for p in records.glob("*.json")}
            inner.append({"chunks_sum": sum(v for k, v in durations.items() if k != "merge"),
                          "chunk_max": max(v for k, v in durations.items() if k != "merge"), "merge": durations.get("merge", 0)})
        shutil.rmtree(folder, ignore_errors=True)
        return m

    def direct() -> Measured:
        folder = folders["direct"]
        m = run_measured([VENV_BIN / "helios-doit", "render", "composition.py", "-o", "direct.mp4", "--width", width,
                          "--height", height, "--fps", 30, "--duration", duration, "--video-codec", "libx264"], folder, env)
        shutil.rmtree(folder, ignore_errors=True)
        return m

    contenders = {"chunked": chunked, "direct": direct}
    for mode, value in (also or {}).items():
        contenders[f"chunked, {mode}"] = lambda mode=mode, value=value: chunked(f"chunked, {mode}", {"HELIOS_DOIT_FORK": value})
    return alternate(reps, contenders, prepare, ctx.log), inner


def bench_p3(ctx: Ctx) -> Section:
    reps, reps_default = (1, 1) if ctx.quick else (5, 3)
    ctx.log(f"  P3: orbit 640x360, 240 frames: 4 chunks with doit -n 2 vs one direct render; {reps} reps pinned "
            f"(HELIOS_DOIT_THREADS=1), {reps_default} with the encoder's default threads")
    pinned, inner = p3_pair(ctx, "pinned", reps, "1", also={"exec": "0"})
    default, _ = p3_pair(ctx, "default", reps_default, None)
    rows, details = [], []
    for label, samples, target in (("HELIOS_DOIT_THREADS=1 (both)", pinned, False), ("default encoder threads", default, True)):
        ch, di = median(walls(samples["chunked"])), median(walls(samples["direct"]))
        speedup = di / ch
        rows.append(Row("P3" if target else "P3 ctx", f"orbit 640x360, 240 frames, 4 chunks -n 2 vs direct; {label}",
                        fmt_s(ch), f"direct: {fmt_s(di)}", f"{speedup:.2f}x speedup",
                        "≥ 1.0x" if target else "context", speedup >= 1.0 if target else None))
        details += [sample_line(f"chunked, {label}", samples["chunked"]), sample_line(f"direct, {label}", samples["direct"])]
    ex, di = median(walls(pinned["chunked, exec"])), median(walls(pinned["direct"]))
    rows.insert(1, Row("P3 ctx", "same as P3, but every chunk and the merge a new Python (HELIOS_DOIT_FORK=0)", fmt_s(ex),
                       f"direct: {fmt_s(di)}", f"{di / ex:.2f}x speedup", "context", None))
    details.append(sample_line("chunked, HELIOS_DOIT_FORK=0", pinned["chunked, exec"]))
    if inner:
        details.append(
            f"- inside the chunked run (pinned, medians from the records): chunk commands {median([i['chunks_sum'] for i in inner]):.2f} s "
            f"in all (longest {median([i['chunk_max'] for i in inner]):.2f} s; each forked from a doit worker, whose first "
            f"chunk also imports PyAV and numpy, and each verified by a probe of its output), merge "
            f"{median([i['merge'] for i in inner]):.2f} s (`helios-doit merge`, forked too)")
    data = {"pinned": {k: [asdict(m) for m in v] for k, v in pinned.items()},
            "default": {k: [asdict(m) for m in v] for k, v in default.items()}, "inner": inner}
    if not ctx.quick:
        ctx.log("  P3b (context): the same at 1280x720, 16 s (480 frames), pinned threads, 2 reps")
        heavy, heavy_inner = p3_pair(ctx, "heavy", 2, "1", width=1280, height=720, duration=16)
        ch, di = median(walls(heavy["chunked"])), median(walls(heavy["direct"]))
        rows.append(Row("P3b ctx", "orbit 1280x720, 480 frames (8x the pixels), 4 chunks -n 2 vs direct; HELIOS_DOIT_THREADS=1",
                        fmt_s(ch), f"direct: {fmt_s(di)}", f"{di / ch:.2f}x speedup", "context", None))
        details += [sample_line("P3b chunked", heavy["chunked"]), sample_line("P3b direct", heavy["direct"])]
        data["heavy"] = {k: [asdict(m) for m in v] for k, v in heavy.items()}
    details.insert(0, "P3 — a fresh folder per run (composition copied, job emitted with `--emit-job --concurrency 4`, "
                      "untimed). Chunked: `doit -f dodo.py -n 2 job=job.json` end to end: 4 `helios-doit render` "
                      "chunks, each verified, then the job's `helios-doit merge` command; both forked from doit's "
                      "worker processes (the default: a new process for each chunk, forked from a worker that never runs a "
                      "chunk itself; `HELIOS_DOIT_FORK=0` execs a new Python instead). Direct: one "
                      "`helios-doit render ... -o direct.mp4` with the same settings. Speedup = direct / chunked (medians).")
    return Section("P3", "Chunked render vs direct render", rows, details, data)


# -- P3r: a render big enough to be worth chunks ------------------------------------------------

def bench_p3r(ctx: Ctx) -> Section:
    reps, reps_default = (1, 1) if ctx.quick else (5, 3)
    ctx.log(f"  P3r: orbit 1280x720, 300 frames: 4 chunks with doit -n 2 vs one direct render; {reps} reps pinned, "
            f"{reps_default} with default threads")
    pinned, _ = p3_pair(ctx, "r-pinned", reps, "1", width=1280, height=720, duration=10, also={"exec": "0"})
    default, _ = p3_pair(ctx, "r-default", reps_default, None, width=1280, height=720, duration=10)
    rows, details = [], []
    for label, samples, speed_target in (("HELIOS_DOIT_THREADS=1 (both)", pinned, 1.75),
                                         ("default encoder threads", default, 1.3)):
        ch, di = median(walls(samples["chunked"])), median(walls(samples["direct"]))
        cpu = median(cpus(samples["chunked"])) / median(cpus(samples["direct"]))
        rows.append(Row("P3r", f"orbit 1280x720, 300 frames, 4 chunks -n 2 vs direct; {label}", fmt_s(ch),
                        f"direct: {fmt_s(di)}", f"{di / ch:.2f}x speedup", f"≥ {speed_target}x", di / ch >= speed_target))
        if speed_target == 1.75:
            rows.append(Row("P3r", f"CPU of that chunked run / the direct run's; {label}",
                            f"{median(cpus(samples['chunked'])):.2f} CPU-s", f"direct: {median(cpus(samples['direct'])):.2f} CPU-s",
                            f"{cpu:.2f}x CPU", "≤ 1.05x", cpu <= 1.05))
            execd = samples["chunked, exec"]
            rows.append(Row("P3r ctx", f"same, every chunk and the merge a new Python (HELIOS_DOIT_FORK=0); {label}",
                            fmt_s(median(walls(execd))), f"forked: {fmt_s(ch)}",
                            f"exec / fork: {median(walls(execd)) / ch:.2f}x wall, {median(cpus(execd)) / median(cpus(samples['chunked'])):.2f}x CPU",
                            "context", None))
        for name, runs in samples.items():
            details.append(f"- P3r {name}, {label}: user {median([m.user for m in runs]):.2f} s, sys "
                           f"{median([m.sys for m in runs]):.2f} s, peak RSS {median([m.maxrss_mb for m in runs]):.0f} MB "
                           f"(medians of {len(runs)}); walls " + ", ".join(fmt_s(w) for w in walls(runs)))
    details.insert(0, "P3r — as P3, at 1280x720 for 10 s. Chunked runs leave the encoder's threads to helios-doit "
                      "(each of the 2 renders side by side gets cores / 2); the direct render uses the encoder's default "
                      "threads unless pinned. CPU = user + sys of the whole process tree (wait4).")
    data = {"pinned": {k: [asdict(m) for m in v] for k, v in pinned.items()},
            "default": {k: [asdict(m) for m in v] for k, v in default.items()}}
    return Section("P3r", "Chunked render vs direct render, 720p", rows, details, data)


# -- P3s: the same job without -n ------------------------------------------------------------------

def bench_p3s(ctx: Ctx) -> Section:
    reps = 1 if ctx.quick else 5
    ctx.log(f"  P3s: the bundled example's job (640x360, 120 frames, 4 chunks), `doit` without -n: renders forked "
            f"vs exec'd (HELIOS_DOIT_FORK=0); {reps} reps")
    env = bench_env()
    folders: dict[str, Path] = {}

    def prepare(name: str) -> None:
        folders[name] = orbit_job(ctx, "s", width=640, height=360, duration=4)

    def serial(name: str, extra: dict[str, str]) -> Measured:
        m = run_measured(doit_argv("-f", str(code_root() / "dodo.py"), f"job={folders[name] / 'job.json'}"), folders[name],
                         {**env, **extra})
        shutil.rmtree(folders[name], ignore_errors=True)
        return m

    samples = alternate(reps, {"fork": lambda: serial("fork", {}), "exec": lambda: serial("exec", {"HELIOS_DOIT_FORK": "0"})},
                        prepare, ctx.log)
    forked, ex = median(walls(samples["fork"])), median(walls(samples["exec"]))
    rows = [Row("P3s ctx", "the bundled example's job (640x360, 120 frames, 4 chunks), serial `doit` (no -n): each render "
                "forked from the runner vs each a new Python (HELIOS_DOIT_FORK=0)", fmt_s(forked), f"exec: {fmt_s(ex)}",
                f"{forked / ex:.2f}x exec, {median(cpus(samples['fork'])) / median(cpus(samples['exec'])):.2f}x its CPU",
                "context", None)]
    details = ["P3s — a serial run forks its renders too: the runner's own progress ticker and watchdog threads hold "
               "no lock a forked child takes (before, any thread besides doit's queue feeder meant exec).",
               sample_line("serial, fork", samples["fork"]), sample_line("serial, exec", samples["exec"])]
    return Section("P3s", "A serial run", rows, details, {k: [asdict(m) for m in v] for k, v in samples.items()})


# -- P6: many machines ---------------------------------------------------------------------------

def bench_p6(ctx: Ctx) -> Section:
    import bench_dask

    chunks, jobs, reps = (100, 4, 1) if ctx.quick else (200, 8, 3)
    ctx.log(f"  P6: {chunks} trivial chunks, doit -n {jobs} -P thread: local vs a loopback Dask scheduler; {reps} reps")
    root = ctx.work / f"p6-{time.monotonic_ns()}"
    root.mkdir(parents=True)
    job = bench_dask.write_job(root / "job", chunks)
    address, procs = bench_dask.start_cluster(root, jobs)
    try:
        ways = {"local": (), "dask": ("executor=dask", f"scheduler={address}")}
        bench_dask.timed_run(job, jobs)  # warm the file cache and the bytecode
        samples: dict[str, list[float]] = {way: [] for way in ways}
        for _ in range(reps):
            for way, variables in ways.items():
                samples[way].append(bench_dask.timed_run(job, jobs, *variables))
    finally:
        for proc in reversed(procs):
            os.killpg(proc.pid, 15)
            proc.wait(10)
        shutil.rmtree(root, ignore_errors=True)
    local, remote = median(samples["local"]), median(samples["dask"])
    per_chunk = (remote - local) / chunks * 1000
    rows = [Row("P6", f"{chunks} chunks (`touch`), -n {jobs} -P thread: Dask executor on a loopback scheduler vs local",
                fmt_s(remote), f"local: {fmt_s(local)}", f"{per_chunk:.1f} ms per chunk", "context (scale-out cost)", None)]
    details = [f"P6 — wall times: local {', '.join(fmt_s(w) for w in samples['local'])}; dask "
               f"{', '.join(fmt_s(w) for w in samples['dask'])}. Extra per chunk = (dask − local) / chunks: what a chunk "
               "costs to ship to a worker and back (its output streamed, its process group watched), before any rendering."]
    return Section("P6", "Scale-out cost", rows, details, {"local": samples["local"], "dask": samples["dask"]})


# -- P4: stitching ------------------------------------------------------------------------------

def p4_chunks(ctx: Ctx) -> tuple[list[Path], Path]:
    frames_per_chunk = 6 if ctx.quick else 24
    count, quality = 20, 8
    key = f"noise-v1-1280x720-q{quality}-{count}x{frames_per_chunk}"
    folder = CACHE / key
    job = folder / "job.json"
    done = folder / "complete.json"
    if done.exists():
        parts = [folder / p for p in json.loads(done.read_text())["parts"]]
        if all(p.is_file() for p in parts):
            return parts, folder
    ctx.log(f"  P4: making {count} chunks of {frames_per_chunk} noisy 1280x720 frames (libx264 CRF {quality}) once, "
            f"cached in {folder}")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    shutil.copy(NOISE, folder / "composition.py")
    duration = count * frames_per_chunk / 30
    run_quiet([VENV_BIN / "helios-doit", "render", "composition.py", "-o", "noise.mov", "--duration", f"{duration:g}",
               "--video-codec", "libx264", "--quality", quality, "--emit-job", job.name, "--concurrency", count], folder)
    run_quiet([VENV_BIN / "helios-doit", "job", "run", job.name, "--concurrency", "2", "--no-merge"], folder)
    spec = json.loads(job.read_text())
    parts = [folder / c["outputFile"] for c in spec["chunks"]]
    done.write_text(json.dumps({"parts": [p.name for p in parts]}))
    return parts, folder


def bench_p4(ctx: Ctx) -> Section:
    ffmpeg = ffmpeg_exe()
    if not ffmpeg:
        raise CommandFailed("P4 needs imageio-ffmpeg: .venv/bin/pip install imageio-ffmpeg")
    parts, _ = p4_chunks(ctx)
    total_mb = sum(p.stat().st_size for p in parts) / 1e6
    reps = 2 if ctx.quick else 5
    out_dir = ctx.work / "p4"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    for p in parts:  # both contenders read from the page cache
        with open(p, "rb") as handle:
            while handle.read(1 << 22):
                pass

    def builtin(k: int) -> Callable[[], Measured]:
        def run() -> Measured:
            out = out_dir / "merged-builtin.mov"
            out.unlink(missing_ok=True)
            return run_measured([VENV_BIN / "helios-doit", "merge", out, *parts[:k]], out_dir)
        return run

    def concat(k: int) -> Callable[[], Measured]:
        listing = out_dir / f"list{k}.txt"
        listing.write_text("".join(f"file '{p}'\n" for p in parts[:k]))

        def run() -> Measured:
            out = out_dir / "merged-ffmpeg.mov"
            out.unlink(missing_ok=True)
            return run_measured([ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "concat", "-safe", "0",
                                 "-i", listing, "-map", "0", "-c", "copy", "-y", out], out_dir)
        return run

    ctx.log(f"  P4: stitching {len(parts)} chunks ({total_mb:.0f} MB): helios-doit merge vs ffmpeg concat, {reps} reps")
    samples = alternate(reps, {"helios-doit merge": builtin(len(parts)), "ffmpeg concat -c copy": concat(len(parts))},
                        None, ctx.log)
    sizes = {"builtin": (out_dir / "merged-builtin.mov").stat().st_size, "ffmpeg": (out_dir / "merged-ffmpeg.mov").stat().st_size}
    mem: dict[int, dict[str, float]] = {}
    for k in (5, 10, 20):
        k = min(k, len(parts))
        mb = sum(p.stat().st_size for p in parts[:k]) / 1e6
        b, f = builtin(k)(), concat(k)()
        mem[k] = {"input_mb": mb, "builtin_rss": b.maxrss_mb, "ffmpeg_rss": f.maxrss_mb, "builtin_wall": b.wall,
                  "ffmpeg_wall": f.wall}
        ctx.log(f"    {k} chunks ({mb:.0f} MB): helios-doit merge {b.maxrss_mb:.0f} MB RSS, ffmpeg {f.maxrss_mb:.0f} MB RSS")
    hb, ff = median(walls(samples["helios-doit merge"])), median(walls(samples["ffmpeg concat -c copy"]))
    ratio = hb / ff
    lo, hi = mem[min(mem)], mem[max(mem)]
    flat = hi["builtin_rss"] <= 1.2 * lo["builtin_rss"]
    rows = [
        Row("P4", f"stitch {len(parts)} chunks, {total_mb:.0f} MB (1280x720 H.264 + PCM): `helios-doit merge` vs "
            "`ffmpeg -f concat -c copy`", fmt_s(hb), f"ffmpeg: {fmt_s(ff)}", f"{ratio:.2f}x ffmpeg", "≤ 1.0x",
            ratio <= 1.0),
        Row("P4 mem", "peak RSS of the stitcher at " + " / ".join(f"{k} chunks ({v['input_mb']:.0f} MB)" for k, v in mem.items()),
            " / ".join(f"{v['builtin_rss']:.0f}" for v in mem.values()) + " MB",
            "ffmpeg: " + " / ".join(f"{v['ffmpeg_rss']:.0f}" for v in mem.values()) + " MB",
            f"{hi['builtin_rss'] / lo['builtin_rss']:.2f}x from {min(mem)} to {max(mem)} chunks", "flat (≤ 1.2x)", flat),
    ]
    details = [
        f"P4 — chunks: {len(parts)} x {6 if ctx.quick else 24} frames of noise at 1280x720, libx264 CRF 8 in .mov with PCM "
        f"stereo, rendered once by `helios-doit job run` and cached under {CACHE}; read into the page cache before "
        "timing. helios-doit: `helios-doit merge out.mov PARTS...` (probes every chunk, decoding the first chunk's "
        "first frame and no other chunk's whose codec configuration is the same, remuxes with PyAV, probes the "
        "result's packets, renames). ffmpeg: the imageio-ffmpeg binary, `-f concat -safe 0 -i list -map 0 -c copy`.",
        sample_line("helios-doit merge", samples["helios-doit merge"]),
        sample_line("ffmpeg concat -c copy", samples["ffmpeg concat -c copy"]),
        f"- output sizes: helios-doit {sizes['builtin'] / 1e6:.1f} MB, ffmpeg {sizes['ffmpeg'] / 1e6:.1f} MB",
        *(f"- {k} chunks ({v['input_mb']:.0f} MB in): helios-doit merge {v['builtin_rss']:.1f} MB RSS in {v['builtin_wall']:.2f} s; "
          f"ffmpeg {v['ffmpeg_rss']:.1f} MB RSS in {v['ffmpeg_wall']:.2f} s" for k, v in mem.items()),
    ]
    shutil.rmtree(out_dir, ignore_errors=True)
    return Section("P4", "Stitching", rows, details,
                   {"samples": {k: [asdict(m) for m in v] for k, v in samples.items()}, "memory": mem, "input_mb": total_mb})


# -- P7: what the state folder holds -------------------------------------------------------------

def _state_size(root: Path) -> tuple[int, int, int]:
    """(files, bytes they hold, bytes of disk they take) under `root`."""
    files = size = disk = 0
    for path in root.rglob("*"):
        st = path.lstat()
        if path.is_file() and not path.is_symlink():
            files, size, disk = files + 1, size + st.st_size, disk + st.st_blocks * 512
    return files, size, disk


def bench_p7(ctx: Ctx) -> Section:
    n, noops = ctx.n_chunks, 5 if ctx.quick else 25
    dirs = touch_dirs(ctx)
    folder = dirs["helios"]
    if "helios" not in ctx.shared.get("touch_done", set()):
        ctx.log(f"  P7: completing the {n}-chunk job first")
        clean_touch_outputs(folder)
        run_helios(folder)
    state = folder / ".helios-doit" / "job.json"
    files, size, disk = _state_size(state)
    per_chunk = sum(1 for p in state.rglob("*") if p.is_file() and "chunk-" in p.name) / n
    ctx.log(f"  P7: {files} files ({size / 1e6:.1f} MB, {disk / 1e6:.1f} MB of disk) after a fresh run; {noops} no-op runs")
    runs_before = _state_size(state / "runs")
    for _ in range(noops):
        run_helios(folder)
    runs_after = _state_size(state / "runs")
    grown = (runs_after[1] - runs_before[1]) / noops
    rows = [
        Row("P7", f"state files per chunk after a {n:,}-chunk run (records, logs; locks are removed as they are let go)",
            f"{per_chunk:.2f} files/chunk, {files:,} files, {size / 1e6:.1f} MB ({disk / 1e6:.0f} MB of disk)", "-",
            f"{per_chunk:.2f} per chunk", "≤ 2 per chunk", per_chunk <= 2),
        Row("P7 ctx", f"event log growth per no-op run of the {n:,}-chunk job ({noops} runs; old runs' logs pruned)",
            f"{grown / 1e3:.1f} KB per run; runs/ holds {runs_after[0]} files", "-", "-", "context", None),
    ]
    details = [f"P7 — the state folder of the P1 job after its runs: {files:,} files, {size:,} bytes "
               f"({disk:,} bytes of disk blocks); {per_chunk:.2f} chunk files per chunk. Then {noops} no-op runs: "
               f"runs/ went from {runs_before[0]} files ({runs_before[1]:,} bytes) to {runs_after[0]} files "
               f"({runs_after[1]:,} bytes); a run keeps the 20 runs' logs before it and any written to in the last hour."]
    return Section("P7", "State folder size", rows, details,
                   {"files": files, "bytes": size, "disk": disk, "per_chunk": per_chunk, "runs": [runs_before, runs_after]})


#: id -> benchmark, in the order they run. A new benchmark (e.g. an executor one) goes here.
BENCHES: dict[str, Callable[[Ctx], Section]] = {"P1": bench_p1, "P2": bench_p2, "P5": bench_p5, "P3": bench_p3,
                                                "P3r": bench_p3r, "P3s": bench_p3s, "P4": bench_p4, "P6": bench_p6,
                                                "P7": bench_p7}
ORDER = ["P1", "P2", "P3", "P3r", "P3s", "P4", "P5", "P6", "P7"]  # order in the table


# -- output -------------------------------------------------------------------------------------

def load_results(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {"runs": {}, "sections": {}}


def render_markdown(results: dict[str, Any]) -> str:
    sections = [results["sections"][k] for k in ORDER + sorted(set(results["sections"]) - set(ORDER))
                if k in results["sections"]]
    used_runs = sorted({s["run"] for s in sections})
    lines = [BEGIN, "", "## Results", ""]
    lines.append("Generated by `.venv/bin/python bench/run.py` (edit nothing between these markers by hand). "
                 "Wall-clock medians; ratios are ratios of medians; candidate and baseline runs alternate.")
    lines.append("")
    lines.append("| id | what | helios-doit | baseline | figure | target | result | run |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for s in sections:
        run = results["runs"][s["run"]]
        tag = ("QUICK " if run["quick"] else "") + run["facts"]["date"][:16]
        for r in s["rows"]:
            verdict = "context" if r["passed"] is None else ("**PASS**" if r["passed"] else "**FAIL**")
            lines.append(f"| {r['id']} | {r['what']} | {r['candidate']} | {r['baseline']} | {r['figure']} | "
                         f"{r['target']} | {verdict} | {tag} |")
    if any(results["runs"][r]["quick"] for r in used_runs):
        lines += ["", "**QUICK rows** come from `--quick`: 1,000 chunks instead of 10,000 (P1, P2, P5), smaller P4 "
                  "chunks (< 300 MB in all), fewer repetitions. They show ratios, not the reference figures."]
    lines += ["", "P3 and P3r run with the encoder's default threads as a user would (a chunked run gives each of its "
              "renders side by side its share of the cores), and with one thread pinned in both the chunked and the "
              "direct render (`HELIOS_DOIT_THREADS=1`), where libx264's own threads cannot hide (or fake) the gain "
              "from running chunks in parallel.", ""]
    for run_id in used_runs:
        run = results["runs"][run_id]
        f = run["facts"]
        scope = f"only {', '.join(run['only'])}" if run.get("only") else "all benchmarks"
        lines.append(f"**Run {f['date']}** ({'quick' if run['quick'] else 'full'}, {scope}, {run['elapsed_s']:.0f} s): "
                     f"{f['cpu_count']} CPUs ({f.get('cpu_affinity', '?')} usable), {f['cpu_model']}, "
                     f"{f.get('mem_total_gb')} GB RAM, load {f['loadavg_at_start']} at start and {f.get('loadavg_at_end', '?')} at the end "
                     f"({f.get('quiet_wait_s', 0)} s spent waiting for other processes to go quiet); Linux {f['kernel']}; "
                     f"Python {f['python']}, doit {f['doit']}, PyAV {f['pyav']} (libavcodec {f.get('libavcodec', '?')}), "
                     f"pydantic {f.get('pydantic', '?')}; {f['make']}; {f['ffmpeg']} (imageio-ffmpeg). Jobs ran in "
                     f"{f.get('work_fs', '?')}. Code measured: "
                     + (f"{f['code']}." if f.get("code", "working tree") != "working tree" else
                        f"working tree at HEAD {f['git_head']} with {f['tree_changes']} uncommitted file(s) outside "
                        f"bench/ (digest {f['tree_digest']})."))
        lines.append("")
    lines += ["### Details", ""]
    for s in sections:
        lines.append(f"**{s['id']} · {s['title']}**")
        lines.append("")
        lines += s["details"]
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


SKELETON = """# Benchmarks

How fast helios-doit runs chunked jobs, next to make, plain doit, a direct render and ffmpeg.
Re-run with `.venv/bin/python bench/run.py` (about 10-25 minutes; `--quick` takes a few);
see bench/README.md.

{block}
"""


def write_markdown(path: Path, block: str) -> None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = SKELETON.format(block=block)
    else:
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            text = head + block + rest.split(END, 1)[1]
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")


_MACHINE_LOCK: Any = None


def hold_machine() -> None:
    """One benchmark run at a time on this machine: two runs on 2 cores spoil each other's figures."""
    global _MACHINE_LOCK
    import fcntl

    _MACHINE_LOCK = open(os.path.join(os.environ.get("TMPDIR", "/tmp"), "helios-bench.lock"), "a+")
    try:
        fcntl.flock(_MACHINE_LOCK, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        _MACHINE_LOCK.seek(0)
        holder = _MACHINE_LOCK.read().strip() or "another run"
        print(f"bench: waiting for {holder} to finish (one benchmark run at a time)", flush=True)
        fcntl.flock(_MACHINE_LOCK, fcntl.LOCK_EX)
    _MACHINE_LOCK.seek(0)
    _MACHINE_LOCK.truncate()
    _MACHINE_LOCK.write(f"bench/run.py pid {os.getpid()}\n")
    _MACHINE_LOCK.flush()


def _fs_type(path: Path) -> str:
    best, kind = "", "?"
    for line in Path("/proc/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) > 2 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
            best, kind = parts[1], parts[2]
    return kind


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, smaller jobs (a few minutes)")
    parser.add_argument("--only", help="comma-separated ids, e.g. P1,P2 (default: all)")
    parser.add_argument("--out", default=str(REPO / "BENCHMARKS.md"), help="markdown file to update (default BENCHMARKS.md)")
    parser.add_argument("--results", default=str(RESULTS), help="JSON file of all rows (default bench/results/latest.json)")
    parser.add_argument("--work", help="scratch folder (default: a new one under /dev/shm if it exists, else /tmp; "
                                       "removed at the end)")
    parser.add_argument("--code", default="worktree", metavar="REV",
                        help="which helios-doit to measure: the working tree (default), or a commit such as HEAD, "
                             "extracted read-only with git archive (a stable target while others edit the tree)")
    parser.add_argument("--no-wait-quiet", action="store_true",
                        help="do not wait (up to 4 s) for other processes to go quiet before each timed run")
    args = parser.parse_args(argv)
    common.QUIET["wait"] = not args.no_wait_quiet
    known = {name.upper(): name for name in BENCHES}
    wanted = [known.get(x.strip().upper(), x.strip()) for x in args.only.split(",")] if args.only else list(BENCHES)
    unknown = [x for x in wanted if x not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHES)}")
    wanted = [k for k in BENCHES if k in wanted]  # run order (P2 right after P1 reuses its job)
    hold_machine()
    work = Path(args.work) if args.work else scratch_root() / f"helios-bench-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    if args.code != "worktree":
        use_snapshot(args.code, work / "code")

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.0f}s] {message}", flush=True)

    facts = machine_facts()
    facts["code"] = common.CODE["label"]
    facts["work_fs"] = f"{work} ({_fs_type(work)})"
    mode = "QUICK" if args.quick else "full"
    log(f"helios-doit benchmarks ({mode}): {', '.join(wanted)}")
    for key in ("code", "work_fs", "date", "cpu_count", "cpu_model", "mem_total_gb", "loadavg_at_start", "python", "doit", "pyav",
                "libavcodec", "pydantic", "make", "ffmpeg", "git_head", "tree_changes", "tree_digest"):
        log(f"  {key}: {facts.get(key)}")
    ctx = Ctx(args.quick, work, log)
    results_path = Path(args.results)
    results = load_results(results_path)
    run_id = time.strftime("%Y%m%dT%H%M%S")
    results["runs"][run_id] = {"quick": args.quick, "only": wanted if args.only else None, "facts": facts, "elapsed_s": 0.0}
    failed = []
    try:
        for key in wanted:
            log(f"{key} ...")
            try:
                section = BENCHES[key](ctx)
            except CommandFailed as exc:
                log(f"{key} failed: {exc}")
                failed.append(key)
                continue
            results["sections"][key] = {"run": run_id, **asdict(section)}
            for row in section.rows:
                verdict = "context" if row.passed is None else ("PASS" if row.passed else "FAIL")
                log(f"  {row.id:8} {row.figure:<40} target {row.target:<18} {verdict}")
    finally:
        results["runs"][run_id]["elapsed_s"] = time.monotonic() - started
        results["runs"][run_id]["facts"]["loadavg_at_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        results["runs"][run_id]["facts"]["quiet_wait_s"] = round(common.QUIET["waited"])
        live = {s["run"] for s in results["sections"].values()}
        results["runs"] = {k: v for k, v in results["runs"].items() if k in live}
        if results["sections"]:
            results_path.parent.mkdir(parents=True, exist_ok=True)
            results_path.write_text(json.dumps(results, indent=1, default=str))
            write_markdown(Path(args.out), render_markdown(results))
            log(f"wrote {args.out} and {results_path}")
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    log(f"done in {time.monotonic() - started:.0f} s" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
