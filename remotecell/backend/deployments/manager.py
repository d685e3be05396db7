"""The control plane's shell over deployments: it carries out the autoscaler's decisions.

Each live deployment has one pure ``Autoscaler`` (``scheduler/autoscale.py``), which
decides which replicas run, which replica takes which call, which calls wait and which
fail. The manager turns what happens into its events (a deploy, a call from the gateway
or the ``Invoke`` RPC, a replica ready or gone, an answer, a tick at the next deadline)
and carries out its instructions:

* a replica is a job (``JobSpec.serve`` set) submitted to the controller as the
  deployment's owner, so it runs on the same runners, images, GPUs, secrets and volumes
  as a cell; stopping it cancels the job, which drains the replica;
* a call goes to the replica's runner over the runner channel (``Calls``), and its
  answer comes back the same way (``CallResults``), never stored.

Deployments and their versions are in SQLite (``store.py``); at start the manager cancels
the replicas a previous control plane left and starts each deployment's
``min_containers`` again.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from remotecell._proto import pb
from remotecell.backend.deployments.log import DeploymentLog
from remotecell.backend.deployments.store import DeploymentRow, DeploymentStore
from remotecell.backend.scheduler import autoscale as sc
from remotecell.contract import deployments as rules
from remotecell.contract.deployments import Settings
from remotecell.contract.errors import ConfigError

if TYPE_CHECKING:
    from remotecell.backend.controller import Controller
    from remotecell.backend.state.credentials import Principal

log = logging.getLogger("remotecell.deployments")

#: A piece of a call's answer, handed to whoever made the call.
Sink = Callable[[pb.CallResult], None]
#: An ephemeral deployment (a notebook function's) unused this long is forgotten.
EPHEMERAL_IDLE_S = 3600.0
#: Calls' latencies kept for status (p50, requests per second): the last minute.
STATS_WINDOW_S = 60.0
STATS_MAX = 20_000
#: Latency histogram buckets for /metrics, seconds.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class DeploymentError(Exception):
    """A deployment request that cannot be carried out; ``code`` names the status."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code  # "not_found", "exists", "invalid"


@dataclass
class _Call:
    id: str
    deployment: str
    sink: Sink
    started: float
    #: What goes to the replica, until the call is dispatched.
    payload: pb.Call | None
    replica: str = ""
    answered: bool = False  # its last piece went to the caller
    streamed: bool = False


