"""Scheduled notebooks: when each schedule is due, and which runs to start: pure decisions.

A schedule runs a notebook at the due times of its ``Timing``: a 5-field cron string in
an IANA time zone, or a fixed interval (``every`` seconds, anchored at ``start``). The
``Scheduler`` holds every schedule of a control plane. It sees events (a schedule set,
removed, paused or resumed; a manual run; a run started or ended; a run restored after a
restart; a clock tick) and returns instructions (start a run, a due time skipped, the new
``last_due`` to store, a retry planned, a run over). It does no I/O and reads no clock:
due times and retries are acted on by the first ``Tick`` at or after them, and
``next_deadline()`` tells the shell when to tick. Tests feed events with a fake clock and
never sleep.

Due times (and the daylight-saving rule) are ``cron_times.py``'s.

The rules the scheduler keeps:

* A new schedule (``ScheduleSet`` with no ``last_due``) has nothing due before the
  event's ``now``: it emits ``Advanced(name, now)`` so that the control plane stores
  that baseline, and a restart before its first due time does not lose that due time.
  A changed timing counts from ``now`` in the same way.
* Due times are handled in batches, at a ``Tick``: those in ``(last handled, now]``.
  The latest of them is *on time* if ``now`` is within ``Policy.grace`` of it; the
  others (and a late latest one) were *missed*: the control plane was down or ticked
  late. ``catch_up`` decides what runs: ``"none"`` the on-time one only; ``"once"``
  (the default) the latest one, on time or not; ``"all"`` the on-time one plus the
  ``max_catch_up`` most recent missed ones, oldest first. The rest are ``Skipped`` (one
  ``Skipped`` with ``until`` for a range).
* ``overlap`` decides what happens to a due time that comes while a run of the same
  schedule is active (started, or waiting for a retry): ``"skip"`` (the default) skips
  it, ``"queue"`` keeps it (one at most; further ones are skipped) and starts it when
  the last active run is over, ``"allow"`` starts it at once.
* A failed run with retries left is started again with the same run id and the next
  attempt number, ``retry_delay * 2 ** (attempt - 1)`` seconds (at most ``retry_max``)
  after it failed (``Retrying`` says when); otherwise it is over (``RunOver``).
* ``RunNow`` starts a manual run at once, whatever the overlap policy and even while the
  schedule is paused; its run id is ``run_id(name, now) + "-manual"``. It does not move
  ``last_due``; it counts as an active run for the due times that come while it runs.
* Pausing keeps active runs (and their retries) going and drops a queued due time;
  resuming does not catch up: the due times while paused are ``Skipped``.
* Removing a schedule forgets it: its active runs go on, but they are not retried, and
  their ends are ignored.

Exactly once (the contract with the caller). A run id is deterministic: ``run_id(name,
due)``, the same before and after a restart. ``Advanced`` tells the caller the new
``last_due`` (due times up to it are handled: started, queued or skipped); it comes
*with* the ``StartRun`` of those due times, in the same ``handle`` answer, after them.
The caller records one answer's instructions in one transaction: the run rows (keyed by
``(run_id, attempt)``) with ``last_due``; and it refuses a ``StartRun`` whose ``(run_id,
attempt)`` it already has. Then a restart between a due time and its start neither loses
nor duplicates the run: if the transaction was not committed, the rebuilt scheduler finds
the due time after the stored ``last_due`` and emits the same ``StartRun`` again; if it
was, the run is restored (``RunRestored``) and nothing is emitted for it again. A caller
that records instructions one by one, in order, is safe too: a ``StartRun`` recorded
without its ``Advanced`` is emitted again and refused (or, if restored, not emitted at
all), because ``Advanced`` comes last. (``last_due`` stored *without* its ``StartRun``
would lose the run: that is what the order, or the one transaction, rules out.)

While a due time waits in the queue, ``last_due`` stays before it, so a restart sees it
as due again (the catch-up policy then decides, as for any missed due time); the due
times skipped after it may be ``Skipped`` a second time then.

A restart feeds ``ScheduleSet`` for every stored schedule with its stored ``last_due``
and ``paused``, then ``RunRestored`` for every run started and not over (with the
``retry_at`` of its last ``Retrying`` if it waits for a retry), then a ``Tick``.
``handle`` raises ``ValueError`` for a ``ScheduleSet`` whose timing or policy
``check_timing`` or ``check_policy`` refuses: check them where a user sets a schedule.
Events about unknown schedules or runs are ignored. ``handle`` costs O(schedules) per
``Tick`` plus O(max_catch_up) croniter steps per batch; ``next_deadline`` O(schedules).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from remotecell.backend.scheduler.cron_times import (
    MIN_EVERY,
    DueTimes,
    Timing,
    check_timing,
    due_times,
    next_due,
    run_id,
    times_of,
)

__all__ = [
    "CATCH_UP",
    "MIN_EVERY",
    "OVERLAP",
    "Timing",
    "check_timing",
    "due_times",
    "next_due",
    "run_id",
]

OVERLAP = ("skip", "queue", "allow")
CATCH_UP = ("none", "once", "all")

# ----------------------------------------------------------------- policy


@dataclass(frozen=True)
class Policy:
    """What a schedule does about overlaps, missed due times and failures."""

    overlap: str = "skip"  # skip | queue | allow
    catch_up: str = "once"  # none | once | all
    retries: int = 0
    retry_delay: float = 60.0  # the first retry after this; doubles; capped at retry_max
    retry_max: float = 3600.0
    max_catch_up: int = 100  # bound on "all"
    #: A due time handled at most this many seconds late is on time; later, it was missed.
    grace: float = 60.0


def check_policy(p: Policy) -> Policy:
    """``p`` if it is a valid policy, else ``ValueError`` with one sentence."""
    if p.overlap not in OVERLAP:
        raise ValueError(f"overlap '{p.overlap}' is not one of {', '.join(OVERLAP)}")
    if p.catch_up not in CATCH_UP:
        raise ValueError(f"catch_up '{p.catch_up}' is not one of {', '.join(CATCH_UP)}")
    if isinstance(p.retries, bool) or not isinstance(p.retries, int) or p.retries < 0:
        raise ValueError(f"retries={p.retries!r} is not a count of retries (0 or more)")
    if (
        isinstance(p.max_catch_up, bool)
        or not isinstance(p.max_catch_up, int)
        or p.max_catch_up < 0
    ):
        raise ValueError(f"max_catch_up={p.max_catch_up!r} is not a count (0 or more)")
    for name in ("retry_delay", "retry_max", "grace"):
        value = getattr(p, name)
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name}={value!r} is not a number of seconds (0 or more)")
    return p


def backoff(p: Policy, attempt: int) -> float:
    """How long after failed attempt ``attempt`` (1, 2, ...) the next one starts."""
    return min(p.retry_max, p.retry_delay * 2.0 ** min(attempt - 1, 64))


# ----------------------------------------------------------------- events


@dataclass(frozen=True)
class ScheduleSet:
    """Create or update a schedule. ``last_due``: the stored last due time handled (None:
    a new schedule, nothing before ``now`` is due); for a schedule the scheduler already
    has, its own record wins and ``last_due`` is ignored."""

    name: str
    timing: Timing
    policy: Policy
    now: float
    last_due: float | None = None
    paused: bool = False


@dataclass(frozen=True)
class ScheduleRemoved:
    name: str
    now: float


@dataclass(frozen=True)
class Paused:
    name: str
    now: float


@dataclass(frozen=True)
class Resumed:
    """The due times while paused are skipped, not caught up."""

    name: str
    now: float


@dataclass(frozen=True)
class RunNow:
    """A manual run: it always starts (whatever the overlap policy, paused or not)."""

    name: str
    now: float


@dataclass(frozen=True)
class RunStarted:
    run_id: str
    now: float


@dataclass(frozen=True)
class RunEnded:
    """The run's current attempt ended (``attempt``, where given, must be it)."""

    run_id: str
    now: float
    ok: bool
    attempt: int | None = None


