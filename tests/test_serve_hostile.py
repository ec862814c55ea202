"""The render service as an attacker (or a bad day) would try it: odd requests are one clear
answer, never a 500; a full disk stops nothing for good; nothing a job's commands plant makes
the server read or write outside its roots; the clients say every fault in one line."""
from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request

import pytest
from harness import new_job, run, wait_for
from serving import CLI, serving, start_server, started


def test_odd_submissions_are_one_clear_answer_never_a_500(tmp_path):
    job = new_job(tmp_path / "shot", chunks=1, frames=1)
    with serving(tmp_path / "data", tmp_path) as server:
        for body, status in (({"priority": 10**26}, 422), ({"job": str(job.file) + "\u0000x"}, 422),
                             ({"outputRoot": str(tmp_path / ("A/" * 3000))}, 422), ({"fatalExitCodes": [300]}, 422),
                             ({"retryDelay": float("nan")}, 422), ({"concurrency": 5000}, 422)):
            code, reply = server.call("POST", "/api/jobs", {"job": str(job.file), **body})
            assert code == status, (body, code, reply)
        code, reply = server.call("POST", "/api/jobs", {"job": "http://127.0.0.1:9/jobs/../x.json"})
        assert code == 403 and "'..'" in reply["error"]
        assert server.call("POST", "/api/login", {"token": "\ud800\u20ac"})[0] == 204  # no token: nothing to keep
        job_id = server.submit(job.file, fatalExitCodes=[2, 64])  # the README's own example runs
        server.wait(job_id, "completed")
        record = job.state / "records" / "chunk-0.json"  # a damaged record: its job says so, the list still answers
        record.write_text(record.read_text().replace('"duration":', '"duration":"x","was":'))
        wait_for(lambda: server.call("GET", "/api/jobs")[1]["jobs"][0]["chunks"][0]["duration"] is None, 15,
                 "the list to show the damaged record as no duration")  # a finished job is read anew every few seconds
        assert run([*CLI, "status", str(job.file)]).returncode == 0


def test_a_token_no_text_can_be_is_a_401_never_a_500(tmp_path):
    with serving(tmp_path / "data", tmp_path, token="s3cret") as server:
        assert server.call("POST", "/api/login", {"token": "\ud800"}, token=None)[0] == 401  # a lone surrogate
        assert server.call("GET", "/api/jobs", token="\u00ff\u00fe")[0] == 401
        host, port = server.url.split("//")[1].rsplit(":", 1)
        page = http.client.HTTPConnection(host, int(port), timeout=30)
        page.request("GET", "/?token=%ED%A0%80")  # the same, in the dashboard's address
        answer = page.getresponse()
        assert answer.status == 303 and answer.getheader("set-cookie") is None
        assert server.call("POST", "/api/login", {"token": "s3cret"}, token=None)[0] == 204


def test_a_form_of_another_site_or_a_rebound_host_name_reaches_nothing(tmp_path):
    job = new_job(tmp_path / "shot", chunks=1, frames=1)
    with serving(tmp_path / "data", tmp_path) as server:
        job_id = server.submit(job.file)
        server.wait(job_id, "completed")
        port = server.url.rsplit(":", 1)[1]
        form = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-H",
                               "Content-Type: application/x-www-form-urlencoded", "-d", "x=1",
                               f"{server.url}/api/jobs/{job_id}/retry"], capture_output=True, text=True)
        assert form.stdout == "415"
        rebound = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H",
                                  f"Host: attacker.example:{port}", f"{server.url}/api/jobs"], capture_output=True, text=True)
        assert rebound.stdout == "421"
        assert server.call("GET", "/api/jobs")[0] == 200  # by its own name, as ever


