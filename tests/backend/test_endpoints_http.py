"""Deployed endpoints over HTTP, against a real control plane with real runners: each
bad input the gateway must answer, ASGI apps, streaming, batching and the metrics.

Deployments are made over gRPC directly (the client's SDK has its own tests); calls are
real HTTP requests to the control plane's HTTP side.
"""

from __future__ import annotations

import http.client
import json
import os
import textwrap
import time
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from support import ControlPlane, wait_until

from remotecell._proto import pb, pb_grpc
from remotecell.contract.deployments import Settings, serve_for


class Endpoints:
    """Deploys cells on a control plane and calls them over HTTP."""

    def __init__(self, cp: ControlPlane) -> None:
        assert cp.endpoint is not None
        self.cp = cp
        self.token = cp.endpoint.token
        self.channel = grpc.insecure_channel(cp.endpoint.url)
        self.stub = pb_grpc.ControlPlaneStub(self.channel)
        self.md = [("authorization", f"Bearer {self.token}")]
        url = urllib.parse.urlsplit(self.stub.Health(pb.HealthRequest(), metadata=self.md).http_url)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80

    def deploy(self, name: str, code: str, handler: str = "", **settings: Any) -> pb.DeploymentInfo:
        s = Settings(**settings).checked()
        spec = pb.JobSpec(code=textwrap.dedent(code), serve=serve_for(name, 0, handler, s))
        request = pb.DeployRequest(name=name, spec=spec, settings=s.to_proto())
        return self.stub.Deploy(request, metadata=self.md)

    def info(self, name: str) -> pb.DeploymentInfo:
        return self.stub.GetDeployment(pb.DeploymentRequest(name=name), metadata=self.md)

    def logs(self, name: str) -> str:
        request = pb.DeploymentLogsRequest(name=name)
        return "\n".join(
            line for r in self.stub.DeploymentLogs(request, metadata=self.md) for line in r.lines
        )

    def request(
        self,
        path: str,
        body: bytes | Any = None,
        method: str = "POST",
        token: str | None = "",
        headers: dict[str, str] | None = None,
        timeout: float = 60.0,
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            sent = dict(headers or {})
            if token is not None:
                sent["Authorization"] = f"Bearer {token or self.token}"
            if body is not None and not isinstance(body, bytes):
                body = json.dumps(body).encode()
                sent.setdefault("Content-Type", "application/json")
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            return (
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                response.read(),
            )
        finally:
            conn.close()

    def chunks(
        self, path: str, body: Any, headers: dict[str, str] | None = None, method: str = "POST"
    ) -> list[bytes]:
        """The pieces of a streamed response, as they arrive."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            sent = {"Authorization": f"Bearer {self.token}", **(headers or {})}
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, body=data, headers=sent)
            response = conn.getresponse()
            assert response.status == 200, response.read()
            out = []
            while True:
                piece = response.read1(65536)
                if not piece:
                    return out
                out.append(piece)
        finally:
            conn.close()

    def close(self) -> None:
        self.channel.close()


@pytest.fixture
def endpoints(make_control_plane: Any) -> Iterator[Endpoints]:
    cp = make_control_plane("--cancel-grace", "2")
    e = Endpoints(cp)
    yield e
    e.close()


ECHO = """
    import time
    def handler(text: str, times: int = 1, sleep: float = 0.0):
        time.sleep(sleep)
        if text == "boom":
            raise ValueError("the handler refused 'boom'")
        return {"echo": text * times}
"""


def test_bad_inputs_get_their_status(endpoints: Endpoints) -> None:
    endpoints.deploy("echo", ECHO, max_body_bytes=1000, concurrency=2, max_containers=1)
    status, headers, body = endpoints.request("/endpoints/echo", {"text": "ab", "times": 2})
    assert (status, json.loads(body)) == (200, {"echo": "abab"}), body
    assert headers["x-request-id"].startswith("req-")

    # malformed JSON: 400 with the reason
    status, _, body = endpoints.request("/endpoints/echo", b'{"text": ')
    assert status == 400 and "JSON" in json.loads(body)["error"], body
    status, _, body = endpoints.request("/endpoints/echo", b"[1, 2]")
    assert status == 400, body
    # missing and unknown arguments: 422 naming them
    status, _, body = endpoints.request("/endpoints/echo", {"times": 2})
    assert status == 422 and "text" in json.loads(body)["error"], body
    status, _, body = endpoints.request("/endpoints/echo", {"text": "a", "colour": 1})
    assert status == 422 and "colour" in json.loads(body)["error"], body
    # too large a body: 413, before the credential is even looked at
    status, _, body = endpoints.request("/endpoints/echo", {"text": "x" * 2000})
    assert status == 413 and "max_body_bytes" in json.loads(body)["error"], body
    status, _, _ = endpoints.request("/endpoints/echo", {"text": "x" * 2000}, token=None)
    assert status == 413
    # unknown endpoint: 404; a name that cannot be one: 404
    assert endpoints.request("/endpoints/nosuch", {"text": "a"})[0] == 404
    assert endpoints.request("/endpoints/No..Such", {"text": "a"})[0] == 404
    # missing or wrong credential: 401
    status, headers, body = endpoints.request("/endpoints/echo", {"text": "a"}, token=None)
    assert status == 401 and "www-authenticate" in headers, body
    assert endpoints.request("/endpoints/echo", {"text": "a"}, token="wrong")[0] == 401
    # the wrong method or path for a function: 405 / 404
    assert endpoints.request("/endpoints/echo", method="GET")[0] == 405
    assert endpoints.request("/endpoints/echo/sub", {"text": "a"})[0] == 404
    # handler exception: 500 with the request id; no traceback without debug=True
    status, headers, body = endpoints.request("/endpoints/echo", {"text": "boom"})
    reply = json.loads(body)
    assert status == 500 and reply["request_id"] == headers["x-request-id"], body
    assert "refused 'boom'" in reply["error"] and "traceback" not in reply
    # ... and the traceback is in the endpoint's log, under that request id
    log = wait_until(
        lambda: (text := endpoints.logs("echo")) and reply["request_id"] in text and text,
        10,
        what="the failed call in the log",
    )
    assert "ValueError" in log and "raise ValueError" in log, log
    # the replica lived through all of that
    status, _, body = endpoints.request("/endpoints/echo", {"text": "still"})
    assert (status, json.loads(body)) == (200, {"echo": "still"})


def test_debug_puts_the_traceback_in_the_response(endpoints: Endpoints) -> None:
    endpoints.deploy("echo-debug", ECHO, debug=True)
    status, _, body = endpoints.request("/endpoints/echo-debug", {"text": "boom"})
    assert status == 500 and "ValueError" in json.loads(body)["traceback"], body


def test_queue_full_is_503_and_timeout_is_504(endpoints: Endpoints) -> None:
    endpoints.deploy("slow", ECHO, max_containers=1, concurrency=1, max_queue=1, call_timeout=3.0)
    assert endpoints.request("/endpoints/slow", {"text": "warm"})[0] == 200
    with ThreadPoolExecutor(4) as pool:
        slow = [
            pool.submit(endpoints.request, "/endpoints/slow", {"text": "a", "sleep": 0.8})
            for _ in range(2)
        ]
        time.sleep(0.3)  # one runs, one waits: the queue (1) is full
        status, headers, body = endpoints.request("/endpoints/slow", {"text": "b"})
        assert status == 503 and headers.get("retry-after") == "1", body
        assert "queue" in json.loads(body)["error"]
        assert sorted(f.result()[0] for f in slow) == [200, 200]
    status, headers, body = endpoints.request("/endpoints/slow", {"text": "a", "sleep": 5.0})
    assert status == 504 and "call_timeout" in json.loads(body)["error"], body
    assert headers["x-request-id"].startswith("req-")


def test_public_endpoint_and_other_users(endpoints: Endpoints) -> None:
    import subprocess
    import sys

    endpoints.deploy("open", ECHO, public=True)
    endpoints.deploy("closed", ECHO)
    status, _, body = endpoints.request("/endpoints/open", {"text": "hi"}, token=None)
    assert (status, json.loads(body)) == (200, {"echo": "hi"})
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "remotecell",
            "token",
            "create",
            "bob",
            "--data-dir",
            str(endpoints.cp.data_dir),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    bob = made.stdout.strip().split()[-1]
    # Another user's private endpoint is missing to them; the public one is not.
    assert endpoints.request("/endpoints/closed", {"text": "hi"}, token=bob)[0] == 404
    assert endpoints.request("/endpoints/open", {"text": "hi"}, token=bob)[0] == 200
    # ... and they cannot take its name, see it, or stop it.
    bob_md = [("authorization", f"Bearer {bob}")]
    spec = pb.JobSpec(code="def f(): pass", serve=pb.Serve(deployment="closed"))
    with pytest.raises(grpc.RpcError) as taken:
        endpoints.stub.Deploy(pb.DeployRequest(name="closed", spec=spec), metadata=bob_md)
    assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.RpcError) as hidden:
        endpoints.stub.StopDeployment(pb.DeploymentRequest(name="closed"), metadata=bob_md)
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
    listed = endpoints.stub.ListDeployments(pb.ListDeploymentsRequest(), metadata=bob_md)
    assert list(listed.deployments) == []


ASGI = """
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
    from starlette.routing import Route

    async def hello(request):
        return JSONResponse({"hello": request.query_params.get("who", "world")})

    async def add(request):
        data = await request.json()
        return JSONResponse({"sum": data["a"] + data["b"]}, status_code=201,
                            headers={"x-app": "yes"})

    async def count(request):
        import asyncio
        async def numbers():
            for i in range(3):
                yield f"{i}\\n"
                await asyncio.sleep(0.2)
        return StreamingResponse(numbers(), media_type="text/plain")

    app = Starlette(routes=[
        Route("/hello", hello), Route("/add", add, methods=["POST"]), Route("/count", count),
    ])
"""


def test_asgi_app_with_two_routes_and_a_streaming_route(endpoints: Endpoints) -> None:
    endpoints.deploy("app", ASGI, concurrency=4)
    status, _, body = endpoints.request("/endpoints/app/hello?who=ann", method="GET")
    assert (status, json.loads(body)) == (200, {"hello": "ann"}), body
    status, headers, body = endpoints.request("/endpoints/app/add", {"a": 2, "b": 3})
    assert (status, json.loads(body), headers["x-app"]) == (201, {"sum": 5}, "yes"), body
    assert endpoints.request("/endpoints/app/nowhere", method="GET")[0] == 404
    pieces = endpoints.chunks("/endpoints/app/count", None, method="GET")
    assert b"".join(pieces) == b"0\n1\n2\n"
    assert len(pieces) >= 2, pieces  # it streamed, not one body at the end
    assert endpoints.info("app").kind == "asgi"


STREAM = """
    import time
    def handler(n: int):
        for i in range(n):
            yield f"token{i} "
            time.sleep(0.1)
"""


def test_generator_streams_chunked_and_as_server_sent_events(endpoints: Endpoints) -> None:
    endpoints.deploy("tokens", STREAM)
    pieces = endpoints.chunks("/endpoints/tokens", {"n": 4})
    assert b"".join(pieces) == b"token0 token1 token2 token3 "
    assert len(pieces) >= 2, pieces
    events = b"".join(
        endpoints.chunks("/endpoints/tokens", {"n": 2}, {"Accept": "text/event-stream"})
    )
    assert events == b'data: "token0 "\n\ndata: "token1 "\n\n'


BATCHED = """
    calls = []
    def handler(x: int, scale: int = 1):
        calls.append(len(x))
        return [v * s for v, s in zip(x, scale)] if isinstance(scale, list) else [v * scale for v in x]
"""


def test_dynamic_batching_gathers_concurrent_calls(endpoints: Endpoints) -> None:
    endpoints.deploy("batched", BATCHED, batch_size=8, batch_wait_ms=200, max_containers=1)
    with ThreadPoolExecutor(8) as pool:
        replies = list(
            pool.map(
                lambda i: endpoints.request("/endpoints/batched", {"x": i, "scale": 2}), range(8)
            )
        )
    assert [json.loads(b) for _, _, b in replies] == [i * 2 for i in range(8)]


def test_metrics_count_calls_by_status(endpoints: Endpoints) -> None:
    endpoints.deploy("counted", ECHO)
    assert endpoints.request("/endpoints/counted", {"text": "a"})[0] == 200
    assert endpoints.request("/endpoints/counted", {"nope": 1})[0] == 422
    status, _, body = endpoints.request("/metrics", method="GET")
    text = body.decode()
    assert status == 200
    assert 'remotecell_endpoint_requests_total{endpoint="counted",status="200"} 1.0' in text, text
    assert 'remotecell_endpoint_requests_total{endpoint="counted",status="422"} 1.0' in text
    assert 'remotecell_endpoint_latency_seconds_count{endpoint="counted"} 2.0' in text
    assert 'remotecell_endpoint_replicas{endpoint="counted",state="ready"} 1.0' in text


def test_deployments_survive_a_control_plane_restart(endpoints: Endpoints) -> None:
    endpoints.deploy("kept", ECHO, min_containers=1)
    endpoints.deploy("kept", ECHO.replace("text * times", "text * times + '!'"), min_containers=1)
    spec = pb.JobSpec(code="def f(): return 1", serve=pb.Serve(deployment="gone"))
    request = pb.DeployRequest(name="gone", spec=spec, ephemeral=True)
    endpoints.stub.Deploy(request, metadata=endpoints.md)
    # the old version answers until the new one is ready, then the new one does
    wait_until(
        lambda: (
            json.loads(endpoints.request("/endpoints/kept", {"text": "a"})[2]) == {"echo": "a!"}
        ),
        30,
        what="version 2 to answer",
    )

    endpoints.cp.stop()
    endpoints.cp.start()
    endpoints.close()
    again = Endpoints(endpoints.cp)
    try:
        names = [
            d.name
            for d in again.stub.ListDeployments(
                pb.ListDeploymentsRequest(), metadata=again.md
            ).deployments
        ]
        assert names == ["kept"]  # the ephemeral one is forgotten
        info = again.info("kept")
        assert (info.version, list(info.versions)) == (2, [1, 2])
        # its replicas come back to min_containers, before any call
        wait_until(
            lambda: [r.state for r in again.info("kept").replicas] == ["ready"],
            30,
            what="the kept deployment's replica to come back",
        )
        status, _, body = again.request("/endpoints/kept", {"text": "b"})
        assert (status, json.loads(body)) == (200, {"echo": "b!"})
        # rollback goes to the version before
        rolled = again.stub.RollbackDeployment(pb.DeploymentRequest(name="kept"), metadata=again.md)
        assert rolled.version == 1
        wait_until(
            lambda: json.loads(again.request("/endpoints/kept", {"text": "c"})[2]) == {"echo": "c"},
            30,
            what="the rolled-back version to answer",
        )
    finally:
        again.close()


def test_a_runner_cannot_answer_or_ready_another_users_replica(endpoints: Endpoints) -> None:
    """Alice's cell takes its runner's credential and speaks on the runner channel for
    Bob's replica: its answers and its "ready" are dropped; Bob's call gets his own."""
    from test_credentials import raw, stolen, user_client

    alice = endpoints.cp.client()
    bob = user_client(endpoints.cp, "bob")
    try:
        runner, _ = stolen(alice)
        own_id = next(j.runner_id for j in alice.list_jobs() if j.summary.startswith("import gc"))
        bob_md = [("authorization", f"Bearer {bob.endpoint.token}")]
        code = textwrap.dedent(
            """
            import time
            def handler():
                yield "first"
                time.sleep(3)
                yield "second"
            """
        )
        s = Settings().checked()
        spec = pb.JobSpec(code=code, serve=serve_for("bobs", 0, "", s))
        endpoints.stub.Deploy(
            pb.DeployRequest(name="bobs", spec=spec, settings=s.to_proto()), metadata=bob_md
        )
        conn = http.client.HTTPConnection(endpoints.host, endpoints.port, timeout=60)
        conn.request("POST", "/endpoints/bobs", body=b"{}",
                     headers={"Authorization": f"Bearer {bob.endpoint.token}"})  # fmt: skip
        response = conn.getresponse()
        request_id = response.getheader("x-request-id")
        first = response.read1(100)
        assert first == b"first" and request_id, first
        replica_job = (
            endpoints.stub.GetDeployment(pb.DeploymentRequest(name="bobs"), metadata=bob_md)
            .replicas[0]
            .job_id
        )
        channel, stub, metadata = raw(runner)
        try:
            forged = pb.CallResults(
                results=[pb.CallResult(call_id=request_id, item=True, json=b'"forged"'),
                         pb.CallResult(call_id=request_id, done=True)]
            )  # fmt: skip
            messages = iter(
                [
                    pb.RunnerMessage(hello=pb.RunnerHello(runner_id=own_id, pid=os.getpid())),
                    pb.RunnerMessage(ready=pb.ReplicaReady(job_id=replica_job, kind="asgi")),
                    pb.RunnerMessage(call_results=forged),
                ]
            )
            replies = stub.RunnerSession(messages, metadata=metadata)
            time.sleep(1.0)  # the forged messages have been read (not a timing assertion)
            replies.cancel()
        finally:
            channel.close()
        rest = response.read()
        conn.close()
        assert rest == b"second", rest
        info = endpoints.stub.GetDeployment(pb.DeploymentRequest(name="bobs"), metadata=bob_md)
        assert info.kind == "generator"  # the forged "ready" changed nothing
    finally:
        alice.close()
        bob.close()
