"""The whole gRPC surface under random input, against one real `remotecell serve`.

Every method of the ControlPlane service (taken from the descriptor, so a new RPC is
fuzzed without touching this file) is called with requests hypothesis fills from the
message descriptors (strings with NUL, huge and non-BMP text, edge integers, nan and
inf, nested and repeated fields, large bytes, the real ids of other users' jobs and
runners, now and then one message above the server's 4 MiB limit), as no one, as a
stranger with a made-up token, as each of two users, and as a runner whose credential
a cell found in its own process.

Each answer must be OK or a status that says what was wrong (never UNKNOWN or INTERNAL),
naming no server path and carrying no traceback. Meanwhile the control plane must stay
up with bounded memory, no runner may die, and no job may change except through its own
owner or runner: bob's running job keeps running and shows only what it printed, alice's
finished job stays exactly as it was. The one owner action left out: bob's token is never
sent to Cancel bob's own job (that would end it, as it should).
"""

from __future__ import annotations

import math
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor as d
from google.protobuf import message_factory
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import ControlPlane, short_tmpdir
from test_credentials import stolen, user_client
from test_executor_local import alive, read_until, stdout_of
from test_limits import MiB, PeakRSS

from remotecell._proto import pb, pb_grpc
from remotecell.client import Client
from remotecell.contract.values import content_hash

SERVICE = pb.DESCRIPTOR.services_by_name["ControlPlane"]
METHODS = sorted(m.name for m in SERVICE.methods)
#: How much more than at rest the control plane may hold at any time during the run.
BOUND = 300 * MiB
#: Examples between checks that the control plane is up and its memory bounded.
CHECK_EVERY = 25
#: Random requests per RPC.
EXAMPLES_PER_RPC = 25
#: How long a response stream is read before the test cuts it.
STREAM_DEADLINE = 1.5
#: How long a unary answer may take (running past it is a failure: a hang).
UNARY_DEADLINE = 30.0

ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.OUT_OF_RANGE,
}
BOBS_JOB = (
    "import os, time\nprint('PID', os.getpid())\nprint('started', flush=True)\ntime.sleep(600)"
)


