"""Calls of deployments, many at once over one ``Invoke`` stream per client.

A client opens the stream on its first call and keeps it: each call is one
``CallRequest`` (its id unique on the stream) and its answer comes back in pieces
(``CallResult``), interleaved with other calls' pieces. A reader (a task for
``AsyncClient``, a daemon thread for ``Client``) routes each piece by call id to the
caller's queue, so packing, sending and unpacking happen in the callers; a stream that
breaks fails the calls in flight on it, and the next call opens a new one.

Arguments travel as one ``Value`` (``values.pack({"args": ..., "kwargs": ...})``), large
buffers as blobs uploaded first; a result is a ``Value`` holding ``"result"``, a failure a
``CallError`` turned into the matching remotecell exception (:func:`failure`).
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any

import grpc

from remotecell._proto import pb
from remotecell.contract import values
from remotecell.contract.errors import (
    CallArgumentsError,
    CallTimeoutError,
    ConnectionError,
    DeploymentNotFoundError,
    EndpointUnavailableError,
    RemoteCellError,
    RemoteError,
    remote_error,
)
from remotecell.contract.values import Buffer

#: At most this many calls of one ``call_many`` are outstanding (sent and not yet
#: handed to the caller).
WINDOW = 1000
#: How often a blocking caller waiting for an answer wakes up, so that a kernel
#: interrupt (SIGINT) gets through.
_POLL = 0.1

Fetch = Callable[[str], Buffer]
#: Where a call's pieces go: a queue of (key, piece) where a piece is a ``CallResult``
#: or the exception that ended the stream.
Sink = Any

_ids = itertools.count(1)


def new_call_id() -> str:
    """A call id unique on this process's streams (hex of a counter)."""
    return format(next(_ids), "x")


def call_request(
    deployment: str, call_id: str, args: Iterable[Any], kwargs: Mapping[str, Any] | None
) -> tuple[pb.CallRequest, dict[str, memoryview]]:
    """The request of one call, and the blobs to upload before it is sent.

    Raises:
        ClosureError: an argument cannot be serialised.
    """
    packed = values.pack({"args": tuple(args), "kwargs": dict(kwargs or {})})
    request = pb.CallRequest(deployment=deployment, call_id=call_id, args=packed.values[0])
    return request, packed.blobs


def decode(value: pb.Value, fetch: Fetch, name: str = "result") -> Any:
    return values.unpack([value], fetch)[name]


def failure(error: pb.CallError, deployment: str, fetch: Fetch) -> RemoteCellError:
    """The exception a caller sees for a failed call.

    ``RAISED``: the handler's exception as its own type (where it unpickles here, else by
    its name as ``contract.errors.remote_error`` finds it), also a ``RemoteError``, with
    the remote traceback; ``ARGUMENTS``/``BAD_REQUEST``: ``CallArgumentsError``;
    ``UNAVAILABLE``: ``EndpointUnavailableError``; ``TIMEOUT``: ``CallTimeoutError``;
    ``NOT_FOUND``: ``DeploymentNotFoundError``; ``RESULT``: a ``RemoteError`` of kind
    ``"result"``.
    """
    where = f"deployment {deployment!r}"
    kind = error.kind
    if kind == pb.CallError.RAISED:
        exception: BaseException | None = None
        if error.HasField("exception"):
            try:
                loaded = values.unpack([error.exception], fetch).get("exception")
            except Exception:  # its class is not importable here: known by name instead
                loaded = None
            exception = loaded if isinstance(loaded, BaseException) else None
        return remote_error(
            error.type_name or "Exception",
            error.message,
            error.traceback.splitlines(),
            exception=exception,
        )
    if kind in (pb.CallError.ARGUMENTS, pb.CallError.BAD_REQUEST):
        return CallArgumentsError(f"{where} cannot take this call: {error.message}")
    if kind == pb.CallError.UNAVAILABLE:
        return EndpointUnavailableError(
            f"{where} could not take the call: {error.message} "
            f"(`remotecell endpoint logs {deployment}` says more)"
        )
    if kind == pb.CallError.NOT_FOUND:
        return DeploymentNotFoundError(error.message)
    if kind == pb.CallError.TIMEOUT:
        return CallTimeoutError(f"{where} did not answer in time: {error.message}")
    return RemoteError(
        error.type_name or "ResultError",
        error.message or "the result could not be sent back",
        error.traceback.splitlines(),
        kind="result",
    )