@dataclass(frozen=True)
class RunRestored:
    """After a restart: a run started and not over; ``retry_at`` where it waits for a
    retry (the time its last ``Retrying`` said)."""

    name: str
    run_id: str
    due: float
    now: float
    attempt: int = 1
    retry_at: float | None = None


@dataclass(frozen=True)
class Tick:
    now: float


Event = (
    ScheduleSet
    | ScheduleRemoved
    | Paused
    | Resumed
    | RunNow
    | RunStarted
    | RunEnded
    | RunRestored
    | Tick
)

# ----------------------------------------------------------------- instructions


@dataclass(frozen=True)
class StartRun:
    """Start attempt ``attempt`` of run ``run_id`` (record it first; never twice)."""

    name: str
    run_id: str
    due: float
    attempt: int


@dataclass(frozen=True)
class Skipped:
    """Due time ``due`` (and, with ``until``, every due time from it to ``until``) is not
    run; ``reason`` is one sentence."""

    name: str
    due: float
    reason: str
    until: float | None = None


@dataclass(frozen=True)
class Advanced:
    """Store ``last_due``: due times up to it are handled (with this answer's runs)."""

    name: str
    last_due: float


@dataclass(frozen=True)
class Retrying:
    """Attempt ``attempt`` of the run starts at ``at`` (a ``StartRun`` then)."""

    name: str
    run_id: str
    attempt: int
    at: float


