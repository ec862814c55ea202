"""`helios-doit serve`, and its clients `helios-doit submit` and `helios-doit jobs`.

The server binds loopback unless told otherwise, and refuses any other address without a token:
a job's commands are arbitrary shell, so whoever can submit one can run anything as the server's
user. The clients speak its HTTP API (urllib, nothing to install) and say every fault in one line.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import http.client
import ipaddress
import json
import os
import resource
import signal
import socket
import sqlite3
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable

from ..core.errors import BadInput, EnvironmentFault
from ..executors.registry import ADAPTERS
from ..tasks.options import MAX_WORKERS

#: Where the clients find the server, and their token, unless told.
SERVER_ENV, TOKEN_ENV = "HELIOS_DOIT_SERVER", "HELIOS_DOIT_TOKEN"
DEFAULT_PORT = 8765
DEFAULT_SERVER = f"http://127.0.0.1:{DEFAULT_PORT}"
ACTIONS = ("pause", "resume", "cancel", "retry", "delete")
#: Connections the server answers at once; file descriptors stay for its queue and runners.
MAX_CONNECTIONS = 512


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
    from .limits import with_deadline
    from .queue import DataFolderInUse, Queue
    from .service import Service

    token, roots = _checked(args)
    request_timeout = _request_timeout()
    sock = _listening(args.host, args.port)
    _more_files()
    try:
        queue = Queue(Path(args.data).absolute())
    except DataFolderInUse:
        sock.close()
        raise EnvironmentFault(f"--data {args.data}: another server uses it; stop it, or give another folder") from None
    except (OSError, sqlite3.Error) as exc:
        sock.close()
        raise EnvironmentFault(f"--data {args.data}: cannot keep the queue there: "
                               f"{getattr(exc, 'strerror', None) or exc}") from None
    service = Service(queue, roots, args.workers, args.executor, args.scheduler)
    host, port = sock.getsockname()[:2]
    app = make_app(service, token, _hosts(args.host, port) if token is None else None)
    add_dashboard(app, service, guard(token), token)
    try:
        service.start()
    except sqlite3.Error as exc:
        queue.close()
        sock.close()
        raise EnvironmentFault(f"--data {args.data}: the queue cannot be written ({exc}); free some space") from None
    print(f"helios-doit: serving http://{_url_host(host)}:{port}/ (data {queue.data}; roots {', '.join(roots)})",
          flush=True)
    # uvicorn handles SIGINT and SIGTERM while it serves, then raises them again: they end here.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _stopped)
    try:
        # Event streams stay open for as long as a dashboard looks: a stop waits for them 2 s at most.
        # At most so many connections at once (an event stream is one): beyond, 503, not a server out of files.
        # A connection is held only while its request arrives (see limits.RequestDeadline).
        uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2,
                                      limit_concurrency=MAX_CONNECTIONS, timeout_keep_alive=5,
                                      http=with_deadline(request_timeout))).run(sockets=[sock])
    except _Stopped:
        pass
    finally:
        service.stop()
    print("helios-doit: stopped; the jobs it was running go on when it starts again", flush=True)
    return 0


def _checked(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    """(the token, the served roots): every argument checked before anything is made, so a refusal
    is one line and leaves no data folder behind."""
    from .queue import not_ours
    from .service import url_root

    token = args.token or os.environ.get(TOKEN_ENV) or None
    if not args.data:
        raise BadInput("--data '': give the queue's folder, e.g. --data .helios-doit-serve")
    if why := not_ours(Path(args.data)):
        raise BadInput(f"--data {args.data}: {why}")
    if not 0 <= args.port <= 65535:
        raise BadInput(f"--port {args.port}: give a port from 0 to 65535")
    if not 1 <= args.workers <= MAX_WORKERS:
        raise BadInput(f"--workers {args.workers}: give a whole number from 1 to {MAX_WORKERS}")
    if token is not None and not all("!" <= char <= "~" for char in token):
        # An HTTP header and a cookie carry it: anything else could never be sent, or never match.
        raise BadInput("--token: give printable ASCII without spaces (e.g. openssl rand -hex 16)")
    if args.scheduler and args.executor != "dask":
        raise BadInput(f"--scheduler {args.scheduler}: only --executor dask has a scheduler")
    try:
        args.host.encode("idna")  # as the socket will: a name no DNS can carry is said here, not as a traceback
    except UnicodeError:
        raise BadInput(f"--host {args.host}: not an address or host name; give e.g. 127.0.0.1 or 0.0.0.0") from None
    if not _loopback(args.host) and token is None:
        raise BadInput(f"--host {args.host}: other machines could run any command as you; give --token T "
                       "(or serve on 127.0.0.1)")
    roots = [url_root(root) for root in (args.root or [os.getcwd()])]
    if missing := [root for root in roots if "://" not in root and not os.path.isdir(root)]:
        raise BadInput(f"--root {missing[0]}: no such folder")
    return token, roots


def _request_timeout() -> float:
    """Seconds a request may take to arrive: $HELIOS_DOIT_REQUEST_TIMEOUT, else 10."""
    from .limits import MIN_REQUEST_TIMEOUT, REQUEST_TIMEOUT, REQUEST_TIMEOUT_ENV

    given = os.environ.get(REQUEST_TIMEOUT_ENV)
    if not given:
        return REQUEST_TIMEOUT
    try:
        seconds = float(given)
    except ValueError:
        seconds = 0.0
    if not MIN_REQUEST_TIMEOUT <= seconds <= 3600:  # less: every connection closed before its request could arrive
        raise BadInput(f"{REQUEST_TIMEOUT_ENV}={given}: give seconds, from {MIN_REQUEST_TIMEOUT:g} to 3600")
    return seconds


def _listening(host: str, port: int) -> socket.socket:
    """The server's socket, bound before the queue is opened: an address this machine does not have
    is said before any folder is made. Connections queue from the moment it listens."""
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as exc:
        raise EnvironmentFault(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        hint = " (another server? --port 0 takes any free port)" if exc.errno == errno.EADDRINUSE else ""
        raise EnvironmentFault(f"cannot listen on {host}:{port}: {exc.strerror}{hint}") from None
    return sock


class _Stopped(Exception):
    pass


def _stopped(signum: int, frame: object) -> None:
    raise _Stopped()


def _more_files() -> None:
    """As many open files as the system lets this user have: each connection and runner takes some."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _hosts(host: str, port: int) -> set[str]:
    """The Host headers a browser sends for this server (no token: loopback only)."""
    names = {"localhost", "127.0.0.1", "[::1]", _url_host(host)}
    return {f"{name}:{port}" for name in names} | ({*names} if port == 80 else set())


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
    _said_as(args, lambda: print(str(reply["id"])))
    return 0


