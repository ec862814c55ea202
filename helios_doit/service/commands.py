"""`helios-doit serve`, and its clients `helios-doit submit` and `helios-doit jobs`.

The server binds loopback unless told otherwise, and refuses any other address without a token:
a job's commands are arbitrary shell, so whoever can submit one can run anything as the server's
user. The clients speak its HTTP API (urllib, nothing to install) and say every fault in one line.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ..core.errors import BadInput, EnvironmentFault
from ..executors.registry import ADAPTERS
from ..tasks.options import MAX_WORKERS

#: Where the clients find the server, and their token, unless told.
SERVER_ENV, TOKEN_ENV = "HELIOS_DOIT_SERVER", "HELIOS_DOIT_TOKEN"
DEFAULT_PORT = 8765
DEFAULT_SERVER = f"http://127.0.0.1:{DEFAULT_PORT}"
ACTIONS = ("pause", "resume", "cancel", "retry", "delete")


# -- serve -------------------------------------------------------------------------------------

def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free one)")
    parser.add_argument("--data", default=".helios-doit-serve", metavar="DIR",
                        help="the queue's folder: SQLite, runner logs, thumbnails (default ./.helios-doit-serve)")
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="jobs run at once (default 1)")
    parser.add_argument("--token", metavar="T", help=f"every API request must carry it (default ${TOKEN_ENV})")
    parser.add_argument("--root", action="append", metavar="DIR_OR_URL",
                        help="where job files may come from (repeatable; default: the folder the server starts in; "
                             "buckets only when named, e.g. s3://renders)")
    parser.add_argument("--executor", default="local", choices=sorted(ADAPTERS), help="where chunks run")
    parser.add_argument("--scheduler", metavar="ADDRESS", help="the Dask scheduler (tcp://HOST:8786)")


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .api import guard, make_app
    from .dashboard import add_dashboard
    from .queue import DataFolderInUse, Queue
    from .service import Service, url_root

    token = args.token or os.environ.get(TOKEN_ENV) or None
    if not 1 <= args.workers <= MAX_WORKERS:
        raise BadInput(f"--workers {args.workers}: give a whole number from 1 to {MAX_WORKERS}")
    if not _loopback(args.host) and token is None:
        raise BadInput(f"--host {args.host}: other machines could run any command as you; give --token T "
                       "(or serve on 127.0.0.1)")
    roots = [url_root(root) for root in (args.root or [os.getcwd()])]
    if missing := [root for root in roots if "://" not in root and not os.path.isdir(root)]:
        raise BadInput(f"--root {missing[0]}: no such folder")
    try:
        queue = Queue(Path(args.data).absolute())
    except DataFolderInUse:
        raise EnvironmentFault(f"--data {args.data}: another server uses it; stop it, or give another folder") from None
    except OSError as exc:
        raise EnvironmentFault(f"--data {args.data}: cannot keep the queue there: {exc.strerror}") from None
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
        sock.listen(128)  # connections queue from now on: the line below may be acted on at once
    except OSError as exc:
        queue.close()
        raise EnvironmentFault(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    service = Service(queue, roots, args.workers, args.executor, args.scheduler)
    app = make_app(service, token)
    add_dashboard(app, service, guard(token))
    host, port = sock.getsockname()[:2]
    service.start()
    print(f"helios-doit: serving http://{_url_host(host)}:{port}/ (data {queue.data}; roots {', '.join(roots)})",
          flush=True)
    try:
        # Event streams stay open for as long as a dashboard looks: a stop waits for them 2 s at most.
        uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2)
                       ).run(sockets=[sock])
    finally:
        service.stop()
    return 0


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# -- the clients -------------------------------------------------------------------------------

def _client_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", default=os.environ.get(SERVER_ENV) or DEFAULT_SERVER,
                        help=f"the service (default ${SERVER_ENV} or {DEFAULT_SERVER})")
    parser.add_argument("--token", default=os.environ.get(TOKEN_ENV), help=f"its token (default ${TOKEN_ENV})")


def add_submit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="JOB", help="the job file (a path the server sees, or a URL)")
    parser.add_argument("--priority", type=int, default=0, help="higher runs first (default 0)")
    parser.add_argument("--concurrency", type=int, default=1, metavar="N", help="chunks at once (default 1)")
    parser.add_argument("--retries", type=int, metavar="N")
    parser.add_argument("--retry-delay", type=float, metavar="SECONDS")
    parser.add_argument("--chunk-timeout", type=float, metavar="SECONDS")
    parser.add_argument("--keep-going", action="store_true", default=None)
    parser.add_argument("--retime", action="store_true", default=None)
    parser.add_argument("--merge", choices=["builtin", "command"])
    parser.add_argument("--output-root", metavar="DIR")
    _client_arguments(parser)


def submit(args: argparse.Namespace) -> int:
    job = args.file if "://" in args.file else os.path.abspath(args.file)
    body = {"job": job, "priority": args.priority, "concurrency": args.concurrency, "retries": args.retries,
            "retryDelay": args.retry_delay, "chunkTimeout": args.chunk_timeout, "keepGoing": args.keep_going,
            "retime": args.retime, "merge": args.merge,
            "outputRoot": os.path.abspath(args.output_root) if args.output_root else None}
    reply = _call(args, "POST", "/api/jobs", {k: v for k, v in body.items() if v is not None})
    print(reply["id"])
    return 0


def add_jobs_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", nargs="?", metavar="ID", help="one job (default: all of them)")
    parser.add_argument("action", nargs="?", choices=ACTIONS, help="what to do with it")
    parser.add_argument("--json", action="store_true", help="print the API's JSON")
    _client_arguments(parser)


def jobs(args: argparse.Namespace) -> int:
    if args.action and not args.id:
        raise BadInput(f"jobs {args.action}: which job? helios-doit jobs ID {args.action}")
    if args.action == "delete":
        _call(args, "DELETE", f"/api/jobs/{args.id}")
        print(f"deleted job {args.id} (its rendered files are kept)")
        return 0
    if args.action:
        status = _call(args, "POST", f"/api/jobs/{args.id}/{args.action}")
        print(_job_line(status))
        return 0
    reply = _call(args, "GET", f"/api/jobs/{args.id}" if args.id else "/api/jobs")
    if args.json:
        print(json.dumps(reply, indent=2))
    elif args.id:
        print(_job_line(reply))
        for chunk in reply["chunks"]:
            message = f"  {chunk['message']}" if chunk.get("message") else ""
            print(f"  chunk {chunk['id']}: {chunk['state']} ({chunk['framesDone']}/{chunk['frames']} frames){message}")
        print(f"  merge: {reply['merge']['state']}")
    else:
        for status in reply["jobs"]:
            print(_job_line(status))
    return 0


def _job_line(status: dict[str, Any]) -> str:
    error = f"; {status['error']}" if status.get("error") else ""
    return (f"{status['id']}  {status['state']:<9}  {status['progress']:5.1f}%  priority {status['priority']}  "
            f"{status['completedChunks']}/{status['totalChunks']} chunks  {status['job']}{error}")


def _call(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """One request; a refusal is its line(s), exit 2; a server that does not answer, exit 1."""
    url = args.server.rstrip("/") + path
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {args.token}"} if args.token else {})
    request = urllib.request.Request(url, json.dumps(body).encode() if body is not None else None, headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            data = response.read()
    except urllib.error.HTTPError as exc:
        said = _said(exc.read())
        if exc.code == 401:
            raise BadInput(f"{args.server}: a token is needed: --token T or ${TOKEN_ENV}") from None
        raise BadInput(*said) if said else BadInput(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise EnvironmentFault(f"{args.server}: no answer ({reason}); is `helios-doit serve` running there?") from None
    return json.loads(data) if data else {}


def _said(data: bytes) -> list[str]:
    try:
        body = json.loads(data)
    except ValueError:
        return []
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        return [str(line) for line in body["errors"]]
    if isinstance(body, dict) and body.get("error"):
        return [str(body["error"])]
    if isinstance(body, dict) and isinstance(body.get("detail"), list):  # FastAPI's own check of the body
        return [f"{'.'.join(str(p) for p in item.get('loc', [])[1:])}: {item.get('msg')}" for item in body["detail"]]
    return []


def _module(add: Any, run: Any) -> Any:
    return argparse.Namespace(add_arguments=add, run=run)


SERVE = _module(add_serve_arguments, serve)
SUBMIT = _module(add_submit_arguments, submit)
JOBS = _module(add_jobs_arguments, jobs)
