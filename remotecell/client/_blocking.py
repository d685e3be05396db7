"""The blocking face of the client: ``AsyncClient``'s coroutines, run in the caller's thread.

Notebook code, the CLI, widgets and runners call the control plane from ordinary threads.
``Client`` runs ``AsyncClient``'s own coroutines over blocking gRPC stubs: with those,
a coroutine never suspends, so ``_finish`` completes it in the calling thread with no
event loop. There is one implementation of every call, and no hand-off to a loop thread
(which cost ~0.7 ms per call when measured, and a cell makes several).

A job's events are read by a reader thread into a queue, and callers wait on the queue
with timeouts, so a kernel interrupt (SIGINT) reaches a caller waiting for events. The
reader drives its call itself (grpc's single-threaded unary-stream mode, no hand-off
through the channel's polling thread) and reader threads are reused rather than started
per stream: measured on a warm trivial cell (p50 to its last event), a reader started
per stream on the default channel cost ~0.5 ms over iterating the call directly; with
both changes the difference is within noise (~0.1 ms).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from typing import IO, Any, TypeVar

from remotecell._proto import pb
from remotecell.client import transport
from remotecell.client._async import AsyncClient
from remotecell.client._calls import _Stream
from remotecell.client.config import Endpoint
from remotecell.client.invoke import WINDOW, PendingCall, ThreadCalls
from remotecell.contract.values import Buffer

T = TypeVar("T")
_END = object()

#: How often a caller blocked on a stream without a timeout wakes up, so that a signal
#: delivered to another thread still gets its handler run promptly.
_POLL = 0.1


def _finish(awaitable: Awaitable[T]) -> T:
    """Runs a coroutine of a blocking-stub client to its end in this thread."""
    steps = awaitable.__await__()
    try:
        steps.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    steps.close()
    raise RuntimeError("a blocking client call waited on an event loop; this is a remotecell bug")


def _iterate(messages: AsyncIterator[T]) -> Iterator[T]:
    """An async iterator of a blocking-stub client as a plain iterator."""
    try:
        while True:
            try:
                yield _finish(anext(messages))
            except StopAsyncIteration:
                return
    finally:
        aclose = getattr(messages, "aclose", None)
        if aclose is not None:
            _finish(aclose())


class _BlockingStream:
    def __init__(self, call: Any) -> None:
        self._call = call

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[Any]:
        for message in self._call:
            yield message

    def cancel(self) -> bool:
        return bool(self._call.cancel())


class _BlockingCalls:
    """Over blocking stubs: the calls complete before the coroutine goes on."""

    def __init__(self, endpoint: Endpoint) -> None:
        self._md = transport.metadata(endpoint)
        self._channel = transport.blocking_channel(endpoint)
        self._stub = transport.control_plane_stub(self._channel)

    async def unary(
        self, method: str, request: Any, timeout: float | None, wait_for_ready: bool = False
    ) -> Any:
        call = getattr(self._stub, method)
        return call(request, metadata=self._md, timeout=timeout, wait_for_ready=wait_for_ready)

    async def stream_in(self, method: str, requests: Iterator[Any], timeout: float | None) -> Any:
        return getattr(self._stub, method)(requests, metadata=self._md, timeout=timeout)

    def stream_out(self, method: str, request: Any, timeout: float | None = None) -> _Stream:
        call = getattr(self._stub, method)(request, metadata=self._md, timeout=timeout)
        return _BlockingStream(call)

    def stream_both(self, method: str, requests: Iterator[Any]) -> Any:
        """A bidirectional call: grpc sends ``requests`` from its own thread; the result
        iterates the replies and has ``cancel()``."""
        return getattr(self._stub, method)(requests, metadata=self._md)

    async def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    async def close(self) -> None:
        self._channel.close()


class _Readers:
    """Daemon threads that run stream readers, kept for reuse (a few stay idle)."""

    KEEP_IDLE = 4

    def __init__(self) -> None:
        self._work: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0

    def run(self, work: Callable[[], None]) -> None:
        with self._lock:
            start = self._idle == 0
            if not start:
                self._idle -= 1
        self._work.put(work)
        if start:
            threading.Thread(target=self._serve, name="remotecell-events", daemon=True).start()

    def _serve(self) -> None:
        while True:
            self._work.get()()
            with self._lock:
                if self._idle >= self.KEEP_IDLE:
                    return
                self._idle += 1


_readers = _Readers()


class EventStream:
    """A job's events as a blocking iterator; ``close()`` stops following.

    A reader thread follows the job (resuming across control-plane restarts) and
    queues its events; ``next(timeout)`` and iteration take them from the queue.
    """

    def __init__(
        self, core: AsyncClient, job_id: str, from_seq: int, spec: pb.JobSpec | None
    ) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._stream: _Stream | None = None
        self.closed = False
        _readers.run(lambda: self._read(core, job_id, from_seq, spec))

    # -- the reader thread ---------------------------------------------------

    def opened(self, stream: _Stream) -> bool:
        with self._lock:
            self._stream = stream
            return not self.closed

    def _read(self, core: AsyncClient, job_id: str, from_seq: int, spec: pb.JobSpec | None) -> None:
        try:
            for event in _iterate(core._follow(job_id, from_seq, spec, self)):
                self._queue.put(event)
        except BaseException as err:
            if not self.closed:
                self._queue.put(err)
        finally:
            self._queue.put(_END)

    # -- the caller ------------------------------------------------------------

    def __iter__(self) -> Iterator[pb.JobEvent]:
        return self

    def __next__(self) -> pb.JobEvent:
        while True:
            try:
                item = self._queue.get(timeout=_POLL)
            except queue.Empty:
                continue
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
            self._queue.put(_END)  # iterating again ends again
            raise StopIteration
        if isinstance(item, BaseException):
            self._queue.put(_END)
            raise item
        return item  # type: ignore[no-any-return]

    def close(self) -> None:
        with self._lock:
            self.closed = True
            if self._stream is not None:
                self._stream.cancel()


class Client:
    """A control plane, from blocking code: ``AsyncClient``'s calls, run in the caller's
    thread. Errors are ``remotecell`` exceptions.

    Example:
        >>> client = Client(Endpoint("unix:/tmp/cp.sock", token))   # doctest: +SKIP
        >>> for event in client.submit(pb.JobSpec(code="print(1)")):  # doctest: +SKIP
        ...     print(event)
    """

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._blocking_calls = _BlockingCalls(endpoint)
        self._core = AsyncClient._over(endpoint, self._blocking_calls)
        self._invoker: ThreadCalls | None = None
        self._invoker_lock = threading.Lock()

    def close(self) -> None:
        with self._invoker_lock:
            invoker, self._invoker = self._invoker, None
        if invoker is not None:
            invoker.close()
        _finish(self._core.close())

    # -- control plane and jobs ------------------------------------------------

    def health(self, timeout: float = 5.0, wait_for_ready: bool = False) -> pb.HealthReply:
        """The control plane's state; also says whether this process shares its blob store."""
        return _finish(self._core.health(timeout, wait_for_ready))

    def get_job(self, job_id: str) -> pb.JobInfo:
        return _finish(self._core.get_job(job_id))

    def list_jobs(self, limit: int = 50) -> list[pb.JobInfo]:
        return _finish(self._core.list_jobs(limit))

    def list_gpus(self) -> pb.ListGPUsReply:
        return _finish(self._core.list_gpus())

    def cancel(self, job_id: str, reason: str = "") -> pb.CancelReply:
        return _finish(self._core.cancel(job_id, reason))

    def answer_input(
        self, job_id: str, seq: int, text: str = "", refused: str = "", eof: bool = False
    ) -> None:
        """Answers the running cell's input request (see ``AsyncClient.answer_input``)."""
        _finish(self._core.answer_input(job_id, seq, text, refused, eof))

    def send_comm(self, job_id: str, message: pb.CommMessage) -> list[pb.JobEvent]:
        """Sends the front end's message to a remote cell's comm (see
        ``AsyncClient.send_comm``)."""
        return _finish(self._core.send_comm(job_id, message))

    def submit(self, spec: pb.JobSpec) -> EventStream:
        """Submits a job and follows it: the first event names the job; the stream resumes
        by itself if the control plane restarts."""
        return EventStream(self._core, "", 0, spec)

    def attach(self, job_id: str, from_seq: int = 0) -> EventStream:
        """Follows a job's events from ``from_seq`` to its end, resuming across restarts."""
        return EventStream(self._core, job_id, from_seq, None)

    # -- blobs -----------------------------------------------------------------

    def missing_blobs(self, hashes: Sequence[str]) -> list[str]:
        """Which of ``hashes`` the control plane does not have."""
        return _finish(self._core.missing_blobs(hashes))

    def put_blob(self, digest: str, data: Buffer) -> None:
        """Sends one blob over gRPC (the control plane checks it against ``digest``)."""
        _finish(self._core.put_blob(digest, data))

    def get_blob(self, digest: str) -> bytearray:
        """One blob's bytes over gRPC (``BlobNotFoundError`` if it is not stored,
        ``BlobCorruptError`` if they do not match ``digest``)."""
        return _finish(self._core.get_blob(digest))

    def upload(self, blobs: Mapping[str, Buffer]) -> int:
        """Uploads the blobs the control plane lacks; returns how many bytes were sent."""
        return _finish(self._core.upload(blobs))

    def fetch(self, digest: str) -> Buffer:
        """A blob's bytes (``BlobNotFoundError`` if it is not stored, ``BlobCorruptError``
        if they do not match ``digest``)."""
        return _finish(self._core.fetch(digest))

    # -- secrets ---------------------------------------------------------------

    def create_secret(
        self, name: str, env: Mapping[str, str], overwrite: bool = False
    ) -> pb.SecretCreateReply:
        """Stores a secret on the control plane, encrypted (``overwrite``: replace one of
        the same name). The reply names its keys and whether it replaced one."""
        return _finish(self._core.create_secret(name, env, overwrite))

    def list_secrets(self) -> list[pb.SecretInfo]:
        """The stored secrets' names, keys and times (never their values)."""
        return _finish(self._core.list_secrets())

    def delete_secret(self, name: str) -> None:
        _finish(self._core.delete_secret(name))

    def share_secret(self, name: str, user: str, revoke: bool = False) -> list[str]:
        """Shares the caller's secret ``name`` with ``user`` (``revoke``: stops sharing
        it); returns whom it is shared with now."""
        return _finish(self._core.share_secret(name, user, revoke))

    # -- volumes ---------------------------------------------------------------

    def create_volume(self, name: str, exist_ok: bool = False) -> pb.VolumeInfo:
        return _finish(self._core.create_volume(name, exist_ok))

    def get_volume(self, name: str) -> pb.VolumeInfo:
        return _finish(self._core.get_volume(name))

    def list_volumes(self) -> list[pb.VolumeInfo]:
        return _finish(self._core.list_volumes())

    def share_volume(self, name: str, user: str, revoke: bool = False) -> list[str]:
        """Shares the caller's volume ``name`` with ``user`` (``revoke``: stops sharing
        it); returns whom it is shared with now."""
        return _finish(self._core.share_volume(name, user, revoke))

    def delete_volume(self, name: str) -> int:
        """Deletes a volume and its files; returns how many files it had."""
        return _finish(self._core.delete_volume(name))

    def list_volume_files(
        self, name: str, path: str = "", recursive: bool = False
    ) -> list[pb.VolumeFile]:
        return _finish(self._core.list_volume_files(name, path, recursive))

    def remove_volume_path(self, name: str, path: str, recursive: bool = False) -> int:
        """Removes a file (or, ``recursive``, a directory); returns how many files went."""
        return _finish(self._core.remove_volume_path(name, path, recursive))

    def read_volume_file(self, name: str, path: str) -> tuple[str, Iterator[bytes]]:
        """A file's version and its content in chunks (the call starts at once, so a
        missing file raises here)."""
        version, chunks = _finish(self._core.read_volume_file(name, path))
        return version, _iterate(chunks)

    def read_volume_file_into(self, name: str, path: str, out: IO[bytes]) -> str:
        """Writes a file's content to ``out``; returns its version."""
        return _finish(self._core.read_volume_file_into(name, path, out))

    def write_volume_file(
        self, name: str, path: str, source: IO[bytes], size: int
    ) -> pb.VolumeFile:
        """Uploads ``size`` bytes from ``source`` as the file ``path``; it replaces the old
        one atomically once all of it arrived."""
        return _finish(self._core.write_volume_file(name, path, source, size))

    def upload_volume_file(
        self, name: str, path: str, local: str | os.PathLike[str]
    ) -> pb.VolumeFile:
        """Uploads the local file ``local`` as the file ``path``."""
        return _finish(self._core.upload_volume_file(name, path, local))

    # -- images ----------------------------------------------------------------

    def list_images(self) -> list[pb.ImageInfo]:
        """The builds in the control plane's image cache, newest first."""
        return _finish(self._core.list_images())

    def image_log(self, image_id: str) -> Iterator[pb.ImageLogChunk]:
        """The build logs of the image ``image_id`` names (an id or its start), in pieces:
        the first piece of each build's log names the build."""
        return _iterate(self._core.image_log(image_id))

    def remove_images(self, image_ids: Sequence[str]) -> list[pb.RemovedImage]:
        """Removes the images these ids (or their starts) name; all, or none."""
        return _finish(self._core.remove_images(image_ids))

    def prune_images(self, days: float | None = None) -> pb.PruneImagesReply:
        """Removes images unused for ``days`` (None: 30), failed builds and leftovers."""
        return _finish(self._core.prune_images(days))

    # -- deployments -----------------------------------------------------------

    def deploy(self, request: pb.DeployRequest) -> pb.DeploymentInfo:
        """Stores a new version of ``request.name`` and rolls its replicas to it."""
        return _finish(self._core.deploy(request))

    def list_deployments(self) -> list[pb.DeploymentInfo]:
        return _finish(self._core.list_deployments())

    def get_deployment(self, name: str) -> pb.DeploymentInfo:
        return _finish(self._core.get_deployment(name))

    def stop_deployment(self, name: str) -> pb.DeploymentInfo:
        """Stops a deployment: no new calls; its replicas drain and stop."""
        return _finish(self._core.stop_deployment(name))

    def scale_deployment(
        self, name: str, min_containers: int | None = None, max_containers: int | None = None
    ) -> pb.DeploymentInfo:
        """Changes the current version's min and max containers (None: unchanged)."""
        return _finish(self._core.scale_deployment(name, min_containers, max_containers))

    def rollback_deployment(self, name: str) -> pb.DeploymentInfo:
        """Makes the version before the current one current again."""
        return _finish(self._core.rollback_deployment(name))

    def deployment_logs(self, name: str, follow: bool = False, tail: int = 0) -> Iterator[str]:
        """The deployment's log lines (``tail``: the last so many; ``follow``: then new
        ones as they come, until the caller stops)."""
        return _iterate(self._core.deployment_logs(name, follow, tail))

    def _deployment_calls(self) -> ThreadCalls:
        self._core._check_open()
        with self._invoker_lock:
            if self._invoker is None:
                self._invoker = ThreadCalls(
                    lambda requests: self._blocking_calls.stream_both("Invoke", requests),
                    self._core._error,
                    self.upload,
                    self.fetch,
                )
            return self._invoker

    def call(
        self, deployment: str, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None
    ) -> Any:
        """Calls a deployment's handler; returns its value (see ``AsyncClient.call``).
        Safe from many threads: their calls share one stream."""
        return self._deployment_calls().call(deployment, args, kwargs)

    def call_stream(
        self, deployment: str, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None
    ) -> Iterator[Any]:
        """Calls a generator handler; its items as they come."""
        return self._deployment_calls().call_stream(deployment, args, kwargs)

    def call_many(
        self,
        deployment: str,
        arguments: Iterable[tuple[Any, ...]],
        kwargs: Mapping[str, Any] | None = None,
        window: int = WINDOW,
        return_exceptions: bool = False,
        order_outputs: bool = True,
    ) -> Iterator[Any]:
        """Calls a deployment once per tuple of ``arguments``, at most ``window``
        outstanding; their values in order (see ``AsyncClient.call_many``)."""
        return self._deployment_calls().call_many(
            deployment, arguments, kwargs, window, return_exceptions, order_outputs
        )

    def _spawn(
        self, deployment: str, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None
    ) -> PendingCall:
        """Sends one call and returns at once (``remotecell.Deployment.spawn``)."""
        return self._deployment_calls().spawn(deployment, args, kwargs)
