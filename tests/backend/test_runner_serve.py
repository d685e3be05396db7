"""A replica's call server on the runner (``_serve.py``), in process, without a control
plane: calls go in as ``pb.Call`` messages, their answers come out as ``pb.CallResult``
pieces. JSON and Python callers, argument and result errors, a handler that raises,
generators, concurrency on threads and on the event loop, batches, an ASGI app (with a
streaming route and a lifespan), a drain, and which handler a setup cell gives."""

from __future__ import annotations

import itertools
import json
import linecache
import queue
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from remotecell._proto import pb
from remotecell.backend.runner._link import Link
from remotecell.backend.runner._serve import (
    CallServer,
    HandlerError,
    Replica,
    resolve_handler,
)
from remotecell.contract import values

TIMEOUT = 20.0


class Sink:
    """Collects what the server sends, each ``send`` call as one list."""

    def __init__(self) -> None:
        self.sends: list[list[pb.CallResult]] = []
        self.log: list[str] = []
        self._cond = threading.Condition()

    def send(self, results: list[pb.CallResult]) -> None:
        with self._cond:
            self.sends.append(list(results))
            self._cond.notify_all()

    def of(self, call_id: str) -> list[pb.CallResult]:
        with self._cond:
            return [r for batch in self.sends for r in batch if r.call_id == call_id]

    def wait(self, *call_ids: str) -> None:
        def done() -> bool:
            return all(any(r.done for r in self.of(cid)) for cid in call_ids)

        with self._cond:
            assert self._cond.wait_for(done, TIMEOUT), self.sends

    def last(self, call_id: str) -> pb.CallResult:
        self.wait(call_id)
        return self.of(call_id)[-1]


def run_cell(code: str, ns: dict[str, Any]) -> None:
    """Runs ``code`` into ``ns`` as a cell does, its source known to tracebacks."""
    name = f"<cell-{next(_CELLS)}>"
    linecache.cache[name] = (len(code), None, code.splitlines(True), name)
    exec(compile(code, name, "exec"), ns)


_CELLS = itertools.count()


class Blobs(dict):
    def fetch(self, digest: str) -> bytes:
        return self[digest]

    def upload(self, blobs: dict) -> int:
        self.update({k: bytes(v) for k, v in blobs.items()})
        return sum(len(v) for v in blobs.values())


#: The blobs the control plane holds, for every test: a caller's, then the replica's.
STORE = Blobs()


@pytest.fixture
def start() -> Iterator[Any]:
    servers: list[CallServer] = []

    def start(code: str, handler: str = "", **settings: Any) -> tuple[CallServer, Sink, Blobs]:
        ns: dict[str, Any] = {"__name__": "__main__"}
        run_cell(textwrap.dedent(code), ns)
        sink, blobs = Sink(), STORE
        server = CallServer(
            resolve_handler(ns, textwrap.dedent(code), handler),
            sink.send,
            blobs.fetch,
            blobs.upload,
            log=sink.log.append,
            **settings,
        )
        server.start()
        servers.append(server)
        return server, sink, blobs

    yield start
    for server in servers:
        server.stop(5.0)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("remotecell-serve")]


def http(call_id: str, body: Any, **fields: Any) -> pb.Call:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return pb.Call(
        call_id=call_id, http=pb.HttpRequest(method="POST", path="/", body=data, **fields)
    )


def python(call_id: str, *args: Any, **kwargs: Any) -> pb.Call:
    packed = values.pack({"args": args, "kwargs": kwargs})
    STORE.upload(packed.blobs)
    (value,) = packed.values
    return pb.Call(call_id=call_id, args=value)


def result(result: pb.CallResult, blobs: Blobs) -> Any:
    assert not result.HasField("error"), result.error
    return values.unpack([result.value], blobs.fetch)["result"]


ADD = """
def add(x, y=1):
    if isinstance(x, int) and x < 0:
        raise ValueError(f"x is {x}")
    return x + y
"""


def test_a_json_call_and_a_python_call_get_their_results(start):
    server, sink, blobs = start(ADD)
    big = b"\x01" * (2 << 20)
    server.submit([http("j1", {"x": 2}), python("p1", 2, y=5), python("p2", big, y=b"")])
    assert sink.last("j1").json == b"3"
    assert sink.last("j1").done
    assert result(sink.last("p1"), blobs) == 7
    assert result(sink.last("p2"), blobs) == big  # through a blob, uploaded before
    assert sink.last("p2").value.buffers[0] in blobs


