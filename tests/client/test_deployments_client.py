"""The client side of deployments without the real control plane: the request
``deploy()``/``function()`` build, the listing, and the call multiplexer of both faces
against a small in-process gRPC server that answers ``Invoke`` as the contract says."""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from remotecell._proto import pb
from remotecell._proto import remotecell_pb2_grpc as pb_grpc
from remotecell.client import AsyncClient, Client, Endpoint
from remotecell.client.deployment import Deployment, deployment_request, ephemeral_name, function
from remotecell.client.listing import deployment_status, endpoint_url, format_deployments
from remotecell.client.secret import Secret
from remotecell.client.volume import Volume
from remotecell.contract import values
from remotecell.contract.errors import (
    CallArgumentsError,
    CallTimeoutError,
    ConfigError,
    EndpointUnavailableError,
    RemoteError,
)
from remotecell.kernel_magics._deploy import curl_line, handler_of

# -- deploy(): the request ---------------------------------------------------------------


def double(x: int) -> int:
    return 2 * x


def test_a_function_travels_by_value_as_the_handler() -> None:
    request, blobs = deployment_request(
        double,
        name="dbl",
        gpu="any",
        secrets=[Secret.from_name("hf")],
        volumes={"/models": Volume("weights")},
        env={"A": "1"},
        max_containers=3,
        concurrency=2,
    )
    assert request.name == "dbl" and not request.ephemeral
    spec = request.spec
    assert spec.code == ""
    assert [v.kind for v in spec.closure] == [pb.Value.NAMESPACE]
    assert list(spec.closure[0].names) == ["double"]
    loaded = values.unpack(spec.closure, blobs.__getitem__)["double"]
    assert loaded(21) == 42
    assert (spec.serve.deployment, spec.serve.version, spec.serve.handler) == ("dbl", 0, "double")
    assert spec.serve.concurrency == 2
    assert request.settings.max_containers == 3
    assert [c.type for c in spec.resources.gpu] == ["any"]
    assert [s.name for s in spec.secrets] == ["hf"]
    assert [m.path for m in spec.volumes] == ["/models"]
    assert dict(spec.env) == {"A": "1"}


class App:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        pass


def test_an_asgi_app_travels_as_app() -> None:
    request, _ = deployment_request(App(), name="web")
    assert list(request.spec.closure[0].names) == ["app"]
    assert request.spec.serve.handler == ""


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "Bad Name"}, "not a valid deployment name"),
        ({"name": "ok", "min_containers": 5, "max_containers": 2}, "is above max_containers"),
        ({"name": "ok", "max_conatiners": 2}, "is not a deployment setting"),
        ({"name": "ok", "gpu": "H999"}, "H999"),
        ({"name": "ok", "secrets": ["hf"]}, "it holds a string"),
        ({"name": "ok", "volumes": {"/m": "weights"}}, "expected a dict of absolute paths"),
        ({"name": "ok", "image": "python:3.11"}, "expected a remotecell.Image"),
    ],
)
def test_bad_options_are_one_sentence(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match) as err:
        deployment_request(double, **kwargs)
    assert "\n" not in str(err.value)


def test_function_names_its_ephemeral_deployment_and_runs_locally() -> None:
    name = ephemeral_name(lambda: 0)
    assert name.startswith("fn-lambda-") and len(name) == len("fn-lambda-") + 6
    long_name = ephemeral_name(type("X", (), {"__name__": "Ünïcode_" + "x" * 80})())
    assert len(long_name) <= 3 + 40 + 7

    @function(max_containers=2)
    def square(x: int) -> int:
        return x * x

    assert square(4) == 16  # locally, nothing deployed
    assert square.name.startswith("fn-square-")
    assert square._request.ephemeral and square._request.settings.max_containers == 2
    with pytest.raises(ConfigError, match="is above max_containers"):
        function(min_containers=9, max_containers=2)(double)


# -- listings ----------------------------------------------------------------------------


def _info(**kw: Any) -> pb.DeploymentInfo:
    info = pb.DeploymentInfo(name="embed", version=2, path="/endpoints/embed", **kw)
    return info


