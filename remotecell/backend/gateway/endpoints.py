"""Deployed endpoints over HTTP: ``/endpoints/NAME`` (and ``/endpoints/NAME/...`` for an
ASGI app), on the control plane's HTTP side.

A request is checked in the order that bounds what an unauthenticated caller costs:
the name (404), the body's size (413, read no further than the deployment's
``max_body_bytes``), then the credential (401; another user's deployment is 404, as
missing) unless the deployment is public. It becomes one call (``pb.Call.http``) that
the deployment manager hands to a replica; the answer streams back as it comes:

* a handler's return value: 200 with its JSON;
* a generator's items: chunked, as text (string items), NDJSON, or server-sent events
  when the client accepts ``text/event-stream``;
* an ASGI app's response: its status, headers and body pieces as the app sends them;
* a failure: its status (``contract.deployments.HTTP_STATUS``) and a JSON body with the
  reason and the request id (the traceback only where the deployment has ``debug``);
  503 carries ``Retry-After``.

Every response carries ``x-request-id``, the id the deployment's log names the call by.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from remotecell._proto import pb
from remotecell.backend.auth import DENIED, bearer
from remotecell.backend.deployments.manager import DeploymentManager
from remotecell.backend.state.credentials import Principal
from remotecell.contract import deployments as rules
from remotecell.contract.errors import ConfigError

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

#: Headers not handed to an app: the credential stays with the gateway.
_WITHHELD = {b"authorization"}


class _TooLarge(Exception):
    pass


class EndpointGateway:
    """The ASGI app serving ``/endpoints/...``; ``lookup`` says whose a token is."""

    def __init__(
        self, manager: DeploymentManager, lookup: Callable[[str], Principal | None]
    ) -> None:
        self.manager = manager
        self.lookup = lookup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        rest = scope["path"][len(rules.PATH_PREFIX) :]
        name, _, below = rest.partition("/")
        try:
            rules.check_name(name)
        except ConfigError:
            return await _error(send, 404, f"no endpoint at {scope['path'][:200]!r}")
        settings = self.manager.settings_of(name)
        if settings is None:
            return await _error(send, 404, _missing(name))
        headers = [(k.lower(), v) for k, v in scope.get("headers", [])]
        try:
            body = await _read_body(receive, headers, settings.max_body_bytes)
        except _TooLarge:
            return await _error(
                send,
                413,
                f"the request body is over {settings.max_body_bytes} bytes, this endpoint's "
                "max_body_bytes; send less, or deploy with a larger max_body_bytes",
            )
        if not settings.public:
            principal = self._principal(headers)
            if principal is None:
                return await _error(
                    send,
                    401,
                    f"remotecell: {DENIED}; send a user's token as 'Authorization: Bearer "
                    "TOKEN' (`remotecell token create`), or deploy with public=True",
                    extra=[(b"www-authenticate", b'Bearer realm="remotecell"')],
                )
            if not self.manager.may_call(name, principal):
                return await _error(send, 404, _missing(name))
        kind = self.manager.kind_of(name)
        if kind in ("function", "generator") and (below or scope["method"] != "POST"):
            where = f"/endpoints/{name}"
            return await _error(
                send,
                405 if not below else 404,
                f"this endpoint takes POST {where} with a JSON object of the handler's arguments",
                extra=[(b"allow", b"POST")],
            )
        request = pb.HttpRequest(method=scope["method"], path="/" + below, body=body)
        if kind not in ("function", "generator"):  # an app (or not known yet) gets it all
            request.query = scope.get("query_string", b"")
            request.headers.extend(
                pb.HttpHeader(name=k, value=v) for k, v in headers if k not in _WITHHELD
            )
        pieces = _Pieces()
        call_id = self.manager.call(name, pb.Call(http=request), pieces.put)
        sse = any(k == b"accept" and b"text/event-stream" in v for k, v in headers)
        try:
            await _respond(send, pieces, call_id, sse, settings.debug)
        except OSError:  # the client went away
            self.manager.abandon(call_id)
        except asyncio.CancelledError:
            self.manager.abandon(call_id)
            raise

    def _principal(self, headers: list[tuple[bytes, bytes]]) -> Principal | None:
        """The user whose token the request carries, as gRPC calls carry it; None for no
        one, or for a runner's credential."""
        token = bearer(
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in headers if k == b"authorization"
        )
        principal = self.lookup(token) if token else None
        return None if principal is None or principal.is_runner else principal