def test_arguments_that_do_not_fit_fail_naming_the_argument(start):
    server, sink, _ = start(ADD)
    server.submit(
        [
            http("missing", {}),
            http("unknown", {"x": 1, "foo": 2}),
            python("pmissing", y=2),
            python("many", 1, 2, 3),
            http("notjson", b"{not json"),
            http("list", [1, 2]),
        ]
    )
    sink.wait("missing", "unknown", "pmissing", "many", "notjson", "list")
    errors = {cid: sink.last(cid).error for cid in ("missing", "unknown", "pmissing", "many")}
    assert {e.kind for e in errors.values()} == {pb.CallError.ARGUMENTS}
    assert "missing the argument 'x'" in errors["missing"].message
    assert "unknown argument 'foo'; the handler takes: x, y" in errors["unknown"].message
    assert "missing the argument 'x'" in errors["pmissing"].message
    assert "at most 2" in errors["many"].message
    for cid in ("notjson", "list"):
        error = sink.last(cid).error
        assert error.kind == pb.CallError.BAD_REQUEST
        assert error.message.startswith("the request body is not a JSON object: ")
    assert "it is a list" in sink.last("list").error.message


def test_a_result_that_is_not_json_fails_the_call_in_a_sentence(start):
    server, sink, blobs = start(
        """
        import numpy as np
        def arr(n):
            return np.arange(n) if n else {"a": [1, np.float32(2)]}
        """
    )
    server.submit([http("j1", {"n": 3}), http("j2", {"n": 0}), python("p1", 3)])
    error = sink.last("j1").error
    assert error.kind == pb.CallError.RESULT
    assert error.message == (
        "the handler returned a ndarray, which is not JSON; return lists, dicts, strings or numbers"
    )
    assert "returned a float32" in sink.last("j2").error.message
    assert list(result(sink.last("p1"), blobs)) == [0, 1, 2]  # Python callers get it


def test_a_handler_that_raises_fails_its_call_only(start):
    server, sink, blobs = start(
        ADD
        + """
def boom(kind):
    if kind == "exit":
        raise SystemExit(3)
    if kind == "interrupt":
        raise KeyboardInterrupt
    return add(kind)
""",
        handler="boom",
        concurrency=2,
    )
    server.submit(
        [
            http("e1", {"kind": -1}),
            python("e2", -2),
            http("ok", {"kind": 1}),
            http("exit", {"kind": "exit"}),
            http("int", {"kind": "interrupt"}),
        ]
    )
    error = sink.last("e1").error
    assert error.kind == pb.CallError.RAISED
    assert (error.type_name, error.message) == ("ValueError", "x is -1")
    assert "in boom" in error.traceback and "in add" in error.traceback
    assert 'raise ValueError(f"x is {x}")' in error.traceback
    assert "_serve.py" not in error.traceback  # the handler's frames only
    assert not error.HasField("exception")  # an HTTP caller gets no pickle
    exc = values.unpack([sink.last("e2").error.exception], blobs.fetch)["exception"]
    assert isinstance(exc, ValueError) and str(exc) == "x is -2"
    assert sink.last("ok").json == b"2"
    assert sink.last("exit").error.type_name == "SystemExit"
    assert sink.last("int").error.type_name == "KeyboardInterrupt"
    assert any(line.startswith("call e1 failed:\nTraceback") for line in sink.log)
    server.submit([http("after", {"kind": 5})])  # the replica still serves
    assert sink.last("after").json == b"6"


def test_an_unpicklable_result_fails_for_a_python_caller(start):
    server, sink, _ = start("def f():\n    import threading\n    return threading.Lock()\n")
    server.submit([python("p1")])
    error = sink.last("p1").error
    assert error.kind == pb.CallError.RESULT
    assert "the handler returned a _thread.lock, which cannot be sent back" in error.message


