"""A render service for tests: a real `helios-doit serve` process on a loopback port, and a client
that speaks its HTTP API as any program would (urllib)."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import REPO, marked, wait_for

CLI = [sys.executable, "-m", "helios_doit"]


@dataclass
class Server:
    proc: subprocess.Popen[str]
    url: str
    data: Path
    token: str | None = None
    lines: list[str] = field(default_factory=list)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, token: str | None = "default",
             cookie: str | None = None) -> tuple[int, Any]:
        """(HTTP status, the JSON reply or None)."""
        headers = {"Content-Type": "application/json"}
        given = self.token if token == "default" else token
        if given:
            headers["Authorization"] = f"Bearer {given}"
        if cookie:
            headers["Cookie"] = cookie
        request = urllib.request.Request(self.url + path, json.dumps(body).encode() if body is not None else None,
                                         headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                data = response.read()
                return response.status, json.loads(data) if data and "json" in response.headers.get("content-type", "") else data
        except urllib.error.HTTPError as exc:
            data = exc.read()
            try:
                return exc.code, json.loads(data)
            except ValueError:
                return exc.code, data

    def submit(self, job: Path | str, **fields: Any) -> str:
        status, reply = self.call("POST", "/api/jobs", {"job": str(job), **fields})
        assert status == 201, reply
        return str(reply["id"])

    def job(self, job_id: str) -> dict[str, Any]:
        status, reply = self.call("GET", f"/api/jobs/{job_id}")
        assert status == 200, reply
        return dict(reply)

    def wait(self, job_id: str, state: str, timeout: float = 60) -> dict[str, Any]:
        wait_for(lambda: self.job(job_id)["state"] == state, timeout, f"job {job_id} to be {state}")
        return self.job(job_id)

    def kill(self) -> None:
        """SIGKILL the server alone (its runners are in sessions of their own)."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        wait_for(lambda: not marked(self.proc), 30, "the server's runners to be gone")


def start_server(data: Path, root: Path, *args: str, token: str | None = None) -> Server:
    """`helios-doit serve --port 0` in a session of its own; returns once it listens."""
    tag = os.urandom(8).hex()
    env = {**os.environ, "HELIOS_DOIT_TEST_RUN": tag}
    argv = [*CLI, "serve", "--port", "0", "--data", str(data), "--root", str(root), *args]
    if token:
        argv += ["--token", token]
    proc = subprocess.Popen(argv, cwd=REPO, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    proc.tag = tag  # type: ignore[attr-defined]
    line = proc.stdout.readline() if proc.stdout else ""
    if "serving http" not in line:
        proc.kill()
        raise AssertionError(f"the server did not start: {line}{proc.stderr.read() if proc.stderr else ''}")
    url = line.split("serving ", 1)[1].split("/ ", 1)[0]
    return Server(proc, url, data, token)


@contextlib.contextmanager
def serving(data: Path, root: Path, *args: str, token: str | None = None) -> Any:
    server = start_server(data, root, *args, token=token)
    try:
        yield server
    finally:
        server.stop()


def started(job_folder: Path) -> list[str]:
    """The stand-in commands that started in a job's folder, in order ("chunk 0", "merge")."""
    log = job_folder / "runs.log"
    return [line.split(" start")[0] for line in log.read_text().splitlines() if " start" in line] if log.exists() else []
