"""What a client may make the server hold: a request body of at most `MAX_BODY`, refused before
anything parses it or checks the token (a 200 MB login would otherwise be read and parsed whole,
and a client that sends it needs no token to make the server hold it); and a connection only as
long as its request takes to arrive, `REQUEST_TIMEOUT` at most (uvicorn waits for a request head
for ever, and counts every waiting connection against its limit: 512 idle sockets, and every
other client was told 503 for good).
"""
from __future__ import annotations

import asyncio
import json
from typing import Any, Awaitable, Callable, MutableMapping

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: The largest request body read, in bytes: a job submission is a few hundred.
MAX_BODY = 2**20
#: Seconds a request may take to arrive whole (head and body) once the server waits for it.
REQUEST_TIMEOUT = 10.0
#: The least it may be set to: less, and every connection is closed before its request could arrive.
MIN_REQUEST_TIMEOUT = 0.1
#: Sets REQUEST_TIMEOUT for a server as it starts.
REQUEST_TIMEOUT_ENV = "HELIOS_DOIT_REQUEST_TIMEOUT"


class BodyLimit:
    """ASGI middleware: a body over `limit` bytes is 413 with one line. Said at once when its
    Content-Length is over; a body without one (chunked) is counted as it arrives and read here,
    whole, before the app sees a byte of it, so no route parses a part of a body to be refused.
    The connection is closed after the refusal: the rest of the body is not read."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], limit: int = MAX_BODY):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = next((value for name, value in scope["headers"] if name == b"content-length"), None)
        if length is not None and length.strip().isdigit() and int(length) > self.limit:
            await self._refuse(send)
            return
        arrived: list[Message] = []
        size = 0
        while True:
            message = await receive()
            arrived.append(message)
            if message["type"] != "http.request":  # the client went away: the app is told so
                break
            size += len(message.get("body", b""))
            if size > self.limit:
                await self._refuse(send)
                return
            if not message.get("more_body", False):
                break

        async def replayed() -> Message:
            """What arrived, then (for an event stream, say: a disconnect) whatever comes next."""
            return arrived.pop(0) if arrived else await receive()

        await self.app(scope, replayed, send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"error": f"the request's body is over {self.limit / 2**20:g} MiB; a job submission "
                                    "is a few hundred bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class RequestDeadline(H11Protocol):
    """uvicorn's HTTP/1.1 protocol (h11: pure Python, always there; httptools would be chosen by
    uvicorn whenever installed) with a deadline: from the moment the server waits for a request
    (a connection opened, an answer finished on a kept-alive one), the request must have arrived
    whole within `timeout` seconds, else the connection is closed. Once a request is in, there is
    no deadline: an event stream answers for as long as its client reads."""

    timeout = REQUEST_TIMEOUT
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):  # a whole request is in
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # the next request, when one was sent along, is read here
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def with_deadline(seconds: float) -> type[RequestDeadline]:
    """The protocol class for uvicorn's `http=`, with its deadline."""
    return type("RequestDeadline", (RequestDeadline,), {"timeout": seconds})