def add_jobs_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", nargs="?", metavar="ID", help="one job (default: all of them)")
    parser.add_argument("action", nargs="?", choices=ACTIONS, help="what to do with it")
    parser.add_argument("--json", action="store_true", help="print the API's JSON")
    _client_arguments(parser)


def jobs(args: argparse.Namespace) -> int:
    if args.action and not args.id:
        raise BadInput(f"jobs {args.action}: which job? helios-doit jobs ID {args.action}")
    if args.id and not all("!" <= char <= "~" for char in args.id):
        raise BadInput(f"jobs {args.id}: no job has that id; helios-doit jobs lists them (e.g. j3f9a1c2d4e)")
    where = f"/api/jobs/{urllib.parse.quote(args.id, safe='')}" if args.id else "/api/jobs"
    if args.action == "delete":
        _call(args, "DELETE", where)
        print(f"deleted job {args.id} (its rendered files are kept)")
        return 0
    if args.action:
        status = _call(args, "POST", f"{where}/{args.action}")
        _said_as(args, lambda: print(_job_line(status)))
        return 0
    reply = _call(args, "GET", where)
    if args.json:
        print(json.dumps(reply, indent=2))
    elif args.id:
        def job() -> None:
            print(_job_line(reply))
            for chunk in reply["chunks"]:
                message = f"  {chunk['message']}" if chunk.get("message") else ""
                print(f"  chunk {chunk['id']}: {chunk['state']} ({chunk['framesDone']}/{chunk['frames']} frames){message}")
            print(f"  merge: {reply['merge']['state']}")
        _said_as(args, job)
    else:
        _said_as(args, lambda: [print(_job_line(status)) for status in reply["jobs"]])
    return 0


