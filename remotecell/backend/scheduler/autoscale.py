"""One deployment's replicas and calls: pure decisions.

A deployment serves calls on *replicas* (runner jobs in call mode). The autoscaler sees
events (a call arrived, answered or cancelled, a replica ready or gone, new settings or a
new version, a clock tick, a stop) and returns instructions (start or stop a replica,
send a call to a replica, fail a call). It does no I/O and reads no clock: every deadline
(a call's timeout, an idle replica's scale-down, the end of a restart backoff) is acted on
by the first event at or after it, and ``next_deadline()`` tells the shell when to tick.
Tests feed events with a fake clock and never sleep.

The rules it keeps:

* A call gets exactly one outcome: one ``Dispatch`` (then the replica's answer, or a
  ``FailCall`` if it times out or its replica dies), or one ``FailCall``.
* A replica takes at most ``concurrency`` calls at once, only once it is ready, and none
  after it is asked to stop; calls go out in arrival order, each to the least-loaded
  ready replica (the oldest on a tie). At most ``max_queue`` calls wait; one more fails.
* Replicas: ``ceil(calls / concurrency) + buffer_containers`` (no buffer with no calls),
  within ``min_containers`` and ``max_containers``. One idle for ``scaledown_window``
  stops while there are more than that; one with calls in flight is never stopped: it
  drains (takes no new call) and stops when its last call ends.
* A new version is a rolling update: the old version's replicas keep serving until one of
  the new version is ready, then drain and stop. If the new version fails its setup, the
  old one keeps serving (and its idle replicas scale down as above).
* A replica failing its setup with no replica ready fails the waiting calls, and the
  version is not started again for ``restart_backoff`` seconds; calls arriving meanwhile
  with no replica ready fail at once with the same message.
* A call not answered ``call_timeout`` seconds after it arrived fails (``"timeout"``),
  queued or in flight; one in flight still holds its place on its replica until the
  replica's ``CallDone``.

Call ids are unique within a deployment: a ``CallArrived`` for an id still queued or in
flight is ignored. Ids of replicas the autoscaler has stopped, or never started, are
ignored too. ``handle`` costs O(replicas) per event, plus O(replicas) per call it
dispatches and O(1) per call it times out.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from remotecell.contract.deployments import Settings

ReplicaState = Literal["starting", "ready", "draining"]
FailKind = Literal["unavailable", "timeout"]

# ----------------------------------------------------------------- events


@dataclass(frozen=True)
class Configure:
    """New settings, a new version, or both. The same version: the settings change now;
    another version: a rolling update to it."""

    settings: Settings
    version: int
    now: float


@dataclass(frozen=True)
class CallArrived:
    call_id: str
    now: float


@dataclass(frozen=True)
class CallDone:
    """The replica answered the call (whatever the outcome)."""

    call_id: str
    now: float


@dataclass(frozen=True)
class CallCancelled:
    """The caller went away: a queued call leaves the queue; one in flight stays counted
    on its replica until its ``CallDone``."""

    call_id: str
    now: float


@dataclass(frozen=True)
class ReplicaReady:
    replica_id: str
    now: float


@dataclass(frozen=True)
class ReplicaGone:
    """The replica's job ended: its setup failed (``failed_setup``), its runner died, or
    it stopped as asked. ``message`` says why, for the calls it leaves unanswered."""

    replica_id: str
    now: float
    message: str = ""
    failed_setup: bool = False


@dataclass(frozen=True)
class Tick:
    now: float


@dataclass(frozen=True)
class Stop:
    """The deployment stops: waiting and new calls fail; replicas drain, then stop."""

    now: float


Event = (
    Configure | CallArrived | CallDone | CallCancelled | ReplicaReady | ReplicaGone | Tick | Stop
)

# ----------------------------------------------------------------- instructions


@dataclass(frozen=True)
class StartReplica:
    replica_id: str
    version: int


@dataclass(frozen=True)
class StopReplica:
    """Stop a replica; it has no call in flight. Its ``ReplicaGone`` may follow (ignored)."""

    replica_id: str
    reason: str


@dataclass(frozen=True)
class Dispatch:
    call_id: str
    replica_id: str


@dataclass(frozen=True)
class FailCall:
    """The call fails: ``"unavailable"`` (HTTP 503) or ``"timeout"`` (HTTP 504); the
    message is one sentence for whoever called."""

    call_id: str
    kind: FailKind
    message: str


Instruction = StartReplica | StopReplica | Dispatch | FailCall


@dataclass(frozen=True)
class ReplicaView:
    """A replica as a status display shows it."""

    id: str
    version: int
    state: ReplicaState
    in_flight: int


# ----------------------------------------------------------------- state


@dataclass(eq=False)
class _Call:
    id: str
    arrived: float
    replica: str = ""  # "" while it waits
    timed_out: bool = False  # its FailCall("timeout") is sent; it still runs


@dataclass(eq=False)
class _Replica:
    id: str
    version: int
    state: ReplicaState
    #: When it started, became ready, or its last call in flight ended.
    since: float
    calls: dict[str, _Call] = field(default_factory=dict)
    #: Why it drains: its ``StopReplica`` says so once its last call ends.
    drain_reason: str = ""


class Autoscaler:
    """One deployment's replicas and calls. ``handle(event) -> instructions`` is the one
    entry point; construction starts nothing: the shell's first event (a ``Tick`` at
    once, as ``next_deadline()`` says) starts ``min_containers`` replicas."""

    def __init__(
        self,
        settings: Settings,
        version: int,
        now: float,
        *,
        restart_backoff: float = 5.0,
        id_prefix: str = "rep",
    ) -> None:
        self._settings = settings
        self._version = version
        self._stopped = False
        self._restart_backoff = restart_backoff
        self._id_prefix = id_prefix
        self._counter = 0
        self._now = now
        self._replicas: dict[str, _Replica] = {}  # in the order they started
        # Waiting calls, by id, and in arrival order; a cancelled call leaves the dict at
        # once and the deque when it reaches the front.
        self._waiting: dict[str, _Call] = {}
        self._queue: deque[_Call] = deque()
        # Dispatched calls not yet answered, by id, and in dispatch order (which is
        # arrival order: calls are served first come, first served).
        self._flight: dict[str, _Call] = {}
        self._flight_order: deque[_Call] = deque()
        self._backoff_until = -math.inf
        self._backoff_message = ""

    # -- queries (for status displays and tests) -------------------------------------

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def version(self) -> int:
        return self._version

    @property
    def stopped(self) -> bool:
        return self._stopped

    def replicas(self) -> list[ReplicaView]:
        """The replicas not yet asked to stop, oldest first."""
        return [
            ReplicaView(r.id, r.version, r.state, len(r.calls)) for r in self._replicas.values()
        ]

    def queued(self) -> int:
        """Calls waiting for a replica."""
        return len(self._waiting)

    def in_flight(self) -> int:
        """Calls on replicas, not yet answered (those failed by timeout included)."""
        return len(self._flight)

    def finished(self) -> bool:
        """Stopped, with no replica and no call left."""
        return self._stopped and not self._replicas and not self._waiting and not self._flight

    def next_deadline(self) -> float | None:
        """The earliest time a ``Tick`` would change something, or None."""
        times: list[float] = []
        timeout = self._settings.call_timeout
        waiting = self._queue_front()
        if waiting is not None:
            times.append(waiting.arrived + timeout)
        flying = self._flight_front()
        if flying is not None:
            times.append(flying.arrived + timeout)
        if not self._stopped:
            keep, target = self._targets()
            active = self._active()
            if len(active) < target:  # only while backing off (or before any event)
                times.append(max(self._backoff_until, self._now))
            window = self._settings.scaledown_window
            for group in (active, self._active(old=True)):
                if len(group) > keep:
                    times += [r.since + window for r in group if r.state == "ready" and not r.calls]
        return min(times) if times else None

    # -- the one entry point -----------------------------------------------------------

    def handle(self, event: Event) -> list[Instruction]:
        now = event.now
        self._now = now
        out: list[Instruction] = []
        rolling_floor = 0
        if isinstance(event, CallArrived):
            self._arrive(event.call_id, now, out)
        elif isinstance(event, CallDone):
            self._done(event.call_id, now, out)
        elif isinstance(event, CallCancelled):
            self._waiting.pop(event.call_id, None)
        elif isinstance(event, ReplicaReady):
            r = self._replicas.get(event.replica_id)
            if r is not None and r.state == "starting":
                r.state, r.since = "ready", now
                if r.version == self._version:
                    self._backoff_until = -math.inf  # its setup works
        elif isinstance(event, ReplicaGone):
            self._gone(event, out)
        elif isinstance(event, Configure):
            rolling_floor = self._configure(event, out)
        elif isinstance(event, Stop):
            self._stop(out)
        self._expire(now, out)
        if not self._stopped:
            self._retire_old(out)
            self._pump(out)
            self._scale(now, rolling_floor, out)
        return out

    # -- events ------------------------------------------------------------------------

    def _arrive(self, call_id: str, now: float, out: list[Instruction]) -> None:
        if call_id in self._waiting or call_id in self._flight:
            return
        if self._stopped:
            out.append(FailCall(call_id, "unavailable", "the endpoint is stopped"))
        elif now < self._backoff_until and not self._any_ready():
            out.append(FailCall(call_id, "unavailable", self._setup_message()))
        elif len(self._waiting) >= self._settings.max_queue:
            # A full queue means no replica has room: the call cannot go out at once.
            out.append(FailCall(call_id, "unavailable", self._full_message()))
        else:
            call = _Call(call_id, now)
            self._waiting[call_id] = call
            self._queue.append(call)

    def _done(self, call_id: str, now: float, out: list[Instruction]) -> None:
        call = self._flight.pop(call_id, None)
        if call is None:
            return
        r = self._replicas.get(call.replica)
        if r is None:
            return
        r.calls.pop(call_id, None)
        if not r.calls:
            r.since = now
            if r.state == "draining":
                self._stop_replica(r, r.drain_reason, out)

    def _gone(self, event: ReplicaGone, out: list[Instruction]) -> None:
        r = self._replicas.pop(event.replica_id, None)
        if r is None:
            return
        why = event.message or "its job ended"
        for call in r.calls.values():
            del self._flight[call.id]
            if not call.timed_out:
                out.append(FailCall(call.id, "unavailable", f"the replica stopped: {why}"))
        if (
            event.failed_setup
            and r.state == "starting"
            and r.version == self._version
            and not self._stopped
        ):
            # Starting it again at once would fail the same way: back off.
            self._backoff_until = event.now + self._restart_backoff
            self._backoff_message = why
            if not self._any_ready():
                self._fail_waiting("unavailable", self._setup_message(), out)

    def _configure(self, event: Configure, out: list[Instruction]) -> int:
        """Applies new settings; returns how many replicas a new version starts at least."""
        if self._stopped:
            return 0
        floor = 0
        if event.version != self._version:
            self._version = event.version
            self._backoff_until = -math.inf  # the backoff was the old version's
            floor = sum(
                1
                for r in self._replicas.values()
                if r.version != self._version and r.state != "draining"
            )
        self._settings = event.settings
        # A lower max_queue: the newest waiting calls beyond it fail.
        while len(self._waiting) > self._settings.max_queue:
            call = self._queue.pop()
            if self._waiting.get(call.id) is call:
                del self._waiting[call.id]
                out.append(FailCall(call.id, "unavailable", self._full_message()))
        return floor

    def _stop(self, out: list[Instruction]) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._backoff_until = -math.inf
        self._fail_waiting(
            "unavailable", "the endpoint was stopped before a replica took this call", out
        )
        for r in list(self._replicas.values()):
            self._drain(r, "the deployment stopped", out)

    # -- decisions ---------------------------------------------------------------------

    def _expire(self, now: float, out: list[Instruction]) -> None:
        """Fails the calls not answered within ``call_timeout`` of their arrival."""
        timeout = self._settings.call_timeout
        while (call := self._queue_front()) is not None and call.arrived + timeout <= now:
            self._queue.popleft()
            del self._waiting[call.id]
            out.append(FailCall(call.id, "timeout", self._timeout_message()))
        while (call := self._flight_front()) is not None and call.arrived + timeout <= now:
            self._flight_order.popleft()
            call.timed_out = True  # it keeps its place on its replica until CallDone
            out.append(FailCall(call.id, "timeout", self._timeout_message()))

    def _retire_old(self, out: list[Instruction]) -> None:
        """Once the current version has a ready replica, older ones drain and stop."""
        if not any(
            r.state == "ready" and r.version == self._version for r in self._replicas.values()
        ):
            return
        for r in list(self._replicas.values()):
            if r.version != self._version and r.state != "draining":
                self._drain(r, f"replaced by version {self._version}", out)

    def _pump(self, out: list[Instruction]) -> None:
        """Sends waiting calls, first come first served, to the least-loaded replicas."""
        if not self._waiting:
            self._queue.clear()  # only cancelled calls were left in it
            return
        limit = self._settings.concurrency
        ready = [r for r in self._replicas.values() if r.state == "ready"]
        current = [r for r in ready if r.version == self._version]
        # Old replicas serve only while no replica of the current version is ready.
        room = [r for r in (current or ready) if len(r.calls) < limit]
        while room and self._queue:
            call = self._queue.popleft()
            if self._waiting.get(call.id) is not call:
                continue  # cancelled
            del self._waiting[call.id]
            r = min(room, key=lambda r: len(r.calls))  # the first (oldest) on a tie
            call.replica = r.id
            r.calls[call.id] = call
            self._flight[call.id] = call
            self._flight_order.append(call)
            out.append(Dispatch(call.id, r.id))
            if len(r.calls) >= limit:
                room.remove(r)

    def _scale(self, now: float, floor: int, out: list[Instruction]) -> None:
        s = self._settings
        keep, target = self._targets()
        target = max(target, min(floor, s.max_containers))
        active = self._active()
        excess = len(active) - s.max_containers
        if excess > 0:
            # Starting replicas go first, then the least busy (idle ones longest idle
            # first); busy ones drain.
            order = sorted(active, key=lambda r: (r.state != "starting", len(r.calls), r.since))
            for r in order[:excess]:
                self._drain(r, f"above max_containers={s.max_containers}", out)
                active.remove(r)
        self._scale_down(active, keep, now, out)
        # Old replicas (serving until one of the current version is ready) scale down the
        # same way among themselves, so a new version that never gets ready leaves none idle.
        self._scale_down(self._active(old=True), keep, now, out)
        if now < self._backoff_until:
            return
        for _ in range(target - len(active)):
            self._counter += 1
            replica_id = f"{self._id_prefix}-{self._counter}"
            self._replicas[replica_id] = _Replica(replica_id, self._version, "starting", now)
            out.append(StartReplica(replica_id, self._version))

    def _scale_down(
        self, group: list[_Replica], keep: int, now: float, out: list[Instruction]
    ) -> None:
        """Stops replicas of ``group`` idle for ``scaledown_window`` (the longest idle
        first) while it has more than ``keep``."""
        if len(group) <= keep:
            return
        window = self._settings.scaledown_window
        idle = sorted(
            (r for r in group if r.state == "ready" and not r.calls and r.since + window <= now),
            key=lambda r: r.since,
        )
        for r in idle:
            if len(group) <= keep:
                break
            self._stop_replica(r, f"idle for {now - r.since:.0f} s", out)
            group.remove(r)

    # -- helpers -----------------------------------------------------------------------

    def _targets(self) -> tuple[int, int]:
        """How many replicas of the current version to keep (``keep``: idle ones above it
        scale down) and to run (``target``: within ``max_containers``)."""
        s = self._settings
        demand = len(self._waiting) + len(self._flight)
        needed = -(-demand // s.concurrency) + (s.buffer_containers if demand else 0)
        keep = max(s.min_containers, needed)
        return keep, min(s.max_containers, keep)

    def _active(self, *, old: bool = False) -> list[_Replica]:
        """The current version's replicas (or older ones') starting or ready, not draining."""
        return [
            r
            for r in self._replicas.values()
            if (r.version != self._version) == old and r.state != "draining"
        ]

    def _any_ready(self) -> bool:
        return any(r.state == "ready" for r in self._replicas.values())

    def _drain(self, r: _Replica, reason: str, out: list[Instruction]) -> None:
        """Stops ``r`` now if it has no call in flight, else once its last one ends."""
        if r.calls:
            r.state, r.drain_reason = "draining", reason
        else:
            self._stop_replica(r, reason, out)

    def _stop_replica(self, r: _Replica, reason: str, out: list[Instruction]) -> None:
        del self._replicas[r.id]
        out.append(StopReplica(r.id, reason))

    def _fail_waiting(self, kind: FailKind, message: str, out: list[Instruction]) -> None:
        for call in self._queue:
            if self._waiting.get(call.id) is call:
                out.append(FailCall(call.id, kind, message))
        self._queue.clear()
        self._waiting.clear()

    def _queue_front(self) -> _Call | None:
        """The oldest waiting call (dropping cancelled ones from the front)."""
        while self._queue:
            call = self._queue[0]
            if self._waiting.get(call.id) is call:
                return call
            self._queue.popleft()
        return None

    def _flight_front(self) -> _Call | None:
        """The oldest call in flight not yet failed by timeout."""
        while self._flight_order:
            call = self._flight_order[0]
            if self._flight.get(call.id) is call and not call.timed_out:
                return call
            self._flight_order.popleft()
        return None

    def _setup_message(self) -> str:
        return f"no replica could start: {self._backoff_message}"

    def _full_message(self) -> str:
        n = self._settings.max_queue
        return (
            f"the endpoint's queue is full ({n} call{'s' if n != 1 else ''} waiting); retry later"
        )

    def _timeout_message(self) -> str:
        return f"not answered within {self._settings.call_timeout:g} s (call_timeout)"
