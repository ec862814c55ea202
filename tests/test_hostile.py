"""Hostile inputs and a hostile environment: one line and the right exit code, never a traceback.

Servers that trickle, lie about their length or never stop; parse bombs; a disk that fills up
mid-run; a read-only job folder; damaged state; a reader that closes the pipe.
"""
from __future__ import annotations

import http.server
import json
import os
import shutil
import socketserver
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
from harness import CLI, DOIT, REPO

from helios_doit.executors.output import LIVE_LINE, LogSink
from helios_doit.spec.errors import JobError
from helios_doit.spec.load import MAX_JOB_BYTES, load_job

ROOT = os.geteuid() == 0


def small_job(chunks: int = 1) -> dict:
    return {"metadata": {"totalFrames": chunks, "fps": 24, "width": 320, "height": 180, "duration": chunks / 24},
            "chunks": [{"id": i, "startFrame": i, "frameCount": 1, "outputFile": f"out_{i}.txt",
                        "command": f"echo {i} > out_{i}.txt"} for i in range(chunks)],
            "outputFile": "merged.txt", "mergeCommand": "cat out_*.txt > merged.txt"}


# -- servers that misbehave ----------------------------------------------------------------------

def _trickle(handler: http.server.BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", "100000")
    handler.end_headers()
    for _ in range(60):
        handler.wfile.write(b" ")
        handler.wfile.flush()
        time.sleep(0.5)


def _huge_length(handler: http.server.BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", str(10 * 1024**3))
    handler.end_headers()
    handler.wfile.write(b"0" * 65536)


def _short_body(handler: http.server.BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", "1000")
    handler.end_headers()
    handler.wfile.write(b'{"metadata"')


def _endless(handler: http.server.BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.end_headers()  # no length: the body ends when the connection does, which is never
    block = b" " * 1024 * 1024
    try:
        for _ in range(200):
            handler.wfile.write(block)
    except OSError:
        pass


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[http.server.BaseHTTPRequestHandler], None]], str]]:
    servers = []

    def start(respond: Callable[[http.server.BaseHTTPRequestHandler], None]) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                try:
                    respond(self)
                except OSError:
                    pass

            def log_message(self, *args: object) -> None:
                pass

        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/job.json"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def refused(source: str | Path, cwd: Path | None = None) -> str:
    with pytest.raises(JobError) as caught:
        load_job(source, cwd=cwd)
    [line] = caught.value.lines
    return line


def test_a_trickling_server_is_given_up_on_at_the_deadline(serve, monkeypatch):
    url = serve(_trickle)
    monkeypatch.setenv("HELIOS_DOIT_FETCH_TIMEOUT", "1.5")
    started = time.monotonic()
    line = refused(url)
    assert time.monotonic() - started < 5
    assert line.startswith(f"{url}: not received within 1.5 s") and "HELIOS_DOIT_FETCH_TIMEOUT" in line


def test_a_10_gb_content_length_is_refused_before_reading(serve):
    assert refused(serve(_huge_length)).endswith(f"announces {10 * 1024**3} bytes; a job is at most {MAX_JOB_BYTES}")


def test_a_body_shorter_than_its_content_length_is_one_line(serve):
    assert "closed the connection after 11 bytes, before the end it announced" in refused(serve(_short_body))


def test_an_endless_body_is_cut_at_the_size_cap(serve):
    assert refused(serve(_endless)).endswith(f"more than {MAX_JOB_BYTES} bytes; a job is at most that")


def test_a_bad_url_through_the_cli_is_exit_2_and_one_line(serve):
    url = serve(_short_body)
    result = subprocess.run([*CLI, "status", url], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"helios-doit: {url}: the server closed")


# -- parse bombs -----------------------------------------------------------------------------