@dataclass
class _Stats:
    recent: deque[tuple[float, float]] = field(default_factory=deque)  # (time, seconds)
    by_status: dict[int, int] = field(default_factory=dict)
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    latency_sum: float = 0.0
    calls: int = 0
    errors: int = 0

    def record(self, status: int, seconds: float, now: float) -> None:
        self.calls += 1
        self.errors += status >= 500
        self.by_status[status] = self.by_status.get(status, 0) + 1
        self.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.latency_sum += seconds
        self.recent.append((now, seconds))
        if len(self.recent) > STATS_MAX:
            self.recent.popleft()

    def window(self, now: float) -> tuple[float, float]:
        """p50 in ms and requests per second over the last minute."""
        while self.recent and self.recent[0][0] < now - STATS_WINDOW_S:
            self.recent.popleft()
        if not self.recent:
            return 0.0, 0.0
        latencies = sorted(s for _, s in self.recent)
        span = max(1.0, min(STATS_WINDOW_S, now - self.recent[0][0]))
        return latencies[len(latencies) // 2] * 1000, len(self.recent) / span


@dataclass
class _Live:
    row: DeploymentRow
    settings: Settings
    scaler: sc.Autoscaler
    log: DeploymentLog
    replica_jobs: dict[str, str] = field(default_factory=dict)  # replica id -> job id
    job_replicas: dict[str, str] = field(default_factory=dict)  # job id -> replica id
    ready: pb.ReplicaReady | None = None
    stats: _Stats = field(default_factory=_Stats)
    last_used: float = field(default_factory=time.time)


class DeploymentManager:
    def __init__(self, controller: Controller, store: DeploymentStore, log_dir: Path) -> None:
        self.controller = controller
        self.store = store
        self.log_dir = log_dir
        self._live: dict[str, _Live] = {}
        self._calls: dict[str, _Call] = {}
        #: Calls to send to each runner at the end of this loop iteration, as one message.
        self._outgoing: dict[str, list[pb.Call]] = {}
        self._flush_scheduled = False
        self._ticker: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        #: When the ticker wakes by itself next; an earlier deadline wakes it sooner.
        self._sleep_until = 0.0
        self._tasks: set[asyncio.Task[object]] = set()
        controller.job_listeners.append(self.job_ended)
        controller.sessions.on_call_results = self.call_results
        controller.sessions.on_replica_ready = self.replica_ready

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Cancels replicas a previous control plane left; brings every kept
        deployment back to its ``min_containers``."""
        for job in list(self.controller.jobs.values()):
            if job.spec.HasField("serve"):
                self._spawn(self.controller.cancel(job.id, "the control plane restarted"))
        for row in self.store.all():
            if row.ephemeral:
                self.store.delete(row.name)
                DeploymentLog(self._log_path(row.name)).remove()
                continue
            if not row.stopped:
                self._open(row)
        self._ticker = asyncio.create_task(self._tick_forever())

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        for live in self._live.values():
            live.log.close()
        for call in list(self._calls.values()):
            self._answer(call, rules.call_error(pb.CallError.UNAVAILABLE, _STOPPING))
        for task in list(self._tasks):
            task.cancel()

    def _open(self, row: DeploymentRow) -> _Live:
        settings = Settings.from_proto(row.settings)
        live = _Live(
            row,
            settings,
            sc.Autoscaler(_scaling(settings), row.version, time.time(), id_prefix=row.name),
            DeploymentLog(self._log_path(row.name)),
        )
        self._live[row.name] = live
        self._handle(live, sc.Tick(time.time()))
        return live

    def _log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    async def _tick_forever(self) -> None:
        """Ticks each deployment's autoscaler at its next deadline (and flushes the logs
        and forgets finished deployments at least once a second)."""
        while True:
            deadlines = [d for live in self._live.values() if (d := live.scaler.next_deadline())]
            delay = max(0.0, min([1.0, *(d - time.time() for d in deadlines)]))
            self._wake.clear()
            self._sleep_until = time.time() + delay
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            now = time.time()
            for live in list(self._live.values()):
                deadline = live.scaler.next_deadline()
                if deadline is not None and deadline <= now:
                    self._handle(live, sc.Tick(now))
                live.log.flush()
                self._forget_if_idle(live, now)

    def _forget_if_idle(self, live: _Live, now: float) -> None:
        done = live.scaler.finished()
        idle_ephemeral = (
            live.row.ephemeral
            and not live.scaler.replicas()
            and live.scaler.queued() == 0
            and live.scaler.in_flight() == 0
            and now - live.last_used > EPHEMERAL_IDLE_S
        )
        if done or idle_ephemeral:
            del self._live[live.row.name]
            live.log.close()
            if live.row.ephemeral:
                self.store.delete(live.row.name)
                live.log.remove()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ owners' requests

    def deploy(self, caller: Principal, request: pb.DeployRequest) -> pb.DeploymentInfo:
        """Stores a new version of ``request.name`` and rolls its replicas to it.

        Raises:
            DeploymentError: the name is another user's ("exists").
            ConfigError: the spec cannot run here (the controller's admission rules).
        """
        name = request.name
        row = self.store.get(name)
        if row is not None and row.owner != caller.user:
            raise DeploymentError(
                "exists",
                f"the name {name!r} is another user's deployment; choose another name",
            )
        settings = Settings.from_proto(request.settings).checked()
        spec = pb.JobSpec()
        spec.CopyFrom(request.spec)
        spec.serve.CopyFrom(rules.serve_for(name, 0, spec.serve.handler, settings))
        spec.retries, spec.timeout_s, spec.session, spec.pull[:] = 0, 0.0, "", []
        self.controller.check_admissible(spec, caller.user)
        version = self.store.add_version(
            name, caller.user, spec, settings.to_proto(), request.ephemeral
        )
        row = self.store.get(name)
        assert row is not None
        live = self._live.get(name)
        if live is None or live.scaler.stopped:
            if live is not None:  # stopped but still draining: a fresh scaler takes over
                self._live.pop(name)
                live.log.close()
            live = self._open(row)
        else:
            live.row, live.settings = row, settings
            self._handle(live, sc.Configure(_scaling(settings), version, time.time()))
        live.log.line(f"deployed version {version} by {caller.user}")
        return self.info(name, caller)

    def _owned(self, name: str, caller: Principal) -> DeploymentRow:
        row = self.store.get(name)
        if row is None or row.owner != caller.user or caller.is_runner:
            raise DeploymentError(
                "not_found",
                f"no deployment named {name!r}; `remotecell endpoint ls` lists yours",
            )
        return row

    def info(self, name: str, caller: Principal) -> pb.DeploymentInfo:
        row = self._owned(name, caller)
        return self._info(row)

    def listing(self, caller: Principal) -> list[pb.DeploymentInfo]:
        return [self._info(row) for row in self.store.all() if row.owner == caller.user]

    def _info(self, row: DeploymentRow) -> pb.DeploymentInfo:
        info = pb.DeploymentInfo(
            name=row.name,
            owner=row.owner,
            version=row.version,
            versions=self.store.versions(row.name),
            settings=row.settings,
            stopped=row.stopped,
            ephemeral=row.ephemeral,
            path=rules.PATH_PREFIX + row.name,
            created=row.created,
        )
        live = self._live.get(row.name)
        if live is None:
            return info
        if live.ready is not None:
            info.handler, info.kind = live.ready.handler, live.ready.kind
            info.params.extend(live.ready.params)
        for r in live.scaler.replicas():
            info.replicas.append(
                pb.ReplicaInfo(
                    id=r.id,
                    job_id=live.replica_jobs.get(r.id, ""),
                    version=r.version,
                    state=r.state,
                    in_flight=r.in_flight,
                )
            )
        info.queued, info.in_flight = live.scaler.queued(), live.scaler.in_flight()
        info.p50_ms, info.requests_per_s = live.stats.window(time.time())
        info.calls, info.errors = live.stats.calls, live.stats.errors
        return info

    def stop(self, name: str, caller: Principal) -> pb.DeploymentInfo:
        row = self._owned(name, caller)
        self.store.update(name, stopped=True)
        live = self._live.get(name)
        if live is not None:
            self._handle(live, sc.Stop(time.time()))
            live.log.line(f"stopped by {caller.user}")
        info = self._info(self.store.get(name) or row)
        if row.ephemeral and (live is None or live.scaler.finished()):
            self.store.delete(name)
            if live is not None:
                self._live.pop(name, None)
                live.log.remove()
        return info

    def scale(
        self, name: str, caller: Principal, low: int | None, high: int | None
    ) -> pb.DeploymentInfo:
        row = self._owned(name, caller)
        settings = Settings.from_proto(row.settings)
        settings = settings.replace(
            min_containers=settings.min_containers if low is None else low,
            max_containers=settings.max_containers if high is None else high,
        ).checked()
        self.store.update(name, settings=settings.to_proto())
        live = self._live.get(name)
        if live is not None and not live.scaler.stopped:
            live.settings = settings
            live.row = self.store.get(name) or row
            self._handle(live, sc.Configure(_scaling(settings), row.version, time.time()))
            live.log.line(
                f"scaled to min_containers={settings.min_containers} "
                f"max_containers={settings.max_containers}"
            )
        return self._info(self.store.get(name) or row)

    def rollback(self, name: str, caller: Principal) -> pb.DeploymentInfo:
        row = self._owned(name, caller)
        earlier = [v for v in self.store.versions(name) if v < row.version]
        if not earlier:
            raise DeploymentError(
                "invalid", f"{name!r} is at its first version ({row.version}): no earlier one"
            )
        version = earlier[-1]
        self.store.update(name, version=version, stopped=False)
        row = self.store.get(name) or row
        live = self._live.get(name)
        if live is None or live.scaler.stopped:
            if live is not None:
                self._live.pop(name)
                live.log.close()
            live = self._open(row)
        else:
            live.row = row
            self._handle(live, sc.Configure(_scaling(live.settings), version, time.time()))
        live.log.line(f"rolled back to version {version} by {caller.user}")
        return self._info(row)

    def log_of(self, name: str, caller: Principal) -> DeploymentLog:
        self._owned(name, caller)
        live = self._live.get(name)
        return live.log if live is not None else DeploymentLog(self._log_path(name))

    # ------------------------------------------------------------------ calls

    def settings_of(self, name: str) -> Settings | None:
        """The settings of a deployment that takes calls now (None: none of that name
        does), for the gateway's checks."""
        live = self._live.get(name)
        return live.settings if live is not None and not live.scaler.stopped else None

    def kind_of(self, name: str) -> str:
        """What the deployment's replicas serve ("" until one was ready)."""
        live = self._live.get(name)
        return live.ready.kind if live is not None and live.ready is not None else ""

    def may_call(self, name: str, caller: Principal | None) -> bool:
        """Whether ``caller`` (None: no credential) may call ``name``: its owner, or
        anyone where it is public."""
        live = self._live.get(name)
        if live is None or live.scaler.stopped:
            return False
        if live.settings.public:
            return True
        return caller is not None and not caller.is_runner and caller.user == live.row.owner

    def call(self, name: str, call: pb.Call, sink: Sink) -> str:
        """Starts a call of ``name`` (the caller was checked with :meth:`may_call`);
        its answer goes to ``sink`` piece by piece, the last with ``done``. Returns the
        call's id (also its request id)."""
        call.call_id = "req-" + secrets.token_hex(6)
        live = self._live.get(name)
        if live is None or live.scaler.stopped:
            sink(rules.call_error(pb.CallError.NOT_FOUND, f"no deployment named {name!r}"))
            return call.call_id
        now = time.time()
        live.last_used = now
        self._calls[call.call_id] = _Call(call.call_id, name, sink, now, call)
        self._handle(live, sc.CallArrived(call.call_id, now))
        return call.call_id

    def is_open(self, call_id: str) -> bool:
        """Whether the call is still to be answered."""
        call = self._calls.get(call_id)
        return call is not None and not call.answered

    def abandon(self, call_id: str) -> None:
        """The caller went away: a waiting call is dropped; a running one runs on."""
        call = self._calls.get(call_id)
        if call is None or call.answered:
            return
        call.answered = True
        live = self._live.get(call.deployment)
        if live is not None:
            self._handle(live, sc.CallCancelled(call_id, time.time()))
        if not call.replica:
            self._forget(call_id)

    def _forget(self, call_id: str) -> None:
        self._calls.pop(call_id, None)

    def _answer(self, call: _Call, piece: pb.CallResult) -> None:
        if call.answered:
            return
        piece.call_id = call.id
        if piece.done:
            call.answered = True
            live = self._live.get(call.deployment)
            if live is not None:
                status = rules.HTTP_STATUS[piece.error.kind] if piece.HasField("error") else 200
                if piece.HasField("head") and not call.streamed:
                    status = piece.head.status
                seconds = time.time() - call.started
                live.stats.record(status, seconds, time.time())
                if piece.HasField("error"):
                    line = (
                        f"call {call.id} {status} {seconds * 1000:.1f} ms: "
                        f"{piece.error.type_name + ': ' if piece.error.type_name else ''}"
                        f"{piece.error.message}"
                    )
                    if piece.error.traceback:
                        line += "\n" + piece.error.traceback.rstrip()
                    live.log.line(line)
                else:
                    live.log.line(f"call {call.id} {status} {seconds * 1000:.1f} ms")
        elif piece.HasField("head"):
            call.streamed = piece.head.status < 400
        try:
            call.sink(piece)
        except Exception:  # a caller that went away must not stop the others' answers
            log.exception("a call's answer could not be handed on")

    # ------------------------------------------------------------------ decisions carried out

    def _handle(self, live: _Live, event: sc.Event) -> None:
        for ins in live.scaler.handle(event):
            self._carry(live, ins)
        self._deadline_of(live)

    def _deadline_of(self, live: _Live) -> None:
        """Wakes the ticker early if ``live`` has a deadline before the ticker's."""
        deadline = live.scaler.next_deadline()
        if deadline is not None and deadline < self._sleep_until:
            self._wake.set()

    def _carry(self, live: _Live, ins: sc.Instruction) -> None:
        if isinstance(ins, sc.Dispatch):
            self._dispatch(live, ins)
        elif isinstance(ins, sc.FailCall):
            self._fail(ins)
        elif isinstance(ins, sc.StartReplica):
            self._start_replica(live, ins)
        elif isinstance(ins, sc.StopReplica):
            self._stop_replica(live, ins)

    def _dispatch(self, live: _Live, ins: sc.Dispatch) -> None:
        call = self._calls.get(ins.call_id)
        payload = call.payload if call is not None else None
        job_id = live.replica_jobs.get(ins.replica_id, "")
        job = self.controller.jobs.get(job_id)
        if call is None or payload is None:
            self._handle(live, sc.CallDone(ins.call_id, time.time()))
            return
        call.payload, call.replica = None, ins.replica_id
        if job is None or not job.runner_id:
            self._answer(call, rules.call_error(pb.CallError.UNAVAILABLE, _REPLICA_GONE))
            self._handle(live, sc.CallDone(ins.call_id, time.time()))
            return
        self._outgoing.setdefault(job.runner_id, []).append(payload)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        outgoing, self._outgoing = self._outgoing, {}
        for runner_id, calls in outgoing.items():
            sent = self.controller.sessions.send(
                runner_id, pb.RunnerInstruction(calls=pb.Calls(calls=calls))
            )
            if not sent:
                for payload in calls:
                    self._undelivered(payload.call_id)

    def _undelivered(self, call_id: str) -> None:
        call = self._calls.get(call_id)
        if call is None:
            return
        self._answer(call, rules.call_error(pb.CallError.UNAVAILABLE, _REPLICA_GONE))
        self._forget(call_id)
        live = self._live.get(call.deployment)
        if live is not None:
            self._handle(live, sc.CallDone(call_id, time.time()))

    def _fail(self, ins: sc.FailCall) -> None:
        call = self._calls.get(ins.call_id)
        if call is None:
            return
        kind = pb.CallError.TIMEOUT if ins.kind == "timeout" else pb.CallError.UNAVAILABLE
        self._answer(call, rules.call_error(kind, ins.message))
        if not call.replica or ins.kind != "timeout":
            # A call that timed out on its replica stays until the replica answers.
            self._forget(ins.call_id)

    def _start_replica(self, live: _Live, ins: sc.StartReplica) -> None:
        name = live.row.name
        spec = self.store.spec(name, ins.version)
        if spec is None:
            message = f"version {ins.version} is not stored"
            self._handle(live, sc.ReplicaGone(ins.replica_id, time.time(), message, True))
            return
        spec.origin = f"deployment {name} v{ins.version} ({ins.replica_id})"
        try:
            job_id = self.controller.submit(spec, live.row.owner)
        except ConfigError as err:
            live.log.line(f"replica {ins.replica_id} (v{ins.version}) cannot start: {err}")
            self._handle(live, sc.ReplicaGone(ins.replica_id, time.time(), str(err), True))
            return
        live.replica_jobs[ins.replica_id] = job_id
        live.job_replicas[job_id] = ins.replica_id
        live.log.line(f"replica {ins.replica_id} (v{ins.version}) starting as job {job_id}")

    def _stop_replica(self, live: _Live, ins: sc.StopReplica) -> None:
        job_id = live.replica_jobs.get(ins.replica_id)
        live.log.line(f"replica {ins.replica_id} stopping: {ins.reason}")
        if job_id is not None and job_id in self.controller.jobs:
            self._spawn(self.controller.cancel(job_id, ins.reason))

    # ------------------------------------------------------------------ what runners report

    def _replica_of(self, job_id: str) -> tuple[_Live, str] | None:
        for live in self._live.values():
            replica = live.job_replicas.get(job_id)
            if replica is not None:
                return live, replica
        return None

    def replica_ready(self, runner_id: str, ready: pb.ReplicaReady) -> None:
        job = self.controller.jobs.get(ready.job_id)
        found = self._replica_of(ready.job_id)
        if job is None or job.runner_id != runner_id or found is None:
            log.warning("runner %s said a replica it does not run is ready", runner_id)
            return
        live, replica = found
        live.ready = ready
        live.log.line(
            f"replica {replica} ready on runner {runner_id}: {ready.kind} {ready.handler}"
        )
        self._handle(live, sc.ReplicaReady(replica, time.time()))

    def call_results(self, runner_id: str, results: pb.CallResults) -> None:
        touched: dict[str, _Live] = {}
        for piece in results.results:
            call = self._calls.get(piece.call_id)
            live = self._live.get(call.deployment) if call is not None else None
            if call is None or live is None or not call.replica:
                continue
            job = self.controller.jobs.get(live.replica_jobs.get(call.replica, ""))
            if job is None or job.runner_id != runner_id:
                log.warning("runner %s answered call %s, not its own", runner_id, call.id)
                continue
            self._answer(call, piece)
            if piece.done:
                self._forget(call.id)
                # One wake-up for the whole message, not one per answer.
                for ins in live.scaler.handle(sc.CallDone(call.id, time.time())):
                    self._carry(live, ins)
                touched[live.row.name] = live
        for live in touched.values():
            self._deadline_of(live)

    def job_ended(self, job_id: str, state: int, message: str) -> None:
        found = self._replica_of(job_id)
        if found is None:
            return
        live, replica = found
        ready = any(r.id == replica and r.state != "starting" for r in live.scaler.replicas())
        del live.job_replicas[job_id]
        live.replica_jobs.pop(replica, None)
        for call in [c for c in self._calls.values() if c.replica == replica]:
            self._answer(call, rules.call_error(pb.CallError.UNAVAILABLE, _REPLICA_GONE))
            self._forget(call.id)
        failed_setup = not ready and state == pb.FAILED
        if failed_setup:
            why = self._setup_error(job_id) or message
            live.log.line(f"replica {replica} failed its setup (job {job_id}): {why}")
            message = why.splitlines()[0] if why else message
        else:
            live.log.line(f"replica {replica} ended (job {job_id}): {message}")
        self._handle(live, sc.ReplicaGone(replica, time.time(), message, failed_setup))

    def _setup_error(self, job_id: str) -> str:
        """The error a replica's setup raised, from its job's stored events."""
        error = ""
        for event in self.controller.store.events(job_id):
            if event.HasField("error"):
                e = event.error
                error = f"{e.type_name}: {e.message}" if e.type_name else e.message
                if e.traceback:
                    error += "\n" + _ANSI.sub("", "\n".join(e.traceback)).rstrip()
        return error

    # ------------------------------------------------------------------ metrics

    def metrics(self) -> list[tuple[str, _Stats, list[sc.ReplicaView], int, int]]:
        """Each live deployment's name, call statistics, replicas, queued and in-flight
        calls, for /metrics."""
        return [
            (
                name,
                live.stats,
                live.scaler.replicas(),
                live.scaler.queued(),
                live.scaler.in_flight(),
            )
            for name, live in self._live.items()
        ]


def _scaling(settings: Settings) -> Settings:
    """The settings the autoscaler applies: with batching, a replica takes a batch's worth
    of calls at once."""
    return settings.replace(concurrency=max(settings.concurrency, settings.batch_size))


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STOPPING = "the control plane is stopping; call again once it is back"
_REPLICA_GONE = "the replica that was to take this call has gone; call again"

__all__ = ["DeploymentError", "DeploymentManager"]