@dataclass
class World:
    """What the fuzzer attacks and the invariants it must keep."""

    plane: ControlPlane
    channel: grpc.Channel
    stub: Any
    tokens: dict[str, str | None]
    ids: list[str]
    bobs_job: str
    bobs_stdout: str
    alices_job: str
    alices_info: pb.JobInfo
    alices_events: list[pb.JobEvent]
    runner_pids: dict[str, int]
    alice: Client
    bob: Client
    peak: PeakRSS
    baseline: int
    calls: int = 0
    seen: dict[str, set[str]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    plane = ControlPlane(
        short_tmpdir(), ["--cancel-grace", "2", "--scaledown-window", "3600", "--max-runners", "4"]
    ).start()
    assert plane.endpoint is not None and plane.proc is not None
    alice = plane.client()
    bob = user_client(plane, "bob")
    channel = grpc.insecure_channel(
        plane.endpoint.target,
        options=[
            ("grpc.max_send_message_length", -1),
            ("grpc.max_receive_message_length", -1),
            ("grpc.enable_retries", 0),
        ],
    )
    try:
        # Alice's finished job is the one whose cell stole its runner's credential.
        runner, alices_pid = stolen(alice)
        alices_job = next(j.job_id for j in alice.list_jobs() if j.summary.startswith("import gc"))
        alices_info = alice.get_job(alices_job)
        assert alices_info.state == pb.SUCCEEDED
        alices_events = read_until(alice.attach(alices_job), lambda ev: ev[-1].HasField("finished"))

        first = read_until(
            bob.submit(pb.JobSpec(code=BOBS_JOB)), lambda ev: "started" in stdout_of(ev)
        )
        bobs_job = first[0].job_id
        bobs_stdout = stdout_of(first)
        bobs_pid = int(re.findall(r"PID (\d+)", bobs_stdout)[0])
        bobs_info = bob.get_job(bobs_job)
        assert bobs_info.state == pb.RUNNING

        tokens: dict[str, str | None] = {
            "none": None,
            "alice": plane.endpoint.token,
            "bob": bob.endpoint.token,
            "runner": runner.token,
        }
        # Real names of each user's things, so that requests name them now and then.
        for user, client in (("alice", alice), ("bob", bob)):
            client.create_volume(f"{user}s-volume")
            client.create_secret(f"{user}s-secret", {"KEY": f"{user}'s value"})
        blob = f"fuzz {time.time()}".encode()
        alice.put_blob(content_hash(blob), blob)
        ids = [
            bobs_job,
            alices_job,
            bobs_info.runner_id,
            alices_info.runner_id,
            "alices-volume",
            "bobs-volume",
            "alices-secret",
            "bobs-secret",
            "alice",
            "bob",
            content_hash(blob),
        ]
        alice.health()
        time.sleep(0.5)
        peak = PeakRSS(plane.proc.pid)
        world = World(
            plane=plane,
            channel=channel,
            stub=pb_grpc.ControlPlaneStub(channel),
            tokens=tokens,
            ids=ids,
            bobs_job=bobs_job,
            bobs_stdout=bobs_stdout,
            alices_job=alices_job,
            alices_info=alices_info,
            alices_events=alices_events,
            runner_pids={"alice": alices_pid, "bob": bobs_pid},
            alice=alice,
            bob=bob,
            peak=peak,
            baseline=peak.rss(),
        )
        with peak:
            yield world
    finally:
        channel.close()
        alice.close()
        bob.close()
        plane.stop()
        shutil.rmtree(plane.data_dir, ignore_errors=True)


# ------------------------------------------------------------ requests from descriptors

INT_EDGES = {
    d.FieldDescriptor.TYPE_INT32: [0, -1, 1, 2**31 - 1, -(2**31)],
    d.FieldDescriptor.TYPE_SINT32: [0, -1, 1, 2**31 - 1, -(2**31)],
    d.FieldDescriptor.TYPE_SFIXED32: [0, -1, 1, 2**31 - 1, -(2**31)],
    d.FieldDescriptor.TYPE_INT64: [0, -1, 1, 2**63 - 1, -(2**63)],
    d.FieldDescriptor.TYPE_SINT64: [0, -1, 1, 2**63 - 1, -(2**63)],
    d.FieldDescriptor.TYPE_SFIXED64: [0, -1, 1, 2**63 - 1, -(2**63)],
    d.FieldDescriptor.TYPE_UINT32: [0, 1, 2**31, 2**32 - 1],
    d.FieldDescriptor.TYPE_FIXED32: [0, 1, 2**31, 2**32 - 1],
    d.FieldDescriptor.TYPE_UINT64: [0, 1, 2**63 - 1, 2**64 - 1],
    d.FieldDescriptor.TYPE_FIXED64: [0, 1, 2**63 - 1, 2**64 - 1],
}
INT_RANGE = {
    32: (-(2**31), 2**31 - 1),
    64: (-(2**63), 2**63 - 1),
    "u32": (0, 2**32 - 1),
    "u64": (0, 2**64 - 1),
}
UNSIGNED = {
    d.FieldDescriptor.TYPE_UINT32: "u32",
    d.FieldDescriptor.TYPE_FIXED32: "u32",
    d.FieldDescriptor.TYPE_UINT64: "u64",
    d.FieldDescriptor.TYPE_FIXED64: "u64",
}
SIGNED32 = {
    d.FieldDescriptor.TYPE_INT32,
    d.FieldDescriptor.TYPE_SINT32,
    d.FieldDescriptor.TYPE_SFIXED32,
}
FLOATS = {d.FieldDescriptor.TYPE_DOUBLE, d.FieldDescriptor.TYPE_FLOAT}
MAX_DEPTH = 3


def int_strategy(kind: int) -> st.SearchStrategy[int]:
    key = UNSIGNED.get(kind) or (32 if kind in SIGNED32 else 64)
    low, high = INT_RANGE[key]
    return st.one_of(
        st.sampled_from(INT_EDGES[kind]),
        st.integers(-5, 5).filter(lambda v: low <= v <= high),
        st.integers(low, high),
    )


def float_strategy(kind: int) -> st.SearchStrategy[float]:
    edges = st.sampled_from([0.0, -0.0, math.nan, math.inf, -math.inf, 1e308, -1.0, 5e-324])
    if kind == d.FieldDescriptor.TYPE_FLOAT:
        return st.one_of(edges, st.floats(width=32))
    return st.one_of(edges, st.floats())


def huge_text(draw: Any) -> str:
    char = draw(st.sampled_from(["a", "\x00", "é", "\U0001f600", "/", "\n"]))
    return char * draw(st.integers(1_000, 300_000))


@st.composite
def texts(draw: Any, ids: list[str], data_dir: str) -> str:
    which = draw(st.integers(0, 9))
    if which <= 2:
        return draw(st.sampled_from(ids))
    if which == 3:
        return draw(
            st.sampled_from(
                [
                    "",
                    "\x00",
                    "../../../etc/passwd",
                    "/etc/passwd",
                    data_dir,
                    "0" * 32,
                    "a" * 300,
                    "job-0000000000",
                    "H100",
                    "x=1",
                    "print(1)",
                ]
            )
        )
    if which == 4:
        return huge_text(draw)
    return draw(st.text(max_size=40))


@st.composite
def blobs(draw: Any) -> bytes:
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(min_size=1, max_size=16)) * draw(st.integers(1, 25_000))
    return draw(st.binary(max_size=64))


