"""A deployment's autoscaler, fed events with a fake clock: nothing sleeps.

The first tests walk one path each (scaling from zero, the queue, scale-down, a rolling
update, a failing setup, timeouts, a stop); the property test at the end feeds random
histories to the autoscaler and a model of the replicas it drives, and checks the
invariants after every step and once everything has settled.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remotecell.backend.scheduler.autoscale import (
    Autoscaler,
    CallArrived,
    CallCancelled,
    CallDone,
    Configure,
    Dispatch,
    FailCall,
    ReplicaGone,
    ReplicaReady,
    ReplicaView,
    StartReplica,
    Stop,
    StopReplica,
    Tick,
)
from remotecell.contract.deployments import Settings

BASE = Settings(
    min_containers=0,
    max_containers=4,
    concurrency=1,
    scaledown_window=60.0,
    call_timeout=300.0,
    max_queue=1000,
)


def scaler(**changes: object) -> Autoscaler:
    return Autoscaler(BASE.replace(**changes), 1, 0.0)


def of(kind: type, out: list) -> list:
    return [i for i in out if isinstance(i, kind)]


def calls(a: Autoscaler, *ids: str, now: float = 0.0) -> list:
    out: list = []
    for call_id in ids:
        out += a.handle(CallArrived(call_id, now))
    return out


def ready_replicas(a: Autoscaler, count: int, now: float = 0.0) -> list[str]:
    """Starts ``count`` replicas (min_containers) and makes them ready; returns their ids."""
    ids = [s.replica_id for s in of(StartReplica, a.handle(Tick(now)))]
    assert len(ids) == count
    for replica_id in ids:
        a.handle(ReplicaReady(replica_id, now))
    return ids


# ---------------------------------------------------------------- paths


def test_the_first_call_starts_a_replica_and_goes_to_it_once_ready():
    a = scaler()
    assert a.handle(Tick(0.0)) == []
    assert a.next_deadline() is None
    assert a.handle(CallArrived("c1", 1.0)) == [StartReplica("rep-1", 1)]
    assert a.queued() == 1
    assert a.replicas() == [ReplicaView("rep-1", 1, "starting", 0)]
    assert a.handle(ReplicaReady("rep-1", 2.0)) == [Dispatch("c1", "rep-1")]
    assert a.replicas() == [ReplicaView("rep-1", 1, "ready", 1)]
    assert (a.queued(), a.in_flight()) == (0, 1)
    assert a.handle(CallDone("c1", 3.0)) == []
    assert a.in_flight() == 0


def test_min_containers_start_at_the_first_event_as_next_deadline_says():
    a = scaler(min_containers=2)
    assert a.next_deadline() == 0.0
    assert a.handle(Tick(0.0)) == [StartReplica("rep-1", 1), StartReplica("rep-2", 1)]
    assert a.next_deadline() is None


def test_a_replica_takes_at_most_concurrency_calls_and_the_rest_wait_in_order():
    a = scaler(max_containers=1, concurrency=2)
    out = calls(a, "c1", "c2", "c3", "c4")
    assert of(StartReplica, out) == [StartReplica("rep-1", 1)]
    assert a.handle(ReplicaReady("rep-1", 1.0)) == [
        Dispatch("c1", "rep-1"),
        Dispatch("c2", "rep-1"),
    ]
    assert a.queued() == 2
    assert a.handle(CallDone("c2", 2.0)) == [Dispatch("c3", "rep-1")]
    assert a.handle(CallDone("c1", 3.0)) == [Dispatch("c4", "rep-1")]


def test_calls_go_to_the_least_loaded_replica_the_oldest_on_a_tie():
    a = scaler(min_containers=2, max_containers=2, concurrency=2)
    ready_replicas(a, 2)
    assert calls(a, "c1", "c2", "c3") == [
        Dispatch("c1", "rep-1"),
        Dispatch("c2", "rep-2"),
        Dispatch("c3", "rep-1"),
    ]
    a.handle(CallDone("c3", 1.0))
    a.handle(CallDone("c2", 1.0))
    assert calls(a, "c4", "c5") == [Dispatch("c4", "rep-2"), Dispatch("c5", "rep-1")]


def test_a_full_queue_refuses_the_next_call_as_unavailable():
    a = scaler(max_containers=1, max_queue=2)
    out = calls(a, "c1", "c2", "c3")
    assert of(FailCall, out) == [
        FailCall("c3", "unavailable", "the endpoint's queue is full (2 calls waiting); retry later")
    ]
    assert a.queued() == 2


def test_replicas_scale_up_with_load_plus_the_buffer_up_to_max_containers():
    a = scaler(concurrency=2, buffer_containers=1, max_containers=4)
    assert len(of(StartReplica, calls(a, "c1"))) == 2  # ceil(1/2) + 1
    assert of(StartReplica, calls(a, "c2")) == []  # ceil(2/2) + 1
    assert of(StartReplica, calls(a, "c3")) == [StartReplica("rep-3", 1)]  # ceil(3/2) + 1
    out = calls(a, *(f"x{i}" for i in range(20)))
    assert of(StartReplica, out) == [StartReplica("rep-4", 1)]  # capped at 4
    assert len(a.replicas()) == 4
    for replica in a.replicas():
        a.handle(ReplicaReady(replica.id, 1.0))
    assert a.in_flight() == 8 and a.queued() == 15


def test_an_idle_replica_scales_down_after_the_window_to_zero():
    a = scaler()
    calls(a, "c1")
    a.handle(ReplicaReady("rep-1", 1.0))
    a.handle(CallDone("c1", 10.0))
    assert a.next_deadline() == 70.0
    assert a.handle(Tick(69.9)) == []
    assert a.handle(Tick(70.0)) == [StopReplica("rep-1", "idle for 60 s")]
    assert a.replicas() == [] and a.next_deadline() is None


def test_an_idle_replica_scales_down_to_min_containers_the_longest_idle_first():
    a = scaler(min_containers=1)
    ready_replicas(a, 1)
    assert calls(a, "c1", "c2", now=2.0) == [Dispatch("c1", "rep-1"), StartReplica("rep-2", 1)]
    assert a.handle(ReplicaReady("rep-2", 3.0)) == [Dispatch("c2", "rep-2")]
    a.handle(CallDone("c1", 10.0))
    a.handle(CallDone("c2", 20.0))
    assert a.handle(Tick(70.0)) == [StopReplica("rep-1", "idle for 60 s")]
    assert a.handle(Tick(1000.0)) == []
    assert a.replicas() == [ReplicaView("rep-2", 1, "ready", 0)]


def test_with_no_scaledown_window_an_idle_replica_stops_at_once():
    a = scaler(scaledown_window=0.0)
    calls(a, "c1")
    a.handle(ReplicaReady("rep-1", 1.0))
    assert a.handle(CallDone("c1", 2.0)) == [StopReplica("rep-1", "idle for 0 s")]


def test_a_busy_replica_is_never_stopped_but_drains_when_max_containers_drops():
    a = scaler(scaledown_window=0.0, max_containers=2)
    calls(a, "c1", "c2")
    a.handle(ReplicaReady("rep-1", 1.0))
    a.handle(ReplicaReady("rep-2", 1.0))
    assert a.handle(Tick(299.0)) == []  # busy for long: never stopped
    assert a.handle(Configure(a.settings.replace(max_containers=1), 1, 299.5)) == []
    assert [r.state for r in a.replicas()] == ["draining", "ready"]
    assert calls(a, "c3", now=299.6) == []  # rep-1 drains, rep-2 is busy, max is 1
    assert a.handle(CallDone("c1", 299.7)) == [StopReplica("rep-1", "above max_containers=1")]
    assert a.handle(CallDone("c2", 299.8)) == [Dispatch("c3", "rep-2")]


def test_lowering_max_containers_stops_idle_replicas_above_it_at_once():
    a = scaler(min_containers=3)
    ready_replicas(a, 3)
    out = a.handle(Configure(a.settings.replace(min_containers=1, max_containers=1), 1, 1.0))
    assert of(StopReplica, out) == [
        StopReplica("rep-1", "above max_containers=1"),
        StopReplica("rep-2", "above max_containers=1"),
    ]
    assert [r.id for r in a.replicas()] == ["rep-3"]


def test_a_rolling_update_drops_no_call_old_serves_until_new_is_ready_then_drains():
    a = scaler(min_containers=1, concurrency=2)
    ready_replicas(a, 1)
    assert calls(a, "c1", now=1.0) == [Dispatch("c1", "rep-1")]
    out = a.handle(Configure(a.settings, 2, 2.0))
    assert out == [StartReplica("rep-2", 2)]
    # No replica of version 2 is ready yet: the old one keeps taking calls.
    assert calls(a, "c2", now=3.0) == [Dispatch("c2", "rep-1")]
    out = a.handle(ReplicaReady("rep-2", 4.0))
    assert out == []
    assert a.replicas() == [
        ReplicaView("rep-1", 1, "draining", 2),
        ReplicaView("rep-2", 2, "ready", 0),
    ]
    # Three calls in flight or waiting need ceil(3 / 2) = 2 replicas of version 2.
    assert calls(a, "c3", now=5.0) == [Dispatch("c3", "rep-2"), StartReplica("rep-3", 2)]
    assert a.handle(CallDone("c1", 6.0)) == []
    assert a.handle(CallDone("c2", 7.0)) == [StopReplica("rep-1", "replaced by version 2")]
    assert a.version == 2 and [r.id for r in a.replicas()] == ["rep-2", "rep-3"]


def test_a_rolling_update_starts_as_many_new_replicas_as_old_ones_an_idle_old_stops_at_once():
    a = scaler(min_containers=2)
    ready_replicas(a, 2)
    out = a.handle(Configure(a.settings, 2, 1.0))
    assert out == [StartReplica("rep-3", 2), StartReplica("rep-4", 2)]
    out = a.handle(ReplicaReady("rep-3", 2.0))
    assert out == [
        StopReplica("rep-1", "replaced by version 2"),
        StopReplica("rep-2", "replaced by version 2"),
    ]


def test_a_new_version_that_fails_setup_leaves_the_old_one_serving():
    a = scaler(min_containers=1)
    ready_replicas(a, 1)
    assert a.handle(Configure(a.settings, 2, 1.0)) == [StartReplica("rep-2", 2)]
    out = a.handle(ReplicaGone("rep-2", 2.0, "SyntaxError: invalid syntax", failed_setup=True))
    assert out == []
    assert calls(a, "c1", now=3.0) == [Dispatch("c1", "rep-1")]
    # Restarting waits out the backoff.
    assert a.next_deadline() == 7.0
    assert a.handle(Tick(6.9)) == []
    assert a.handle(Tick(7.0)) == [StartReplica("rep-3", 2)]


def test_a_setup_failure_with_no_replica_ready_fails_the_calls_and_backs_off_then_recovers():
    a = scaler(max_containers=1)
    calls(a, "c1", "c2")
    message = "no replica could start: ModuleNotFoundError: No module named 'torch'"
    out = a.handle(ReplicaGone("rep-1", 1.0, "ModuleNotFoundError: No module named 'torch'", True))
    assert out == [FailCall("c1", "unavailable", message), FailCall("c2", "unavailable", message)]
    assert a.queued() == 0 and a.replicas() == []
    # During the backoff, a new call fails at once and nothing starts.
    assert calls(a, "c3", now=5.9) == [FailCall("c3", "unavailable", message)]
    # After it, a call starts a replica again.
    assert calls(a, "c4", now=6.0) == [StartReplica("rep-2", 1)]
    assert a.handle(ReplicaReady("rep-2", 7.0)) == [Dispatch("c4", "rep-2")]


def test_min_containers_restart_at_the_tick_after_a_setup_backoff():
    a = scaler(min_containers=1)
    a.handle(Tick(0.0))
    assert a.handle(ReplicaGone("rep-1", 1.0, "ImportError", failed_setup=True)) == []
    assert a.next_deadline() == 6.0
    assert a.handle(Tick(6.0)) == [StartReplica("rep-2", 1)]


def test_a_waiting_call_and_a_running_call_time_out():
    a = scaler(max_containers=1, call_timeout=10.0)
    calls(a, "c1")
    a.handle(ReplicaReady("rep-1", 1.0))
    calls(a, "c2", now=2.0)
    assert a.next_deadline() == 10.0
    timeout = "not answered within 10 s (call_timeout)"
    assert a.handle(Tick(10.0)) == [FailCall("c1", "timeout", timeout)]
    # c1 still runs on rep-1: c2 waits on.
    assert (a.in_flight(), a.queued()) == (1, 1)
    assert a.replicas() == [ReplicaView("rep-1", 1, "ready", 1)]
    assert a.next_deadline() == 12.0
    assert a.handle(Tick(12.0)) == [FailCall("c2", "timeout", timeout)]
    assert a.handle(CallDone("c1", 13.0)) == []
    assert (a.in_flight(), a.queued()) == (0, 0)


def test_stop_fails_waiting_and_new_calls_and_drains_every_replica():
    a = scaler(min_containers=2, max_containers=2)
    ready_replicas(a, 2)
    calls(a, "c1", "c2", "c3")
    out = a.handle(Stop(1.0))
    assert out == [
        FailCall("c3", "unavailable", "the endpoint was stopped before a replica took this call")
    ]
    assert [r.state for r in a.replicas()] == ["draining", "draining"]
    assert calls(a, "c4", now=2.0) == [FailCall("c4", "unavailable", "the endpoint is stopped")]
    assert a.handle(CallDone("c1", 3.0)) == [StopReplica("rep-1", "the deployment stopped")]
    assert not a.finished()
    assert a.handle(CallDone("c2", 4.0)) == [StopReplica("rep-2", "the deployment stopped")]
    assert a.finished() and a.stopped


def test_stop_stops_idle_and_starting_replicas_at_once():
    a = scaler(min_containers=2)
    a.handle(Tick(0.0))
    a.handle(ReplicaReady("rep-1", 0.0))
    out = a.handle(Stop(1.0))
    assert out == [
        StopReplica("rep-1", "the deployment stopped"),
        StopReplica("rep-2", "the deployment stopped"),
    ]
    assert a.finished()
    assert a.handle(ReplicaGone("rep-1", 2.0, "stopped")) == []


def test_a_cancelled_call_leaves_the_queue_but_counts_in_flight_until_done():
    a = scaler(max_containers=1)
    calls(a, "c1", "c2", "c3")
    assert a.handle(CallCancelled("c2", 0.5)) == []
    assert a.queued() == 2
    assert a.handle(ReplicaReady("rep-1", 1.0)) == [Dispatch("c1", "rep-1")]
    assert a.handle(CallCancelled("c1", 2.0)) == []
    assert a.in_flight() == 1
    assert a.handle(CallDone("c1", 3.0)) == [Dispatch("c3", "rep-1")]


def test_a_replica_gone_with_calls_in_flight_fails_them_and_a_new_one_starts():
    a = scaler(max_containers=1, concurrency=2)
    calls(a, "c1", "c2", "c3")
    a.handle(ReplicaReady("rep-1", 1.0))
    out = a.handle(ReplicaGone("rep-1", 2.0, "its runner died (SIGKILL)"))
    why = "the replica stopped: its runner died (SIGKILL)"
    assert out == [
        FailCall("c1", "unavailable", why),
        FailCall("c2", "unavailable", why),
        StartReplica("rep-2", 1),
    ]
    assert a.handle(CallDone("c1", 3.0)) == []  # late news of a failed call: ignored
    assert a.handle(ReplicaReady("rep-2", 4.0)) == [Dispatch("c3", "rep-2")]


def test_a_timed_out_call_is_not_failed_again_when_its_replica_dies():
    a = scaler(call_timeout=10.0)
    calls(a, "c1")
    a.handle(ReplicaReady("rep-1", 1.0))
    assert of(FailCall, a.handle(Tick(10.0)))[0].kind == "timeout"
    assert a.handle(ReplicaGone("rep-1", 11.0, "killed")) == []


def test_ten_thousand_calls_flow_through():
    a = scaler(max_containers=8, concurrency=4, max_queue=100_000)
    out = calls(a, *(f"c{i}" for i in range(10_000)))
    for start in of(StartReplica, out):
        out += a.handle(ReplicaReady(start.replica_id, 1.0))
    done = 0
    pending = [d.call_id for d in of(Dispatch, out)]
    while pending:
        call_id = pending.pop()
        done += 1
        pending += [d.call_id for d in of(Dispatch, a.handle(CallDone(call_id, 2.0)))]
    assert done == 10_000 and a.queued() == 0 and a.in_flight() == 0


# ---------------------------------------------------------------- the property test


@dataclass
class World:
    """The replicas as the autoscaler's shell would see them, driven by its instructions."""

    a: Autoscaler
    now: float = 0.0
    calls: list[str] = field(default_factory=list)
    starting: set[str] = field(default_factory=set)
    ready: set[str] = field(default_factory=set)
    asked_to_stop: set[str] = field(default_factory=set)  # and not gone yet
    version_of: dict[str, int] = field(default_factory=dict)  # replica -> its version
    running: dict[str, set[str]] = field(default_factory=dict)  # replica -> its calls
    dispatched: set[str] = field(default_factory=set)
    ended: dict[str, str] = field(default_factory=dict)  # call -> its outcome
    quiet: bool = True  # the last event gave no instruction

    def feed(self, event: object) -> list:
        out = self.a.handle(event)  # type: ignore[arg-type]
        self.quiet = self.quiet and not out
        for ins in out:
            self.carry(ins)
        return out

    def carry(self, ins: object) -> None:
        a = self.a
        if isinstance(ins, StartReplica):
            assert ins.replica_id not in self.version_of
            assert ins.version == a.version
            self.version_of[ins.replica_id] = ins.version
            self.starting.add(ins.replica_id)
            self.running[ins.replica_id] = set()
        elif isinstance(ins, Dispatch):
            assert ins.call_id not in self.dispatched, f"{ins.call_id} dispatched twice"
            assert ins.call_id not in self.ended, f"{ins.call_id} dispatched after its end"
            assert ins.replica_id in self.ready, f"{ins.replica_id} is not ready"
            assert ins.replica_id not in self.asked_to_stop, "dispatch after StopReplica"
            assert len(self.running[ins.replica_id]) < a.settings.concurrency
            if self.version_of[ins.replica_id] != a.version:
                new = [
                    r for r in self.ready - self.asked_to_stop if self.version_of[r] == a.version
                ]
                assert not new, f"an old replica took a call though {new} is ready"
            self.dispatched.add(ins.call_id)
            self.running[ins.replica_id].add(ins.call_id)
        elif isinstance(ins, FailCall):
            assert ins.call_id not in self.ended, f"{ins.call_id}: a second outcome {ins}"
            assert ins.kind in ("unavailable", "timeout") and ins.message
            self.ended[ins.call_id] = "failed"
        elif isinstance(ins, StopReplica):
            assert ins.replica_id in self.version_of and ins.replica_id not in self.asked_to_stop
            assert not self.running[ins.replica_id], "StopReplica with calls in flight"
            self.asked_to_stop.add(ins.replica_id)

    def gone(self, replica: str, message: str, failed_setup: bool = False) -> None:
        self.starting.discard(replica)
        self.ready.discard(replica)
        self.asked_to_stop.discard(replica)
        left = self.running.pop(replica, set())
        self.feed(ReplicaGone(replica, self.now, message, failed_setup))
        assert all(c in self.ended for c in left), "a call lost with its replica"

    def done(self, call: str) -> None:
        for calls in self.running.values():
            if call in calls:
                calls.discard(call)
                self.ended.setdefault(call, "done")
                self.feed(CallDone(call, self.now))
                return

    def check(self) -> None:
        a = self.a
        views = a.replicas()
        for v in views:
            assert v.in_flight == len(self.running[v.id]), v
            assert v.id not in self.asked_to_stop
        active = [v for v in views if v.version == a.version and v.state != "draining"]
        assert len(active) <= a.settings.max_containers
        assert a.queued() <= a.settings.max_queue
        waiting = [c for c in self.calls if c not in self.dispatched and c not in self.ended]
        assert a.queued() == len(waiting)


