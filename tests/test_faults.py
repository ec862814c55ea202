"""Fault injection: kills at random moments, interrupted merges, damaged state. The job always
completes correctly, finished chunks never run again, and nothing unverified is accepted."""
from __future__ import annotations

import random
import time

import pytest

from conftest import kill_tree, wait_for


def recorded(job) -> set[str]:
    records = job.state / "records"
    return {p.stem.replace("-", " ") for p in records.glob("*.json")} if records.exists() else set()


@pytest.mark.parametrize("seed", range(10))
def test_sigkill_at_a_random_moment_then_rerun(make_job, seed):
    rng = random.Random(seed)
    job = make_job(chunks=6, frames=3)
    (job.folder / "slow").touch()  # 0.9 s a chunk: a 3 s job under -n 2
    kills = 0
    finished_before_a_kill: set[str] = set()
    while kills < 2:
        runner = job.start_doit("-n", "2")
        time.sleep(rng.uniform(0.2, 2.5))
        if runner.poll() is not None:
            break
        kill_tree(runner)
        kills += 1
        finished_before_a_kill |= recorded(job)
    job.runs()
    (job.folder / "slow").unlink()
    result = job.doit("-n", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    again = set(job.runs())
    assert not again & finished_before_a_kill, f"seed {seed}: ran again after it was recorded: {again & finished_before_a_kill}"
    assert job.merged.read_text() == job.expected_merge()
    assert all(job.output(i).read_text().count("frame") == 3 for i in range(6))


def test_a_merge_killed_halfway_is_merged_again_and_no_chunk_reruns(make_job):
    job = make_job(chunks=3)
    job.data["mergeCommand"] = f"head -c 20 part_0.txt > out.txt; [ -f hold ] && sleep 30; {job.data['mergeCommand']}"
    job.save()
    (job.folder / "hold").touch()
    runner = job.start_doit()
    wait_for(lambda: job.merged.exists(), what="the merge to start writing")
    kill_tree(runner)
    assert job.merged.read_text() != job.expected_merge()  # half-written
    job.runs()
    (job.folder / "hold").unlink()
    result = job.doit()
    assert result.returncode == 0, result.stderr
    assert job.runs() == ["merge"]
    assert job.merged.read_text() == job.expected_merge()


DAMAGE = {
    "records-garbage": lambda state: (state / "records" / "chunk-1.json").write_bytes(b"\x00garbage{"),
    "record-truncated": lambda state: (state / "records" / "chunk-2.json").write_text('{"task": "chunk-2", "fing'),
    "record-deleted": lambda state: (state / "records" / "chunk-0.json").unlink(),
    "doit-db-garbage": lambda state: (state / "doit.sqlite3").write_bytes(b"not a database at all" * 100),
    "inputs-cache-garbage": lambda state: (state / "inputs.json").write_text("[[["),
    "run-log-garbage": lambda state: next((state / "runs").glob("*.jsonl")).write_bytes(b"\xff\n{half"),
    "stale-running-marker": lambda state: (state / "running" / "chunk-1.json").write_text('{"pid": 1, "pgid": "x"}'),
    "state-folder-deleted": lambda state: __import__("shutil").rmtree(state),
}

# what must run again after the damage (content-identical chunks do not force a merge)
RERUN = {"records-garbage": ["chunk 1"], "record-truncated": ["chunk 2"], "record-deleted": ["chunk 0"],
         "state-folder-deleted": ["chunk 0", "chunk 1", "chunk 2", "merge"]}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_state_is_recovered_by_redoing_work(make_job, damage):
    job = make_job(chunks=3)
    assert job.doit().returncode == 0
    job.runs()
    DAMAGE[damage](job.state)
    result = job.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(job.runs()) == RERUN.get(damage, [])
    assert job.merged.read_text() == job.expected_merge()
    assert job.doit().returncode == 0 and job.runs() == []


def test_a_chunk_output_replaced_behind_our_back_is_rendered_again(make_job):
    job = make_job(chunks=2)
    job.doit()
    job.runs()
    job.output(0).write_text("someone else's file\n")
    assert job.doit().returncode == 0
    assert job.runs() == ["chunk 0"]
    assert job.merged.read_text() == job.expected_merge()
