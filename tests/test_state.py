"""The state folder under attack and at scale: a merge takes only bytes a record vouches for,
links planted where the runner writes its own files are never followed, and the folder holds
at most two files per chunk however many runs it has seen."""
from __future__ import annotations

import os
import time

import pytest
from harness import chunk_command, wait_for


def test_a_merge_refuses_a_chunk_output_changed_after_its_record_and_the_rerun_renders_it_again(make_job):
    job = make_job(chunks=2, frames=2)
    # chunk 1's command also appends to chunk 0's output, which is already recorded
    job.data["chunks"][1]["command"] = chunk_command(1, 2, 2) + " && echo tampered >> part_0.txt"
    job.save()
    result = job.doit()  # serial: chunk 0, then chunk 1, then the merge
    assert result.returncode == 1, result.stdout + result.stderr
    assert "merge: chunk 0's output part_0.txt is no longer the file chunk 0 recorded" in result.stdout + result.stderr
    assert "merge" not in job.recorded() and not job.merged.exists()
    assert job.runs() == ["chunk 0", "chunk 1"]  # nothing was merged
    job.data["chunks"][1]["command"] = chunk_command(1, 2, 2)
    job.save()
    again = job.doit()
    assert again.returncode == 0, again.stdout + again.stderr
    assert job.runs() == ["chunk 0", "chunk 1", "merge"]  # chunk 0 (and the edited chunk 1) again
    assert job.merged.read_text() == job.expected_merge() and "tampered" not in job.merged.read_text()
    [aside] = (job.state / "aside").iterdir()  # the changed file: moved aside, not deleted
    assert aside.read_text().endswith("tampered\n")


def test_a_chunk_output_written_to_while_the_merge_runs_is_caught_and_the_merge_not_recorded(make_job):
    job = make_job(chunks=2, frames=2)
    assert job.doit("chunk").returncode == 0
    (job.folder / "pause-merge").touch()  # the stand-in merge waits after its first part
    runner = job.start_doit()
    wait_for(job.merged.exists, 30, "the merge to start")
    with open(job.output(1), "a") as part:  # something a chunk left running writes on
        part.write("late frame\n")
    (job.folder / "pause-merge").unlink()
    out, err = runner.communicate(timeout=60)
    assert runner.returncode == 1, out + err
    assert "chunk 1's output part_1.txt is no longer the file chunk 1 recorded" in out + err
    assert "merge" not in job.recorded() and not job.merged.exists()


@pytest.mark.parametrize("link", ["symlink", "hard link"])
def test_a_link_planted_at_a_log_or_lock_never_has_its_target_written(make_job, link):
    job = make_job(chunks=2, frames=1)
    victim = job.folder.parent / "victim.txt"
    victim.write_text("precious\n")
    ln = "ln -s" if link == "symlink" else "ln"
    state = ".helios-doit/job.json"
    plant = " && ".join(f"{ln} {victim} {state}/{path}" for path in ("logs/chunk-1.log", "locks/chunk-1.lock"))
    # chunk 0's command plants the links where chunk 1's log and lock will be
    job.data["chunks"][0]["command"] = chunk_command(0, 0, 1) + f" && {plant}"
    job.save()
    result = job.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    assert victim.read_text() == "precious\n"
    # A symlink is moved aside from both places. A hard link at the log is moved aside (it would be
    # written through); at the lock it is the lock (never read or written), its name let go after.
    assert os.stat(victim).st_nlink == (2 if link == "hard link" else 1)
    log = job.state / "logs" / "chunk-1.log"
    assert not log.is_symlink() and os.stat(log).st_nlink == 1 and "chunk 1 attempt 1/1" in log.read_text()
    moved = sorted(p.name.split("-", 3)[-1] for p in (job.state / "aside").iterdir())
    assert moved == (["chunk-1.log"] if link == "hard link" else ["chunk-1.lock", "chunk-1.log"]), moved
    assert "was not a file of ours (a link, or not a plain file); moved it to" in result.stderr


def test_the_state_folder_keeps_at_most_two_files_per_chunk_and_prunes_old_event_logs(make_job):
    job = make_job(chunks=30, frames=1)
    assert job.doit("-n", "2").returncode == 0
    files = [p for p in job.state.rglob("*") if p.is_file()]
    per_chunk = [p for p in files if "chunk-" in p.name]
    assert len(per_chunk) == 2 * 30, sorted(p.name for p in per_chunk)  # a record and a log each: no lock files left
    runs = job.state / "runs"
    old = time.time() - 2 * 86400
    for n in range(30):  # event logs of old runs, two days old
        path = runs / f"20261101-0000{n:02d}-abcdef.jsonl"
        path.write_text("{}\n")
        os.utime(path, (old, old))
    (runs / "notes.txt").write_text("someone's")  # not ours by name: never touched
    for _ in range(2):
        assert job.doit().returncode == 0  # no-op runs: each a small log
    kept = sorted(p.name for p in runs.iterdir())
    assert len([name for name in kept if name.endswith(".jsonl")]) == 21 and "notes.txt" in kept  # this run and 20 before
    noops = [p for p in runs.glob("*.jsonl") if '"tasks-skip"' in p.read_text()]
    assert len(noops) == 2 and all(p.stat().st_size < 1000 for p in noops)  # a no-op run of 30 chunks: a few lines
