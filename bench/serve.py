"""The render service (`helios-doit serve`), beside `helios-doit job run` of the same jobs.

R1  submit-to-first-chunk latency: from the POST that queues a job to the moment its first
    chunk's command starts (the command notes the time it starts), median of N jobs, on an
    idle server with one worker.
R2  the service's overhead per job: N small jobs (4 chunks of `sleep 0.05`) queued at once
    with one worker, until the last is completed, against `helios-doit job run` of the same N
    jobs one after the other. Alternating repetitions; medians and their ratio.

    python bench/serve.py [--jobs 8] [--reps 3]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "helios_doit"]


def write_job(folder: Path, chunks: int = 4) -> Path:
    """Chunks that note when they start (unix time, in started-<id>) and then sleep 0.05 s."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"metadata": {"totalFrames": chunks, "fps": 24, "width": 320, "height": 180, "duration": chunks / 24},
            "chunks": [{"id": i, "startFrame": i, "frameCount": 1, "outputFile": f"out_{i}.txt",
                        "command": f"date +%s.%N > started-{i}; sleep 0.05; echo {i} > out_{i}.txt"}
                       for i in range(chunks)],
            "outputFile": "merged.txt",
            "mergeCommand": "cat " + " ".join(f"out_{i}.txt" for i in range(chunks)) + " > merged.txt"}
    (folder / "job.json").write_text(json.dumps(spec))
    return folder / "job.json"


def start_server(data: Path, root: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([*CLI, "serve", "--port", "0", "--data", str(data), "--root", str(root)], cwd=REPO,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    line = proc.stdout.readline() if proc.stdout else ""
    return proc, line.split("serving ", 1)[1].split("/ ", 1)[0]


def stop_server(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)
    proc.wait(60)


def call(url: str, method: str = "GET", body: dict[str, object] | None = None) -> dict[str, object]:
    request = urllib.request.Request(url, json.dumps(body).encode() if body else None,
                                     {"Content-Type": "application/json"}, method=method)
    with urllib.request.urlopen(request, timeout=60) as response:
        return dict(json.loads(response.read()))


def wait_done(url: str, ids: list[str], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = {job["id"]: job["state"] for job in call(f"{url}/api/jobs")["jobs"]}  # type: ignore[union-attr]
        if all(states.get(job_id) == "completed" for job_id in ids):
            return
        if any(states.get(job_id) == "failed" for job_id in ids):
            raise SystemExit(f"a job failed: {states}")
        time.sleep(0.02)
    raise SystemExit("timed out")


def r1(root: Path, jobs: int) -> list[float]:
    """Seconds from each POST to its first chunk's start."""
    proc, url = start_server(root / "data-r1", root)
    latencies = []
    try:
        for n in range(jobs):
            job = write_job(root / f"r1-{n}", chunks=1)
            sent = time.time()
            job_id = str(call(f"{url}/api/jobs", "POST", {"job": str(job)})["id"])
            wait_done(url, [job_id])
            latencies.append(float((job.parent / "started-0").read_text()) - sent)
    finally:
        stop_server(proc)
    return latencies


def r2(root: Path, jobs: int, rep: int) -> tuple[float, float]:
    """(the service's wall time for `jobs` jobs, job run's for the same jobs)."""
    served = [write_job(root / f"r2-{rep}-s{n}") for n in range(jobs)]
    direct = [write_job(root / f"r2-{rep}-d{n}") for n in range(jobs)]
    proc, url = start_server(root / f"data-r2-{rep}", root)
    try:
        started = time.monotonic()
        ids = [str(call(f"{url}/api/jobs", "POST", {"job": str(job)})["id"]) for job in served]
        wait_done(url, ids)
        service = time.monotonic() - started
    finally:
        stop_server(proc)
    started = time.monotonic()
    for job in direct:
        subprocess.run([*CLI, "job", "run", str(job)], cwd=REPO, check=True, capture_output=True,
                       env={**os.environ, "HELIOS_DOIT_LIVE": "0"})
    return service, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="helios-serve-bench-"))
    try:
        latencies = r1(root, args.jobs)
        pairs = [r2(root, args.jobs, rep) for rep in range(args.reps)]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    lat = statistics.median(latencies)
    service, direct = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
    print("| row | service | baseline | figure |\n|---|---|---|---|")
    print(f"| R1 submit to first chunk, one idle worker ({args.jobs} jobs) | {lat * 1000:.0f} ms median "
          f"(min {min(latencies) * 1000:.0f}, max {max(latencies) * 1000:.0f}) | - | - |")
    print(f"| R2 {args.jobs} jobs of 4 chunks, one worker, queued at once, to the last completed | {service:.2f} s "
          f"({service / args.jobs * 1000:.0f} ms a job) | job run, one after the other: {direct:.2f} s "
          f"({direct / args.jobs * 1000:.0f} ms a job) | {service / direct:.2f}x; "
          f"{(service - direct) / args.jobs * 1000:+.0f} ms a job |")
    print(f"walls (service, job run): {', '.join(f'{s:.2f}/{d:.2f}' for s, d in pairs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
