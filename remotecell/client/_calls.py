"""How ``AsyncClient``'s coroutines reach gRPC: a small ``_Calls`` interface, and its
``grpc.aio`` implementation on the caller's own event loop (``_blocking`` has the other,
over blocking stubs)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any, Protocol

import grpc

from remotecell.client import transport
from remotecell.client.config import Endpoint


class _Stream(Protocol):
    """A server stream's messages; ``cancel()`` ends it from another thread."""

    def __aiter__(self) -> AsyncIterator[Any]: ...

    def cancel(self) -> bool: ...


class _Calls(Protocol):
    """How the coroutines reach the control plane's RPCs (by method name)."""

    async def unary(
        self, method: str, request: Any, timeout: float | None, wait_for_ready: bool = False
    ) -> Any: ...

    async def stream_in(self, method: str, requests: Iterator[Any], timeout: float | None) -> Any:
        """A client-streaming call: sends ``requests``, returns the one reply."""
        ...

    def stream_out(self, method: str, request: Any, timeout: float | None = None) -> _Stream:
        """A server-streaming call, started at once."""
        ...

    async def sleep(self, seconds: float) -> None: ...

    async def close(self) -> None: ...


class _Watch(Protocol):
    """Who follows a job's events from another thread and may stop following."""

    closed: bool

    def opened(self, stream: _Stream) -> bool:
        """Records the stream now being read; False when following already stopped."""
        ...


class _AioStream:
    def __init__(self, call: Any) -> None:
        self._call = call

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[Any]:
        while True:
            message = await self._call.read()
            if message is grpc.aio.EOF:
                return
            yield message

    def cancel(self) -> bool:
        return bool(self._call.cancel())


class _AioCalls:
    """Over ``grpc.aio``, on the event loop of the first call."""

    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint
        self._md = transport.metadata(endpoint)
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None

    def _method(self, name: str) -> Any:
        if self._stub is None:
            # Made on first use: an asyncio channel belongs to the loop it is used on.
            self._channel = transport.aio_channel(self._endpoint)
            self._stub = transport.control_plane_stub(self._channel)
        return getattr(self._stub, name)

    async def unary(
        self, method: str, request: Any, timeout: float | None, wait_for_ready: bool = False
    ) -> Any:
        call = self._method(method)
        return await call(
            request, metadata=self._md, timeout=timeout, wait_for_ready=wait_for_ready
        )

    async def stream_in(self, method: str, requests: Iterator[Any], timeout: float | None) -> Any:
        return await self._method(method)(requests, metadata=self._md, timeout=timeout)

    def stream_out(self, method: str, request: Any, timeout: float | None = None) -> _Stream:
        return _AioStream(self._method(method)(request, metadata=self._md, timeout=timeout))

    def stream_both(self, method: str) -> Any:
        """A bidirectional call, started at once: ``write``, ``read`` and ``cancel`` on
        this loop."""
        return self._method(method)(metadata=self._md)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