def test_links_a_jobs_commands_plant_never_make_the_server_read_or_write_outside(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("the server's secret\n")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    job = new_job(tmp_path / "shot", chunks=2, frames=1)
    data = tmp_path / "data"
    # chunk 1 plants links in the service's own folder (the runner's log) and at its log's place, then fails
    job.data["chunks"][1]["command"] = (
        f"ln -sf {victim} {data}/jobs/*/runner.log; ln -f {secret} .helios-doit/job.json/logs/chunk-1.log.x; exit 1")
    job.save()
    with serving(data, tmp_path) as server:
        job_id = server.submit(job.file, keepGoing=True)
        server.wait(job_id, "failed")
        os.link(secret, job.state / "logs" / "planted.log")  # and a hard link at a log's path, by hand:
        (job.state / "logs" / "chunk-0.log").unlink()
        os.link(secret, job.state / "logs" / "chunk-0.log")
        assert server.call("GET", f"/api/jobs/{job_id}/chunks/0/log")[0] == 404  # never sent
        assert server.call("POST", f"/api/jobs/{job_id}/retry")[0] == 200  # a second run writes its runner log
        server.wait(job_id, "failed")
    assert victim.read_text() == "precious\n" and secret.read_text() == "the server's secret\n"


def test_a_video_chunks_thumbnail_and_seams_are_made_anew_whatever_was_put_in_their_place(tmp_path):
    from test_dashboard import video_job  # a real, small video job

    job = video_job(tmp_path / "shot", chunks=2)
    secret = tmp_path / "secret.txt"
    secret.write_text("not a picture\n")
    with serving(tmp_path / "data", tmp_path) as server:
        job_id = server.submit(job)
        server.wait(job_id, "completed")
        code, first = server.call("GET", f"/api/jobs/{job_id}/chunks/0/thumbnail")
        assert code == 200 and first[:8] == b"\x89PNG\r\n\x1a\n"
        [kept] = (tmp_path / "data" / "thumbs" / job_id).iterdir()
        kept.unlink()
        kept.symlink_to(secret)  # planted where the kept picture was
        code, again = server.call("GET", f"/api/jobs/{job_id}/chunks/0/thumbnail")
        assert code == 200 and again == first and secret.read_text() == "not a picture\n"
        thumbs = tmp_path / "data" / "thumbs"
        shutil.rmtree(thumbs / job_id)
        (thumbs / job_id).write_text("a file where the job's folder was\n")
        assert server.call("GET", f"/api/jobs/{job_id}/chunks/0/thumbnail") == (200, first)
        [kept] = (thumbs / job_id).iterdir()
        kept.unlink()
        (kept / "inside").mkdir(parents=True)  # a folder where the picture was
        assert server.call("GET", f"/api/jobs/{job_id}/chunks/0/thumbnail") == (200, first)
        outside = tmp_path / "outside"
        outside.mkdir()
        shutil.rmtree(thumbs)
        thumbs.symlink_to(outside)  # a link where the thumbnails' folder was: nothing is written through it
        assert server.call("GET", f"/api/jobs/{job_id}/chunks/0/thumbnail") == (200, first)
        assert list(outside.iterdir()) == []
        code, seams = server.call("GET", f"/api/jobs/{job_id}/seams")
        assert code == 200 and seams[:8] == b"\x89PNG\r\n\x1a\n"
        shutil.rmtree(tmp_path / "data" / "seams")
        (tmp_path / "data" / "seams").write_text("a file where the seams' folder was\n")
        assert server.call("GET", f"/api/jobs/{job_id}/seams") == (200, seams)
        _a_folder_that_cannot_hold_the_seams_is_a_503(server, job_id, tmp_path / "data" / "seams", seams)


def _a_folder_that_cannot_hold_the_seams_is_a_503(server, job_id, folder, seams):
    """`chattr +i data/seams`: the picture cannot be kept, said in one line (as for a thumbnail), then made once it can."""
    shutil.rmtree(folder)
    folder.mkdir()
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i needs root, and a file system that has it")
    try:
        code, reply = server.call("GET", f"/api/jobs/{job_id}/seams")
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    assert code == 503 and reply == {"error": f"job {job_id}: no picture can be kept in the data folder now "
                                              "(Operation not permitted)"}, (code, reply)
    assert server.call("GET", f"/api/jobs/{job_id}/seams") == (200, seams)


def test_a_job_file_that_became_a_link_out_of_the_root_after_it_was_queued_does_not_run(tmp_path):
    root = tmp_path / "root"
    busy = new_job(root / "busy", chunks=1, frames=2)
    (busy.folder / "slow").write_text("1")
    victim_job = new_job(root / "shot", chunks=1, frames=1)
    elsewhere = new_job(tmp_path / "elsewhere", chunks=1, frames=1)
    with serving(tmp_path / "data", root) as server:
        first = server.submit(busy.file)  # holds the one worker
        queued = server.submit(victim_job.file)
        victim_job.file.unlink()
        victim_job.file.symlink_to(elsewhere.file)
        server.wait(first, "completed")
        failed = server.wait(queued, "failed")
        assert "outside the served root" in failed["error"]
        assert started(elsewhere.folder) == [] and not elsewhere.state.exists()


def test_a_job_file_that_became_a_link_out_of_the_root_is_never_read_for_its_status_or_logs(tmp_path):
    root = tmp_path / "root"
    shot = new_job(root / "shot", chunks=1, frames=1)
    elsewhere = new_job(tmp_path / "elsewhere", chunks=1, frames=1)
    assert run([*CLI, "job", "run", str(elsewhere.file)], timeout=60).returncode == 0  # its log: not to be served
    with serving(tmp_path / "data", root) as server:
        job_id = server.submit(shot.file)
        server.wait(job_id, "completed")
    shot.file.unlink()
    shot.file.symlink_to(elsewhere.file)
    with serving(tmp_path / "data", root) as server:  # a new server: nothing of the job loaded yet
        status, body = server.call("GET", f"/api/jobs/{job_id}/chunks/0/log")
        assert status == 404 and "render.sh" not in str(body), body
        assert server.job(job_id)["output"] != str(elsewhere.merged)


def test_a_pause_survives_the_server_dying_while_its_runner_stops_and_a_delete_is_never_undone(tmp_path):
    job = new_job(tmp_path / "shot", chunks=3, frames=4)
    (job.folder / "slow").write_text("0.4")
    data = tmp_path / "data"
    server = start_server(data, tmp_path)
    try:
        job_id = server.submit(job.file)
        wait_for(lambda: len(started(job.folder)) >= 1, 60, "a chunk to start")
        runner = int(subprocess.run(["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True).stdout.split()[0])
        os.kill(runner, signal.SIGSTOP)  # it cannot stop now: the pause waits
        threading.Thread(target=_quietly, args=(server.call, "POST", f"/api/jobs/{job_id}/pause"), daemon=True).start()
        wait_for(lambda: server.job(job_id)["state"] == "paused", 30, "the pause to be in the queue")
        server.kill()
        os.kill(runner, signal.SIGCONT)  # and it dies with its server
        server = start_server(data, tmp_path)
        time.sleep(1)
        assert server.job(job_id)["state"] == "paused"  # as asked, not running again
        second = new_job(tmp_path / "second", chunks=2, frames=4)
        (second.folder / "slow").write_text("0.4")
        other = server.submit(second.file)
        wait_for(lambda: len(started(second.folder)) >= 1, 60, "the second job to start")
        deleting = threading.Thread(target=_quietly, args=(server.call, "DELETE", f"/api/jobs/{other}"), daemon=True)
        deleting.start()
        time.sleep(0.2)
        assert server.call("POST", f"/api/jobs/{other}/pause")[0] in (404, 409)  # a delete is never undone
        deleting.join(30)
        assert server.call("GET", f"/api/jobs/{other}")[0] == 404
    finally:
        server.stop()


def _quietly(call, *args):
    """A request whose answer does not matter (its server may be killed under it)."""
    with contextlib.suppress(OSError):
        call(*args)


class _Liar(http.server.BaseHTTPRequestHandler):
    """A server that is not helios-doit's: garbage, or a redirect elsewhere."""

    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        _Liar.seen.append(self.headers.get("Authorization") or "")
        if self.path.startswith("/api/jobs") and "redirect" in self.server.mode:  # type: ignore[attr-defined]
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{self.server.server_port}/steal")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"[1, 2, 3]" if "list" in self.server.mode else b"<html>not json")  # type: ignore[attr-defined]

    def log_message(self, *args: object) -> None:
        pass


def test_the_clients_say_in_one_line_what_a_server_that_lies_did_and_never_send_the_token_elsewhere(tmp_path):
    for mode in ("garbage", "list", "redirect"):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Liar)
        server.mode = mode  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        _Liar.seen = []
        try:
            result = run([*CLI, "jobs", "--server", f"http://127.0.0.1:{server.server_port}", "--token", "TOPSECRET"])
        finally:
            server.shutdown()
        assert result.returncode in (1, 2) and len(result.stderr.splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr
        assert _Liar.seen == ["Bearer TOPSECRET"]  # asked once; a redirect is not followed with the token
    bad = run([*CLI, "jobs", "a b", "--server", "http://[::1", "--token", "\u00e9\u20ac"])
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1 and "Traceback" not in bad.stderr


def test_a_full_disk_under_the_queue_stops_nothing_for_good(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a 2 MB tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(data)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        first, second = (new_job(tmp_path / name, chunks=1, frames=2) for name in ("first", "second"))
        (first.folder / "slow").write_text("1")
        with serving(data, tmp_path) as server:
            a = server.submit(first.file)
            b = server.submit(second.file)
            wait_for(lambda: started(first.folder), 30, "the first job to start")
            filler = data / "fill"
            with contextlib.suppress(OSError), open(filler, "wb") as fill:
                while True:
                    fill.write(b"\0" * 65536)
            wait_for(lambda: (first.folder / "out.txt").exists(), 60, "the first job to finish its work")
            time.sleep(2)
            code, reply = server.call("POST", "/api/jobs", {"job": str(first.file)})
            assert code in (503, 201), reply  # said, never a 500
            filler.unlink()  # space again: the queue goes on by itself
            server.wait(a, "completed")
            server.wait(b, "completed")
        assert "the queue could not be updated" in json.dumps(server.proc.stderr.read() if server.proc.stderr else "")
    finally:
        subprocess.run(["umount", str(data)], check=False)





def test_a_serve_argument_out_of_range_is_one_line_and_makes_no_data_folder(tmp_path):
    data = tmp_path / "data"
    for args, code, said in ((["--port", "99999"], 2, "--port 99999: give a port from 0 to 65535"),
                             (["--port", "-1"], 2, "--port -1: give a port from 0 to 65535"),
                             (["--host", "192.0.2.1", "--token", "t0ken"], 1, "cannot listen on 192.0.2.1:8765"),
                             (["--token", "two words"], 2, "--token: give printable ASCII")):
        result = run([*CLI, "serve", *args, "--data", str(data), "--root", str(tmp_path)], timeout=60)
        assert result.returncode == code and result.stderr.startswith(f"helios-doit: {said}"), result.stderr
        assert len(result.stderr.splitlines()) == 1 and not data.exists()


def test_an_address_that_is_no_address_is_one_line_never_a_500(tmp_path):
    job = new_job(tmp_path / "shot", chunks=1, frames=1)
    with serving(tmp_path / "data", tmp_path) as server:
        for body in ({"job": "http://[::1/job.json"}, {"job": str(job.file), "outputRoot": "http://[::1/renders"},
                     {"job": str(job.file), "storage": "s3://[::1/renders"}):
            code, reply = server.call("POST", "/api/jobs", body)
            assert code == 400 and "not a valid address (Invalid IPv6 URL)" in reply["error"], (body, code, reply)
        assert server.call("GET", "/api/jobs")[1] == {"jobs": []}
    result = run([*CLI, "serve", "--root", "s3://[::1", "--data", str(tmp_path / "other")])
    assert result.returncode == 2 and result.stderr.startswith("helios-doit: --root s3://[::1: not a valid address")
    assert len(result.stderr.splitlines()) == 1 and not (tmp_path / "other").exists()


def _raw(server, request: bytes, body_chunks=()) -> bytes:
    """A request sent as bytes on a socket of its own (a body, chunk by chunk), and the answer to it."""
    host, port = server.url.split("//")[1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        for chunk in body_chunks:
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while block := sock.recv(65536):
                answer += block
    return answer


def test_a_body_over_a_mebibyte_is_413_before_it_is_read_or_the_token_checked(tmp_path):
    with serving(tmp_path / "data", tmp_path, token="s3cret") as server:
        head = b"POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        declared = _raw(server, head + b"Content-Length: 209715200\r\n\r\n")  # 200 MB said, none of it sent
        assert declared.startswith(b"HTTP/1.1 413 ") and b'{"error": "the request\'s body is over 1 MiB' in declared
        chunked = _raw(server, head.replace(b"login", b"jobs") + b"Transfer-Encoding: chunked\r\n\r\n",
                       [b"x" * 65536] * 17)  # no length said: counted as it arrives
        assert chunked.startswith(b"HTTP/1.1 413 "), chunked[:200]
        assert server.call("POST", "/api/login", {"token": "s3cret" + " " * 900_000}, token=None)[0] == 401  # under: read
        assert server.call("GET", "/api/jobs")[0] == 200


def test_a_connection_whose_request_never_arrives_whole_is_closed_and_an_event_stream_stays(tmp_path, monkeypatch):
    monkeypatch.setenv("HELIOS_DOIT_REQUEST_TIMEOUT", "1")
    job = new_job(tmp_path / "shot", chunks=1, frames=1)
    with serving(tmp_path / "data", tmp_path) as server:
        host, port = server.url.split("//")[1].rsplit(":", 1)
        stream = urllib.request.urlopen(server.url + "/api/events", timeout=30)
        assert stream.readline() == b"retry: 2000\n"
        began = time.monotonic()
        idle = [socket.create_connection((host, int(port)), timeout=5) for _ in range(32)]
        for n, sock in enumerate(idle):  # nothing; half a request line; a head and half its body; a request, half the next
            sock.sendall([b"", b"GET /api/jo", b"POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{",
                          f"GET /api/jobs HTTP/1.1\r\nHost: {host}:{port}\r\n\r\nGET /api/jo".encode()][n % 4])
        for sock in idle:
            with sock:
                while sock.recv(65536):  # the server closes it (a timeout here: it never did)
                    pass
        assert time.monotonic() - began < 4  # closed at the deadline, not by uvicorn's 5 s keep-alive
        job_id = server.submit(job.file)
        with stream:  # older than the deadline, and still told every change
            assert any(job_id.encode() in line for line in iter(stream.readline, b""))
    for given in ("soon", "1e-300", "0.05", "nan"):
        monkeypatch.setenv("HELIOS_DOIT_REQUEST_TIMEOUT", given)
        result = run([*CLI, "serve", "--data", str(tmp_path / "other"), "--root", str(tmp_path)], timeout=60)
        assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, (given, result.stderr)
        assert f"HELIOS_DOIT_REQUEST_TIMEOUT={given}: give seconds, from 0.1 to 3600" in result.stderr
        assert not (tmp_path / "other").exists()


def test_serve_keeps_its_data_only_in_a_folder_it_made_and_never_touches_a_folder_of_yours(tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    (project / "seams").write_text("notes\n")
    (project / "thumbs").symlink_to(project / "seams")
    for data, said in ((".", "--data .: holds files helios-doit serve did not make (no queue.db)"),
                       ("", "--data '': give the queue's folder"),
                       ("seams", "--data seams: not a folder")):
        result = run([*CLI, "serve", "--port", "0", "--data", data, "--root", str(tmp_path)], cwd=project, timeout=60)
        assert result.returncode == 2 and result.stderr.startswith(f"helios-doit: {said}"), result.stderr
        assert len(result.stderr.splitlines()) == 1
        assert sorted(os.listdir(project)) == ["seams", "thumbs"] and (project / "seams").read_text() == "notes\n"
    empty = tmp_path / "empty"
    empty.mkdir()
    with serving(empty, tmp_path) as server:  # an empty folder is taken, and is the service's from then on
        assert server.call("GET", "/api/jobs") == (200, {"jobs": []})
    with serving(empty, tmp_path) as server:  # as it is again
        assert server.call("GET", "/api/jobs") == (200, {"jobs": []})


def test_a_host_or_a_job_id_no_name_can_be_is_one_line_with_exit_2_server_or_not(tmp_path):
    data = tmp_path / "data"
    for host in (os.fsdecode(b"\xff"), "\u00fc" * 70):
        result = run([*CLI, "serve", "--host", host, "--token", "abc", "--port", "0", "--data", str(data)], timeout=60)
        assert result.returncode == 2 and "not an address or host name" in result.stderr, result.stderr
        assert len(result.stderr.splitlines()) == 1 and not data.exists()
    for args in ([os.fsdecode(b"\xff")], ["--server", "http://127.0.0.1:9", os.fsdecode(b"\xff"), "pause"]):
        result = run([*CLI, "jobs", *args])
        assert result.returncode == 2 and "no job has that id" in result.stderr, result.stderr
        assert len(result.stderr.splitlines()) == 1


def test_a_body_not_in_utf_8_is_a_400_of_one_line_as_every_refusal(tmp_path):
    with serving(tmp_path / "data", tmp_path, token="s3cret") as server:
        body = b'{"token":"\xff"}'
        answer = _raw(server, b"POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                              b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        head, _, reply = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 "), answer
        assert json.loads(reply) == {"error": 'body: not JSON in UTF-8; send a JSON object, e.g. {"token": "..."}'}
        assert server.call("POST", "/api/login", {"token": "s3cret"}, token=None)[0] == 204


def test_a_server_address_no_server_can_have_is_the_users_to_fix_exit_2_not_no_answer(tmp_path):
    for server, said in (("http://h:99999", "its port is not a number from 0 to 65535"),
                         ("http://h:abc", "its port is not a number from 0 to 65535"),
                         ("ftp://h", "not an http:// address")):
        result = run([*CLI, "jobs", "--server", server])
        assert result.returncode == 2 and result.stderr.startswith(f"helios-doit: --server {server}: {said}; give a "
                                                                   "server such as http://127.0.0.1:8765"), result.stderr
        assert len(result.stderr.splitlines()) == 1
