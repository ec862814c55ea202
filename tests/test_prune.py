"""aside/ and scratch do not fill a disk unseen: `status` sums up aside/, `prune` removes what it
holds (or a bucket job's scratch mirror) and says what went, and nothing else."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from buckets import bucket, endpoint, job_run  # noqa: F401 (fixtures)
from harness import CLI, run


def cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run([*CLI, *args], cwd=cwd, env=env)


def with_a_stranger_aside(make_job) -> tuple:
    """A finished job whose chunk 1 found someone's file in its place: moved aside, never deleted."""
    job = make_job(chunks=2)
    job.output(1).write_text("someone's own notes\n" * 1000)
    assert job.cli().returncode == 0
    (entry,) = (job.state / "aside").iterdir()
    return job, entry


def test_status_shows_what_aside_holds_and_how_to_prune_it(make_job):
    job, entry = with_a_stranger_aside(make_job)
    report = json.loads(cli("status", str(job.file), "--json").stdout)
    assert report["aside"] == {"path": str(job.state / "aside"), "entries": 1, "bytes": 20000}
    table = cli("status", str(job.file)).stdout.splitlines()
    assert table[-1] == (f"aside: 1 entry, 19.5 KB in {job.state / 'aside'} (found in outputs' places, kept as "
                         f"evidence); when you have looked: helios-doit prune {job.file} --aside")


def test_a_job_with_nothing_aside_says_nothing_of_it(make_job):
    job = make_job(chunks=2)
    assert job.cli().returncode == 0
    assert json.loads(cli("status", str(job.file), "--json").stdout)["aside"]["entries"] == 0
    assert not [line for line in cli("status", str(job.file)).stdout.splitlines() if line.startswith("aside")]


def test_prune_removes_what_aside_holds_and_nothing_else(make_job, tmp_path):
    job, entry = with_a_stranger_aside(make_job)
    elsewhere = tmp_path / "precious.txt"
    elsewhere.write_text("not the job's\n")
    (job.state / "aside" / "20000101-000000-abcdef-chunk-0-link.txt").symlink_to(elsewhere)  # a link: removed as a link
    folder = job.state / "aside" / "20000101-000000-abcdef-chunk-0-folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "frame.png").write_bytes(b"x" * 100)
    outputs = {p: p.read_bytes() for p in [job.output(0), job.output(1), job.merged]}
    records = sorted(p.name for p in (job.state / "records").iterdir())

    result = cli("prune", str(job.file))  # --aside is the default
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"removed {folder} (100 B)" in lines and f"removed {entry} (19.5 KB)" in lines, lines
    assert lines[-1].startswith(f"{job.state / 'aside'}: removed 3 entries (19.")  # a link's own bytes: its target's name
    assert list((job.state / "aside").iterdir()) == []
    assert elsewhere.read_text() == "not the job's\n"
    assert {p: p.read_bytes() for p in outputs} == outputs  # the job's own files untouched: it is still done
    assert sorted(p.name for p in (job.state / "records").iterdir()) == records
    assert json.loads(cli("status", str(job.file), "--json").stdout)["totals"]["complete"] is True
    again = cli("prune", str(job.file), "--aside")
    assert again.returncode == 0 and again.stdout.splitlines()[-1].endswith("removed 0 entries (0 B)")


def test_older_than_keeps_what_was_moved_aside_recently(make_job):
    job, entry = with_a_stranger_aside(make_job)
    old = job.state / "aside" / "20000101-000000-abcdef-chunk-0-part_0.txt"
    old.write_text("from long ago\n")
    result = cli("prune", str(job.file), "--older-than", "7")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"removed {old} (14 B)",
                                          f"{job.state / 'aside'}: removed 1 entry (14 B); kept 1 moved there in the last 7 days"]
    assert [p.name for p in (job.state / "aside").iterdir()] == [entry.name]


def test_bad_prune_arguments_are_one_line_and_remove_nothing(make_job):
    job, entry = with_a_stranger_aside(make_job)
    for args, says in [(["--older-than", "soon"], "--older-than soon: give a number of days"),
                       (["--scratch"], "is not a job in a bucket, so it has no scratch mirror"),
                       (["--asid"], "unknown option --asid; did you mean --aside?")]:
        result = cli("prune", str(job.file), *args)
        assert result.returncode == 2 and result.stdout == "", result.stdout
        [line] = result.stderr.splitlines()
        assert says in line, line
    missing = cli("prune", str(job.folder / "nope.json"))
    assert missing.returncode == 2 and "no such job file" in missing.stderr
    assert entry.exists()