@st.composite
def settings_(draw: st.DrawFn) -> Settings:
    low = draw(st.integers(0, 2))
    return Settings(
        min_containers=low,
        max_containers=max(1, low + draw(st.integers(0, 2))),
        buffer_containers=draw(st.integers(0, 1)),
        concurrency=draw(st.integers(1, 3)),
        scaledown_window=draw(st.sampled_from([0.0, 10.0, 50.0])),
        call_timeout=draw(st.sampled_from([30.0, 100.0])),
        max_queue=draw(st.integers(1, 5)),
    )


ACTIONS = st.one_of(
    st.tuples(st.just("call"), st.integers(1, 3)),
    st.tuples(st.just("done"), st.integers(0, 9)),
    st.tuples(st.just("cancel"), st.integers(0, 9)),
    st.tuples(st.just("ready"), st.integers(0, 5)),
    st.tuples(st.just("setupfail"), st.integers(0, 5)),
    st.tuples(st.just("die"), st.integers(0, 5)),
    st.tuples(st.just("obey")),  # replicas asked to stop do stop
    st.tuples(st.just("tick"), st.floats(0.0, 40.0)),
    st.tuples(st.just("configure"), settings_(), st.booleans()),
    st.tuples(st.just("stop"), st.integers(0, 9)),  # stops on 0 only: rarely
)