BOMBS = {
    "deep.json": ("[" * 100_000, "nested too deeply to be a job"),
    "deep.yaml": ("[" * 5_000, "nested too deeply to be a job"),  # a pure-Python parser: deep enough
    "aliases.yaml": ("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                     "c: [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n", "aliases (*name) are not allowed in a job"),
    "digits.json": ('{"metadata": {"totalFrames": ' + "9" * 5000 + "}}", "Exceeds the limit"),
    "huge-id.json": (json.dumps({**small_job(), "chunks": [{**small_job()["chunks"][0], "id": 10**300}]}),
                     "input should be less than or equal to 9007199254740991"),
}


@pytest.mark.parametrize("name", BOMBS)
def test_a_parse_bomb_is_one_line(tmp_path, name):
    text, expected = BOMBS[name]
    (tmp_path / name).write_text(text)
    assert expected in refused(name, cwd=tmp_path)


def test_a_job_file_that_is_a_fifo_or_a_device_is_refused_without_waiting(tmp_path):
    os.mkfifo(tmp_path / "job.json")
    assert refused("job.json", cwd=tmp_path).endswith("is not a regular file; give the path of a job file (JSON or YAML)")
    assert refused("/dev/zero").startswith("/dev/zero: is not a regular file")


def test_a_url_that_does_not_parse_is_one_line(tmp_path):
    assert refused("http://[::1/job.json", cwd=tmp_path) == "http://[::1/job.json: cannot fetch the job: Invalid IPv6 URL"


def test_a_job_file_over_64_mb_is_refused_unread(tmp_path):
    path = tmp_path / "big.json"
    with open(path, "wb") as handle:
        handle.truncate(MAX_JOB_BYTES + 1)  # sparse: nothing is written, nothing must be read
    assert refused("big.json", cwd=tmp_path) == f"big.json: is {MAX_JOB_BYTES + 1} bytes; a job file is at most {MAX_JOB_BYTES} bytes"


def test_a_command_longer_than_the_os_takes_fails_that_chunk_with_shs_message(tmp_path):
    spec = small_job()
    spec["chunks"][0]["command"] = "echo " + "x" * 200_000 + " > out_0.txt"
    (tmp_path / "job.json").write_text(json.dumps(spec))
    result = subprocess.run([*CLI, "job", "run", str(tmp_path / "job.json")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "chunk 0 failed: exit code 126" in result.stdout and "Argument list too long" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


# -- the environment ---------------------------------------------------------------------------

@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    if not ROOT or shutil.which("mount") is None:
        pytest.skip("mounting a 2 MB tmpfs needs root")
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2M", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_disk_that_fills_up_mid_run_is_exit_1_and_one_line_then_resumes(tmpfs):
    spec = small_job(2)
    # the first time only, chunk 0 fills the disk after writing its output: its record cannot be written
    spec["chunks"][0]["command"] = ("echo 0 > out_0.txt && if [ -e fill ]; then rm fill; "
                                    "head -c 3000000 /dev/zero > filler 2>/dev/null; fi; true")
    (tmpfs / "job.json").write_text(json.dumps(spec))
    (tmpfs / "fill").touch()
    result = subprocess.run([*CLI, "job", "run", str(tmpfs / "job.json")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "No space left on device; free some space, then run again" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    (tmpfs / "filler").unlink()
    again = subprocess.run([*CLI, "job", "run", str(tmpfs / "job.json")], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (tmpfs / "merged.txt").read_text() == "0\n1\n"


def test_a_read_only_job_folder_can_be_listed_and_inspected_but_not_run(tmp_path):
    if not ROOT:
        pytest.skip("a read-only bind mount needs root")
    folder = tmp_path / "job"
    folder.mkdir()
    (folder / "job.json").write_text(json.dumps(small_job(2)))
    assert subprocess.run([*CLI, "job", "run", str(folder / "job.json"), "--chunk", "0"], timeout=60).returncode == 0
    view = tmp_path / "view"
    view.mkdir()
    subprocess.run(["mount", "--bind", str(folder), str(view)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(view)], check=True)
        job = str(view / "job.json")
        for argv in ([*DOIT, "list", f"job={job}"], [*DOIT, "info", "chunk:0", f"job={job}"], [*CLI, "status", job]):
            result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)
            assert result.returncode == 0 and "Traceback" not in result.stderr, (argv, result.stderr)
        cleaned = subprocess.run([*DOIT, "clean", f"job={job}"], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert cleaned.returncode == 1 and "Read-only file system" in cleaned.stderr
        assert "Traceback" not in cleaned.stderr and len(cleaned.stderr.splitlines()) == 1
        result = subprocess.run([*CLI, "job", "run", job], capture_output=True, text=True, timeout=60)
        assert result.returncode == 1
        assert result.stderr.splitlines() == [
            f"helios-doit: cannot keep the job's state in {view}/.helios-doit/job.json: cannot use "
            f"{view}/.helios-doit/job.json/runs/.writable-{result.stderr.split('.writable-')[1].split(':')[0]}: "
            "Read-only file system; the filesystem is read-only; run where the job's folder can be written; nothing was run"]
    finally:
        subprocess.run(["umount", str(view)], check=False)


def test_a_job_written_where_it_cannot_be_is_one_line_and_exit_1(tmp_path):
    result = subprocess.run([*CLI, "plan", "--frames", "10", "--concurrency", "2", "--command-template", "x {start}",
                             "--output-template", "p/{id}.mkv", "-o", "/proc/version"], capture_output=True, text=True)
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr


def test_status_into_a_closed_pipe_ends_quietly(tmp_path):
    (tmp_path / "job.json").write_text(json.dumps(small_job(4000)))  # a table far bigger than a pipe holds
    shell = f"{' '.join(CLI)} status {tmp_path / 'job.json'} | head -1"
    result = subprocess.run(["bash", "-o", "pipefail", "-c", shell], capture_output=True, text=True, timeout=60)
    assert result.stdout.startswith(f"{tmp_path / 'job.json'}: 0/4000 chunks done")
    assert result.stderr == "" and result.returncode == 141


# -- output that never ends a line, or never ends --------------------------------------------------

def test_a_line_without_end_is_kept_bounded_for_the_terminal(tmp_path, capfd):
    sink = LogSink(tmp_path / "chunk.log", "attempt 1", "[chunk 0] ")
    for _ in range(400):  # 25 MB, no newline
        sink("stdout", b"a" * 65536)
        assert len(sink.partial["stdout"]) <= LIVE_LINE
    sink("stdout", b"end\n")
    sink.close("exit code 0")
    shown = capfd.readouterr().out.splitlines()
    assert shown[-1].endswith("aend") and sum(len(line) for line in shown) < 2 * LIVE_LINE


def test_a_chatty_attempt_keeps_the_head_and_tail_of_its_output_in_the_log(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("HELIOS_DOIT_LOG_LIMIT", str(64 * 1024))
    sink = LogSink(tmp_path / "chunk.log", "attempt 1", "[chunk 0] ")
    for i in range(20_000):
        sink("stdout", f"line {i:05d}\n".encode())
    sink.close("exit code 0")
    capfd.readouterr()
    log = (tmp_path / "chunk.log").read_text()
    assert len(log) < 80 * 1024
    assert "line 00000" in log and "line 19999" in log and "bytes of output cut here" in log
    assert log.rstrip().endswith("=== exit code 0")


def test_a_log_over_the_limit_is_rotated_when_the_next_attempt_starts(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("HELIOS_DOIT_LOG_LIMIT", "4096")
    for attempt in (1, 2, 3):
        sink = LogSink(tmp_path / "chunk.log", f"attempt {attempt}", "")
        sink("stdout", b"x" * 5000 + b"\n")
        sink.close("exit code 1")
    capfd.readouterr()
    assert "attempt 3" in (tmp_path / "chunk.log").read_text()
    assert "attempt 2" in (tmp_path / "chunk.log.1").read_text()
    assert not (tmp_path / "chunk.log.2").exists()
