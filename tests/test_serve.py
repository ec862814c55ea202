"""`helios-doit serve`: a real server process on a loopback port, real jobs run through the same
doit graph as `job run`, driven through its HTTP API and its command-line clients."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request

from harness import alive, new_job, run, wait_for
from buckets import bucket, endpoint  # noqa: F401 (fixtures)
from serving import CLI, serving, start_server, started


def slow_job(folder, chunks=3, frames=2, delay="0.3"):
    job = new_job(folder, chunks=chunks, frames=frames)
    (job.folder / "slow").write_text(delay)
    return job


def test_a_later_job_of_higher_priority_runs_before_an_earlier_one(tmp_path):
    first, low, high = (slow_job(tmp_path / name, chunks=1, frames=3) for name in ("first", "low", "high"))
    with serving(tmp_path / "data", tmp_path) as server:
        a = server.submit(first.file)
        server.wait(a, "running")
        b = server.submit(low.file, priority=0)
        c = server.submit(high.file, priority=5)
        done = server.wait(b, "completed")
        assert server.job(c)["state"] == "completed"
        assert server.job(c)["startedAt"] < done["startedAt"]  # the later, higher-priority job went first
        assert [j["id"] for j in server.call("GET", "/api/jobs")[1]["jobs"]] == [a, b, c]
        assert done["progress"] == 100.0 and done["completedChunks"] == done["totalChunks"] == 1


def test_pause_stops_the_running_chunks_starts_none_and_resume_renders_only_what_is_not_done(tmp_path):
    job = slow_job(tmp_path / "shot", chunks=4, frames=3, delay="0.4")
    with serving(tmp_path / "data", tmp_path) as server:
        job_id = server.submit(job.file)
        wait_for(lambda: len(started(job.folder)) == 2, 60, "the second chunk to start")  # chunk 0 is done
        status, paused = server.call("POST", f"/api/jobs/{job_id}/pause")
        assert status == 200 and paused["state"] == "paused", paused
        assert [c["state"] for c in paused["chunks"]] == ["done", "pending", "pending", "pending"]
        time.sleep(2)
        assert started(job.folder) == ["chunk 0", "chunk 1"]  # no chunk starts while paused
        assert server.call("POST", f"/api/jobs/{job_id}/pause")[0] == 409  # paused already
        assert server.call("POST", f"/api/jobs/{job_id}/resume")[1]["state"] in ("pending", "running")
        server.wait(job_id, "completed")
        assert started(job.folder) == ["chunk 0", "chunk 1", "chunk 1", "chunk 2", "chunk 3", "merge"]
        assert job.merged.read_text() == job.expected_merge()


def test_cancel_stops_a_job_for_good_and_delete_forgets_it_but_keeps_its_files(tmp_path):
    job = slow_job(tmp_path / "shot", chunks=3, frames=4, delay="0.4")
    with serving(tmp_path / "data", tmp_path) as server:
        job_id = server.submit(job.file)
        wait_for(lambda: len(started(job.folder)) == 2, 60, "the second chunk to start")
        cancelled = server.call("POST", f"/api/jobs/{job_id}/cancel")[1]
        assert cancelled["state"] == "cancelled" and cancelled["finishedAt"]
        time.sleep(1.5)
        assert started(job.folder) == ["chunk 0", "chunk 1"]
        assert server.call("POST", f"/api/jobs/{job_id}/resume")[0] == 409  # cancelled is for good; retry redoes it
        assert server.call("DELETE", f"/api/jobs/{job_id}")[0] == 204
        assert server.call("GET", f"/api/jobs/{job_id}")[0] == 404
        assert server.call("POST", f"/api/jobs/{job_id}/retry")[0] == 404
        assert job.output(0).exists() and "chunk 0" in job.recorded()  # a finished chunk is never deleted


def test_kill_9_of_the_server_stops_its_runners_and_a_restart_goes_on_where_the_chunks_stood(tmp_path):
    job = slow_job(tmp_path / "shot", chunks=4, frames=3, delay="0.4")
    server = start_server(tmp_path / "data", tmp_path)
    try:
        job_id = server.submit(job.file, concurrency=2)
        wait_for(lambda: "chunk 0" in job.recorded() and len(started(job.folder)) >= 3, 60, "chunk 0 done, more running")
        runner = [pid for pid in _children(server.proc.pid)]
        assert runner, "no runner under the server: the check below would pass without one"
        server.kill()  # the server alone
        wait_for(lambda: not any(alive(pid) for pid in runner), 20, "its runners to die with it")
        done = {task for task in job.recorded()}
        again = start_server(tmp_path / "data", tmp_path)
        try:
            finished = again.wait(job_id, "completed")
        finally:
            again.stop()
        assert finished["completedChunks"] == 4
        rerun = started(job.folder)
        for task in done:  # no finished chunk ran again
            assert rerun.count(task) == 1, rerun
        assert job.merged.read_text() == job.expected_merge()
    finally:
        server.stop()


def test_a_bad_job_is_422_with_every_fault_and_one_outside_the_roots_403(tmp_path):
    root = tmp_path / "root"
    good = new_job(root / "shot", chunks=2, frames=1)
    (root / "bad.json").write_text(json.dumps({"metadata": {"totalFrames": 0}, "chunks": []}))
    elsewhere = new_job(tmp_path / "elsewhere", chunks=1, frames=1)
    with serving(tmp_path / "data", root) as server:
        status, reply = server.call("POST", "/api/jobs", {"job": str(root / "bad.json")})
        assert status == 422 and len(reply["errors"]) >= 2 and all("bad.json" in line for line in reply["errors"])
        status, reply = server.call("POST", "/api/jobs", {"job": str(elsewhere.file)})
        assert status == 403 and "outside the served roots" in reply["error"]
        (root / "link.json").symlink_to(elsewhere.file)  # a link inside the root to a job outside it
        assert server.call("POST", "/api/jobs", {"job": str(root / "link.json")})[0] == 403
        assert server.call("POST", "/api/jobs", {"job": str(good.file), "concurrency": 0})[0] == 422
        assert server.call("POST", "/api/jobs", {"job": str(good.file), "retries": "many"})[0] == 422
        assert server.call("GET", "/api/jobs")[1] == {"jobs": []}  # nothing was queued
        result = run([*CLI, "submit", str(elsewhere.file), "--server", server.url])
        assert result.returncode == 2 and result.stderr.startswith("helios-doit: job ") and len(result.stderr.splitlines()) == 1


def test_with_a_token_every_api_request_without_it_is_401(tmp_path):
    job = new_job(tmp_path / "shot", chunks=1, frames=1)
    with serving(tmp_path / "data", tmp_path, token="s3cret") as server:
        for method, path in (("GET", "/api/jobs"), ("POST", "/api/jobs"), ("GET", "/api/events"),
                             ("POST", "/api/jobs/x/pause"), ("DELETE", "/api/jobs/x")):
            assert server.call(method, path, {"job": str(job.file)} if method == "POST" else None, token=None)[0] == 401
            assert server.call(method, path, {"job": str(job.file)} if method == "POST" else None, token="wrong")[0] == 401
        assert server.call("POST", "/api/login", {"token": "wrong"}, token=None)[0] == 401
        job_id = server.submit(job.file)  # with the token
        server.wait(job_id, "completed")
        assert server.call("GET", "/api/jobs", token=None, cookie="helios_doit_token=s3cret")[0] == 200
        result = run([*CLI, "jobs", "--server", server.url])
        assert result.returncode == 2 and "a token is needed" in result.stderr
        listed = run([*CLI, "jobs", "--server", server.url], env={**os.environ, "HELIOS_DOIT_TOKEN": "s3cret"})
        assert listed.returncode == 0 and job_id in listed.stdout and "completed" in listed.stdout


def test_events_stream_every_job_then_every_change(tmp_path):
    job = slow_job(tmp_path / "shot", chunks=2, frames=2, delay="0.2")
    with serving(tmp_path / "data", tmp_path) as server:
        job_id = server.submit(job.file)
        seen = []
        with urllib.request.urlopen(server.url + "/api/events", timeout=60) as stream:
            kind = None
            for raw in stream:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind == "job":
                    status = json.loads(line[6:])
                    seen.append((status["state"], status["completedChunks"]))
                    if status["state"] == "completed":
                        break
        assert seen[-1] == ("completed", 2) and len(seen) >= 2  # what it was when asked, then each change
        assert job_id == server.call("GET", "/api/jobs")[1]["jobs"][0]["id"]


def test_the_server_refuses_what_it_cannot_do_safely_in_one_line(tmp_path):
    data = tmp_path / "data"
    exposed = run([*CLI, "serve", "--host", "0.0.0.0", "--data", str(data)])
    assert exposed.returncode == 2 and "--token" in exposed.stderr and len(exposed.stderr.splitlines()) == 1
    with serving(data, tmp_path) as server:
        second = run([*CLI, "serve", "--port", "0", "--data", str(data)], timeout=60)
        assert second.returncode == 1 and "another server uses it" in second.stderr, second.stderr
        assert server.call("GET", "/api/jobs")[0] == 200  # the first one serves on
    with socket.socket() as sock:
        port = sock.getsockname()[1] if sock.bind(("127.0.0.1", 0)) is None else 0
        down = run([*CLI, "jobs", "--server", f"http://127.0.0.1:{port}"])
    assert down.returncode == 1 and "no answer" in down.stderr and len(down.stderr.splitlines()) == 1


def _children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]



def test_a_job_in_a_bucket_is_served_only_when_its_bucket_is_a_root_and_lands_in_its_bucket(tmp_path, bucket):
    url = bucket.upload_job(chunks=2)
    with serving(tmp_path / "data", tmp_path) as server:  # served: a folder, no bucket
        status, reply = server.call("POST", "/api/jobs", {"job": url})
        assert status == 403 and "not under a served root" in reply["error"]
    with serving(tmp_path / "data", tmp_path, "--root", f"s3://{bucket.name}") as server:
        job_id = server.submit(url, concurrency=2)
        assert server.wait(job_id, "completed")["completedChunks"] == 2
    keys = bucket.keys()
    assert {"shot1/part_0.txt", "shot1/part_1.txt", "shot1/out.txt"} <= set(keys)
    assert [k for k in keys if k.startswith("shot1/.helios-doit/job.json/done/merge/")]