def _said_as(args: argparse.Namespace, show: Callable[[], object]) -> None:
    """Show a reply; one that is not the service's JSON is said as such (exit 1), never a traceback."""
    try:
        show()
    except (KeyError, TypeError, ValueError, AttributeError):
        raise EnvironmentFault(f"{args.server}: the answer is not helios-doit's API; is it a helios-doit server?") from None


def _job_line(status: dict[str, Any]) -> str:
    error = f"; {status['error']}" if status.get("error") else ""
    return (f"{status['id']}  {status['state']:<9}  {status['progress']:5.1f}%  priority {status['priority']}  "
            f"{status['completedChunks']}/{status['totalChunks']} chunks  {status['job']}{error}")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """The service never redirects its API: a redirect would take the token to another host."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        raise urllib.error.HTTPError(req.full_url, code, f"redirected to {newurl}; not followed", headers, fp)


_OPENER = urllib.request.build_opener(_NoRedirect)
#: Seconds a request may take in all (a server that trickles is given up on).
DEADLINE = 60.0


def _call(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """One request; a refusal is its line(s), exit 2; a server that does not answer, or fails, exit 1."""
    url = _server_url(args.server) + path
    try:
        auth = {"Authorization": f"Bearer {args.token}".encode("latin-1").decode("latin-1")} if args.token else {}
        request = urllib.request.Request(url, json.dumps(body or {}).encode() if method != "GET" else None,
                                         {"Content-Type": "application/json", **auth}, method=method)
    except (UnicodeError, ValueError) as exc:
        raise BadInput(f"{'--token' if isinstance(exc, UnicodeError) else '--server'}: not usable ({exc}); give "
                       "plain ASCII, and a server such as http://127.0.0.1:8765") from None
    deadline = time.monotonic() + DEADLINE
    try:
        with _OPENER.open(request, timeout=10) as response:
            data = b""
            while block := response.read1(65536):
                data += block
                if time.monotonic() > deadline or len(data) > 256 * 2**20:
                    raise TimeoutError(f"no whole answer within {DEADLINE:g} s")
    except urllib.error.HTTPError as exc:
        said = _said(exc.read(65536) if exc.fp else b"")
        if exc.code == 401:
            raise BadInput(f"{args.server}: a token is needed: --token T or ${TOKEN_ENV}") from None
        if exc.code >= 500 or exc.code < 400:
            raise EnvironmentFault(*said) if said else EnvironmentFault(f"{url}: HTTP {exc.code} {exc.reason}") from None
        raise BadInput(*said) if said else BadInput(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise EnvironmentFault(f"{args.server}: no answer ({reason}); is `helios-doit serve` running there?") from None
    try:
        return json.loads(data) if data else {}
    except ValueError:
        raise EnvironmentFault(f"{args.server}: the answer is not JSON; is it a helios-doit server?") from None


def _server_url(server: str) -> str:
    """The server's address, checked before anything is sent: a port no server can have, or no
    web address at all, is the user's to fix (exit 2), never "no answer"."""
    try:
        parts = urllib.parse.urlsplit(server)
    except ValueError as exc:  # http://[::1
        raise BadInput(f"--server {server}: not a web address ({exc}); give a server such as {DEFAULT_SERVER}") from None
    try:
        parts.port  # noqa: B018 (read to check it: a ValueError when it is no port)
        why = None if parts.scheme in ("http", "https") and parts.hostname else "not an http:// address"
    except ValueError:
        why = "its port is not a number from 0 to 65535"
    if why:
        raise BadInput(f"--server {server}: {why}; give a server such as {DEFAULT_SERVER}")
    return server.rstrip("/")


def _said(data: bytes) -> list[str]:
    try:
        body = json.loads(data)
    except ValueError:
        return []
    try:
        return _lines_of(body)
    except (TypeError, AttributeError, ValueError):
        return []


def _lines_of(body: Any) -> list[str]:
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