def test_the_status_line_and_table() -> None:
    info = _info(
        replicas=[
            pb.ReplicaInfo(id="r1", state="ready", in_flight=2),
            pb.ReplicaInfo(id="r2", state="ready"),
            pb.ReplicaInfo(id="r3", state="starting"),
        ],
        in_flight=2,
        queued=1,
        p50_ms=12.4,
        requests_per_s=4.25,
        calls=10,
        errors=1,
    )
    assert deployment_status(info) == (
        "embed v2: 1 starting, 2 ready (1 busy) · 2 in flight, 1 queued · p50 12 ms · 4.2 req/s"
    )
    assert deployment_status(_info(stopped=True)) == "embed v2: stopped"
    assert endpoint_url("http://127.0.0.1:8080/", info) == "http://127.0.0.1:8080/endpoints/embed"
    table = format_deployments([info, _info(stopped=True, ephemeral=True)], "http://h:1")
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["NAME", "VERSION", "STATE", "REPLICAS"]
    assert lines[1].split()[:4] == ["embed", "v2", "ready", "2/3"]
    assert lines[1].endswith("http://h:1/endpoints/embed")
    assert "stopped (ephemeral)" in lines[2]
    assert format_deployments([]).startswith("no deployments")


def test_the_curl_line_names_the_handlers_parameters() -> None:
    name, params = handler_of("import x\nmodel = 1\ndef predict(text, k=3):\n    pass\n", None)
    assert (name, params) == ("predict", ["text", "k"])
    assert handler_of("def a(): pass\ndef b(x): pass\n", "b") == ("b", ["x"])
    assert handler_of("app = make()\n", None) == ("", [])
    line = curl_line("http://h:1/endpoints/embed", params)
    assert line == (
        'curl -X POST http://h:1/endpoints/embed -H "Authorization: Bearer $REMOTECELL_TOKEN" '
        '-H \'Content-Type: application/json\' -d \'{"text": "...", "k": "..."}\''
    )


# -- the call multiplexer against a fake Invoke ------------------------------------------


class Custom(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code

    def __reduce__(self) -> Any:
        return Custom, (str(self), self.code)


def _answer(request: pb.CallRequest) -> list[pb.CallResult]:
    call_id = request.call_id
    given = values.unpack([request.args], lambda d: b"")
    args, kwargs = given["args"], given["kwargs"]

    def value(v: Any) -> pb.Value:
        return values.pack({"result": v}).values[0]

    if request.deployment == "gen":
        items = [pb.CallResult(call_id=call_id, item=True, value=value(i)) for i in range(args[0])]
        return [*items, pb.CallResult(call_id=call_id, done=True)]
    if request.deployment == "boom":
        exc = values.pack({"exception": Custom("bad input", 7)}).values[0]
        error = pb.CallError(
            kind=pb.CallError.RAISED,
            type_name="test_deployments_client.Custom",
            message="bad input",
            traceback="Traceback (most recent call last):\n  ...\nCustom: bad input",
            exception=exc,
        )
        return [pb.CallResult(call_id=call_id, done=True, error=error)]
    kinds = {
        "args": pb.CallError.ARGUMENTS,
        "busy": pb.CallError.UNAVAILABLE,
        "slow": pb.CallError.TIMEOUT,
    }
    if request.deployment in kinds:
        error = pb.CallError(kind=kinds[request.deployment], message="no")
        return [pb.CallResult(call_id=call_id, done=True, error=error)]
    if args and args[0] == "fail":
        error = pb.CallError(kind=pb.CallError.RAISED, type_name="ValueError", message="fail")
        return [pb.CallResult(call_id=call_id, done=True, error=error)]
    return [pb.CallResult(call_id=call_id, done=True, value=value(sum(args) + kwargs.get("k", 0)))]


class FakeControlPlane(pb_grpc.ControlPlaneServicer):
    def __init__(self) -> None:
        self.streams = 0
        self.cancelled: list[str] = []

    def Health(self, request: Any, context: Any) -> pb.HealthReply:
        return pb.HealthReply(http_url="http://127.0.0.1:9")

    def Invoke(self, requests: Iterator[pb.CallRequest], context: Any) -> Iterator[pb.CallReplies]:
        self.streams += 1
        held: list[pb.CallResult] = []
        for request in requests:
            if request.cancel:  # a failed map's calls still out
                self.cancelled.append(request.call_id)
                continue
            if request.deployment == "break":
                context.abort(grpc.StatusCode.UNAVAILABLE, "going away")
            held += _answer(request)
            if request.deployment != "batch":
                yield pb.CallReplies(results=held)
                held = []
            elif len(held) >= 3:  # several calls' answers in one message, out of order
                yield pb.CallReplies(results=list(reversed(held)))
                held = []
        if held:
            yield pb.CallReplies(results=held)


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[FakeControlPlane, Endpoint]]:
    directory = tempfile.mkdtemp(prefix="rc-fake-")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    servicer = FakeControlPlane()
    pb_grpc.add_ControlPlaneServicer_to_server(servicer, server)
    address = f"unix:{directory}/cp.sock"
    server.add_insecure_port(address)
    server.start()
    yield servicer, Endpoint(address, "token")
    server.stop(0)