def step(world: World, action: tuple) -> None:
    name = action[0]
    pick = lambda items, i: sorted(items)[i % len(items)] if items else None  # noqa: E731
    a = world.a
    if name == "call":
        for _ in range(action[1]):
            call = f"call-{len(world.calls)}"
            world.calls.append(call)
            world.feed(CallArrived(call, world.now))
    elif name == "done":
        call = pick({c for calls in world.running.values() for c in calls}, action[1])
        if call is not None:
            world.done(call)
    elif name == "cancel":
        call = pick([c for c in world.calls if c not in world.ended], action[1])
        if call is not None:
            if call not in world.dispatched:
                world.ended[call] = "cancelled"  # a queued call just leaves
            world.feed(CallCancelled(call, world.now))
    elif name in ("ready", "setupfail"):
        # Replicas asked to stop may still report (a race the shell cannot rule out).
        replica = pick(world.starting, action[1])
        if replica is not None and name == "ready":
            world.starting.discard(replica)
            world.ready.add(replica)
            world.feed(ReplicaReady(replica, world.now))
        elif replica is not None:
            world.gone(replica, "ImportError: no module named x", failed_setup=True)
    elif name == "die":
        replica = pick(world.ready, action[1])
        if replica is not None:
            world.gone(replica, "its runner died")
    elif name == "obey":
        for replica in sorted(world.asked_to_stop):
            world.gone(replica, "it stopped as asked")
    elif name == "tick":
        now = world.now + action[1]
        deadline = a.next_deadline()
        out = world.feed(Tick(now))
        if deadline is None or deadline > now:
            assert out == [], f"a tick before next_deadline() ({deadline}) did {out}"
        world.now = now
    elif name == "configure":
        world.feed(Configure(action[1], a.version + action[2], world.now))
    elif name == "stop" and action[1] == 0:
        world.feed(Stop(world.now))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(settings_(), st.lists(ACTIONS, max_size=60))