@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_generator_streams_its_items_in_order_then_ends(start, asynchronous):
    code = (
        "async def count(n):\n    for i in range(n):\n        yield {'i': i}\n"
        if asynchronous
        else "def count(n):\n    for i in range(n):\n        yield {'i': i}\n"
    )
    server, sink, blobs = start(code, concurrency=2)
    assert (server.handler.kind, server.handler.is_async) == ("generator", asynchronous)
    server.submit([http("j", {"n": 4}), python("p", 3)])
    sink.wait("j", "p")
    *items, end = sink.of("j")
    assert [json.loads(r.json) for r in items] == [{"i": i} for i in range(4)]
    assert all(r.item and not r.done for r in items)
    assert end.done and not end.json and not end.HasField("error")
    *items, end = sink.of("p")
    assert [result(r, blobs) for r in items] == [{"i": i} for i in range(3)]


CONCURRENT = """
import asyncio, threading, time
lock = threading.Lock()
now = [0]
most = [0]

def enter():
    with lock:
        now[0] += 1
        most[0] = max(most[0], now[0])

def leave():
    with lock:
        now[0] -= 1
"""


@pytest.mark.parametrize("concurrency,calls", [(4, 4), (2, 6)])
def test_async_handlers_run_concurrently_up_to_the_limit(start, concurrency, calls):
    code = CONCURRENT + (
        "async def slow(x):\n    enter()\n    await asyncio.sleep(0.2)\n    leave()\n    return x\n"
    )
    server, sink, _ = start(code, "slow", concurrency=concurrency)
    assert server.handler.is_async
    ids = [f"c{i}" for i in range(calls)]
    server.submit([http(cid, {"x": i}) for i, cid in enumerate(ids)])
    sink.wait(*ids)
    assert [sink.last(cid).json for cid in ids] == [str(i).encode() for i in range(calls)]
    most = server.handler.obj.__globals__["most"][0]
    assert most == concurrency


def test_sync_handlers_run_on_at_most_concurrency_threads(start):
    code = CONCURRENT + (
        "def slow(x):\n    enter()\n    time.sleep(0.1)\n    leave()\n    return x\n"
    )
    server, sink, _ = start(code, "slow", concurrency=3)
    ids = [f"c{i}" for i in range(9)]
    server.submit([http(cid, {"x": i}) for i, cid in enumerate(ids)])
    sink.wait(*ids)
    most = server.handler.obj.__globals__["most"][0]
    assert 1 < most <= 3


@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_batch_handler_sees_lists_and_its_results_are_split_back(start, asynchronous):
    prefix = "async def" if asynchronous else "def"
    code = (
        "seen = []\n"
        f"{prefix} embed(text, scale=1):\n"
        "    seen.append((list(text), list(scale)))\n"
        "    if text == ['wrong']:\n        return [1, 2]\n"
        "    return [len(t) * s for t, s in zip(text, scale)]\n"
    )
    server, sink, blobs = start(code, batch_size=4, batch_wait_ms=500.0, concurrency=2)
    server.submit(
        [
            http("a", {"text": "x"}),
            python("b", "yy", scale=10),
            http("bad", {"scale": 2}),  # fails alone, before the batch
            http("c", {"text": "zzz"}),
            http("d", {"text": "wwww", "scale": 2}),
        ]
    )
    sink.wait("a", "b", "bad", "c", "d")
    seen = server.handler.obj.__globals__["seen"]
    assert seen == [(["x", "yy", "zzz", "wwww"], [1, 10, 1, 2])]
    assert sink.last("a").json == b"1"
    assert result(sink.last("b"), blobs) == 20
    assert (sink.last("c").json, sink.last("d").json) == (b"3", b"8")
    assert sink.last("bad").error.kind == pb.CallError.ARGUMENTS
    server.submit([http("w", {"text": "wrong"})])  # 2 results for 1 call
    error = sink.last("w").error
    assert error.kind == pb.CallError.RESULT
    assert "returned 2 results for 1 calls" in error.message


ASGI = """
import asyncio
import contextlib
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

events = []

@contextlib.asynccontextmanager
async def lifespan(app):
    events.append("startup")
    yield {"greeting": "hello"}
    events.append("shutdown")

async def hello(request: Request):
    return JSONResponse({"greeting": request.state.greeting, "who": request.query_params["who"]})

async def echo(request: Request):
    body = await request.json()
    return JSONResponse({"body": body, "header": request.headers["x-test"], "path": request.url.path})

async def stream(request: Request):
    async def pieces():
        for i in range(3):
            yield f"piece {i}\\n"
            await asyncio.sleep(0.05)
    return StreamingResponse(pieces(), media_type="text/plain")

async def broken(request: Request):
    raise RuntimeError("the app broke")

app = Starlette(
    routes=[
        Route("/hello", hello),
        Route("/echo", echo, methods=["POST"]),
        Route("/stream", stream),
        Route("/broken", broken),
    ],
    lifespan=lifespan,
)
"""