class Answer:
    """One call's pieces so far: its result, its items (a generator's), its failure."""

    __slots__ = ("deployment", "done", "error", "has_result", "items", "result")

    def __init__(self, deployment: str) -> None:
        self.deployment = deployment
        self.result: Any = None
        self.has_result = False
        self.items: list[Any] = []
        self.error: BaseException | None = None
        self.done = False

    def add(self, piece: pb.CallResult | BaseException, fetch: Fetch) -> Any:
        """Takes one piece; returns a generator's item when it is one, else ``_NONE``."""
        if isinstance(piece, BaseException):
            self.error, self.done = piece, True
            return _NONE
        out: Any = _NONE
        if piece.HasField("error"):
            self.error = failure(piece.error, self.deployment, fetch)
        elif piece.HasField("value"):
            value = decode(piece.value, fetch)
            if piece.item:
                self.items.append(value)
                out = value
            else:
                self.result, self.has_result = value, True
        self.done = self.done or piece.done
        return out

    def outcome(self) -> Any:
        """The call's value (a generator's: its items as a list); raises its failure."""
        if self.error is not None:
            raise self.error
        return self.result if self.has_result or not self.items else self.items


_NONE = object()


def _stream_ended(err: BaseException | None) -> RemoteCellError:
    if isinstance(err, RemoteCellError):
        return err
    return ConnectionError(
        "the control plane ended the stream of deployment calls"
        + (f" ({type(err).__name__}: {err})" if err is not None else "")
        + "; calls in flight failed, new calls open a new stream"
    )


# -- async: one stream on the caller's event loop --------------------------------------


