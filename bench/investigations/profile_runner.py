"""Where the time of P1 (fresh) and P2 (no-op) goes: step timers, cProfile, spawn costs.

    .venv/bin/python bench/profile_runner.py [--chunks N] [--code REV] [--out FILE] [--skip-variants]

For an N-chunk touch job (default 10,000) it runs, one after another:
  1. a fresh helios-doit run (-n 2) under bench/phases.py: step timers in the main process and
     in every doit worker, reported per chunk;
  2. a no-op rerun under bench/phases.py;
  3. the same two under cProfile (main process only; workers are not profiled) for helios-doit
     and, for comparison, plain doit on the equivalent hand-written dodo;
  4. variants of the fresh run: -n 1, -P thread, plain doit -n 2 (wall and CPU);
  5. bench/investigations/spawn_micro.py: what starting one `touch` costs, by the way it is started.
The report goes to stdout and to FILE (default bench/results/profile-<date>.txt).
Profiled runs are slower than real ones: read shares and per-call costs, not wall times.
"""
from __future__ import annotations

import argparse
import io
import json
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import common  # noqa: E402
from common import BENCH, PYTHON, bench_env, code_root, doit_argv, machine_facts, run_measured, scratch_root, use_snapshot  # noqa: E402
from jobs import clean_touch_outputs, write_floor_dodos, write_touch_workload  # noqa: E402

PHASES = BENCH / "investigations" / "phases.py"


def helios_args(folder: Path, *extra: str) -> list[str]:
    return ["-f", str(code_root() / "dodo.py"), *extra, f"job={folder / 'job.json'}"]


def run_phases(folder: Path, outdir: Path, *doit_args: str) -> tuple[float, list[dict]]:
    shutil.rmtree(outdir, ignore_errors=True)
    outdir.mkdir(parents=True)
    m = run_measured([PYTHON, str(PHASES), str(outdir), *doit_args], folder)
    return m.wall, [json.loads(p.read_text()) for p in sorted(outdir.glob("phases-*.json"))]


def steps_table(procs: list[dict], role: str, n: int, title: str) -> list[str]:
    chosen = [p for p in procs if p["role"] == role]
    if not chosen:
        return [f"{title}: no {role} process reported"]
    merged: dict[str, list[float]] = {}
    for p in chosen:
        for name, v in p["steps"].items():
            entry = merged.setdefault(name, [0, 0.0, 0.0])
            entry[0] += v["calls"]
            entry[1] += v["seconds"]
            entry[2] += v.get("cpu", 0.0)
    cpu_self = sum(p["cpu_self"] for p in chosen)
    cpu_kids = sum(p["cpu_children"] for p in chosen)
    lines = [f"{title} ({len(chosen)} {role} process(es); CPU {cpu_self:.2f} s own"
             + (f", {cpu_kids:.2f} s in their children" if role == "worker" else "")
             + f" = {cpu_self / n * 1000:.3f} ms own CPU per chunk; peak RSS {max(p['maxrss_mb'] for p in chosen):.0f} MB)",
             f"  {'step (inclusive)':<56} {'calls':>7} {'wall s':>8} {'CPU s':>7} {'CPU us/call':>11} {'CPU us/chunk':>12} {'wall us/chunk':>13}"]
    for name, (calls, secs, cpu) in sorted(merged.items(), key=lambda kv: -kv[1][2]):
        if secs < 0.001 and calls < 2:
            continue
        lines.append(f"  {name:<56} {int(calls):>7} {secs:>8.3f} {cpu:>7.3f} {cpu / max(calls, 1) * 1e6:>11.1f} "
                     f"{cpu / n * 1e6:>12.1f} {secs / n * 1e6:>13.1f}")
    missing = sorted({m for p in chosen for m in p.get("missing", [])})
    if missing:
        lines.append("  (not in this code, skipped: " + ", ".join(missing) + ")")
    return lines


def run_cprofile(folder: Path, out: Path, args: list[str]) -> tuple[float, str]:
    m = run_measured([PYTHON, str(BENCH / "doit_main.py"), f"--profile-out={out}", *args], folder)
    return m.wall, str(out)