def _missing(name: str) -> str:
    return f"no deployment named {name!r} takes calls; `remotecell endpoint ls` lists yours"


async def _read_body(receive: Receive, headers: list[tuple[bytes, bytes]], limit: int) -> bytes:
    """The request's body, refusing (``_TooLarge``) past ``limit`` bytes without reading
    the rest."""
    for key, value in headers:
        if key == b"content-length":
            try:
                if int(value) > limit:
                    raise _TooLarge
            except ValueError:
                pass
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


class _Pieces:
    """A call's answer pieces as they come: what an ``asyncio.Queue`` would do, for less
    (one of these is made per request)."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: deque[pb.CallResult] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def put(self, piece: pb.CallResult) -> None:
        self._items.append(piece)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self) -> pb.CallResult:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()


async def _respond(send: Send, pieces: _Pieces, call_id: str, sse: bool, debug: bool) -> None:
    rid = (b"x-request-id", call_id.encode())
    first = await pieces.get()
    if first.HasField("error"):
        return await _failure(send, first.error, call_id, debug)
    if first.HasField("head"):  # an ASGI app's response
        head = [(h.name, h.value) for h in first.head.headers]
        await send(
            {"type": "http.response.start", "status": first.head.status, "headers": [*head, rid]}
        )
        piece = first
        while True:
            if piece.body or piece.done:
                await send(
                    {"type": "http.response.body", "body": piece.body, "more_body": not piece.done}
                )
            if piece.done:
                return
            piece = await pieces.get()
    if first.done and not first.item:  # a plain handler's return value
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(first.json)).encode()),
                    rid,
                ],
            }
        )
        await send({"type": "http.response.body", "body": first.json})
        return
    # A generator's items, streamed as they come.
    text = not sse and first.item and first.json[:1] == b'"'
    media = (
        b"text/event-stream"
        if sse
        else b"text/plain; charset=utf-8"
        if text
        else b"application/x-ndjson"
    )
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", media), (b"cache-control", b"no-cache"), rid],
        }
    )
    piece = first
    while True:
        if piece.item:
            await send(
                {
                    "type": "http.response.body",
                    "body": _item(piece.json, sse, text),
                    "more_body": True,
                }
            )
        elif piece.HasField("error"):
            note = json.dumps({"error": piece.error.message, "request_id": call_id})
            chunk = f"event: error\ndata: {note}\n\n" if sse else f"\n{note}\n"
            await send({"type": "http.response.body", "body": chunk.encode(), "more_body": True})
        if piece.done:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        piece = await pieces.get()


def _item(data: bytes, sse: bool, text: bool) -> bytes:
    if sse:
        return b"data: " + data + b"\n\n"
    if text:
        try:
            return str(json.loads(data)).encode()
        except ValueError:
            return data
    return data + b"\n"


async def _failure(send: Send, error: pb.CallError, call_id: str, debug: bool) -> None:
    status = rules.HTTP_STATUS.get(error.kind, 500)
    body: dict[str, Any] = {"error": error.message, "request_id": call_id}
    if error.type_name:
        body["type"] = error.type_name
    if debug and error.traceback:
        body["traceback"] = error.traceback
    extra = [(b"retry-after", b"1")] if status == 503 else []
    await _error(send, status, body, extra=[*extra, (b"x-request-id", call_id.encode())])


async def _error(
    send: Send,
    status: int,
    reason: str | dict[str, Any],
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = reason if isinstance(reason, dict) else {"error": reason}
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *(extra or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


def routed(app: Any, gateway: EndpointGateway) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """``app`` with ``/endpoints/...`` served by ``gateway``."""

    async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(rules.PATH_PREFIX):
            await gateway(scope, receive, send)
        else:
            await app(scope, receive, send)

    return dispatch


__all__ = ["EndpointGateway", "routed"]