def test_an_asgi_app_serves_its_routes_and_streams(start):
    server, sink, _ = start(ASGI, concurrency=4)
    assert (server.handler.name, server.handler.kind) == ("app", "asgi")
    get = pb.HttpRequest(method="GET", path="/hello", query=b"who=ada")
    post = pb.HttpRequest(
        method="POST",
        path="/echo",
        body=b'{"a": 1}',
        headers=[pb.HttpHeader(name=b"X-Test", value=b"yes")],
    )
    server.submit(
        [
            pb.Call(call_id="g", http=get),
            pb.Call(call_id="p", http=post),
            pb.Call(call_id="s", http=pb.HttpRequest(method="GET", path="/stream")),
            pb.Call(call_id="x", http=pb.HttpRequest(method="GET", path="/nowhere")),
            pb.Call(call_id="b", http=pb.HttpRequest(method="GET", path="/broken")),
            python("py", 1),
        ]
    )
    sink.wait("g", "p", "s", "x", "b", "py")

    def response(cid: str) -> tuple[int, bytes]:
        head, *rest = sink.of(cid)
        assert head.HasField("head") and rest[-1].done
        return head.head.status, b"".join(r.body for r in rest)

    assert response("g") == (200, b'{"greeting":"hello","who":"ada"}')
    assert json.loads(response("p")[1]) == {"body": {"a": 1}, "header": "yes", "path": "/echo"}
    assert response("x")[0] == 404
    status, body = response("s")
    assert (status, body) == (200, b"piece 0\npiece 1\npiece 2\n")
    pieces = [r for r in sink.of("s") if r.body]
    assert len(pieces) >= 3  # each piece went out as it was made
    sends = [b for b in sink.sends if any(r.call_id == "s" and r.body for r in b)]
    assert len(sends) >= 3
    # Starlette answers 500 itself, then raises: the traceback goes to the log.
    assert response("b")[0] == 500
    assert any(t.startswith("call b failed after its response:\n") for t in sink.log)
    assert any("RuntimeError: the app broke" in t for t in sink.log)
    assert sink.last("py").error.kind == pb.CallError.BAD_REQUEST
    assert server.stop(5.0)
    assert _lifespan_events(server) == ["startup", "shutdown"]


def _lifespan_events(server: CallServer) -> list[str]:
    routes = server.handler.obj.routes
    return routes[0].endpoint.__globals__["events"]


def test_an_asgi_app_whose_lifespan_startup_fails_fails_the_setup():
    code = textwrap.dedent(
        """
        async def app(scope, receive, send):
            if scope["type"] == "lifespan":
                await receive()
                await send({"type": "lifespan.startup.failed", "message": "no model file"})
        """
    )
    ns: dict[str, Any] = {}
    run_cell(code, ns)
    server = CallServer(resolve_handler(ns, code), Sink().send, Blobs().fetch, Blobs().upload)
    with pytest.raises(HandlerError, match="lifespan startup failed: no model file"):
        server.start()
    # One that takes no lifespan (it raises for it) serves anyway.
    ns = {}
    run_cell(
        "async def app(scope, receive, send):\n"
        "    assert scope['type'] == 'http'\n"
        "    if scope['path'] == '/raise':\n"
        "        raise KeyError('nope')\n",
        ns,
    )
    sink = Sink()
    server = CallServer(resolve_handler(ns, ""), sink.send, Blobs().fetch, Blobs().upload)
    server.start()
    server.submit([pb.Call(call_id="c", http=pb.HttpRequest(method="GET", path="/"))])
    server.submit([pb.Call(call_id="r", http=pb.HttpRequest(method="GET", path="/raise"))])
    assert "without sending a response" in sink.last("c").error.message
    error = sink.last("r").error
    assert (error.kind, error.type_name) == (pb.CallError.RAISED, "KeyError")
    assert "raise KeyError('nope')" in error.traceback
    assert server.stop(5.0)