def test_blocking_calls_share_one_stream(fake: Any) -> None:
    servicer, endpoint = fake
    client = Client(endpoint)
    try:
        before = servicer.streams
        assert client.call("add", (1, 2), {"k": 10}) == 13
        assert client.call("add", (5,)) == 5
        assert list(client.call_stream("gen", (3,))) == [0, 1, 2]
        assert client.call("gen", (2,)) == [0, 1]
        assert servicer.streams == before + 1
        d = Deployment.from_name("add", client=client)
        assert d.remote(1, k=1) == 2
        calls = [d.spawn(i) for i in range(5)]
        assert [c.get(timeout=10) for c in calls] == [0, 1, 2, 3, 4]
        assert list(d.map(range(100), range(100), progress=False)) == [2 * i for i in range(100)]
    finally:
        client.close()


def test_map_keeps_order_with_a_window_and_interleaved_replies(fake: Any) -> None:
    _, endpoint = fake
    client = Client(endpoint)
    try:
        # "batch" answers three calls at a time: counts here are multiples of 3
        args = [(i,) for i in range(999)]
        out = list(client.call_many("batch", args, window=7))
        assert out == list(range(999))
        unordered = list(client.call_many("batch", args[:51], order_outputs=False))
        assert sorted(unordered) == list(range(51))
    finally:
        client.close()


def test_failures_map_to_remotecell_errors(fake: Any) -> None:
    _, endpoint = fake
    client = Client(endpoint)
    try:
        with pytest.raises(Custom) as raised:
            client.call("boom", (1,))
        assert isinstance(raised.value, RemoteError) and raised.value.code == 7
        assert str(raised.value) == "bad input"
        assert raised.value._render_traceback_()[-1] == "Custom: bad input"
        with pytest.raises(CallArgumentsError):
            client.call("args")
        with pytest.raises(EndpointUnavailableError):
            client.call("busy")
        with pytest.raises(CallTimeoutError):
            client.call("slow")
        with pytest.raises(ValueError, match="fail"):
            list(client.call_many("add", [(1,), ("fail",), (2,)]))
        out = list(client.call_many("add", [(1,), ("fail",), (2,)], return_exceptions=True))
        assert out[0] == 1 and out[2] == 2 and isinstance(out[1], ValueError)
    finally:
        client.close()


def test_a_broken_stream_fails_its_calls_and_the_next_call_reopens(fake: Any) -> None:
    servicer, endpoint = fake
    client = Client(endpoint)
    try:
        assert client.call("add", (1,)) == 1
        with pytest.raises(Exception, match="going away"):
            client.call("break")
        before = servicer.streams
        assert client.call("add", (2,)) == 2
        assert servicer.streams == before + 1
    finally:
        client.close()


def test_the_async_face_multiplexes_on_the_callers_loop(fake: Any) -> None:
    _, endpoint = fake

    async def scenario() -> None:
        client = AsyncClient(endpoint)
        try:
            results = await asyncio.gather(*(client.call("add", (i, i)) for i in range(200)))
            assert results == [2 * i for i in range(200)]
            assert [x async for x in client.call_stream("gen", (4,))] == [0, 1, 2, 3]
            args = [(i,) for i in range(300)]
            out = [x async for x in client.call_many("batch", args, window=5)]
            assert out == list(range(300))
            with pytest.raises(Custom):
                await client.call("boom", (1,))
            with pytest.raises(EndpointUnavailableError):
                await client.call("busy")
        finally:
            await client.close()

    asyncio.run(scenario())


def test_ten_thousand_small_calls_are_quick(fake: Any) -> None:
    _, endpoint = fake
    client = Client(endpoint)
    try:
        start = time.perf_counter()
        out = list(client.call_many("batch", ((i,) for i in range(9_999))))
        elapsed = time.perf_counter() - start
        assert out == list(range(9_999))
        assert elapsed < 30, elapsed
    finally:
        client.close()


def test_calls_from_many_threads(fake: Any) -> None:
    _, endpoint = fake
    client = Client(endpoint)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(50):
                assert client.call("add", (n, i)) == n + i
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    try:
        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
    finally:
        client.close()
