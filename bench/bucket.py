"""Jobs in a bucket, against moto's S3 server on loopback (needs the `test` extra).

S1  no-op rerun of an N-chunk job whose outputs and records are in the bucket: requests made
    and wall time, beside the no-op rerun of the same job on local disk.
S2  the merge of a 1280x720 noise video job (big chunks) from the bucket (download the chunks, stitch, verify, upload) on
    a machine that has none of them, beside the same merge with the chunks on local disk.

Requests are counted at the server (one per HTTP request it answers). moto is much slower than
S3 per listed key (~0.5 ms), so S1's time is mostly moto's; its request count is the figure
that carries over to a real store (S3 returns 1,000 keys per listing request).

    python bench/bucket.py [--chunks 10000] [--reps 3]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "helios_doit"]


class Counter(logging.Handler):
    """Counts the requests moto's server answers (werkzeug logs one line per request)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def start_server() -> tuple[object, str, Counter]:
    from moto.server import ThreadedMotoServer

    counter = Counter()
    log = logging.getLogger("werkzeug")
    log.setLevel(logging.INFO)
    log.handlers[:] = [counter]
    log.propagate = False
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}", counter


CPU: list[float] = []  # the last timed run's CPU seconds (the runner and what it ran; not the server)


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{result.stderr[-2000:]}")
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU[:] = [after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime]
    return wall


def touch_job(folder: Path, chunks: int) -> dict:
    """N chunks, each a `touch` of its output: the runner's cost, not a renderer's."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"metadata": {"totalFrames": chunks, "fps": 30, "width": 16, "height": 16, "duration": chunks / 30},
            "chunks": [{"id": i, "startFrame": i, "frameCount": 1, "outputFile": f"out/{i}.txt",
                        "command": f"echo {i} > out/{i}.txt"} for i in range(chunks)],
            "mergeCommand": "cat out/*.txt > all.txt", "outputFile": "all.txt"}
    (folder / "out").mkdir(exist_ok=True)
    (folder / "job.json").write_text(json.dumps(spec))
    return spec


def seed_bucket(fs: object, bucket: str, folder: str, local: Path, machine: Path, env: dict[str, str]) -> None:
    """The job's outputs and records in the bucket, as a finished run leaves them: the chunk
    outputs are put straight into moto's backend (fast), their records written by the runner's
    own code from the listing."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    fs.put_file(str(local / "job.json"), f"{bucket}/{folder}/job.json")  # type: ignore[attr-defined]
    spec = json.loads((local / "job.json").read_text())
    for chunk in spec["chunks"]:
        backend.put_object(bucket, f"{folder}/{chunk['outputFile']}", f"{chunk['id']}\n".encode())
    backend.put_object(bucket, f"{folder}/all.txt", b"merged\n")
    os.environ.update(env)
    from helios_doit.spec.load import load_job
    from helios_doit.storage.records import done_key
    from helios_doit.storage.store import store_for
    from helios_doit.tasks.graph import build
    from helios_doit.tasks.publish import output_key, remote_fingerprint, remote_state

    graph = build(load_job(f"s3://{bucket}/{folder}/job.json"))
    listing = store_for(f"s3://{bucket}").listing(folder)
    for work in [*graph.chunks, graph.merge]:
        key = done_key(remote_state(work), work.name, remote_fingerprint(work, listing) or "", listing[output_key(work) or ""])
        backend.put_object(bucket, key, b"{}")


def s1(args: argparse.Namespace, fs: object, endpoint: str, counter: Counter, root: Path, env: dict[str, str]) -> list[str]:
    bucket = f"b-{uuid.uuid4().hex[:8]}"
    fs.mkdir(bucket)  # type: ignore[attr-defined]
    local = root / "s1-local"
    touch_job(local, args.chunks)
    seed_bucket(fs, bucket, "job", local, root / "s1-m", env)
    # The local baseline: render once (fast: echo), then time no-op reruns.
    timed([*CLI, "job", "run", str(local / "job.json"), "--concurrency", "2"], root, env)
    url = f"s3://{bucket}/job/job.json"
    bucket_times, local_times, requests, bucket_cpu, local_cpu = [], [], [], [], []
    for rep in range(args.reps):
        machine_env = {**env, "HELIOS_DOIT_SCRATCH": str(root / "s1-scratch")}
        before = counter.count
        bucket_times.append(timed([*CLI, "job", "run", url], root, machine_env))
        bucket_cpu.append(CPU[0])
        requests.append(counter.count - before)
        local_times.append(timed([*CLI, "job", "run", str(local / "job.json")], root, env))
        local_cpu.append(CPU[0])
    b, l_ = statistics.median(bucket_times), statistics.median(local_times)
    bc, lc = statistics.median(bucket_cpu), statistics.median(local_cpu)
    return [f"| S1 no-op rerun, {args.chunks} chunks: wall | {b:.2f} s, {statistics.median(requests):.0f} requests "
            f"| {l_:.2f} s on local disk | {b / l_:.2f}x |",
            f"| S1 same: the runner's CPU (the server's excluded) | {bc:.2f} s | {lc:.2f} s | {bc / lc:.2f}x |"]


