"""Runners whose clocks disagree. Nothing a runner decides depends on another machine's clock:
"another runner finished it since I looked" is told by which record is there, `-a` redoes what
was done whatever any clock says, and a lease holds while its holder renews it. Clocks are moved
with libfaketime (`faketime`, Debian's package), for the runner under test and all it starts."""
from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from buckets import bucket, endpoint, job_run, paused_run  # noqa: F401 (fixtures)
from harness import CLI, DOIT, REPO, new_job, run, wait_for

FAKETIME = ["faketime", "-f"]


def slow_job(folder: Path, chunks: int = 1, lines: int = 6) -> Path:
    """Chunks that write a line with their pid every 0.5 s: two writers show as two pids."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = f'echo $$ >> starts.log; for i in $(seq 1 {lines}); do echo "$$ line $i" >> {{out}}; sleep 0.5; done'
    spec = {"metadata": {"totalFrames": chunks, "fps": 24, "width": 320, "height": 180, "duration": chunks / 24},
            "chunks": [{"id": i, "startFrame": i, "frameCount": 1, "outputFile": f"out_{i}.txt",
                        "command": writer.format(out=f"out_{i}.txt")} for i in range(chunks)],
            "outputFile": "merged.txt",
            "mergeCommand": "cat " + " ".join(f"out_{i}.txt" for i in range(chunks)) + " > merged.txt"}
    (folder / "job.json").write_text(json.dumps(spec))
    return folder / "job.json"


def writers(path: Path) -> list[str]:
    return [line.split()[0] for line in path.read_text().splitlines()]


def test_a_chunk_finished_by_a_runner_whose_clock_is_behind_is_not_rendered_again(tmp_path):
    job = slow_job(tmp_path / "job")
    output = job.parent / "out_0.txt"
    behind = subprocess.Popen([*FAKETIME, "-2s", *CLI, "job", "run", str(job)], cwd=REPO, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: output.exists() and len(output.read_text().splitlines()) >= 3, 60, "the first runner's chunk")
    second = run([*CLI, "job", "run", str(job)])  # looks 1.5 s before the first finishes, by the first's clock 0.5 s after
    out, err = behind.communicate(timeout=60)
    assert behind.returncode == 0 and second.returncode == 0, err + second.stderr
    assert len((job.parent / "starts.log").read_text().splitlines()) == 1  # rendered once: the second runner skipped it
    assert len(writers(output)) == 6 and len(set(writers(output))) == 1
    assert (job.parent / "merged.txt").read_text() == output.read_text()


def test_a_run_with_a_clock_an_hour_ahead_leaves_nothing_that_makes_a_later_a_skip_work(make_job):
    job = make_job(chunks=2, frames=2)
    ahead = run([*FAKETIME, "+1h", *DOIT, f"job={job.file}"])
    assert ahead.returncode == 0, ahead.stderr
    assert sorted(job.runs()) == ["chunk 0", "chunk 1", "merge"]
    again = job.doit("-a")  # the user asks for everything again: every chunk renders, whatever the clocks
    assert again.returncode == 0, again.stderr
    assert sorted(job.runs()) == ["chunk 0", "chunk 1", "merge"]


def test_bucket_a_chunk_published_by_a_runner_whose_clock_is_behind_is_not_rendered_again(bucket):
    url = bucket.upload_job(chunks=1, slow="1")  # 3 frames of 1 s
    cwd, env = bucket.machine("a")
    behind = subprocess.Popen([*FAKETIME, "-2s", *CLI, "job", "run", url], cwd=cwd, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    scratch = bucket.root / "a" / "scratch"
    wait_for(lambda: any(len(p.read_text().splitlines()) >= 2 for p in scratch.rglob("part_0.txt")), 60,
             "the first runner's chunk")
    second = job_run(bucket, "b", url)  # its own scratch: another machine
    out, err = behind.communicate(timeout=60)
    assert behind.returncode == 0 and second.returncode == 0, err + second.stderr
    assert "chunk 0" not in bucket.runs("b")  # it waited for the first runner, then found the chunk done
    assert len([k for k in bucket.keys() if "/done/chunk-0/" in k]) == 1


def test_bucket_a_lease_holds_while_renewed_whatever_its_holders_clock_says(bucket):
    url = bucket.upload_job(chunks=1, slow="1")
    cwd, env = bucket.machine("a")
    env["HELIOS_DOIT_LEASE_TTL"] = "30"
    behind = subprocess.Popen([*FAKETIME, "-1h", *CLI, "job", "run", url], cwd=cwd, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    scratch = bucket.root / "a" / "scratch"
    wait_for(lambda: any(scratch.rglob("part_0.txt")), 60, "the first runner's chunk")
    hold = next(scratch.rglob("part_0.txt")).parent / "pause-0"
    hold.touch()  # the first runner's chunk waits after its frame: it holds the lease however slow the machine
    cwd_b, env_b = bucket.machine("b")
    second = subprocess.Popen([*CLI, "job", "run", url], cwd=cwd_b, env=env_b, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    waits = bucket.root / "b" / "scratch"
    wait_for(lambda: any("task-wait" in log.read_text() for log in waits.rglob("runs/*.jsonl")), 60,
             "the second runner to wait for the lease")
    hold.unlink()
    out, err = behind.communicate(timeout=60)
    out_b, err_b = second.communicate(timeout=60)
    assert behind.returncode == 0 and second.returncode == 0, out + err + out_b + err_b
    assert "waiting for the runner" in out_b + err_b  # held, though its clock says an hour ago
    assert "chunk 0" not in bucket.runs("b")


def test_bucket_a_run_with_a_clock_an_hour_ahead_does_not_make_a_later_a_skip_work(bucket):
    url = bucket.upload_job(chunks=1)
    cwd, env = bucket.machine("a")
    ahead = run([*FAKETIME, "+1h", *CLI, "job", "run", url], cwd=cwd, env=env, timeout=120)
    assert ahead.returncode == 0, ahead.stderr
    again = job_run(bucket, "b", url, "-a")
    assert again.returncode == 0, again.stderr
    assert bucket.runs("b") == ["chunk 0", "merge"]


def test_bucket_a_runner_paused_between_its_upload_and_its_record_learns_it_lost_the_chunk(bucket):
    url = bucket.upload_job(chunks=1)
    paused, flag = paused_run(bucket, url, "before-publish-record:chunk-0", HELIOS_DOIT_LEASE_TTL="2")
    os.kill(paused.pid, signal.SIGSTOP)  # a stopped VM: its lease is no longer renewed
    try:
        flag.unlink()
        taken = job_run(bucket, "b", url)  # watches a's lease for its ttl, then takes the chunk over
        assert taken.returncode == 0, taken.stderr
        published = bucket.keys()
    finally:
        os.kill(paused.pid, signal.SIGCONT)
    out, err = paused.communicate(timeout=60)
    assert paused.returncode == 1, out + err
    assert "another runner took over its lease" in out + err and "its upload is left without a record" in out + err, out + err
    assert bucket.keys() == published  # no record of a's: one writer's object and record, b's
    assert len([k for k in published if "/done/chunk-0/" in k]) == 1