def test_a_drain_lets_calls_in_flight_end_and_refuses_later_ones(start):
    server, sink, _ = start(
        "import threading\ngo = threading.Event()\ndef wait(x):\n    go.wait(10)\n    return x\n",
        concurrency=2,
    )
    server.submit([http("early", {"x": 1}), http("queued", {"x": 2})])
    time.sleep(0.05)
    stopped: queue.SimpleQueue[bool] = queue.SimpleQueue()
    threading.Thread(target=lambda: stopped.put(server.stop())).start()
    deadline = time.monotonic() + TIMEOUT
    while not server._stopping and time.monotonic() < deadline:
        time.sleep(0.005)
    server.submit([http("late", {"x": 3})])
    late = sink.last("late").error
    assert (late.kind, late.message) == (pb.CallError.UNAVAILABLE, "the replica is stopping")
    assert stopped.empty()  # still draining
    server.handler.obj.__globals__["go"].set()
    assert stopped.get(timeout=TIMEOUT) is True
    assert (sink.last("early").json, sink.last("queued").json) == (b"1", b"2")


def test_which_handler_a_setup_cell_gives():
    def resolve(code: str, name: str = "") -> Any:
        ns: dict[str, Any] = {}
        exec(code, ns)
        return resolve_handler(ns, code, name)

    with pytest.raises(HandlerError) as err:
        resolve("model = 1\n")
    assert str(err.value) == (
        "the cell defines no handler: define one function, name it with handler=..., or "
        "define an ASGI `app`"
    )
    with pytest.raises(HandlerError) as err:
        resolve("def a(): pass\nasync def b(): pass\n")
    assert str(err.value) == (
        "the cell defines several functions (a, b): name the handler with handler=..."
    )
    with pytest.raises(HandlerError, match="`model` is a int, not a function"):
        resolve("model = 1\n", "model")
    with pytest.raises(HandlerError, match="defines no `predict`"):
        resolve("model = 1\n", "predict")
    one = resolve("import json\nmodel = 2\ndef predict(text, *, k=3):\n    return model\n")
    ready = one.ready("job-1")
    assert ready == pb.ReplicaReady(
        job_id="job-1", handler="predict", kind="function", params=["text", "k"], is_async=False
    )
    assert resolve("def a(): pass\nasync def b(x): pass\n", "b").ready("j").is_async
    callable_obj = resolve(
        "class M:\n    async def __call__(self, x):\n        return x\nm = M()\n", "m"
    )
    assert (callable_obj.kind, callable_obj.is_async, callable_obj.params) == (
        "function",
        True,
        ["x"],
    )
    raw = resolve("async def app(scope, receive, send):\n    pass\n")
    assert (raw.kind, raw.params) == ("asgi", [])


# ----------------------------------------------------------------------- the replica


class FakeLink:
    def __init__(self) -> None:
        self.instructions: queue.SimpleQueue[pb.RunnerInstruction | None] = queue.SimpleQueue()
        self.sink = Sink()
        self.readies: list[pb.ReplicaReady] = []
        self.on_calls: Any = None

    def call_results(self, results: list[pb.CallResult]) -> None:
        self.sink.send(results)

    def ready(self, ready: pb.ReplicaReady) -> None:
        self.readies.append(ready)


def test_a_replica_says_it_is_ready_serves_and_drains_on_its_cancel():
    link, blobs = FakeLink(), Blobs()
    task = pb.Task(
        job_id="r1", spec=pb.JobSpec(code="def f(x):\n    return -x\n", serve=pb.Serve())
    )
    replica = Replica(task, link, blobs.fetch, blobs.upload)  # type: ignore[arg-type]
    ns: dict[str, Any] = {}
    exec(task.spec.code, ns)
    emitted: list[Any] = []
    ended: queue.SimpleQueue[pb.Finished] = queue.SimpleQueue()
    thread = threading.Thread(
        target=lambda: ended.put(replica.serve(ns, task.spec.code, emitted.append))
    )
    thread.start()
    deadline = time.monotonic() + TIMEOUT
    while not link.readies and time.monotonic() < deadline:
        time.sleep(0.005)
    assert link.readies[0].handler == "f" and link.readies[0].job_id == "r1"
    link.on_calls(pb.Calls(calls=[http("c1", {"x": 4})]))
    assert link.sink.last("c1").json == b"-4"
    replica.stop(pb.CancelTask(job_id="r1", reason="scaled down"))
    replica.stop(pb.CancelTask(job_id="r1", reason="again"))  # once is enough
    finished = ended.get(timeout=TIMEOUT)
    thread.join(TIMEOUT)
    assert (finished.state, finished.message) == (pb.CANCELLED, "replica stopped: scaled down")
    assert link.on_calls is None
    assert link.instructions.empty()
    # A Shutdown ends it too, and stays queued for the runner's loop.
    replica = Replica(task, link, blobs.fetch, blobs.upload)  # type: ignore[arg-type]
    link.instructions.put(pb.RunnerInstruction(shutdown=pb.Shutdown(reason="bye")))
    finished = replica.serve(ns, task.spec.code, emitted.append)
    assert finished.message == "replica stopped: bye"
    assert link.instructions.get_nowait().HasField("shutdown")
    # A setup with no handler fails its task.
    replica = Replica(task, link, blobs.fetch, blobs.upload)  # type: ignore[arg-type]
    finished = replica.serve({}, "x = 1", emitted.append)
    assert finished.state == pb.FAILED and "defines no handler" in finished.message
    assert isinstance(emitted[-1], pb.Error) and emitted[-1].message == finished.message


