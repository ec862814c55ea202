"""`helios-doit status JOB`: what a user sees from another shell, before, during and after runs."""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from harness import chunk_command, kill_tree, wait_for

from helios_doit.cli.cmd_status import add_arguments as add_status_arguments
from helios_doit.cli.cmd_status import run as run_status


def status(job: Any, *args: str) -> dict[str, Any]:
    """`status --json`, in this process, as the CLI will call it."""
    code, out = status_text(job, "--json", *args)
    assert code == 0
    return json.loads(out)


def status_text(job: Any, *args: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    add_status_arguments(parser)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = run_status(parser.parse_args([str(job.file), *args]))
    return code, out.getvalue()


def states(report: dict[str, Any]) -> list[str]:
    return [chunk["state"] for chunk in report["chunks"]]


def tree(folder: Path) -> dict[str, int]:
    """Every path under `folder` with its mtime: to prove that status wrote nothing."""
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_before_a_run_everything_is_pending_and_nothing_is_created(make_job):
    job = make_job(chunks=3)
    report = status(job)
    assert states(report) == ["pending"] * 3
    assert report["merge"]["state"] == "pending"
    assert report["totals"] == {"chunks": 3, "done": 0, "running": 0, "failed": 0, "stale": 0, "interrupted": 0, "pending": 3,
                                "framesDone": 0, "totalFrames": 24, "complete": False}
    assert not (job.folder / ".helios-doit").exists()


def test_after_a_run_everything_is_done_and_json_has_its_shape(make_job):
    job = make_job(chunks=3)
    assert job.doit("-n", "3").returncode == 0
    before = tree(job.state)
    report = status(job)
    assert tree(job.state) == before  # read-only
    assert set(report) == {"job", "stateDir", "chunks", "merge", "totals", "aside"}
    assert states(report) == ["done"] * 3 and report["merge"]["state"] == "done"
    assert report["totals"]["complete"] is True and report["totals"]["framesDone"] == 24
    first = report["chunks"][0]
    assert {"id", "state", "attempts", "duration", "size", "log", "runner"} <= set(first)
    assert first["id"] == 0 and first["attempts"] == 1 and first["runner"] is None
    assert first["size"] == job.output(0).stat().st_size and first["duration"] > 0
    assert first["log"] == str(job.state / "logs" / "chunk-0.log")
    assert report["merge"]["size"] == job.merged.stat().st_size


def test_deleted_output_is_stale_and_says_why(make_job):
    job = make_job(chunks=3)
    job.doit()
    job.output(1).unlink()
    report = status(job)
    assert states(report) == ["done", "stale", "done"]
    assert report["chunks"][1]["note"] == "output missing"
    assert report["merge"]["state"] == "stale"  # it was made from a chunk output that is gone
    assert report["totals"]["stale"] == 1 and report["totals"]["complete"] is False


def test_changed_command_makes_that_chunk_stale_only(make_job):
    job = make_job(chunks=3)
    job.doit()
    job.data["chunks"][2]["command"] = chunk_command(2, 16, 8, "--quality 10")
    job.save()
    report = status(job)
    assert states(report) == ["done", "done", "stale"]
    assert report["chunks"][2]["note"] == "command or inputs changed"
    assert report["merge"]["state"] == "done"


def test_edited_input_makes_every_chunk_stale_without_touching_the_cache(make_job):
    job = make_job(chunks=2)
    job.doit()
    cache = (job.state / "inputs.json").read_bytes()
    script = job.folder / "render.sh"
    script.write_text(script.read_text() + "\n# edited\n")
    assert states(status(job)) == ["stale", "stale"]
    assert (job.state / "inputs.json").read_bytes() == cache
    script.write_text(script.read_text().replace("\n# edited\n", ""))  # same content again, new mtime
    assert states(status(job)) == ["done", "done"]


def test_failed_chunk_shows_exit_code_attempts_and_stderr(make_job):
    job = make_job(chunks=3)
    (job.folder / "fail-1").touch()
    assert job.doit("--continue").returncode == 2
    report = status(job)
    assert states(report) == ["done", "failed", "done"]
    failed = report["chunks"][1]
    assert failed["exitCode"] == 3 and failed["attempts"] == 1 and failed["note"] == "exit code 3"
    assert failed["stderrTail"] == ["chunk 1: renderer crashed at frame 8"]
    code, text = status_text(job)
    assert code == 0
    assert "1      failed   1" in text and str(job.state / "logs" / "chunk-1.log") in text
    # fixed and run again: done, and the failure is gone
    (job.folder / "fail-1").unlink()
    assert job.doit().returncode == 0
    assert states(status(job)) == ["done"] * 3


def test_running_chunks_name_their_runner_while_a_run_goes(make_job):
    job = make_job(chunks=3, frames=4)
    (job.folder / "slow").touch()
    runner = job.start_doit("-n", "2")
    wait_for(lambda: len(list((job.state / "running").glob("*.json"))) == 2 if (job.state / "running").exists() else False,
             what="two chunks to start")
    report = status(job)
    running = [c for c in report["chunks"] if c["state"] == "running"]
    assert len(running) == 2 and report["totals"]["running"] == 2
    for chunk in running:
        marker = json.loads((job.state / "running" / f"chunk-{chunk['id']}.json").read_text())
        assert chunk["runner"]["pid"] == marker["pid"] and chunk["runner"]["confirmed"] is True
        assert chunk["runner"]["host"] == os.uname().nodename
    code, text = status_text(job)
    assert f"pid {running[0]['runner']['pid']}" in text
    assert runner.wait(60) == 0
    assert states(status(job)) == ["done"] * 3


def test_runner_killed_leaves_no_running_chunk(make_job):
    job = make_job(chunks=2, frames=4)
    (job.folder / "slow").touch()
    runner = job.start_doit("-n", "2")
    wait_for(lambda: len(list((job.state / "running").glob("*.json"))) == 2 if (job.state / "running").exists() else False,
             what="two chunks to start")
    kill_tree(runner)  # the markers stay behind; the locks die with their holders
    report = status(job)
    assert states(report) == ["interrupted", "interrupted"]  # not "never rendered"
    assert all("interrupted (runner pid" in c["note"] for c in report["chunks"])
    assert report["totals"]["interrupted"] == 2 and report["totals"]["pending"] == 0


def test_bad_job_is_refused_with_exit_2(make_job, capsys):
    job = make_job(chunks=2)
    job.data["chunks"][1]["frameCount"] = 0
    job.save()
    with pytest.raises(SystemExit) as stop:
        status_text(job)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("helios-doit: ")
    assert not (job.folder / ".helios-doit").exists()