def scalar(draw: Any, f: Any, ids: list[str], data_dir: str) -> Any:
    kind = f.type
    if kind == d.FieldDescriptor.TYPE_STRING:
        return draw(texts(ids, data_dir))
    if kind == d.FieldDescriptor.TYPE_BYTES:
        return draw(blobs())
    if kind == d.FieldDescriptor.TYPE_BOOL:
        return draw(st.booleans())
    if kind in FLOATS:
        return draw(float_strategy(kind))
    if kind == d.FieldDescriptor.TYPE_ENUM:
        numbers = [v.number for v in f.enum_type.values]
        return draw(st.one_of(st.sampled_from(numbers), st.integers(-3, 1000)))
    return draw(int_strategy(kind))


def fill(draw: Any, msg: Message, ids: list[str], data_dir: str, depth: int = 0) -> None:
    """Sets a random subset of ``msg``'s fields to random values, recursing into messages."""
    f: Any
    for f in msg.DESCRIPTOR.fields:
        if not draw(st.booleans()):
            continue
        is_map = f.message_type is not None and f.message_type.GetOptions().map_entry
        repeated = f.is_repeated
        count = draw(st.integers(0, 3)) if repeated else 1
        if f.message_type is not None and not is_map:
            if depth >= MAX_DEPTH:
                continue
            for _ in range(count):
                child = getattr(msg, f.name).add() if repeated else getattr(msg, f.name)
                child.SetInParent()
                fill(draw, child, ids, data_dir, depth + 1)
            continue
        if is_map:
            key_f, value_f = (
                f.message_type.fields_by_name["key"],
                f.message_type.fields_by_name["value"],
            )
            target = getattr(msg, f.name)
            for _ in range(count):
                key = scalar(draw, key_f, ids, data_dir)
                if value_f.message_type is not None:
                    if depth < MAX_DEPTH:
                        fill(draw, target[key], ids, data_dir, depth + 1)
                else:
                    target[key] = scalar(draw, value_f, ids, data_dir)
            continue
        values = [scalar(draw, f, ids, data_dir) for _ in range(count)]
        if repeated:
            getattr(msg, f.name).extend(values)
        else:
            setattr(msg, f.name, values[0])


def oversize(msg: Message, size: int) -> bool:
    """Makes one string or bytes field of ``msg`` (or of a message within) ``size`` long."""
    f: Any
    for f in msg.DESCRIPTOR.fields:
        if f.is_repeated:
            continue
        if f.type == d.FieldDescriptor.TYPE_BYTES:
            setattr(msg, f.name, b"\x01" * size)
            return True
        if f.type == d.FieldDescriptor.TYPE_STRING:
            setattr(msg, f.name, "a" * size)
            return True
    for f in msg.DESCRIPTOR.fields:
        nested = f.message_type is not None and not f.is_repeated
        if (
            nested
            and not f.message_type.GetOptions().map_entry
            and oversize(getattr(msg, f.name), size)
        ):
            return True
    return False


@st.composite
def requests(draw: Any, desc: d.Descriptor, ids: list[str], data_dir: str) -> Message:
    msg = message_factory.GetMessageClass(desc)()
    fill(draw, msg, ids, data_dir)
    if draw(st.integers(0, 19)) == 0:
        oversize(msg, draw(st.integers(5 * MiB, 8 * MiB)))
    return msg


# ------------------------------------------------------------------------- the calls


@dataclass
class Outcome:
    code: grpc.StatusCode
    details: str
    cut: bool  # the test itself ended the call (cancel or its own deadline)