def test_the_link_merges_answers_queued_together_into_one_message():
    link = Link.__new__(Link)
    link._pending = __import__("collections").deque()
    link._wake = None
    link._waking = False
    link.call_results([pb.CallResult(call_id=str(i), json=b"1", done=True) for i in range(10_000)])
    first = link._pending.popleft()
    merged = link._results(first)  # type: ignore[arg-type]
    assert len(merged.results) == 10_000 and not link._pending


def test_the_shell_runs_a_replica_in_its_task_and_ends_it_on_cancel():
    # A real CellShell, in its own process: the setup's env and secrets stay set while
    # calls run, nothing is sent back, and a cancel drains instead of interrupting.
    script = textwrap.dedent(
        """
        import os, queue, threading, time
        from remotecell._proto import pb
        from remotecell.backend.runner._shell import CellShell
        from remotecell.backend.runner._serve import Replica

        class Link:
            def __init__(self):
                self.instructions = queue.SimpleQueue()
                self.results, self.readies, self.on_calls = [], [], None
            def call_results(self, results):
                self.results.extend(results)
            def ready(self, ready):
                self.readies.append(ready)

        shell, link = CellShell(), Link()
        code = "import os\\nmodel = object()\\ndef f(x):\\n    print('called', x)\\n    return os.environ['TOKEN'] + os.environ['MODE']\\n"
        task = pb.Task(job_id="r", secret_env={"TOKEN": "s3cret-value"},
                       spec=pb.JobSpec(code=code, env={"MODE": "m"}, pull=["*"], serve=pb.Serve()))
        replica = Replica(task, link, None, lambda b: 0)
        def drive():
            while not link.readies:
                time.sleep(0.01)
            link.on_calls(pb.Calls(calls=[pb.Call(call_id="c", http=pb.HttpRequest(body=b'{"x": 1}'))]))
            while not link.results:
                time.sleep(0.01)
            shell.interrupt(pb.CancelTask(job_id="r", reason="done"))
        threading.Thread(target=drive).start()
        sent = []
        finished = shell.run_task(task, sent.append, fetch=None, upload=lambda b: 0, serve=replica)
        print(pb.JobState.Name(finished.state), finished.message)
        print(link.results[0].json.decode())
        print(sorted({type(b).__name__ for b in sent}))
        print([b.text for b in sent if isinstance(b, pb.Stream)])
        print("TOKEN" in os.environ, "MODE" in os.environ)
        bad = pb.Task(job_id="b", spec=pb.JobSpec(code="1/0", serve=pb.Serve()))
        print(pb.JobState.Name(shell.run_task(bad, [].append, None, lambda b: 0, serve=replica).state))
        after = pb.Task(job_id="n", spec=pb.JobSpec(code="x = 1", pull=["x"]))
        print(pb.JobState.Name(shell.run_task(after, [].append, None, lambda b: 0).state))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "CANCELLED replica stopped: done"
    assert lines[1] == '"s3cret-valuem"'  # the call saw the task's env
    assert "Result" not in lines[2]  # no names sent back
    assert "called 1" in lines[3]  # what the call printed is the job's output
    assert lines[4:] == ["False False", "FAILED", "SUCCEEDED"]