@dataclass(frozen=True)
class RunOver:
    """The run is over: it succeeded, or its last attempt failed."""

    name: str
    run_id: str
    ok: bool
    attempts: int


Instruction = StartRun | Skipped | Advanced | Retrying | RunOver

# ----------------------------------------------------------------- state

RunState = Literal["starting", "running", "waiting"]


@dataclass(eq=False)
class _Run:
    name: str
    id: str
    due: float
    attempt: int
    state: RunState = "starting"
    retry_at: float = math.inf


@dataclass(eq=False)
class _Schedule:
    name: str
    timing: Timing
    policy: Policy
    times: DueTimes
    paused: bool
    cursor: float  # due times up to it are handled
    stored: float | None  # the last_due the caller stores
    next_due: float | None = None  # the first due time after cursor
    queued: float | None = None  # a due time waiting for the active runs to end
    pin: float | None = None  # while one is queued: the last_due before it
    runs: dict[str, _Run] = field(default_factory=dict)
    last_manual: str = ""

    def move(self, cursor: float) -> None:
        if cursor > self.cursor:
            self.cursor = cursor
            self.next_due = self.times.after(cursor)


class Scheduler:
    """All schedules of a control plane. ``handle(event) -> instructions`` is the one
    entry point."""

    def __init__(self) -> None:
        self._schedules: dict[str, _Schedule] = {}
        self._runs: dict[str, _Run] = {}

    # -- queries --------------------------------------------------------------------

    def schedules(self) -> list[str]:
        return sorted(self._schedules)

    def runs_active(self, name: str) -> list[str]:
        """The run ids of the schedule's runs not over (waiting for a retry included), in
        the order they started."""
        s = self._schedules.get(name)
        return list(s.runs) if s else []

    def last_due(self, name: str) -> float | None:
        """The last ``Advanced`` (or stored) ``last_due`` of the schedule."""
        s = self._schedules.get(name)
        return s.stored if s else None

    def queued(self, name: str) -> float | None:
        """The due time waiting for the schedule's active runs to end, if any."""
        s = self._schedules.get(name)
        return s.queued if s else None

    def next_deadline(self) -> float | None:
        """The earliest time a ``Tick`` would do something (a due time or a retry), or None."""
        times = [
            s.next_due for s in self._schedules.values() if s.next_due is not None and not s.paused
        ]
        times += [r.retry_at for r in self._runs.values() if r.state == "waiting"]
        return min(times) if times else None

    # -- the one entry point -------------------------------------------------------------

    def handle(self, event: Event) -> list[Instruction]:
        out: list[Instruction] = []
        if isinstance(event, Tick):
            for s in self._schedules.values():
                self._tick(s, event.now, out)
        elif isinstance(event, ScheduleSet):
            self._set(event, out)
        elif isinstance(event, RunEnded):
            self._ended(event, out)
        elif isinstance(event, RunStarted):
            run = self._runs.get(event.run_id)
            if run is not None and run.state == "starting":
                run.state = "running"
        elif isinstance(event, RunRestored):
            self._restored(event)
        else:
            target = self._schedules.get(event.name)
            if target is None:
                return out
            if isinstance(event, ScheduleRemoved):
                self._remove(target, out)
            elif isinstance(event, Paused):
                self._pause(target, out)
            elif isinstance(event, Resumed):
                self._resume(target, event.now, out)
            elif isinstance(event, RunNow):
                self._run_now(target, event.now, out)
        return out

    # -- events ----------------------------------------------------------------------------

    def _set(self, event: ScheduleSet, out: list[Instruction]) -> None:
        timing, policy = check_timing(event.timing), check_policy(event.policy)
        s = self._schedules.get(event.name)
        if s is None:
            start = event.now if event.last_due is None else event.last_due
            s = _Schedule(
                event.name, timing, policy, times_of(timing), event.paused, start, event.last_due
            )
            s.next_due = s.times.after(start)
            self._schedules[event.name] = s
            if event.last_due is None:
                self._advance(s, start, out)
            return
        s.policy = policy
        if timing != s.timing:
            s.timing, s.times = timing, times_of(timing)
            s.cursor = max(s.cursor, event.now)
            s.next_due = s.times.after(s.cursor)
            if s.queued is None:
                self._advance(s, s.cursor, out)
        if event.paused and not s.paused:
            self._pause(s, out)
        elif s.paused and not event.paused:
            self._resume(s, event.now, out)

    def _remove(self, s: _Schedule, out: list[Instruction]) -> None:
        if s.queued is not None:
            out.append(Skipped(s.name, s.queued, "the schedule was removed"))
        for run_id_ in s.runs:
            del self._runs[run_id_]
        del self._schedules[s.name]

    def _pause(self, s: _Schedule, out: list[Instruction]) -> None:
        if s.paused:
            return
        s.paused = True
        if s.queued is not None:
            out.append(Skipped(s.name, s.queued, "the schedule was paused"))
            s.queued = s.pin = None
            self._advance(s, s.cursor, out)

    def _resume(self, s: _Schedule, now: float, out: list[Instruction]) -> None:
        if not s.paused:
            return
        s.paused = False
        first = s.next_due
        if first is not None and first <= now:
            last = s.times.last(now)
            assert last is not None
            out.append(
                Skipped(s.name, first, "the schedule was paused", last if last != first else None)
            )
            s.move(last)
            self._advance(s, s.cursor, out)

    def _run_now(self, s: _Schedule, now: float, out: list[Instruction]) -> None:
        rid = run_id(s.name, now) + "-manual"
        if rid == s.last_manual or rid in self._runs:
            out.append(Skipped(s.name, now, "a manual run already started at this time"))
            return
        s.last_manual = rid
        self._start(s, rid, now, out)

    def _ended(self, event: RunEnded, out: list[Instruction]) -> None:
        run = self._runs.get(event.run_id)
        if run is None or run.state == "waiting":
            return
        if event.attempt is not None and event.attempt != run.attempt:
            return
        s = self._schedules[run.name]
        if not event.ok and run.attempt <= s.policy.retries:
            run.state = "waiting"
            run.retry_at = event.now + backoff(s.policy, run.attempt)
            out.append(Retrying(s.name, run.id, run.attempt + 1, run.retry_at))
            return
        del self._runs[run.id]
        del s.runs[run.id]
        out.append(RunOver(s.name, run.id, event.ok, run.attempt))
        if s.queued is not None and not s.runs:
            due = s.queued
            s.queued = s.pin = None
            self._start(s, run_id(s.name, due), due, out)
            self._advance(s, s.cursor, out)

    def _restored(self, event: RunRestored) -> None:
        s = self._schedules.get(event.name)
        if s is None or event.run_id in self._runs:
            return
        run = _Run(s.name, event.run_id, event.due, event.attempt, "running")
        if event.retry_at is not None:
            run.state, run.retry_at = "waiting", event.retry_at
        s.runs[run.id] = self._runs[run.id] = run
        if run.id.endswith("-manual"):
            s.last_manual = run.id

    def _tick(self, s: _Schedule, now: float, out: list[Instruction]) -> None:
        for run in list(s.runs.values()):
            if run.state == "waiting" and run.retry_at <= now:
                run.attempt += 1
                run.state, run.retry_at = "starting", math.inf
                out.append(StartRun(s.name, run.id, run.due, run.attempt))
        if s.paused or s.next_due is None or s.next_due > now:
            return
        self._batch(s, now, out)

    # -- decisions ---------------------------------------------------------------------

    def _batch(self, s: _Schedule, now: float, out: list[Instruction]) -> None:
        """Handles the due times in ``(cursor, now]``: catch-up, then overlap."""
        p, first, latest = s.policy, s.next_due, s.times.last(now)
        assert first is not None and latest is not None and first <= latest
        on_time = now - latest <= p.grace
        if p.catch_up == "all":
            limit = p.max_catch_up + (1 if on_time else 0)
        elif p.catch_up == "once":
            limit = 1
        else:
            limit = 1 if on_time else 0
        runs: list[float] = []
        due: float | None = latest
        while due is not None and due >= first and len(runs) < limit:
            runs.append(due)
            due = s.times.before(due)
        runs.reverse()
        # ``due`` is now the latest due time of the batch that does not run, if any.
        if due is not None and due >= first:
            why = {
                "none": "it was missed (the control plane was down or late), and catch_up is 'none'",
                "once": "it was missed, and catch_up 'once' runs only the latest missed due time",
                "all": f"it was missed, and catch_up 'all' runs at most the {p.max_catch_up} latest (max_catch_up)",
            }[p.catch_up]
            out.append(Skipped(s.name, first, why, due if due != first else None))
            s.move(due)
        for due in runs:
            self._due(s, due, out)
        s.move(latest)
        self._advance(s, s.pin if s.queued is not None else s.cursor, out)

    def _due(self, s: _Schedule, due: float, out: list[Instruction]) -> None:
        """A due time comes: start it, queue it or skip it, by the overlap policy."""
        rid = run_id(s.name, due)
        overlap = s.policy.overlap
        if rid in self._runs:
            pass  # restored after a restart: it runs already
        elif not s.runs or overlap == "allow":
            self._start(s, rid, due, out)
        elif overlap == "queue" and s.queued is None:
            s.queued, s.pin = due, s.cursor
        else:
            why = (
                "a run of the schedule is active and another due time is queued (overlap 'queue')"
                if overlap == "queue"
                else "a run of the schedule is still active (overlap 'skip')"
            )
            out.append(Skipped(s.name, due, why))
        s.move(due)

    def _start(self, s: _Schedule, rid: str, due: float, out: list[Instruction]) -> None:
        run = _Run(s.name, rid, due, 1)
        s.runs[rid] = self._runs[rid] = run
        out.append(StartRun(s.name, rid, due, 1))

    def _advance(self, s: _Schedule, last_due: float | None, out: list[Instruction]) -> None:
        if last_due is not None and (s.stored is None or last_due > s.stored):
            s.stored = last_due
            out.append(Advanced(s.name, last_due))


__all__ = [
    "Advanced",
    "Event",
    "Instruction",
    "Paused",
    "Policy",
    "Resumed",
    "Retrying",
    "RunEnded",
    "RunNow",
    "RunOver",
    "RunRestored",
    "RunStarted",
    "ScheduleRemoved",
    "ScheduleSet",
    "Scheduler",
    "Skipped",
    "StartRun",
    "Tick",
    "Timing",
    "backoff",
    "check_policy",
    "check_timing",
    "due_times",
    "next_due",
    "run_id",
]
