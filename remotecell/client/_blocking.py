"""The blocking client: an ``AsyncClient`` on a private event-loop thread.

Notebook code, the CLI and runners call it from ordinary threads. Waiting happens on
locks and queues with timeouts, so a kernel interrupt (SIGINT) reaches the caller.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from remotecell._proto import pb
from remotecell.client import _blobs
from remotecell.client._async import AsyncClient
from remotecell.client.config import Endpoint
from remotecell.client.values import Buffer

T = TypeVar("T")
_END = object()


class _LoopThread:
    """One event loop running forever in a daemon thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except BaseException:
            future.cancel()
            raise

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)


class EventStream:
    """A job's events as a blocking iterator; ``close()`` stops following."""

    def __init__(self, runner: _LoopThread, source: AsyncIterator[pb.JobEvent]) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._future = runner.submit(self._pump(source))

    async def _pump(self, source: AsyncIterator[pb.JobEvent]) -> None:
        try:
            async for event in source:
                self._queue.put(event)
        except BaseException as err:
            self._queue.put(err)
        finally:
            self._queue.put(_END)

    def __iter__(self) -> Iterator[pb.JobEvent]:
        return self

    def __next__(self) -> pb.JobEvent:
        item = self._queue.get()
        return self._unwrap(item)

    def next(self, timeout: float) -> pb.JobEvent | None:
        """The next event, or None when none came within ``timeout`` seconds."""
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        return self._unwrap(item)

    def _unwrap(self, item: Any) -> pb.JobEvent:
        if item is _END:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._future.cancel()


class Client:
    """A control plane, from blocking code.

    Example:
        >>> client = Client(Endpoint("unix:/tmp/cp.sock", token))   # doctest: +SKIP
        >>> for event in client.submit(pb.JobSpec(code="print(1)")):  # doctest: +SKIP
        ...     print(event)
    """

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._loop = _LoopThread("remotecell-client")
        self._async: AsyncClient = self._loop.run(self._make(endpoint))
        self._health: pb.HealthReply | None = None
        self._blob_dir: Path | None = None

    @staticmethod
    async def _make(endpoint: Endpoint) -> AsyncClient:
        return AsyncClient(endpoint)  # the channel belongs to the loop it is made in

    def close(self) -> None:
        try:
            self._loop.run(self._async.close(), timeout=5)
        finally:
            self._loop.stop()

    # -- calls -------------------------------------------------------------

    def health(self, timeout: float = 5.0, wait_for_ready: bool = False) -> pb.HealthReply:
        self._health = self._loop.run(self._async.health(timeout, wait_for_ready))
        self._blob_dir = _blobs.shared_blob_dir(self._health)
        return self._health

    def get_job(self, job_id: str) -> pb.JobInfo:
        return self._loop.run(self._async.get_job(job_id))

    def list_jobs(self, limit: int = 50) -> list[pb.JobInfo]:
        return self._loop.run(self._async.list_jobs(limit))

    def cancel(self, job_id: str, reason: str = "") -> pb.CancelReply:
        return self._loop.run(self._async.cancel(job_id, reason))

    def submit(self, spec: pb.JobSpec) -> EventStream:
        return EventStream(self._loop, self._async.submit(spec))

    def attach(self, job_id: str, from_seq: int = 0) -> EventStream:
        return EventStream(self._loop, self._async.attach(job_id, from_seq))

    # -- blobs -------------------------------------------------------------

    def _shared_dir(self) -> Path | None:
        if self._health is None:
            self.health()
        return self._blob_dir

    def upload(self, blobs: Mapping[str, Buffer]) -> int:
        """Uploads the blobs the control plane lacks; returns how many bytes were sent."""
        if not blobs:
            return 0
        shared = self._shared_dir()
        sent = 0
        if shared is not None:
            for digest, data in blobs.items():
                if not _blobs.local_has(shared, digest):
                    _blobs.local_write(shared, digest, data)
                    sent += memoryview(data).nbytes
            return sent
        missing = self._loop.run(self._async.missing_blobs(list(blobs)))
        for digest in missing:
            self._loop.run(self._async.put_blob(digest, blobs[digest]))
            sent += memoryview(blobs[digest]).nbytes
        return sent

    def fetch(self, digest: str) -> Buffer:
        shared = self._shared_dir()
        if shared is not None:
            return _blobs.local_read(shared, digest)
        return self._loop.run(self._async.get_blob(digest))
