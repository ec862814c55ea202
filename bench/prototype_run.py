"""Measure the prototypes of bench/prototype_dodo.py on the P1/P2 touch job, next to make and plain doit.

    .venv/bin/python bench/prototype_run.py [--chunks N] [--code REV] [--reps R]
        [--fresh "-;A;A,B;..."] [--noop "-;C;C,D;..."]

Each configuration is a set of prototype letters ("-" = none: the code as it is). Fresh
runs alternate with make -j2 and plain doit; no-op runs with plain doit's no-op. Prints a
table of medians; numbers for the proposals in BENCHMARKS.md come from here.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import BENCH, alternate, bench_env, doit_argv, median, run_measured, scratch_root, use_snapshot  # noqa: E402
from jobs import clean_touch_outputs, write_touch_workload  # noqa: E402

PROTO = BENCH / "prototype_dodo.py"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=10000)
    parser.add_argument("--code", default="worktree")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--fresh", default="-;A;A,B,G,H;A,B,F,G,H;A,B,C,D,E,F,G,H")
    parser.add_argument("--noop", default="-;C;C,D;C,D,E;A,B,C,D,E,F,G,H")
    args = parser.parse_args()
    n = args.chunks
    work = Path(tempfile.mkdtemp(prefix="helios-proto-", dir=scratch_root()))
    if args.code != "worktree":
        use_snapshot(args.code, work / "code")
    print(f"prototypes on {n:,} chunks; code: {common.CODE['label']}; {args.reps} rep(s)", flush=True)
    base = work / "job"
    write_touch_workload(base, n)

    def helios(letters: str):
        env = bench_env(HELIOS_PROTO="" if letters == "-" else letters)
        return lambda: run_measured(doit_argv("-f", str(PROTO), "-n", "2", f"job={base / 'job.json'}"), base, env)

    def plain():
        return run_measured(doit_argv("-f", "dodo_plain.py", "-n", "2"), base)

    def make():
        return run_measured(["make", "-j2"], base)

    rows = []
    if args.fresh:
        configs = args.fresh.split(";")
        contenders = {"make -j2": make, "plain doit": plain, **{f"helios {c}": helios(c) for c in configs}}
        samples = alternate(args.reps, contenders, lambda name: clean_touch_outputs(base))
        mk = median([m.wall for m in samples["make -j2"]])
        for name, runs in samples.items():
            wall = median([m.wall for m in runs])
            rows.append(f"fresh  {name:<28} {wall:8.2f} s  {wall / mk:6.2f}x make  CPU {median([m.cpu for m in runs]):7.2f} s")
    if args.noop:
        configs = args.noop.split(";")
        reps = max(3, args.reps)
        samples = {}
        clean_touch_outputs(base)
        plain()  # complete the plain job once
        for c in configs:
            clean_touch_outputs(base)
            plain()
            # complete the job (fast prototypes; the same dep-file backend as the configuration measured)
            helios("A,B,F,G,H" + (",E" if "E" in c else ""))()
            got = alternate(reps, {f"helios {c}": helios(c), "plain doit": plain})
            samples[f"helios {c}"] = got[f"helios {c}"]
            samples.setdefault("plain doit", []).extend(got["plain doit"])
        pd = median([m.wall for m in samples["plain doit"]])
        for name, runs in samples.items():
            wall = median([m.wall for m in runs])
            rows.append(f"no-op  {name:<28} {wall:8.2f} s  {wall / pd:6.2f}x plain doit")
    print("\n".join(rows))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
