"""The runner's connection to the control plane, on its own event-loop thread.

Event bodies the cell produces (typed: ``contract.events.Body``) are queued here from
any thread, numbered and sent in order; consecutive output of the same stream is merged
into one event while the connection is busy, so a chatty loop costs few messages without
delaying a lone ``print``. A task's ``pb.Finished`` body is its last event.

If the connection drops (the control plane restarted), the link reconnects and says
hello again with the current task and all of its events so far; the control plane
stores those it lacks. With no control plane for ``orphan_timeout`` and no task
running, the runner gives up and exits.

A replica's calls (``_serve.py``) come in as ``calls`` instructions, handed straight to
``on_calls`` on the link's thread (answered UNAVAILABLE while no replica serves); their
answers go out as ``call_results`` messages, the pieces queued at the same time merged
into one message.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future

import grpc

from remotecell._proto import pb, pb_grpc
from remotecell.client import transport
from remotecell.client.config import Endpoint
from remotecell.contract import wire
from remotecell.contract.deployments import call_error
from remotecell.contract.errors import ConnectionError
from remotecell.contract.events import Body, job_event

log = logging.getLogger("remotecell.runner")


class Link:
    def __init__(
        self,
        endpoint: Endpoint,
        hello: pb.RunnerHello,
        on_cancel: Callable[[pb.CancelTask], None],
        orphan_timeout: float = 120.0,
        on_answer: Callable[[pb.InputAnswer], None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.hello = hello
        self.on_cancel = on_cancel
        #: Answers to the running cell's input requests (``_stdin.py``).
        self.on_answer = on_answer
        #: Where calls for the replica this runner serves go, on the link's thread; they
        #: must be taken without blocking. None: no replica serves (they are refused).
        self.on_calls: Callable[[pb.Calls], None] | None = None
        self.orphan_timeout = orphan_timeout
        #: Tasks and shutdowns for the main thread; None means "stop".
        self.instructions: queue.SimpleQueue[pb.RunnerInstruction | None] = queue.SimpleQueue()
        self.connected = threading.Event()
        self._thread = transport.LoopThread("remotecell-link")
        #: Tasks to begin and their events' bodies, in order.
        self._pending: collections.deque[
            pb.Task | Body | pb.CommReply | pb.CallResult | pb.ReplicaReady
        ] = collections.deque()
        self._wake: asyncio.Event | None = None
        #: A wake-up is on its way to the loop (so many answers queued cost one).
        self._waking = False
        #: The replica's ready message, said again on a new connection while it serves.
        self._ready: pb.ReplicaReady | None = None
        self._job = ""
        self._seq = 0
        self._busy = False
        self._replay: list[pb.JobEvent] = []
        #: Which connection may take from ``_pending``: a failed call's request generator
        #: lives on (gRPC does not stop it) and must not swallow the next one's events.
        self._generation = 0
        self._closed = False
        self._future = self._thread.submit(self._run())
        self._future.add_done_callback(self._ended)

    # -- from any thread -----------------------------------------------------------

    def begin(self, task: pb.Task) -> None:
        # No wake-up: the task's first event follows.
        self._pending.append(task)

    def emit(self, body: Body) -> None:
        """Sends an event of the current task; a ``pb.Finished`` body ends the task."""
        self._pending.append(body)
        self._wake_up()

    def reply(self, reply: pb.CommReply) -> None:
        """Sends what a widget did for the notebook's message (``_comms.py``)."""
        self._pending.append(reply)
        self._wake_up()

    def call_results(self, results: list[pb.CallResult]) -> None:
        """Sends pieces of calls' answers (``_serve.py``); from any thread."""
        self._pending.extend(results)
        self._wake_up()

    def ready(self, ready: pb.ReplicaReady) -> None:
        """Says the replica of the current task takes calls now."""
        self._pending.append(ready)
        self._wake_up()

    def _wake_up(self) -> None:
        if self._wake is not None and not self._waking:
            self._waking = True
            try:
                self._thread.loop.call_soon_threadsafe(self._woken)
            except RuntimeError:  # the loop is closed: the link is gone
                self._waking = False

    def _woken(self) -> None:
        self._waking = False  # before the set: what is queued after this wakes it again
        if self._wake is not None:
            self._wake.set()

    def _refuse_calls(self, calls: pb.Calls) -> None:
        message = "no replica serves on this runner (any more)"
        self.call_results(
            [call_error(pb.CallError.UNAVAILABLE, message, call_id=c.call_id) for c in calls.calls]
        )

    def flush(self, timeout: float = 10.0) -> bool:
        """Waits until everything queued so far was handed to the connection."""
        self._wake_up()
        deadline = time.monotonic() + timeout
        while self._pending and time.monotonic() < deadline:
            time.sleep(0.001)
        return not self._pending

    def close(self) -> None:
        self._closed = True
        self.flush(2.0)
        self._future.cancel()
        self._thread.stop()

    def _ended(self, future: Future[None]) -> None:
        # The connection failing for good must end the runner, not leave its main thread
        # waiting for instructions that can no longer come.
        if not future.cancelled() and future.exception() is not None:
            log.error("the runner's connection failed; exiting", exc_info=future.exception())
            self.instructions.put(None)

    # -- on the loop thread ----------------------------------------------------------

    async def _run(self) -> None:
        self._wake = asyncio.Event()
        stub: pb_grpc.ControlPlaneStub | None = None
        md = transport.metadata(self.endpoint)
        lost_since = time.monotonic()
        while not self._closed:
            self._generation += 1
            try:
                if stub is None:
                    # A pinned certificate is checked by a blocking TLS handshake: in a
                    # worker thread, not on this loop, and retried like any connection.
                    await asyncio.to_thread(transport.check_pin, self.endpoint)
                    stub = transport.control_plane_stub(transport.aio_channel(self.endpoint))
                call = stub.RunnerSession(self._requests(self._generation), metadata=md)
                await call.wait_for_connection()
                self.connected.set()
                async for ins in call:
                    if ins.HasField("cancel"):
                        self.on_cancel(ins.cancel)
                    elif ins.HasField("answer"):
                        if self.on_answer is not None:
                            self.on_answer(ins.answer)
                    elif ins.HasField("calls"):
                        on_calls = self.on_calls
                        try:
                            if on_calls is None:
                                self._refuse_calls(ins.calls)
                            else:
                                on_calls(ins.calls)
                        except Exception:
                            log.exception("calls could not be taken")
                    else:
                        self.instructions.put(ins)
                        if ins.HasField("shutdown"):
                            return
            except grpc.RpcError as err:
                if err.code() == grpc.StatusCode.UNAUTHENTICATED:
                    log.error("the control plane refused this runner's token; exiting")
                    self.instructions.put(None)
                    return
                log.info("connection to the control plane lost: %s", err.code())
            except transport.CertificateMismatch as err:
                log.error("%s; exiting", err)
                self.instructions.put(None)
                return
            except ConnectionError as err:  # the certificate could not be checked yet
                log.info("%s", err)
            except Exception:
                log.exception("runner connection failed")
            if self.connected.is_set():
                # Connected until now (however long no instruction came): the loss starts here.
                lost_since = time.monotonic()
                self.connected.clear()
            if not self._busy and time.monotonic() - lost_since > self.orphan_timeout:
                log.warning("no control plane for %.0f s; exiting", self.orphan_timeout)
                self.instructions.put(None)
                return
            await asyncio.sleep(0.2)

    async def _requests(self, generation: int) -> AsyncIterator[pb.RunnerMessage]:
        hello = pb.RunnerHello()
        hello.CopyFrom(self.hello)
        hello.current_job_id = self._job
        # A long task's replay goes in pieces under the message limit: the hello carries
        # the first, the rest follow as events (stored once each, like the hello's), and
        # the runner says it is busy until its `finished` has arrived among them.
        pieces = _batches(self._replay)
        hello.busy = self._busy or len(pieces) > 1
        hello.replay.extend(pieces[0] if pieces else [])
        yield pb.RunnerMessage(hello=hello)
        for piece in pieces[1:]:
            yield pb.RunnerMessage(events=pb.JobEvents(events=piece))
        if self._ready is not None and self._ready.job_id == self._job and self._busy:
            yield pb.RunnerMessage(ready=self._ready)  # the new control plane learns it
        assert self._wake is not None
        while True:
            while not self._pending and generation == self._generation:
                self._wake.clear()
                if self._pending:
                    break
                await self._wake.wait()
            if generation != self._generation:
                return
            # Everything pending goes in one message: a fast cell's result and finished
            # events travel together.
            batch: list[pb.JobEvent] = []
            size = 0
            while self._pending and generation == self._generation:
                if size > BATCH_BYTES:  # the rest goes in the next message
                    break
                item = self._pending.popleft()
                if isinstance(item, pb.CallResult | pb.ReplicaReady):  # messages of their own
                    if batch:
                        self._pending.appendleft(item)
                        break
                    if isinstance(item, pb.ReplicaReady):
                        self._ready = item
                        yield pb.RunnerMessage(ready=item)
                    else:
                        yield pb.RunnerMessage(call_results=self._results(item))
                    continue
                if isinstance(item, pb.CommReply):  # between tasks: a message of its own
                    if batch:
                        self._pending.appendleft(item)
                        break
                    yield pb.RunnerMessage(comm_reply=item)
                    continue
                if isinstance(item, pb.Task):
                    if batch:  # the previous task's events travel on their own
                        self._pending.appendleft(item)
                        break
                    self._job, self._seq, self._busy = item.job_id, item.first_seq, True
                    self._replay = []
                elif isinstance(item, pb.Metrics):
                    # Telemetry samples are not part of the job's numbered log: they
                    # carry seq 0 and are not replayed after a reconnect.
                    batch.append(job_event(self._job, item))
                else:
                    merge = isinstance(item, pb.Stream)
                    item = self._merge(item) if merge else _within_limit(item)  # type: ignore[arg-type]
                    event = job_event(self._job, item, self._seq)
                    size += event.ByteSize()
                    self._seq += 1
                    self._replay.append(event)
                    batch.append(event)
                    if isinstance(item, pb.Finished):
                        self._busy = False
                        self._ready = None
            if batch:
                yield pb.RunnerMessage(events=pb.JobEvents(events=batch))

    def _results(self, first: pb.CallResult) -> pb.CallResults:
        """``first`` with the answers' pieces queued right after it, up to a message's
        worth (a busy replica's many small answers travel together)."""
        results = [first]
        size = first.ByteSize()
        while self._pending and size < BATCH_BYTES:
            nxt = self._pending[0]
            if not isinstance(nxt, pb.CallResult):
                break
            size += nxt.ByteSize() + 8
            if size > BATCH_BYTES:
                break
            results.append(nxt)
            self._pending.popleft()
        return pb.CallResults(results=results)

    def _merge(self, stream: pb.Stream) -> pb.Stream:
        """``stream`` with the text of the same stream's output queued right after it, at
        most ``TEXT_CHARS`` of it: longer text is left queued for the next events."""
        text = [stream.text]
        length = len(stream.text)
        while self._pending and length < TEXT_CHARS:
            nxt = self._pending[0]
            if not isinstance(nxt, pb.Stream) or nxt.name != stream.name:
                break
            self._pending.popleft()
            text.append(nxt.text)
            length += len(nxt.text)
        if len(text) == 1 and length <= TEXT_CHARS:
            return stream
        joined = "".join(text)
        if length > TEXT_CHARS:
            self._pending.appendleft(pb.Stream(name=stream.name, text=joined[TEXT_CHARS:]))
            joined = joined[:TEXT_CHARS]
        return pb.Stream(name=stream.name, text=joined)


