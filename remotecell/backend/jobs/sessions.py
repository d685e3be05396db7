"""Runner processes and their connections: starting, watching, talking to and killing
them. It decides nothing: it reports what happens (a hello, an event, a dropped
connection, an exit) to its listener, the controller, which asks the lifecycle.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from remotecell._proto import pb
from remotecell.backend.executors.base import Executor, RunnerExit, RunnerHandle, RunnerLaunch
from remotecell.backend.state.credentials import Principal

log = logging.getLogger("remotecell.controller")


class SessionListener(Protocol):
    def runner_hello(self, runner_id: str, hello: pb.RunnerHello, owner: str) -> None: ...

    def runner_event(self, runner_id: str, event: pb.JobEvent) -> None: ...

    def runner_down(self, runner_id: str) -> None: ...

    def runner_exited(self, runner_id: str, exit_info: RunnerExit) -> None: ...

    def runner_start_failed(self, runner_id: str, message: str) -> None: ...


@dataclass
class _Process:
    id: str
    handle: RunnerHandle | None = None
    outbox: asyncio.Queue[pb.RunnerInstruction | None] | None = None
    exited: bool = False


class RunnerSessions:
    """The runner processes this control plane knows of, by runner id."""

    def __init__(self, executor: Executor, listener: SessionListener) -> None:
        self.executor = executor
        self.listener = listener
        self._runners: dict[str, _Process] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Takes the runners' replies to the front end's widget messages (``jobs/comms.py``).
        self.on_comm_reply: Callable[[str, pb.CommReply], None] | None = None
        #: Take what replicas say: answers to calls, and that a replica is ready
        #: (``deployments/manager.py``).
        self.on_call_results: Callable[[str, pb.CallResults], None] | None = None
        self.on_replica_ready: Callable[[str, pb.ReplicaReady], None] | None = None

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- processes --------------------------------------------------------------------

    async def launch(self, launch: RunnerLaunch, wanted: Any) -> None:
        """Starts a runner; ``wanted()`` says whether it is still wanted once started."""
        runner = self._runners.setdefault(launch.runner_id, _Process(launch.runner_id))
        try:
            handle = await self.executor.start(launch)
        except Exception as err:
            self._runners.pop(launch.runner_id, None)
            self.listener.runner_start_failed(launch.runner_id, f"could not start a runner: {err}")
            return
        if not wanted():
            await self.executor.kill(handle)
            return
        runner.handle = handle
        self.spawn(self._watch(launch.runner_id, handle))

    async def _watch(self, runner_id: str, handle: RunnerHandle) -> None:
        exit_info = await self.executor.wait(handle)
        self._exited(runner_id, exit_info)

    def _exited(self, runner_id: str, exit_info: RunnerExit) -> None:
        runner = self._runners.pop(runner_id, None)
        if runner is None or runner.exited:
            return
        runner.exited = True
        log.info("runner %s ended: %s", runner_id, exit_info.describe())
        self.listener.runner_exited(runner_id, exit_info)
        if runner.outbox is not None:
            runner.outbox.put_nowait(None)

    def kill(self, runner_id: str) -> None:
        """Ends a runner's process; one with no process here (it never came back) is
        reported as gone at once."""
        runner = self._runners.get(runner_id)
        if runner is not None and runner.handle is not None and not runner.exited:
            self.spawn(self.executor.kill(runner.handle))
        elif runner is None or not runner.exited:
            self._runners.setdefault(runner_id, _Process(runner_id))
            self._exited(runner_id, RunnerExit(None))

    def log_tail(self, runner_id: str) -> str:
        runner = self._runners.get(runner_id)
        if runner is None or runner.handle is None:
            return ""
        return self.executor.log_tail(runner.handle)

    def pid(self, runner_id: str) -> int:
        runner = self._runners.get(runner_id)
        return runner.handle.pid if runner is not None and runner.handle is not None else 0

    # -- connections ----------------------------------------------------------------------

    def connected(self, runner_id: str) -> bool:
        runner = self._runners.get(runner_id)
        return runner is not None and runner.outbox is not None

    def send(self, runner_id: str, instruction: pb.RunnerInstruction) -> bool:
        """Queues an instruction on the runner's connection; False when it has none."""
        runner = self._runners.get(runner_id)
        if runner is None or runner.outbox is None:
            return False
        runner.outbox.put_nowait(instruction)
        return True

    async def session(
        self, requests: AsyncIterator[pb.RunnerMessage], caller: Principal
    ) -> AsyncIterator[pb.RunnerInstruction]:
        """One runner connection (the RunnerSession RPC): its hello, then its events in,
        and instructions out until either side ends it.

        Raises:
            PermissionError: the hello names another runner than ``caller``'s credential.
        """
        first = await anext(aiter(requests), None)
        if first is None or not first.HasField("hello"):
            return
        hello = first.hello
        if hello.runner_id != caller.runner_id:
            raise PermissionError(
                f"this credential is runner {caller.runner_id}'s: it cannot connect as "
                f"runner {hello.runner_id[:64]!r}"
            )
        runner = self._runners.get(hello.runner_id)
        if runner is None or runner.handle is None:
            # One not started in this process: it reconnects after a control-plane restart.
            runner = self._runners.setdefault(hello.runner_id, _Process(hello.runner_id))
            runner.handle = RunnerHandle(hello.runner_id, hello.pid)
            self.spawn(self._watch(hello.runner_id, runner.handle))
        outbox: asyncio.Queue[pb.RunnerInstruction | None] = asyncio.Queue()
        runner.outbox = outbox
        reader = asyncio.create_task(self._read(runner, requests, outbox))
        self.listener.runner_hello(runner.id, hello, caller.user)
        try:
            while True:
                instruction = await outbox.get()
                if instruction is None:
                    return
                yield instruction
        finally:
            reader.cancel()
            if runner.outbox is outbox:
                runner.outbox = None

    async def _read(
        self,
        runner: _Process,
        requests: AsyncIterator[pb.RunnerMessage],
        outbox: asyncio.Queue[pb.RunnerInstruction | None],
    ) -> None:
        try:
            async for message in requests:
                if message.HasField("events"):
                    for event in message.events.events:
                        self.listener.runner_event(runner.id, event)
                elif message.HasField("comm_reply") and self.on_comm_reply is not None:
                    self.on_comm_reply(runner.id, message.comm_reply)
                elif message.HasField("call_results") and self.on_call_results is not None:
                    self.on_call_results(runner.id, message.call_results)
                elif message.HasField("ready") and self.on_replica_ready is not None:
                    self.on_replica_ready(runner.id, message.ready)
        except Exception as err:  # the stream broke: treated like a disconnect
            log.info("runner %s stream ended: %s", runner.id, err)
        finally:
            if runner.outbox is outbox:
                runner.outbox = None
                if not runner.exited:
                    self.listener.runner_down(runner.id)
            outbox.put_nowait(None)

    # -- shutting down ----------------------------------------------------------------------

    async def close(self, grace: float = 2.0) -> None:
        """Asks every runner to stop, kills those still running after ``grace``, and
        closes the executor."""
        for runner_id in list(self._runners):
            self.send(
                runner_id,
                pb.RunnerInstruction(shutdown=pb.Shutdown(reason="control plane stopping")),
            )
        deadline = time.monotonic() + grace
        while (
            any(r.handle is not None and not r.exited for r in self._runners.values())
            and time.monotonic() < deadline
        ):
            await asyncio.sleep(0.05)
        for runner in list(self._runners.values()):
            if runner.handle is not None and not runner.exited:
                await self.executor.kill(runner.handle)
        await self.executor.close()
        for task in list(self._tasks):
            task.cancel()