def s2(args: argparse.Namespace, fs: object, root: Path, env: dict[str, str]) -> list[str]:
    bucket = f"b-{uuid.uuid4().hex[:8]}"
    fs.mkdir(bucket)  # type: ignore[attr-defined]
    local = root / "s2-local"
    local.mkdir()
    shutil.copy(REPO / "bench" / "noise_composition.py", local / "composition.py")  # big chunks: real bytes
    timed([*CLI, "render", "composition.py", "-o", "orbit.mp4", "--duration", "2", "--quality", "8",
           "--emit-job", "job.json", "--concurrency", "4"], local, env)
    spec = json.loads((local / "job.json").read_text())
    spec["inputs"] = ["composition.py"]
    spec.pop("mergeCommand", None)  # the built-in stitcher on both sides
    (local / "job.json").write_text(json.dumps(spec))
    fs.put_file(str(local / "job.json"), f"{bucket}/orbit/job.json")  # type: ignore[attr-defined]
    fs.put_file(str(local / "composition.py"), f"{bucket}/orbit/composition.py")  # type: ignore[attr-defined]
    url = f"s3://{bucket}/orbit/job.json"
    timed([*CLI, "job", "run", url, "--concurrency", "2"], root, {**env, "HELIOS_DOIT_SCRATCH": str(root / "s2-render")})
    timed([*CLI, "job", "run", str(local / "job.json"), "--concurrency", "2"], root, env)
    merged = local / "orbit.mp4"
    size = merged.stat().st_size + sum((local / c["outputFile"]).stat().st_size for c in spec["chunks"])
    bucket_times, local_times = [], []
    for rep in range(args.reps):
        # A machine that has no chunk: the merge pulls all of them from the bucket.
        for key in fs.find(f"{bucket}/orbit/.helios-doit/job.json/done/merge"):  # type: ignore[attr-defined]
            fs.rm_file(key)  # type: ignore[attr-defined]
        fs.rm_file(f"{bucket}/orbit/orbit.mp4")  # type: ignore[attr-defined]
        bucket_times.append(timed([*CLI, "job", "run", url], root, {**env, "HELIOS_DOIT_SCRATCH": str(root / f"s2-m{rep}")}))
        merged.unlink()
        local_times.append(timed([*CLI, "job", "run", str(local / "job.json")], root, env))
    b, l_ = statistics.median(bucket_times), statistics.median(local_times)
    return [f"| S2 merge of 4 chunks of 1280x720 noise, {size / 1e6:.0f} MB in and out | {b:.2f} s from the bucket "
            f"({size / 1e6 / b:.0f} MB/s) | {l_:.2f} s local ({size / 1e6 / l_:.0f} MB/s) | {b / l_:.2f}x |"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=10000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--only", choices=["S1", "S2"], help="one row only")
    args = parser.parse_args()
    server, endpoint, counter = start_server()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint, "AWS_EC2_METADATA_DISABLED": "true"}
    os.environ.update(env)
    import fsspec

    fs = fsspec.filesystem("s3", skip_instance_cache=True, use_listings_cache=False)
    root = Path(tempfile.mkdtemp(prefix="helios-bucket-bench-"))
    try:
        rows = ["| row | bucket | baseline | ratio |", "|---|---|---|---|"]
        if args.only != "S2":
            rows += s1(args, fs, endpoint, counter, root, env)
        if args.only != "S1":
            rows += s2(args, fs, root, env)
        print("\n".join(rows))
    finally:
        shutil.rmtree(root, ignore_errors=True)
        server.stop()  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(main())
