"""Overhead of the Dask executor against local execution, for many trivial chunks.

    python bench/bench_dask.py [--chunks 200] [--jobs 8] [--repeats 3]

A job of N chunks whose commands do nothing but create their output (`touch out/<i>`: a chunk
must write its output to count as done) runs under `doit -n J -P thread` three ways: local
commands; on a loopback `dask scheduler` with one `dask worker --nthreads J`; on the
LocalCluster started in the runner when no scheduler is given. Every run starts from a clean
state. Prints the median wall time of each way and a markdown row.
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def write_job(folder: Path, n: int) -> Path:
    (folder / "out").mkdir(parents=True, exist_ok=True)
    job = {
        "metadata": {"totalFrames": n, "fps": 30, "width": 64, "height": 64, "duration": n / 30},
        "chunks": [{"id": i, "startFrame": i, "frameCount": 1, "outputFile": f"out/{i}", "command": f"touch out/{i}"}
                   for i in range(n)],
        "mergeCommand": "touch merged",
        "outputFile": "merged",
    }
    path = folder / "job.json"
    path.write_text(json.dumps(job))
    return path


def reset(folder: Path) -> None:
    shutil.rmtree(folder / ".helios-doit", ignore_errors=True)
    shutil.rmtree(folder / "out", ignore_errors=True)
    (folder / "out").mkdir()
    (folder / "merged").unlink(missing_ok=True)


def timed_run(job: Path, jobs: int, *variables: str) -> float:
    reset(job.parent)
    argv = [sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py"), "-n", str(jobs), "-P", "thread",
            f"job={job}", *variables]
    started = time.perf_counter()
    result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(variables) or 'local'} failed ({result.returncode}):\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return wall


def start_cluster(root: Path, threads: int) -> tuple[str, list[subprocess.Popen[bytes]]]:
    info = root / "scheduler.json"
    log = open(root / "dask.log", "wb")
    dask = [sys.executable, "-m", "dask"]
    procs = [subprocess.Popen([*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                               "--scheduler-file", str(info)], stdout=log, stderr=log, start_new_session=True)]
    deadline = time.monotonic() + 30
    while not (info.exists() and info.stat().st_size) and time.monotonic() < deadline:
        time.sleep(0.05)
    address = json.loads(info.read_text())["address"]
    procs.append(subprocess.Popen([*dask, "worker", address, "--nthreads", str(threads), "--no-nanny", "--host",
                                   "127.0.0.1", "--no-dashboard", "--local-directory", str(root / "worker")],
                                  stdout=log, stderr=log, start_new_session=True))
    while b"Registered to" not in (root / "dask.log").read_bytes() and time.monotonic() < deadline:
        time.sleep(0.05)
    return address, procs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=8, help="doit -n, and the Dask worker's threads")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="helios-bench-dask-"))
    job = write_job(root / "job", args.chunks)
    address, procs = start_cluster(root, args.jobs)
    try:
        ways = {"local": (), "dask": ("executor=dask", f"scheduler={address}"), "dask, LocalCluster": ("executor=dask",)}
        timed_run(job, args.jobs)  # warm the file cache and the bytecode
        walls: dict[str, list[float]] = {way: [] for way in ways}
        for _ in range(args.repeats):
            for way, variables in ways.items():
                walls[way].append(timed_run(job, args.jobs, *variables))
        median = {way: statistics.median(values) for way, values in walls.items()}
    finally:
        for proc in reversed(procs):
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
        shutil.rmtree(root, ignore_errors=True)
    for way, values in walls.items():
        print(f"{way}: " + ", ".join(f"{v:.2f}s" for v in values), file=sys.stderr)
    local, remote, lc = median["local"], median["dask"], median["dask, LocalCluster"]
    print("| chunks | -n | local | dask (loopback scheduler) | ratio | extra per chunk | dask (LocalCluster) | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {args.chunks} | {args.jobs} | {local:.2f} s | {remote:.2f} s | {remote / local:.2f}x | "
          f"{(remote - local) / args.chunks * 1000:.1f} ms | {lc:.2f} s | {lc / local:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