def top(prof: str, n: int, sort: str, title: str, restrict: str | None = None) -> list[str]:
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.strip_dirs().sort_stats(sort)
    if restrict:
        stats.print_stats(restrict, n)
    else:
        stats.print_stats(n)
    text = buf.getvalue()
    body = text[text.find("   ncalls"):] if "   ncalls" in text else text
    total = next((line for line in text.splitlines() if "function calls" in line), "").strip()
    return [f"{title} — {total}", *("  " + line for line in body.rstrip().splitlines())]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=10000)
    parser.add_argument("--code", default="worktree")
    parser.add_argument("--out")
    parser.add_argument("--skip-variants", action="store_true")
    parser.add_argument("--sections", default="1,2,3,4,5", help="which parts to run, e.g. 4,5")
    args = parser.parse_args()
    common.QUIET["wait"] = False  # not a timing run; waiting would only lengthen it
    n = args.chunks
    work = Path(tempfile.mkdtemp(prefix="helios-profile-", dir=scratch_root()))
    if args.code != "worktree":
        use_snapshot(args.code, work / "code")
    facts = machine_facts()
    lines = [f"helios-doit profile, {n:,} chunks, {facts['date']}; code: {common.CODE['label']} (HEAD {facts['git_head']}, "
             f"{facts['tree_changes']} uncommitted, digest {facts['tree_digest']}); {facts['cpu_count']} CPUs "
             f"{facts['cpu_model']}; Python {facts['python']}, doit {facts['doit']}; load {facts['loadavg_at_start']}", ""]

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    for line in lines:
        print(line)
    h, p = work / "helios", work / "plain"
    write_touch_workload(h, n)
    write_touch_workload(p, n)

    sections = set(args.sections.split(","))
    if "1" in sections or "2" in sections:
        section_12(h, n, work, say)
    if "3" in sections:
        section_3(h, p, work, say)
    if "4" in sections and not args.skip_variants:
        section_4(h, p, n, work, say)
    if "5" in sections:
        section_5(say)
    path = Path(args.out) if args.out else BENCH / "results" / f"profile-{time.strftime('%Y%m%dT%H%M%S')}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print(f"\nwrote {path}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


def section_12(h: Path, n: int, work: Path, say) -> None:
    say("== 1. fresh run, step timers (bench/phases.py) ==")
    clean_touch_outputs(h)
    wall, procs = run_phases(h, work / "ph-fresh", *helios_args(h, "-n", "2"))
    say(f"wall {wall:.2f} s with timers")
    for line in steps_table(procs, "main", n, "MAIN process, fresh"):
        say(line)
    say()
    for line in steps_table(procs, "worker", n, "WORKER processes, fresh (summed over workers)"):
        say(line)
    say()

    say("== 2. no-op rerun, step timers ==")
    wall, procs = run_phases(h, work / "ph-noop", *helios_args(h, "-n", "2"))
    say(f"wall {wall:.2f} s with timers")
    for line in steps_table(procs, "main", n, "MAIN process, no-op"):
        say(line)
    say()


def section_3(h: Path, p: Path, work: Path, say) -> None:
    say("== 3. cProfile of the main process ==")
    clean_touch_outputs(h)
    wall, prof = run_cprofile(h, work / "fresh.prof", helios_args(h, "-n", "2"))
    say(f"helios-doit fresh (profiled wall {wall:.2f} s)")
    for line in top(prof, 30, "tottime", "helios-doit fresh, main process, by own time"):
        say(line)
    say()
    wall, prof = run_cprofile(h, work / "noop.prof", helios_args(h, "-n", "2"))
    say(f"helios-doit no-op (profiled wall {wall:.2f} s)")
    for line in top(prof, 30, "tottime", "helios-doit no-op, main process, by own time"):
        say(line)
    for line in top(prof, 40, "cumulative", "helios-doit no-op, main process, cumulative"):
        say(line)
    say()
    clean_touch_outputs(p)
    wall, prof = run_cprofile(p, work / "plain-fresh.prof", ["-f", "dodo_plain.py", "-n", "2"])
    for line in top(prof, 20, "tottime", f"plain doit fresh, main process (profiled wall {wall:.2f} s)"):
        say(line)
    wall, prof = run_cprofile(p, work / "plain-noop.prof", ["-f", "dodo_plain.py", "-n", "2"])
    for line in top(prof, 25, "tottime", f"plain doit no-op, main process (profiled wall {wall:.2f} s)"):
        say(line)
    say()


