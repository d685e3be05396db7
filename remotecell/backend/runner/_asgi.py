"""An ASGI app behind a replica (``_serve.py``): one HTTP request through it, and its
lifespan.

A request arrives whole (``pb.Call.http``); the app's response goes out as it sends it:
its start as a ``head`` piece, each body message as ``body`` pieces of at most
``PIECE_BYTES``, the last with ``done``. The lifespan's startup runs before the replica is
ready and its shutdown as the replica ends; an app that takes no lifespan has none.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import urllib.parse
from collections.abc import Callable
from typing import Any

from remotecell._proto import pb
from remotecell.contract import wire

log = logging.getLogger("remotecell.runner")

#: The largest body piece one answer carries.
PIECE_BYTES = wire.CHUNK_BYTES
#: How long an ASGI app's lifespan shutdown may take.
LIFESPAN_SHUTDOWN_S = 30.0
ASGI_VERSION = {"version": "3.0", "spec_version": "2.3"}


class NoResponse(Exception):
    """The app returned without starting a response."""


def is_asgi(obj: Any) -> bool:
    """Whether ``obj`` looks like an ASGI app: ``app(scope, receive, send)``, a function
    with those parameters or an object (Starlette, FastAPI) called with three."""
    if not callable(obj) or isinstance(obj, type):
        return False
    try:
        params = list(inspect.signature(obj).parameters.values())
    except (TypeError, ValueError):
        return False
    if [p.name for p in params] == ["scope", "receive", "send"]:
        return True
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return (
        not inspect.isroutine(obj)
        and len(params) == 3
        and all(p.kind in positional for p in params)
        and inspect.iscoroutinefunction(type(obj).__call__)
    )


class AsgiCall:
    """One HTTP request through an ASGI app; its response goes out piece by piece."""

    def __init__(
        self,
        app: Any,
        call: pb.Call,
        state: dict[str, Any],
        send: Callable[[list[pb.CallResult]], None],
        late_failure: Callable[[BaseException], None],
    ) -> None:
        self.app = app
        self.call = call
        self.state = state
        self._send = send
        #: Told of an exception the app raised after its response was complete.
        self._late_failure = late_failure
        self.started = False
        self.done = False
        self._body_read = False
        self._disconnect = asyncio.Event()

    def scope(self) -> dict[str, Any]:
        http = self.call.http
        path = http.path or "/"
        if not path.startswith("/"):
            path = "/" + path
        return {
            "type": "http",
            "asgi": dict(ASGI_VERSION),
            "http_version": "1.1",
            "method": (http.method or "GET").upper(),
            "scheme": "http",
            "path": urllib.parse.unquote(path),
            "raw_path": path.encode("utf-8", "surrogateescape"),
            "query_string": bytes(http.query),
            "root_path": "",
            "headers": [(bytes(h.name).lower(), bytes(h.value)) for h in http.headers],
            "client": None,
            "server": None,
            "state": dict(self.state),
        }

    async def receive(self) -> dict[str, Any]:
        if not self._body_read:
            self._body_read = True
            return {"type": "http.request", "body": bytes(self.call.http.body), "more_body": False}
        await self._disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        cid = self.call.call_id
        kind = message.get("type")
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError("the app started its response twice")
            self.started = True
            headers = [
                pb.HttpHeader(name=bytes(name), value=bytes(value))
                for name, value in message.get("headers", ())
            ]
            head = pb.HttpHead(status=int(message.get("status", 200)), headers=headers)
            self._send([pb.CallResult(call_id=cid, head=head)])
        elif kind == "http.response.body":
            if not self.started:
                raise RuntimeError("the app sent a response body before its start")
            if self.done:
                return
            body = bytes(message.get("body", b""))
            more = bool(message.get("more_body", False))
            pieces = [body[i : i + PIECE_BYTES] for i in range(0, len(body), PIECE_BYTES)]
            results = [pb.CallResult(call_id=cid, body=piece) for piece in pieces]
            if not more:
                self.done = True
                if results:
                    results[-1].done = True
                else:
                    results.append(pb.CallResult(call_id=cid, done=True))
            if results:
                self._send(results)
            if self.done:
                self._disconnect.set()

    async def run(self) -> None:
        try:
            await self.app(self.scope(), self.receive, self.send)
        except BaseException as exc:
            if self.done:  # the answer is complete: the failure only goes to the log
                self._late_failure(exc)
                return
            raise
        finally:
            self._disconnect.set()
        if not self.started:
            raise NoResponse("the app returned without sending a response")
        if not self.done:
            self.done = True
            self._send([pb.CallResult(call_id=self.call.call_id, done=True)])


class Lifespan:
    """An ASGI app's lifespan: startup before the replica is ready, shutdown as it ends.
    An app that does not take lifespan messages (it raises) has none."""

    def __init__(self, app: Any, state: dict[str, Any]) -> None:
        self.app = app
        self.state = state
        self.supported = False
        self._in: asyncio.Queue[dict[str, Any]] | None = None
        self._out: asyncio.Queue[dict[str, Any]] | None = None
        self._task: asyncio.Task[Any] | None = None

    async def _next(self) -> dict[str, Any] | None:
        """The app's next message, or None when it ended without one."""
        assert self._out is not None and self._task is not None
        getter = asyncio.ensure_future(self._out.get())
        await asyncio.wait({getter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            return getter.result()
        getter.cancel()
        return None

    async def startup(self) -> str | None:
        """Runs the startup; returns why it failed, or None."""
        self._in, self._out = asyncio.Queue(), asyncio.Queue()
        scope = {"type": "lifespan", "asgi": dict(ASGI_VERSION), "state": self.state}
        self._task = asyncio.ensure_future(self.app(scope, self._in.get, self._out.put))
        await self._in.put({"type": "lifespan.startup"})
        message = await self._next()
        if message is None:  # it ended: no lifespan (its exception says it does not take one)
            if not self._task.cancelled() and self._task.exception() is not None:
                log.info("the ASGI app takes no lifespan: %r", self._task.exception())
            return None
        if message.get("type") == "lifespan.startup.failed":
            return str(message.get("message") or "the app said so, without a message")
        self.supported = message.get("type") == "lifespan.startup.complete"
        return None

    async def shutdown(self) -> None:
        assert self._in is not None and self._task is not None
        await self._in.put({"type": "lifespan.shutdown"})
        try:
            message = await asyncio.wait_for(self._next(), LIFESPAN_SHUTDOWN_S)
        except asyncio.TimeoutError:
            message = {"type": "lifespan.shutdown.failed", "message": "it took too long"}
        if message is not None and message.get("type") == "lifespan.shutdown.failed":
            raise RuntimeError(str(message.get("message") or "the app said so"))
        if not self._task.done():
            self._task.cancel()