def call(
    world: World, method: d.MethodDescriptor, messages: list[Message], token: str | None
) -> Outcome:
    metadata = () if token is None else (("authorization", f"Bearer {token}"),)
    rpc = getattr(world.stub, method.name)
    arg: Any = iter(messages) if method.client_streaming else messages[0]
    if not method.server_streaming:
        try:
            rpc(arg, metadata=metadata, timeout=UNARY_DEADLINE)
        except grpc.RpcError as err:
            return Outcome(err.code(), err.details() or "", False)
        return Outcome(grpc.StatusCode.OK, "", False)
    replies = rpc(arg, metadata=metadata, timeout=STREAM_DEADLINE)
    try:
        for n, _ in enumerate(replies, 1):
            if n >= 3:
                replies.cancel()
                return Outcome(grpc.StatusCode.CANCELLED, "", True)
    except grpc.RpcError as err:
        code = err.code()
        return Outcome(code, err.details() or "", code == grpc.StatusCode.DEADLINE_EXCEEDED)
    return Outcome(grpc.StatusCode.OK, "", False)


def check_world(world: World) -> None:
    proc = world.plane.proc
    assert proc is not None and proc.poll() is None, world.plane.log.read_text()[-5000:]
    assert world.peak.peak < world.baseline + BOUND, (
        f"control plane RSS peaked at {world.peak.peak / MiB:.0f} MiB, "
        f"at rest {world.baseline / MiB:.0f} MiB"
    )
    for whose, pid in world.runner_pids.items():
        assert alive(pid), f"{whose}'s runner {pid} died"


@st.composite
def examples(draw: Any, world: World, method: d.MethodDescriptor) -> tuple[str, list[Message]]:
    who = draw(st.sampled_from(["none", "garbage", "alice", "bob", "runner"]))
    data_dir = str(world.plane.data_dir)
    count = draw(st.integers(1, 3)) if method.client_streaming else 1
    messages = [draw(requests(method.input_type, world.ids, data_dir)) for _ in range(count)]
    if who == "bob" and method.name == "Cancel":
        for m in messages:  # bob may end his own job: not what this test probes
            if m.job_id == world.bobs_job:
                m.job_id = "job-0000000000"
    return who, messages


TOKEN_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x7E)


@pytest.mark.parametrize("name", METHODS)
def test_every_rpc_answers_random_input_with_a_proper_status(world: World, name: str) -> None:
    method = SERVICE.methods_by_name[name]

    @settings(
        max_examples=EXAMPLES_PER_RPC,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )
    @given(example=examples(world, method), garbage=st.text(TOKEN_CHARS, min_size=1, max_size=80))
    def fuzz(example: tuple[str, list[Message]], garbage: str) -> None:
        who, messages = example
        token = garbage if who == "garbage" else world.tokens[who]
        outcome = call(world, method, messages, token)
        world.calls += 1
        world.seen.setdefault(name, set()).add(f"{who}:{outcome.code.name}")
        said = f"{name} as {who}: {outcome.code.name} {outcome.details[:500]!r}"
        if outcome.cut:
            assert method.server_streaming, said
        else:
            assert outcome.code in ALLOWED, said
        data_dir = str(world.plane.data_dir)
        echoed = any(data_dir.encode() in m.SerializeToString() for m in messages)
        assert echoed or data_dir not in outcome.details, said  # an answer may quote the input
        assert "Traceback" not in outcome.details, said
        if world.calls % CHECK_EVERY == 0:
            check_world(world)

    fuzz()
    check_world(world)


def test_no_job_changed_and_nothing_died(world: World) -> None:
    """Runs last: what every example above left behind."""
    assert set(world.seen) == set(METHODS), "run the whole module: this checks what it did"
    for name, codes in sorted(world.seen.items()):
        print(name, sorted(codes))
    time.sleep(1.0)  # what the last calls started has settled
    check_world(world)
    log = world.plane.log.read_text()
    assert "Traceback" not in log and " ERROR " not in log, log[-5000:]

    # No job changed but through its own owner or runner.
    bobs = world.bob.get_job(world.bobs_job)
    assert bobs.state == pb.RUNNING, bobs
    deadline = time.monotonic() + 1.0
    stream = world.bob.attach(world.bobs_job)
    events: list[pb.JobEvent] = []
    while time.monotonic() < deadline:
        event = stream.next(timeout=0.2)
        if event is not None:
            events.append(event)
    assert stdout_of(events) == world.bobs_stdout
    assert not any(e.HasField("finished") for e in events)

    assert world.alice.get_job(world.alices_job) == world.alices_info
    again = read_until(world.alice.attach(world.alices_job), lambda ev: ev[-1].HasField("finished"))
    assert again == world.alices_events