def test_random_histories_give_every_call_one_outcome_and_settle_at_min_containers(start, actions):
    world = World(Autoscaler(start, 1, 0.0))
    for action in actions:
        step(world, action)
        world.check()

    # Then the world behaves: stopped replicas stop, starting ones get ready, replicas
    # answer, time passes (beyond every window, timeout and backoff), until it is quiet.
    for _ in range(20):
        world.quiet = True
        for replica in sorted(world.asked_to_stop):
            world.gone(replica, "it stopped as asked")
        for replica in sorted(world.starting):
            world.starting.discard(replica)
            world.ready.add(replica)
            world.feed(ReplicaReady(replica, world.now))
        for call in sorted(c for calls in world.running.values() for c in calls):
            world.done(call)
        world.now += 1000.0
        world.feed(Tick(world.now))
        world.check()
        if world.quiet and not world.asked_to_stop and not world.starting:
            break
    else:
        raise AssertionError(f"never settled: {world.a.replicas()}")

    a = world.a
    lost = [c for c in world.calls if c not in world.ended]
    assert not lost, f"calls with no outcome: {lost}"
    assert a.queued() == 0 and a.in_flight() == 0
    assert a.next_deadline() is None
    if a.stopped:
        assert a.replicas() == [] and a.finished()
    else:
        views = a.replicas()
        assert all(v.version == a.version and v.state == "ready" for v in views), views
        assert len(views) == a.settings.min_containers
        assert {v.id for v in views} == world.ready