class _AioLink:
    """One open ``Invoke`` stream: a writer task sends queued requests one at a time
    (grpc.aio takes one write at a time), a reader task routes the pieces."""

    def __init__(self, call: Any, error: Callable[[grpc.RpcError], RemoteCellError]) -> None:
        self.pending: dict[str, tuple[asyncio.Queue[Any], Any]] = {}
        self.broken: RemoteCellError | None = None
        self._call = call
        self._error = error
        self._out: asyncio.Queue[pb.CallRequest | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        self._writer = loop.create_task(self._write())
        self._reader = loop.create_task(self._read())

    def send(self, request: pb.CallRequest, sink: asyncio.Queue[Any], key: Any) -> None:
        if self.broken is not None:
            raise self.broken
        self.pending[request.call_id] = (sink, key)
        self._out.put_nowait(request)

    def forget(self, call_id: str) -> None:
        """Stops routing a call's pieces, and tells the control plane (``cancel``)."""
        if self.pending.pop(call_id, None) is not None and self.broken is None:
            self._out.put_nowait(pb.CallRequest(call_id=call_id, cancel=True))

    async def _write(self) -> None:
        try:
            while True:
                request = await self._out.get()
                if request is None:
                    await self._call.done_writing()
                    return
                await self._call.write(request)
        except (grpc.RpcError, asyncio.InvalidStateError):
            self._call.cancel()  # the reader says why

    async def _read(self) -> None:
        error: BaseException | None = None
        try:
            while True:
                message = await self._call.read()
                if message is grpc.aio.EOF:
                    break
                for piece in message.results:
                    entry = (
                        self.pending.pop(piece.call_id, None)
                        if piece.done
                        else self.pending.get(piece.call_id)
                    )
                    if entry is not None:
                        entry[0].put_nowait((entry[1], piece))
        except grpc.RpcError as err:
            error = self._error(err)
        except asyncio.CancelledError:
            error = ConnectionError("the stream of deployment calls was closed")
        except Exception as err:
            error = err
        finally:
            self.broken = _stream_ended(error)
            pending, self.pending = self.pending, {}
            for sink, key in pending.values():
                sink.put_nowait((key, self.broken))
            self._writer.cancel()

    def close(self) -> None:
        self.broken = self.broken or ConnectionError("the stream of deployment calls was closed")
        self._call.cancel()
        self._writer.cancel()


class AsyncCalls:
    """``AsyncClient``'s calls of deployments (see the module's docstring)."""

    def __init__(
        self,
        open_stream: Callable[[], Any],
        error: Callable[[grpc.RpcError], RemoteCellError],
        upload: Callable[[Mapping[str, Buffer]], Awaitable[int]],
        fetch: Callable[[str], Awaitable[Buffer]],
    ) -> None:
        self._open = open_stream
        self._error = error
        self._upload = upload
        self._fetch = fetch
        self._link: _AioLink | None = None

    def _current(self) -> _AioLink:
        if self._link is None or self._link.broken is not None:
            self._link = _AioLink(self._open(), self._error)
        return self._link

    async def start(
        self,
        deployment: str,
        args: Iterable[Any],
        kwargs: Mapping[str, Any] | None,
        sink: asyncio.Queue[Any],
        key: Any = None,
    ) -> str:
        """Sends one call; its pieces go to ``sink`` as ``(key, piece)``."""
        call_id = new_call_id()
        request, blobs = call_request(deployment, call_id, args, kwargs)
        if blobs:
            await self._upload(blobs)
        try:
            self._current().send(request, sink, key)
        except RemoteCellError:  # broke just now: once more on a new stream
            self._current().send(request, sink, key)
        return call_id

    def forget(self, call_id: str) -> None:
        """Stops routing a call's pieces (its caller went away), and tells the control
        plane, which drops the call if it still waits for a replica."""
        if self._link is not None:
            self._link.forget(call_id)

    async def _local_fetch(self, piece: Any) -> Fetch:
        """A blob lookup for the piece's values, their blobs fetched beforehand."""
        if isinstance(piece, BaseException):
            return _no_blobs
        wanted = values.value_refs([piece.value]) if piece.HasField("value") else []
        if piece.HasField("error") and piece.error.HasField("exception"):
            wanted += values.value_refs([piece.error.exception])
        if not wanted:
            return _no_blobs
        got = {digest: await self._fetch(digest) for digest in wanted}
        return got.__getitem__

    async def call(
        self, deployment: str, args: Iterable[Any], kwargs: Mapping[str, Any] | None
    ) -> Any:
        sink: asyncio.Queue[Any] = asyncio.Queue()
        call_id = await self.start(deployment, args, kwargs, sink)
        answer = Answer(deployment)
        try:
            while not answer.done:
                _, piece = await sink.get()
                answer.add(piece, await self._local_fetch(piece))
        finally:
            self.forget(call_id)
        return answer.outcome()

    async def call_stream(
        self, deployment: str, args: Iterable[Any], kwargs: Mapping[str, Any] | None
    ) -> AsyncIterator[Any]:
        sink: asyncio.Queue[Any] = asyncio.Queue()
        call_id = await self.start(deployment, args, kwargs, sink)
        answer = Answer(deployment)
        try:
            while not answer.done:
                _, piece = await sink.get()
                item = answer.add(piece, await self._local_fetch(piece))
                if item is not _NONE:
                    yield item
        finally:
            self.forget(call_id)
        if answer.error is not None:
            raise answer.error
        if answer.has_result:  # a plain handler: its value is the one item
            yield answer.result

    async def call_many(
        self,
        deployment: str,
        arguments: Iterable[tuple[Any, ...]],
        kwargs: Mapping[str, Any] | None = None,
        window: int = WINDOW,
        return_exceptions: bool = False,
        order_outputs: bool = True,
    ) -> AsyncIterator[Any]:
        sink: asyncio.Queue[Any] = asyncio.Queue()
        plan = _Plan(deployment, arguments, window, return_exceptions, order_outputs)
        try:
            while True:
                for index, args in plan.to_start():
                    plan.started(index, await self.start(deployment, args, kwargs, sink, index))
                if plan.finished():
                    return
                index, piece = await sink.get()
                for out in plan.take(index, piece, await self._local_fetch(piece)):
                    yield out
        finally:
            for call_id in plan.outstanding():
                self.forget(call_id)

    def close(self) -> None:
        if self._link is not None:
            self._link.close()
            self._link = None


def _no_blobs(digest: str) -> Buffer:
    raise KeyError(digest)


class _Plan:
    """The bookkeeping of one ``call_many``: which calls to start (at most ``window``
    outstanding), and what to hand out when a piece arrives (in order or as they end)."""

    def __init__(
        self,
        deployment: str,
        arguments: Iterable[tuple[Any, ...]],
        window: int,
        return_exceptions: bool,
        order_outputs: bool,
    ) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window={window!r}: expected a positive int")
        self.deployment = deployment
        self._arguments = iter(arguments)
        self._window = window
        self._return_exceptions = return_exceptions
        self._ordered = order_outputs
        self._exhausted = False
        self._count = 0  # calls started
        self._handed = 0  # outcomes handed out
        self._ids: dict[int, str] = {}
        self._answers: dict[int, Answer] = {}
        self._ready: dict[int, Any] = {}  # ended, waiting for their turn (ordered)

    def to_start(self) -> Iterator[tuple[int, tuple[Any, ...]]]:
        while not self._exhausted and self._count - self._handed < self._window:
            try:
                args = next(self._arguments)
            except StopIteration:
                self._exhausted = True
                return
            index = self._count
            self._count += 1
            self._answers[index] = Answer(self.deployment)
            yield index, args

    def started(self, index: int, call_id: str) -> None:
        self._ids[index] = call_id

    def finished(self) -> bool:
        return self._exhausted and self._handed == self._count

    def take(self, index: int, piece: Any, fetch: Fetch) -> list[Any]:
        answer = self._answers.get(index)
        if answer is None:
            return []
        answer.add(piece, fetch)
        if not answer.done:
            return []
        del self._answers[index]
        self._ids.pop(index, None)
        if answer.error is not None:
            if not self._return_exceptions:
                raise answer.error
            outcome: Any = answer.error
        else:
            outcome = answer.outcome()
        if not self._ordered:
            self._handed += 1
            return [outcome]
        self._ready[index] = outcome
        out = []
        while self._handed in self._ready:
            out.append(self._ready.pop(self._handed))
            self._handed += 1
        return out

    def outstanding(self) -> list[str]:
        return list(self._ids.values())


# -- blocking: one stream, its replies read by a daemon thread ---------------------------


class _ThreadLink:
    def __init__(
        self,
        open_stream: Callable[[Iterator[pb.CallRequest]], Any],
        error: Callable[[grpc.RpcError], RemoteCellError],
    ) -> None:
        self.pending: dict[str, tuple[queue.SimpleQueue[Any], Any]] = {}
        self.broken: RemoteCellError | None = None
        self._lock = threading.Lock()
        self._error = error
        self._out: queue.SimpleQueue[pb.CallRequest | None] = queue.SimpleQueue()
        self._call = open_stream(iter(self._out.get, None))
        threading.Thread(target=self._read, name="remotecell-calls", daemon=True).start()

    def send(self, request: pb.CallRequest, sink: queue.SimpleQueue[Any], key: Any) -> None:
        with self._lock:
            if self.broken is not None:
                raise self.broken
            self.pending[request.call_id] = (sink, key)
        self._out.put(request)

    def forget(self, call_id: str) -> None:
        """Stops routing a call's pieces, and tells the control plane (see ``cancel``)."""
        with self._lock:
            if self.pending.pop(call_id, None) is None or self.broken is not None:
                return
        self._out.put(pb.CallRequest(call_id=call_id, cancel=True))

    def _read(self) -> None:
        error: BaseException | None = None
        pending = self.pending
        lock = self._lock
        try:
            for message in self._call:
                with lock:
                    routed = [
                        (pending.pop(p.call_id, None) if p.done else pending.get(p.call_id), p)
                        for p in message.results
                    ]
                for entry, piece in routed:
                    if entry is not None:
                        entry[0].put((entry[1], piece))
        except grpc.RpcError as err:
            error = self._error(err)
        except BaseException as err:
            error = err
        finally:
            with lock:
                self.broken = self.broken or _stream_ended(error)
                ended, self.pending = list(self.pending.values()), {}
            for sink, key in ended:
                sink.put((key, self.broken))
            self._out.put(None)  # ends the requests' iterator

    def close(self) -> None:
        with self._lock:
            self.broken = self.broken or ConnectionError(
                "the stream of deployment calls was closed"
            )
        self._out.put(None)
        self._call.cancel()


class ThreadCalls:
    """``Client``'s calls of deployments: blocking, from any thread."""

    def __init__(
        self,
        open_stream: Callable[[Iterator[pb.CallRequest]], Any],
        error: Callable[[grpc.RpcError], RemoteCellError],
        upload: Callable[[Mapping[str, Buffer]], int],
        fetch: Fetch,
    ) -> None:
        self._open = open_stream
        self._error = error
        self._upload = upload
        self.fetch = fetch
        self._lock = threading.Lock()
        self._link: _ThreadLink | None = None

    def _current(self) -> _ThreadLink:
        with self._lock:
            if self._link is None or self._link.broken is not None:
                self._link = _ThreadLink(self._open, self._error)
            return self._link

    def start(
        self,
        deployment: str,
        args: Iterable[Any],
        kwargs: Mapping[str, Any] | None,
        sink: queue.SimpleQueue[Any],
        key: Any = None,
    ) -> str:
        """Sends one call; its pieces go to ``sink`` as ``(key, piece)``."""
        call_id = new_call_id()
        request, blobs = call_request(deployment, call_id, args, kwargs)
        if blobs:
            self._upload(blobs)
        try:
            self._current().send(request, sink, key)
        except RemoteCellError:  # broke just now: once more on a new stream
            self._current().send(request, sink, key)
        return call_id

    def forget(self, call_id: str) -> None:
        link = self._link
        if link is not None:
            link.forget(call_id)

    def spawn(
        self, deployment: str, args: Iterable[Any], kwargs: Mapping[str, Any] | None
    ) -> PendingCall:
        """Sends one call and returns at once; ``PendingCall.result`` waits for it."""
        sink: queue.SimpleQueue[Any] = queue.SimpleQueue()
        call_id = self.start(deployment, args, kwargs, sink)
        return PendingCall(self, deployment, call_id, sink)

    def call(self, deployment: str, args: Iterable[Any], kwargs: Mapping[str, Any] | None) -> Any:
        return self.spawn(deployment, args, kwargs).result()

    def call_stream(
        self, deployment: str, args: Iterable[Any], kwargs: Mapping[str, Any] | None
    ) -> Iterator[Any]:
        pending = self.spawn(deployment, args, kwargs)
        try:
            yield from pending.items()
        finally:
            pending.cancel()

    def call_many(
        self,
        deployment: str,
        arguments: Iterable[tuple[Any, ...]],
        kwargs: Mapping[str, Any] | None = None,
        window: int = WINDOW,
        return_exceptions: bool = False,
        order_outputs: bool = True,
    ) -> Iterator[Any]:
        sink: queue.SimpleQueue[Any] = queue.SimpleQueue()
        plan = _Plan(deployment, arguments, window, return_exceptions, order_outputs)
        try:
            while True:
                for index, args in plan.to_start():
                    plan.started(index, self.start(deployment, args, kwargs, sink, index))
                if plan.finished():
                    return
                try:
                    index, piece = sink.get(timeout=_POLL)
                except queue.Empty:
                    continue
                yield from plan.take(index, piece, self.fetch)
        finally:
            for call_id in plan.outstanding():
                self.forget(call_id)

    def close(self) -> None:
        with self._lock:
            link, self._link = self._link, None
        if link is not None:
            link.close()


class PendingCall:
    """A call in flight on a ``ThreadCalls`` stream."""

    def __init__(
        self, calls: ThreadCalls, deployment: str, call_id: str, sink: queue.SimpleQueue[Any]
    ) -> None:
        self.call_id = call_id
        self._calls = calls
        self._sink = sink
        self._answer = Answer(deployment)

    @property
    def done(self) -> bool:
        """Whether its answer is all here (after a ``result`` or ``poll``)."""
        return self._answer.done

    def poll(self) -> bool:
        """Takes what arrived without waiting; True when the answer is complete."""
        while not self._answer.done:
            try:
                _, piece = self._sink.get_nowait()
            except queue.Empty:
                return False
            self._take(piece)
        return True

    def _take(self, piece: Any) -> Any:
        try:
            return self._answer.add(piece, self._calls.fetch)
        finally:
            if self._answer.done:
                self._calls.forget(self.call_id)

    def result(self, timeout: float | None = None) -> Any:
        """Waits for the answer (at most ``timeout`` seconds) and returns its value.

        Raises:
            CallTimeoutError: no answer within ``timeout``; the call goes on.
        """
        deadline = None if timeout is None else _now() + timeout
        while not self._answer.done:
            wait = _POLL if deadline is None else min(_POLL, deadline - _now())
            if wait <= 0:
                raise CallTimeoutError(
                    f"the call of deployment {self._answer.deployment!r} did not end within "
                    f"{timeout:g}s; it goes on (call get() again to keep waiting)"
                )
            try:
                _, piece = self._sink.get(timeout=wait)
            except queue.Empty:
                continue
            self._take(piece)
        return self._answer.outcome()

    def items(self) -> Iterator[Any]:
        """A generator's items as they come (a plain handler's value as the one item)."""
        while not self._answer.done:
            try:
                _, piece = self._sink.get(timeout=_POLL)
            except queue.Empty:
                continue
            item = self._take(piece)
            if item is not _NONE:
                yield item
        if self._answer.error is not None:
            raise self._answer.error
        if self._answer.has_result:
            yield self._answer.result

    def cancel(self) -> None:
        """Stops waiting for it (the call itself runs on: the stream cannot stop it)."""
        self._calls.forget(self.call_id)


_now = time.monotonic
