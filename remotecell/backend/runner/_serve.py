"""A deployment's replica on the runner: after its setup cell ran, it takes calls.

The setup cell is the replica's job (``JobSpec.serve`` set); it runs like any cell, but
binds no names back. Then :func:`resolve_handler` finds what the replica serves (the
function named ``handler=``, else the cell's ASGI ``app``, else the one function the
cell defines), a :class:`CallServer` takes its calls, and :class:`Replica` drives both on
the runner's main thread until the job is cancelled (or the runner told to stop), which
drains it: calls that came stay to their end, later ones are refused.

The server is the part with no connection in it: calls go in through ``submit`` from
any thread (the link's), their answers come out through ``send`` as ``pb.CallResult``
pieces, in order for each call. Sync handlers run in ``concurrency`` worker threads; an
``async def`` handler (or async generator, or ASGI app) runs on one event-loop thread,
``concurrency`` calls at once. With ``batch_size > 1`` calls are gathered into lists for
one handler call. Nothing a call does ends the replica: each failure is that call's
``CallError`` (and, when the handler raised, its traceback in the job's log).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import inspect
import json
import logging
import queue
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from remotecell._proto import pb
from remotecell.backend.runner import _asgi
from remotecell.backend.runner._asgi import AsgiCall, Lifespan, NoResponse, is_asgi
from remotecell.contract import values, wire
from remotecell.contract.deployments import call_error, defined_functions

if TYPE_CHECKING:
    from remotecell.backend.runner._link import Link
    from remotecell.contract.events import Body

log = logging.getLogger("remotecell.runner")

Send = Callable[[list[pb.CallResult]], None]
Fetch = Callable[[str], Any]
Upload = Callable[[dict], int]

MAX_JSON_BYTES = wire.MAX_MESSAGE_BYTES - wire.ENVELOPE_BYTES
#: How long a drain waits for the calls in flight when the runner itself stops.
SHUTDOWN_DRAIN_S = 30.0
_STOP = object()


class HandlerError(Exception):
    """The replica cannot serve: one sentence saying why and what to do."""


# ----------------------------------------------------------------------- the handler


@dataclass
class Handler:
    """What a replica serves."""

    name: str
    obj: Any
    kind: str  # function, generator, asgi
    is_async: bool
    params: list[str] = field(default_factory=list)
    signature: inspect.Signature | None = None

    def ready(self, job_id: str) -> pb.ReplicaReady:
        return pb.ReplicaReady(
            job_id=job_id,
            handler=self.name,
            kind=self.kind,
            params=self.params,
            is_async=self.is_async,
        )


def resolve_handler(ns: dict[str, Any], code: str, name: str = "") -> Handler:
    """The handler a setup cell (``code``, run into ``ns``) gives its replica: the object
    named ``name``; else an ASGI ``app``; else the one function the cell defines.

    Raises:
        HandlerError: there is none, several, or the named one is not callable.
    """
    if name:
        if name not in ns:
            raise HandlerError(
                f"the cell defines no `{name}`: define the handler function `{name}` in "
                "the cell, or name another with handler=..."
            )
        obj = ns[name]
        if not callable(obj):
            raise HandlerError(
                f"`{name}` is a {values.type_name(obj)}, not a function: name a function "
                "with handler=..."
            )
        return _handler(name, obj)
    app = ns.get("app")
    if app is not None and is_asgi(app):
        return _handler("app", app)
    try:
        names = list(defined_functions(code))
    except SyntaxError:  # the transformed cell ran, so this is not expected: no functions
        names = []
    defined = [n for n in names if callable(ns.get(n))]
    if len(defined) == 1:
        return _handler(defined[0], ns[defined[0]])
    if defined:
        raise HandlerError(
            f"the cell defines several functions ({', '.join(defined)}): name the handler "
            "with handler=..."
        )
    raise HandlerError(
        "the cell defines no handler: define one function, name it with handler=..., or "
        "define an ASGI `app`"
    )


def _handler(name: str, obj: Any) -> Handler:
    if is_asgi(obj):
        return Handler(name, obj, "asgi", True)
    # What says whether calls are coroutines or generators: a callable object's __call__.
    plain = inspect.isroutine(obj) or isinstance(obj, functools.partial | type)
    probe = obj if plain else type(obj).__call__
    try:
        signature: inspect.Signature | None = inspect.signature(obj)
    except (TypeError, ValueError):
        signature = None
    if inspect.isasyncgenfunction(probe):
        kind, is_async = "generator", True
    elif inspect.isgeneratorfunction(probe):
        kind, is_async = "generator", False
    else:
        kind, is_async = "function", inspect.iscoroutinefunction(probe)
    params = list(signature.parameters) if signature is not None else []
    return Handler(name, obj, kind, is_async, params, signature)


# ----------------------------------------------------------------------- the server


class _Failed(Exception):
    """A call that cannot run: its answer is ``result`` (an error)."""

    def __init__(self, result: pb.CallResult) -> None:
        super().__init__()
        self.result = result


@dataclass
class _Prepared:
    call: pb.Call
    args: tuple
    kwargs: dict[str, Any]
    http: bool


class CallServer:
    """Runs calls of one handler (see the module's docstring).

    ``send`` takes the pieces of answers (it may be called from any of the server's
    threads, and must not block for long); ``fetch`` and ``upload`` read and store blobs
    of Python callers' arguments and results; ``log`` writes a line to the replica job's
    stderr (a failed call's traceback).
    """

    def __init__(
        self,
        handler: Handler,
        send: Send,
        fetch: Fetch,
        upload: Upload,
        *,
        concurrency: int = 1,
        batch_size: int = 0,
        batch_wait_ms: float = 10.0,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.handler = handler
        self._send_raw = send
        self._fetch = fetch
        self._upload = upload
        self.concurrency = max(1, concurrency)
        self.batch_size = batch_size if handler.kind == "function" and batch_size > 1 else 0
        self.batch_wait = max(0.0, batch_wait_ms) / 1000.0
        self._log = log or (lambda text: log_fallback(text))
        self._cond = threading.Condition()
        self._started = False
        self._stopping = False
        self._in_flight = 0
        self._calls: collections.Counter[str] = collections.Counter()
        self._abandoned: set[str] = set()
        self._threads: list[threading.Thread] = []
        self._work: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._batches: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sem: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._lifespan: Lifespan | None = None
        self._state: dict[str, Any] = {}

    @property
    def uses_loop(self) -> bool:
        return self.handler.is_async or self.handler.kind == "asgi"

    @property
    def in_flight(self) -> int:
        with self._cond:
            return self._in_flight

    # -- from the owner ------------------------------------------------------------

    def start(self) -> None:
        """Starts the threads (and an ASGI app's lifespan startup).

        Raises:
            HandlerError: the app's lifespan startup failed.
        """
        if self.uses_loop:
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run_loop() -> None:
                asyncio.set_event_loop(loop)
                self._sem = asyncio.Semaphore(self.concurrency)
                loop.call_soon(ready.set)
                try:
                    loop.run_forever()
                finally:  # the threads of its blocking work (uploads) end too
                    try:
                        loop.run_until_complete(loop.shutdown_default_executor())
                    finally:
                        loop.close()

            self._loop = loop
            self._thread(run_loop, "remotecell-serve-loop")
            ready.wait()
        else:
            for i in range(self.concurrency):
                self._thread(self._worker, f"remotecell-serve-{i}")
        if self.batch_size:
            self._thread(self._batcher, "remotecell-serve-batch")
        if self.handler.kind == "asgi":
            lifespan = Lifespan(self.handler.obj, self._state)
            problem = self._on_loop(lifespan.startup())
            if problem is not None:
                self._stop_threads(wait=True)
                raise HandlerError(f"the app's lifespan startup failed: {problem}")
            if lifespan.supported:
                self._lifespan = lifespan
        with self._cond:
            self._started = True

    def submit(self, calls: Iterable[pb.Call]) -> None:
        """Takes calls (from any thread, without blocking); a call that cannot be taken
        (the replica stops) is answered UNAVAILABLE at once."""
        for call in calls:
            with self._cond:
                refused = self._stopping or not self._started
                if not refused:
                    self._in_flight += 1
                    self._calls[call.call_id] += 1
            if refused:
                self._refuse(call.call_id)
                continue
            if self.batch_size:
                self._batches.put(call)
            elif self._loop is not None:
                self._loop.call_soon_threadsafe(self._spawn, call)
            else:
                self._work.put(call)

    def stop(self, timeout: float | None = None) -> bool:
        """Drains: refuses calls from now on, waits for those taken (at most ``timeout``
        seconds; those still running then are answered UNAVAILABLE and left), runs an
        ASGI app's lifespan shutdown, and ends the server's threads. Returns whether
        every call taken had ended."""
        with self._cond:
            if self._stopping:  # stopped already (or stopping on another thread)
                return self._cond.wait_for(lambda: self._in_flight == 0, timeout)
            self._stopping = True
        if self.batch_size:
            self._batches.put(_STOP)
        with self._cond:
            drained = self._cond.wait_for(lambda: self._in_flight == 0, timeout)
            left = [] if drained else list(self._calls)
            self._abandoned.update(left)
        for call_id in left:
            self._send_raw([_error(call_id, pb.CallError.UNAVAILABLE, _STOPPED)])
        lifespan, self._lifespan = self._lifespan, None
        if lifespan is not None and self._loop is not None:
            try:
                self._on_loop(lifespan.shutdown(), _asgi.LIFESPAN_SHUTDOWN_S + 1)
            except Exception as err:
                self._log(f"the app's lifespan shutdown failed: {type(err).__name__}: {err}\n")
        self._stop_threads(wait=drained)
        return drained

    # -- threads ---------------------------------------------------------------------

    def _thread(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _stop_threads(self, wait: bool) -> None:
        for _ in range(self.concurrency):
            self._work.put(_STOP)
        self._batches.put(_STOP)
        loop = self._loop
        if loop is not None and not loop.is_closed():

            def halt() -> None:
                for task in asyncio.all_tasks(loop):
                    task.cancel()
                loop.call_soon(loop.stop)  # after the cancellations are delivered

            loop.call_soon_threadsafe(halt)
        for thread in self._threads:
            thread.join(None if wait else 0.5)
        self._threads = [t for t in self._threads if t.is_alive()]
        if self._threads:
            log.warning("%d call threads did not end as the replica stopped", len(self._threads))

    def _on_loop(self, coro: Any, timeout: float | None = None) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _worker(self) -> None:
        while True:
            item = self._work.get()
            if item is _STOP:
                return
            if isinstance(item, list):
                self._run_batch(item)
            else:
                self._run_sync(item)

    # -- answers -----------------------------------------------------------------------

    def _send(self, results: list[pb.CallResult]) -> None:
        if self._abandoned:
            results = [r for r in results if r.call_id not in self._abandoned]
            if not results:
                return
        try:
            self._send_raw(results)
        except Exception:
            log.exception("a call's answer could not be sent")

    def _ended(self, call_id: str) -> None:
        with self._cond:
            self._in_flight -= 1
            self._calls[call_id] -= 1
            if self._calls[call_id] <= 0:
                del self._calls[call_id]
            self._cond.notify_all()

    def _refuse(self, call_id: str) -> None:
        self._send([_error(call_id, pb.CallError.UNAVAILABLE, _STOPPING)])

    def _value(self, call_id: str, obj: Any, http: bool, item: bool = False) -> pb.CallResult:
        """One piece carrying ``obj`` (a result or an item) as its caller takes it, its
        blobs uploaded.

        Raises:
            _Failed: it cannot travel (not JSON, not picklable, too large).
        """
        result, blobs = self._encoded(call_id, obj, http, item)
        if blobs:
            self._upload(blobs)
        return result

    def _encoded(
        self, call_id: str, obj: Any, http: bool, item: bool
    ) -> tuple[pb.CallResult, dict[str, Any]]:
        """``_value``'s piece, and the blobs it needs uploaded first."""
        if http:
            data = _json(call_id, obj)
            return pb.CallResult(call_id=call_id, json=data, item=item, done=not item), {}
        try:
            packed = values.pack({"result": obj})
        except Exception as err:
            reason = getattr(err, "reason", "") or str(err)
            raise _Failed(
                _error(
                    call_id,
                    pb.CallError.RESULT,
                    f"the handler returned a {values.type_name(obj)}, which cannot be sent "
                    f"back: {reason}",
                )
            ) from None
        value = packed.values[0]
        return pb.CallResult(call_id=call_id, value=value, item=item, done=not item), packed.blobs

    def _raised(self, call_id: str, exc: BaseException, http: bool) -> pb.CallResult:
        text = "".join(traceback.format_exception(type(exc), exc, _user_frames(exc)))
        self._log(f"call {call_id} failed:\n{text}")
        result = _error(call_id, pb.CallError.RAISED, _str(exc), _type_name(exc), text)
        if not http:
            try:
                packed = values.pack({"exception": exc})
                if packed.blobs:
                    self._upload(packed.blobs)
                result.error.exception.CopyFrom(packed.values[0])
            except Exception:
                pass  # the caller gets its type, message and traceback
        return result

    # -- a call's arguments -------------------------------------------------------------

    def _prepare(self, call: pb.Call) -> _Prepared:
        """The call's arguments, checked against the handler's signature.

        Raises:
            _Failed: they cannot be read, or do not fit.
        """
        cid = call.call_id
        if self.handler.kind == "asgi":
            if not call.HasField("http"):
                raise _Failed(
                    _error(
                        cid,
                        pb.CallError.BAD_REQUEST,
                        "this deployment serves an ASGI app: call it over HTTP",
                    )
                )
            return _Prepared(call, (), {}, True)
        if call.HasField("http"):
            body = bytes(call.http.body)
            try:
                obj = json.loads(body) if body.strip() else {}
            except ValueError as err:
                raise _Failed(_error(cid, pb.CallError.BAD_REQUEST, f"{_NOT_OBJECT}: {err}"))
            if not isinstance(obj, dict):
                raise _Failed(
                    _error(
                        cid, pb.CallError.BAD_REQUEST, f"{_NOT_OBJECT}: it is a {_json_type(obj)}"
                    )
                )
            args: tuple = ()
            kwargs, http = obj, True
        elif call.HasField("args"):
            try:
                loaded = values.unpack([call.args], self._fetch)
            except Exception as err:
                raise _Failed(
                    _error(
                        cid,
                        pb.CallError.BAD_REQUEST,
                        "the call's arguments could not be loaded on the replica: "
                        f"{type(err).__name__}: {_str(err)}",
                    )
                ) from None
            args, kwargs, http = loaded.get("args", ()), loaded.get("kwargs", {}), False
            if not isinstance(args, tuple | list) or not isinstance(kwargs, dict):
                raise _Failed(
                    _error(
                        cid,
                        pb.CallError.BAD_REQUEST,
                        "the call's arguments are not a tuple of args and a dict of kwargs",
                    )
                )
            args = tuple(args)
        else:
            args, kwargs, http = (), {}, False
        problem = _argument_problem(self.handler.signature, args, kwargs)
        if problem is not None:
            raise _Failed(_error(cid, pb.CallError.ARGUMENTS, problem))
        return _Prepared(call, args, kwargs, http)

    # -- sync handlers (worker threads) ---------------------------------------------------

    def _run_sync(self, call: pb.Call) -> None:
        cid, http = call.call_id, call.HasField("http")
        try:
            p = self._prepare(call)
            fn = self.handler.obj
            if self.handler.kind == "generator":
                for item in fn(*p.args, **p.kwargs):
                    self._send([self._value(cid, item, http, item=True)])
                self._send([pb.CallResult(call_id=cid, done=True)])
            else:
                result = fn(*p.args, **p.kwargs)
                self._send([self._value(cid, result, http)])
        except _Failed as failed:
            self._send([failed.result])
        except BaseException as exc:  # SystemExit, KeyboardInterrupt too: only this call's
            self._send([self._raised(cid, exc, http)])
        finally:
            self._ended(cid)

    # -- async handlers and ASGI apps (the loop thread) -------------------------------------

    def _spawn(self, call: pb.Call) -> None:
        asgi = self.handler.kind == "asgi"
        coro = self._run_asgi(call) if asgi else self._run_async(call)
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def _run_async(self, call: pb.Call) -> None:
        cid, http = call.call_id, call.HasField("http")
        assert self._sem is not None
        try:
            async with self._sem:
                needs_blobs = call.args.pickle_blob or call.args.buffers
                p = (
                    await self._blocking(self._prepare, call)
                    if needs_blobs
                    else self._prepare(call)
                )
                fn = self.handler.obj
                if self.handler.kind == "generator":
                    async for item in fn(*p.args, **p.kwargs):
                        self._send([await self._answer(cid, item, http, True)])
                    self._send([pb.CallResult(call_id=cid, done=True)])
                else:
                    result = await fn(*p.args, **p.kwargs)
                    self._send([await self._answer(cid, result, http, False)])
        except _Failed as failed:
            self._send([failed.result])
        except BaseException as exc:  # CancelledError too: only as the replica is forced down
            self._send([await self._blocking(self._raised, cid, exc, http)])
        finally:
            self._ended(cid)

    async def _answer(self, cid: str, obj: Any, http: bool, item: bool) -> pb.CallResult:
        # Packing is quick; an upload of its blobs is not, and must not hold the loop.
        result, blobs = self._encoded(cid, obj, http, item)
        if blobs:
            await self._blocking(self._upload, blobs)
        return result

    async def _run_asgi(self, call: pb.Call) -> None:
        cid = call.call_id
        assert self._sem is not None
        try:
            async with self._sem:
                self._prepare(call)
                await AsgiCall(
                    self.handler.obj, call, self._state, self._send, self._late_failure(cid)
                ).run()
        except NoResponse as missing:
            self._send([_error(cid, pb.CallError.RESULT, str(missing))])
        except _Failed as failed:
            self._send([failed.result])
        except BaseException as exc:
            self._send([await self._blocking(self._raised, cid, exc, True)])
        finally:
            self._ended(cid)

    def _late_failure(self, call_id: str) -> Callable[[BaseException], None]:
        def failed(exc: BaseException) -> None:
            text = "".join(traceback.format_exception(type(exc), exc, _user_frames(exc)))
            self._log(f"call {call_id} failed after its response:\n{text}")

        return failed

    # -- batches -------------------------------------------------------------------------

    def _batcher(self) -> None:
        stopping = False
        while not stopping:
            first = self._batches.get()
            if first is _STOP:
                return
            batch: list[_Prepared] = []
            self._gather(batch, first)
            deadline = time.monotonic() + self.batch_wait
            while len(batch) < self.batch_size:
                wait = 0.0 if self._stopping else deadline - time.monotonic()
                try:
                    call = self._batches.get(block=wait > 0, timeout=wait if wait > 0 else None)
                except queue.Empty:
                    break
                if call is _STOP:
                    stopping = True
                    break
                self._gather(batch, call)
            if batch:
                if self._loop is not None:
                    self._loop.call_soon_threadsafe(self._spawn_batch, batch)
                else:
                    self._work.put(batch)

    def _gather(self, batch: list[_Prepared], call: pb.Call) -> None:
        try:
            batch.append(self._prepare(call))
        except _Failed as failed:
            self._send([failed.result])
            self._ended(call.call_id)
        except BaseException as exc:
            self._send([self._raised(call.call_id, exc, call.HasField("http"))])
            self._ended(call.call_id)

    def _batch_arguments(self, batch: list[_Prepared]) -> tuple[tuple, dict[str, Any]]:
        sig = self.handler.signature
        assert sig is not None
        lists: dict[str, list[Any]] = {}
        for p in batch:
            bound = sig.bind(*p.args, **p.kwargs)
            bound.apply_defaults()
            for name, value in bound.arguments.items():
                lists.setdefault(name, []).append(value)
        merged = inspect.BoundArguments(sig, collections.OrderedDict(lists))  # type: ignore[arg-type]
        return merged.args, merged.kwargs

    def _split(self, batch: list[_Prepared], results: Any) -> list[pb.CallResult]:
        n = len(batch)
        if not isinstance(results, list | tuple):
            problem = (
                f"the batched handler returned a {values.type_name(results)}; it must "
                f"return a list of {n} results, one for each call, in order"
            )
        elif len(results) != n:
            problem = (
                f"the batched handler returned {len(results)} results for {n} calls; it "
                "must return one result for each call, in order"
            )
        else:
            out = []
            for p, result in zip(batch, results, strict=True):
                try:
                    out.append(self._value(p.call.call_id, result, p.http))
                except _Failed as failed:
                    out.append(failed.result)
            return out
        return [_error(p.call.call_id, pb.CallError.RESULT, problem) for p in batch]

    def _batch_raised(self, batch: list[_Prepared], exc: BaseException) -> list[pb.CallResult]:
        ids = ", ".join(p.call.call_id for p in batch)
        text = "".join(traceback.format_exception(type(exc), exc, _user_frames(exc)))
        self._log(f"call {ids} failed:\n{text}")
        out = []
        for p in batch:
            result = _error(p.call.call_id, pb.CallError.RAISED, _str(exc), _type_name(exc), text)
            out.append(result)
        return out

    def _run_batch(self, batch: list[_Prepared]) -> None:
        try:
            args, kwargs = self._batch_arguments(batch)
            self._send(self._split(batch, self.handler.obj(*args, **kwargs)))
        except BaseException as exc:
            self._send(self._batch_raised(batch, exc))
        finally:
            for p in batch:
                self._ended(p.call.call_id)

    def _spawn_batch(self, batch: list[_Prepared]) -> None:
        task = asyncio.get_running_loop().create_task(self._run_batch_async(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_batch_async(self, batch: list[_Prepared]) -> None:
        assert self._sem is not None
        try:
            async with self._sem:
                args, kwargs = self._batch_arguments(batch)
                results = await self.handler.obj(*args, **kwargs)
                self._send(await self._blocking(self._split, batch, results))
        except BaseException as exc:
            self._send(self._batch_raised(batch, exc))
        finally:
            for p in batch:
                self._ended(p.call.call_id)


def log_fallback(text: str) -> None:
    log.warning("%s", text.rstrip())


# ----------------------------------------------------------------------- helpers

_NOT_OBJECT = "the request body is not a JSON object"
_STOPPING = "the replica is stopping"
_STOPPED = "the replica stopped before the call ended"


def _error(
    call_id: str, kind: int, message: str, type_name: str = "", tb: str = ""
) -> pb.CallResult:
    return call_error(kind, message, type_name, tb, call_id)


def _json(call_id: str, obj: Any) -> bytes:
    culprit: list[Any] = []

    def refuse(value: Any) -> Any:
        culprit.append(value)
        raise TypeError("not JSON")

    try:
        data = json.dumps(obj, default=refuse).encode()
    except (TypeError, ValueError) as err:
        what = culprit[0] if culprit else obj
        hint = "" if culprit else f" ({err})"
        raise _Failed(
            _error(
                call_id,
                pb.CallError.RESULT,
                f"the handler returned a {type(what).__name__}, which is not JSON{hint}; "
                "return lists, dicts, strings or numbers",
            )
        ) from None
    if len(data) > MAX_JSON_BYTES:
        raise _Failed(
            _error(
                call_id,
                pb.CallError.RESULT,
                f"the handler's result is {len(data) / 2**20:.1f} MiB as JSON, over the "
                f"{MAX_JSON_BYTES / 2**20:.1f} MiB one answer holds; return less, or "
                "write it to a volume and return its path",
            )
        )
    return data


def _json_type(obj: Any) -> str:
    return {list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(obj), "number"
    )


def _argument_problem(sig: inspect.Signature | None, args: tuple, kwargs: dict) -> str | None:
    """Why ``args`` and ``kwargs`` do not fit ``sig``, in a sentence naming the argument;
    None when they fit (or the handler has no signature to check)."""
    if sig is None:
        return None
    try:
        sig.bind(*args, **kwargs)
        return None
    except TypeError as err:
        fallback = str(err)
    P = inspect.Parameter
    params = sig.parameters
    takes = ", ".join(params) or "no arguments"
    if not any(p.kind == P.VAR_KEYWORD for p in params.values()):
        for name in kwargs:
            if name not in params or params[name].kind in (P.POSITIONAL_ONLY, P.VAR_POSITIONAL):
                return f"unknown argument {name!r}; the handler takes: {takes}"
    positional = [
        p for p in params.values() if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)
    ]
    if len(args) > len(positional) and not any(p.kind == P.VAR_POSITIONAL for p in params.values()):
        return (
            f"{len(args)} positional arguments given, but the handler takes at most "
            f"{len(positional)}: {takes}"
        )
    for i, p in enumerate(positional[: len(args)]):
        if p.name in kwargs:
            return f"the argument {p.name!r} is given twice (by position {i + 1} and by name)"
    given = {p.name for p in positional[: len(args)]} | set(kwargs)
    for p in params.values():
        if p.kind in (P.VAR_POSITIONAL, P.VAR_KEYWORD) or p.default is not P.empty:
            continue
        if p.name not in given:
            return f"missing the argument {p.name!r}; the handler takes: {takes}"
    return fallback


def _user_frames(exc: BaseException) -> Any:
    """``exc``'s traceback from the first frame outside the replica's own modules (the
    handler's)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename in _OWN_FILES:
        tb = tb.tb_next
    return tb


_OWN_FILES = frozenset({__file__, _asgi.__file__})


def _type_name(exc: BaseException) -> str:
    cls = type(exc)
    return cls.__name__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _str(value: object) -> str:
    try:
        text = str(value)
    except Exception:
        text = f"<{type(value).__name__} object whose str() failed>"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


# ----------------------------------------------------------------------- the replica


class Replica:
    """Drives one replica on the runner's main thread, inside its task (``CellShell``
    calls :meth:`serve` once the setup cell succeeded, with the task's output, env and
    masking still in place): resolves the handler, starts a :class:`CallServer`, says
    it is ready, then waits on the link's instructions until the job is cancelled
    (:meth:`stop`, from the link's thread) or the runner is told to stop; drains, and
    returns the task's end."""

    def __init__(
        self,
        task: pb.Task,
        link: Link,
        fetch: Fetch,
        upload: Upload,
        on_instruction: Callable[[pb.RunnerInstruction], None] | None = None,
    ) -> None:
        self.task = task
        self.link = link
        self.fetch = fetch
        self.upload = upload
        #: What to do with other instructions that come while serving (widget messages).
        self.on_instruction = on_instruction
        self._stop_lock = threading.Lock()
        self._stopped = False

    def stop(self, cancel: pb.CancelTask) -> None:
        """Drains the replica (the job's cancel; from any thread)."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        self.link.instructions.put(pb.RunnerInstruction(cancel=cancel))

    def serve(self, ns: dict[str, Any], code: str, emit: Callable[[Body], None]) -> pb.Finished:
        serve = self.task.spec.serve
        try:
            handler = resolve_handler(ns, code, serve.handler)
        except HandlerError as err:
            return _fail(emit, str(err))

        def to_log(text: str) -> None:
            emit(
                pb.Stream(name=pb.Stream.STDERR, text=text if text.endswith("\n") else text + "\n")
            )

        server = CallServer(
            handler,
            self.link.call_results,
            self.fetch,
            self.upload,
            concurrency=serve.concurrency or 1,
            batch_size=serve.batch_size,
            batch_wait_ms=serve.batch_wait_ms,
            log=to_log,
        )
        try:
            server.start()
        except HandlerError as err:
            return _fail(emit, str(err))
        self.link.on_calls = lambda calls: server.submit(calls.calls)
        again: list[pb.RunnerInstruction | None] = []
        reason: str = "the runner failed"
        timeout: float | None = SHUTDOWN_DRAIN_S
        try:
            self.link.ready(handler.ready(self.task.job_id))
            reason, timeout = self._wait(server, again)
        finally:
            # The server refuses calls from here on, then they are refused by the link.
            try:
                drained = server.stop(timeout)
            finally:
                self.link.on_calls = None
                for ins in again:
                    self.link.instructions.put(ins)
        if not drained:
            to_log(f"calls still running after {timeout or 0:.0f} s were abandoned")
        return pb.Finished(state=pb.CANCELLED, message=f"replica stopped: {reason}")

    def _wait(
        self, server: CallServer, again: list[pb.RunnerInstruction | None]
    ) -> tuple[str, float | None]:
        """Waits for the end; returns its reason and how long a drain may take (a
        cancel's: as long as the calls take; the runner's own stop: a while)."""
        while True:
            try:
                ins = self.link.instructions.get()
            except KeyboardInterrupt:
                continue
            if ins is None:
                again.append(None)
                return "the runner is stopping", SHUTDOWN_DRAIN_S
            if ins.HasField("shutdown"):
                again.append(ins)
                return ins.shutdown.reason or "the runner is stopping", SHUTDOWN_DRAIN_S
            if ins.HasField("cancel"):
                if ins.cancel.job_id in ("", self.task.job_id):
                    return ins.cancel.reason or "cancelled", None
            elif ins.HasField("calls"):
                server.submit(ins.calls.calls)
            elif ins.HasField("task"):
                again.append(ins)  # not while busy; kept for after this one
            elif self.on_instruction is not None:
                self.on_instruction(ins)


def _fail(emit: Callable[[Body], None], message: str) -> pb.Finished:
    emit(pb.Error(kind=pb.Error.USER_CODE, type_name="ServeError", message=message))
    return pb.Finished(state=pb.FAILED, message=message)
