"""Buckets for tests: moto's S3 server on loopback (a real S3 HTTP API), a bucket per test, and
"machines" that share no disk: an empty working folder and a scratch folder of their own each."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness import CLI, new_job, run, wait_for

#: moto's S3 server, in a process of its own: not traced by coverage (the suite's measured
#: processes are ours), so it answers at its own speed.
SERVER = """
import logging, sys
logging.getLogger("werkzeug").setLevel(logging.ERROR)
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()  # until the test module closes it
"""


@pytest.fixture(scope="module")
def endpoint():
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
    server = subprocess.Popen([sys.executable, "-c", SERVER], env=env, text=True, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
    port = server.stdout.readline().strip()
    assert port.isdigit(), "moto's server did not start"
    yield f"http://127.0.0.1:{port}"
    server.stdin.close()
    server.wait(30)


@dataclass
class Bucket:
    name: str
    fs: object
    root: Path
    env: dict[str, str]

    def url(self, key: str) -> str:
        return f"s3://{self.name}/{key}"

    def keys(self) -> dict[str, str]:
        """Every object, with its ETag: what a test compares before and after a run."""
        found = self.fs.find(self.name, detail=True)
        return {name.split("/", 1)[1]: info["ETag"] for name, info in found.items()}

    def upload_job(self, folder: str = "shot1", chunks: int = 3, slow: str | None = None) -> str:
        """The stand-in job of the other tests, its scripts (and `slow`: seconds a frame) as inputs."""
        job = new_job(self.root / "src" / folder, chunks=chunks, frames=3)
        job.data["inputs"] = ["render.sh", "merge.sh"] + (["slow"] if slow else [])
        if slow:
            (job.folder / "slow").write_text(slow)
        job.save()
        for name in job.data["inputs"] + ["job.json"]:
            self.fs.put_file(str(job.folder / name), f"{self.name}/{folder}/{name}")
        return self.url(f"{folder}/job.json")

    def machine(self, name: str) -> tuple[Path, dict[str, str]]:
        """The working folder (empty at first) and the environment of a machine of its own."""
        cwd = self.root / name / "cwd"
        cwd.mkdir(parents=True, exist_ok=True)
        return cwd, {**os.environ, **self.env, "HELIOS_DOIT_SCRATCH": str(self.root / name / "scratch")}

    def runs(self, name: str) -> list[str]:
        """The stand-in commands that started on machine `name`."""
        logs = (self.root / name / "scratch").rglob("runs.log")
        return sorted(line.split(" start")[0] for log in logs for line in log.read_text().splitlines() if " start" in line)


def new_bucket(endpoint: str, root: Path) -> Bucket:
    import fsspec

    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": endpoint, "AWS_EC2_METADATA_DISABLED": "true"}
    os.environ.update(env)  # this process' client too
    fs = fsspec.filesystem("s3", skip_instance_cache=True, use_listings_cache=False)
    name = f"t-{uuid.uuid4().hex[:12]}"
    fs.mkdir(name)
    return Bucket(name, fs, root, env)


@pytest.fixture
def bucket(endpoint, tmp_path):
    return new_bucket(endpoint, tmp_path)


@pytest.fixture(scope="module")
def finished(endpoint, tmp_path_factory):
    """A bucket holding a 2-chunk job that one runner finished: tests that start from a finished
    job copy it (server-side) instead of rendering it again."""
    template = new_bucket(endpoint, tmp_path_factory.mktemp("finished"))
    url = template.upload_job(chunks=2)
    result = job_run(template, "first", url)
    assert result.returncode == 0, result.stderr
    return template


def copy_finished(bucket: Bucket, finished: Bucket) -> str:
    """The finished job, copied into `bucket` object by object (ETags kept: its records hold)."""
    for key in finished.keys():
        bucket.fs.cp_file(f"{finished.name}/{key}", f"{bucket.name}/{key}")
    return bucket.url("shot1/job.json")


def job_run(bucket: Bucket, machine: str, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    cwd, env = bucket.machine(machine)
    return run([*CLI, "job", "run", url, *args], cwd=cwd, env=env, timeout=120)


def paused_run(bucket: Bucket, url: str, point: str, **env: str) -> tuple[subprocess.Popen[str], Path]:
    """`job run` of the job on machine a, held at the checkpoint `point` (e.g. before-record:chunk-0),
    in a session of its own; returns it and the flag file whose removal lets it go on (it holds
    the pid of the process that waits there)."""
    cwd, environ = bucket.machine("a")
    environ.update(env, HELIOS_DOIT_PAUSE_AT=point)
    proc = subprocess.Popen([*CLI, "job", "run", url], cwd=cwd, env=environ, text=True, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    name = "paused-" + point.replace(":", "-")
    scratch = bucket.root / "a" / "scratch"
    wait_for(lambda: any(scratch.rglob(name)), 60, f"runner a at {point}")
    return proc, next(scratch.rglob(name))
