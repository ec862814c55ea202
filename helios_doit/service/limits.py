"""What a client may make the server hold: a request body of at most `MAX_BODY`, refused before
anything parses it or checks the token (a 200 MB login would otherwise be read and parsed whole,
and a client that sends it needs no token to make the server hold it).
"""
from __future__ import annotations

import json
from typing import Any, Awaitable, Callable, MutableMapping

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: The largest request body read, in bytes: a job submission is a few hundred.
MAX_BODY = 2**20


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