def section_4(h: Path, p: Path, n: int, work: Path, say) -> None:
    if True:
        say("== 4. fresh-run variants (unprofiled, one run each: indicative) ==")
        rus = work / "rusage.json"
        for label, folder, dargs in (
            ("helios-doit -n 2", h, helios_args(h, "-n", "2")),
            ("helios-doit -n 1", h, helios_args(h)),
            ("helios-doit -n 2 -P thread", h, helios_args(h, "-n", "2", "-P", "thread")),
            ("plain doit -n 2", p, ["-f", "dodo_plain.py", "-n", "2"]),
            ("plain doit -n 1", p, ["-f", "dodo_plain.py"]),
            ("plain doit -n 2 -P thread", p, ["-f", "dodo_plain.py", "-n", "2", "-P", "thread"]),
        ):
            clean_touch_outputs(folder)
            rus.unlink(missing_ok=True)
            errors = work / "stderr.txt"
            with open(errors, "wb") as err:
                m = run_measured(doit_argv(*dargs, rusage_file=rus), folder, check=False, stderr=err)
            r = json.loads(rus.read_text()) if rus.exists() else {}
            if m.code != 0:
                tail = errors.read_text(errors="replace").strip().splitlines()[-3:]
                say(f"  {label:<30} exit code {m.code} after {m.wall:.1f} s: {' | '.join(tail) or '(no message)'}")
                continue
            say(f"  {label:<30} wall {m.wall:7.2f} s  main CPU {r['self_user'] + r['self_sys']:6.2f} s  "
                f"workers+commands CPU {r['children_user'] + r['children_sys']:6.2f} s  "
                f"({(m.cpu) / n * 1000:.2f} ms CPU/chunk)")
        clean_touch_outputs(h)
        m = run_measured(["make", "-j2"], h)
        say(f"  {'make -j2':<30} wall {m.wall:7.2f} s  CPU {m.cpu:6.2f} s ({m.cpu / n * 1000:.2f} ms CPU/chunk)")
        floor = work / "floor"
        write_floor_dodos(floor, n)
        for label, dargs in (("doit floor: N no-op actions -n 2", ["-f", "dodo_floor_dispatch.py", "-n", "2"]),
                             ("doit floor: N no-op actions -n 1", ["-f", "dodo_floor_dispatch.py"])):
            (floor / ".floor-doit.sqlite3").unlink(missing_ok=True)
            m = run_measured(doit_argv(*dargs, rusage_file=rus), floor)
            r = json.loads(rus.read_text())
            say(f"  {label:<30} wall {m.wall:7.2f} s  main CPU {r['self_user'] + r['self_sys']:6.2f} s  "
                f"workers CPU {r['children_user'] + r['children_sys']:6.2f} s  ({m.cpu / n * 1000:.2f} ms CPU/task)")
        say()
        say("== 4b. no-op variants (median of 3 runs each) ==")
        for folder, dargs in ((h, helios_args(h, "-n", "2")), (p, ["-f", "dodo_plain.py", "-n", "2"])):
            clean_touch_outputs(folder)  # complete each job first (untimed)
            run_measured(doit_argv(*dargs), folder)
        for label, folder, dargs in (
            ("helios-doit no-op -n 2", h, helios_args(h, "-n", "2")),
            ("plain doit no-op -n 2", p, ["-f", "dodo_plain.py", "-n", "2"]),
            ("doit floor: N up-to-date tasks", floor, ["-f", "dodo_floor_status.py", "-n", "2"]),
            ("doit: python -c 'import doit'", floor, None),
            ("helios-doit: import + load job", h, None),
        ):
            if label.startswith("doit: python"):
                argv = [PYTHON, "-c", "import doit.doit_cmd, doit.runner"]
            elif label.startswith("helios-doit: import"):
                argv = [PYTHON, "-c", "import sys; from helios_doit.tasks.refuse import load_or_exit; from helios_doit.tasks.session import namespace; "
                        f"namespace(load_or_exit({str(h / 'job.json')!r}))"]
            else:
                argv = doit_argv(*dargs)
            runs = sorted(run_measured(argv, folder, bench_env()).wall for _ in range(3))
            say(f"  {label:<34} wall {runs[1]:6.2f} s ({runs[1] / n * 1e6:.0f} us per chunk)")
        say()


def section_5(say) -> None:
    say("== 5. starting one command ==")
    for extra in ([], ["--inflate", "500"]):
        out = subprocess.run([PYTHON, str(BENCH / "investigations" / "spawn_micro.py"), "1000", *extra], capture_output=True, text=True,
                             env=bench_env())
        for line in out.stdout.splitlines():
            say("  " + line)


if __name__ == "__main__":
    sys.exit(main())