def test_prune_scratch_removes_this_machines_mirror_of_a_bucket_job_and_the_job_stays_done(bucket):
    url = bucket.upload_job(chunks=2)
    assert job_run(bucket, "a", url).returncode == 0
    cwd, env = bucket.root / "a" / "cwd", {**os.environ, **bucket.env, "HELIOS_DOIT_SCRATCH": str(bucket.root / "a" / "scratch")}
    (mirror,) = (bucket.root / "a" / "scratch").iterdir()
    assert (mirror / "shot1" / "part_0.txt").exists()
    keys = bucket.keys()
    result = cli("prune", url, "--scratch", "--older-than", "1", cwd=cwd, env=env)  # used just now: kept
    assert result.returncode == 0 and "kept (used 0.0 days ago" in result.stdout, result.stdout + result.stderr
    assert (mirror / "shot1").is_dir()
    # A process that has the job loaded (a run fetching its inputs, between its tasks...) keeps it.
    user = subprocess.Popen([sys.executable, "-c", f"from helios_doit.spec.load import load_job; load_job({url!r}); "
                             "print('loaded', flush=True); input()"], cwd=cwd, env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert user.stdout is not None and user.stdout.readline() == "loaded\n"
    result = cli("prune", url, "--scratch", cwd=cwd, env=env)
    assert result.returncode == 1 and "a process on this machine uses the job now" in result.stderr, result.stderr
    assert (mirror / "shot1" / "part_0.txt").exists()
    user.communicate("\n", timeout=30)
    result = cli("prune", url, "--scratch", cwd=cwd, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"removed the scratch mirror {mirror / 'shot1'} (")
    assert not (mirror / "shot1").exists() and bucket.keys() == keys  # the bucket holds everything, untouched
    again = job_run(bucket, "a", url)
    assert again.returncode == 0, again.stderr
    lines = again.stdout.splitlines()  # still done: nothing rendered again
    assert sorted(lines[:-1]) == ["-- chunk:0", "-- chunk:1", "-- merge"]
    assert lines[-1].startswith("helios-doit: nothing to do: 2 chunks and the merge were done already")


def test_prune_scratch_leaves_a_folder_while_a_job_in_it_below_or_above_it_is_loaded(bucket):
    urls = {folder: bucket.upload_job(folder, chunks=1) for folder in ("shot1", "shot1/sub", "shot2")}
    cwd, env = bucket.machine("a")
    assert all(job_run(bucket, "a", url).returncode == 0 for url in urls.values())
    (mirror,) = (bucket.root / "a" / "scratch").iterdir()

    def loaded(url: str, output_root: str | None = None) -> subprocess.Popen[str]:
        user = subprocess.Popen([sys.executable, "-c", "from helios_doit.spec.load import load_job; "
                                 f"load_job({url!r}, output_root={output_root!r}); "
                                 "print('loaded', flush=True); input()"], cwd=cwd, env=env, text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert user.stdout is not None and user.stdout.readline() == "loaded\n"
        return user

    def prune(folder: str) -> subprocess.CompletedProcess[str]:
        return cli("prune", urls[folder], "--scratch", cwd=cwd, env=env)

    user = loaded(urls["shot1/sub"])  # a job below: its files are inside shot1's folder
    refused = prune("shot1")
    assert refused.returncode == 1 and "a process on this machine uses the job now" in refused.stderr, refused.stderr
    user.communicate("\n", timeout=30)
    user = loaded(urls["shot1"])  # a job above: its outputs may be anywhere in its folder, sub/ too
    refused = prune("shot1/sub")
    assert refused.returncode == 1 and "a process on this machine uses the job now" in refused.stderr, refused.stderr
    assert (mirror / "shot1" / "sub" / "part_0.txt").exists()
    pruned = prune("shot2")  # a job beside it: no one's files
    assert pruned.returncode == 0 and not (mirror / "shot2").exists(), pruned.stderr
    user.communicate("\n", timeout=30)
    pruned = prune("shot1")
    assert pruned.returncode == 0 and not (mirror / "shot1").exists(), pruned.stderr
    user = loaded(urls["shot2"], output_root=bucket.url("shot1"))  # its outputs may be in shot1/ too
    refused = prune("shot1")
    assert refused.returncode == 1 and "a process on this machine uses the job now" in refused.stderr, refused.stderr
    user.communicate("\n", timeout=30)