#: What one message's events may hold: a message stops taking events past this.
BATCH_BYTES = wire.MAX_MESSAGE_BYTES // 2
#: The longest text one output event carries (UTF-8 takes at most 4 bytes a character).
TEXT_CHARS = wire.CHUNK_BYTES // 4
#: The largest event other than output text: one larger is not sent (the cell is told).
EVENT_BYTES = wire.MAX_MESSAGE_BYTES - BATCH_BYTES - wire.ENVELOPE_BYTES


def _batches(events: list[pb.JobEvent]) -> list[list[pb.JobEvent]]:
    """``events`` in order, in lists that each fit one message."""
    out: list[list[pb.JobEvent]] = []
    size = BATCH_BYTES + 1
    for event in events:
        if size > BATCH_BYTES:
            out.append([])
            size = 0
        out[-1].append(event)
        size += event.ByteSize()
    return out


def _within_limit(body: Body) -> Body:
    """``body``, or, where it is larger than the control plane takes in one message (a
    huge display, a result's formatted value), a line on stderr saying it was left out."""
    size = body.ByteSize()
    if size <= EVENT_BYTES or isinstance(body, pb.Finished):
        return body
    what = {pb.Display: "a display", pb.Result: "the cell's result", pb.Error: "an error"}.get(
        type(body), "an event"
    )
    return pb.Stream(
        name=pb.Stream.STDERR,
        text=(
            f"remotecell: {what} of {size / 2**20:.1f} MiB was not sent back: one event "
            f"holds at most {EVENT_BYTES / 2**20:.1f} MiB; save it to a file or a volume instead\n"
        ),
    )
