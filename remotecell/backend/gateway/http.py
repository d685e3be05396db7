"""The control plane's HTTP side: an ASGI app (starlette) served by uvicorn in the
control plane's own event loop, next to gRPC.

Every route authenticates: the same bearer token as gRPC, compared in constant time
(``Authorization: Bearer TOKEN``; Prometheus sends it with ``authorization:
credentials_file``). It serves ``/metrics``, and deployed endpoints under
``/endpoints/`` (``gateway/endpoints.py``: each user's own token, or none for a public
endpoint).
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from remotecell.backend.gateway.endpoints import routed

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from remotecell.backend.gateway.endpoints import EndpointGateway
    from remotecell.backend.tls import Certificate

log = logging.getLogger("remotecell.http")

Endpoint = Callable[[Request], Awaitable[Response]]


def authenticated(token: str, endpoint: Endpoint) -> Endpoint:
    """``endpoint`` behind the control plane's bearer token."""
    expected = f"Bearer {token}".encode()

    async def guarded(request: Request) -> Response:
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            what = "a wrong" if given else "no"
            return PlainTextResponse(
                f"remotecell: {what} token; send the control plane's token as "
                "'Authorization: Bearer TOKEN' (it is in the data directory's token file)\n",
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="remotecell"'},
            )
        return await endpoint(request)

    return guarded


def make_app(
    token: str, routes: dict[str, Endpoint], gateway: EndpointGateway | None = None
) -> ASGIApp:
    """An app serving ``routes`` (path -> GET endpoint), each behind the token, and
    deployed endpoints through ``gateway``."""
    app = Starlette(
        routes=[
            Route(path, authenticated(token, ep), methods=["GET"]) for path, ep in routes.items()
        ]
    )
    return routed(app, gateway) if gateway is not None else app


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The control plane handles SIGTERM/SIGINT itself and stops this server.
        yield


class HTTPServer:
    """Serves an ASGI app on ``host:port`` (port 0: a free one) until :meth:`stop`, over
    TLS with ``certificate``."""

    def __init__(
        self, app: ASGIApp, host: str, port: int, certificate: Certificate | None = None
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP named, so that asyncio sets TCP_NODELAY on each accepted connection
        # (it checks the protocol): without it a kept-alive connection's next answer
        # waits ~40 ms for the client's delayed ACK.
        self._socket = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._socket.bind((host, port))
        self._socket.listen(128)
        self._socket.setblocking(False)
        bound = self._socket.getsockname()[1]
        scheme = "https" if certificate is not None else "http"
        self.url = (
            f"{scheme}://[{host}]:{bound}"
            if family == socket.AF_INET6
            else f"{scheme}://{host}:{bound}"
        )
        config = uvicorn.Config(
            app,
            log_level="warning",
            lifespan="off",
            access_log=False,
            proxy_headers=False,  # nothing proxies it: the client's address is its own
            server_header=False,
            ssl_certfile=str(certificate.cert_path) if certificate is not None else None,
            ssl_keyfile=str(certificate.key_path) if certificate is not None else None,
        )
        self._server = _Server(config)

    async def serve(self) -> None:
        await self._server.serve(sockets=[self._socket])

    async def stop(self) -> None:
        self._server.should_exit = True
