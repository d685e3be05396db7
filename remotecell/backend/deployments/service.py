"""The deployment RPCs of the control plane: deploy, list, inspect, stop, scale, roll
back, follow the log, and call (``Invoke``).

Every field is checked before the manager sees it (``contract.deployments``,
``contract.jobs.check_spec``); a bad one ends the call with INVALID_ARGUMENT and one
sentence. A deployment is its owner's: another user's is answered as missing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import grpc

from remotecell._proto import pb
from remotecell.backend import auth
from remotecell.backend.deployments.manager import DeploymentError, DeploymentManager, Sink
from remotecell.backend.state.credentials import Principal
from remotecell.contract import deployments as rules
from remotecell.contract import jobs
from remotecell.contract.errors import ConfigError

_CODES = {
    "not_found": grpc.StatusCode.NOT_FOUND,
    "exists": grpc.StatusCode.ALREADY_EXISTS,
    "invalid": grpc.StatusCode.FAILED_PRECONDITION,
}
#: Calls one Invoke stream may have unanswered; the client keeps below it.
MAX_STREAM_CALLS = 10_000


class DeploymentServicer:
    def __init__(self, manager: DeploymentManager) -> None:
        self.manager = manager

    async def Deploy(
        self, request: pb.DeployRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeploymentInfo:
        try:
            rules.check_name(request.name)
            if not request.spec.HasField("serve"):
                raise ConfigError("a deployment's spec needs `serve`: what its replicas serve")
            jobs.check_spec(request.spec)  # every field, before a blob id names a path
            rules.check_serve(request.spec.serve)
            rules.Settings.from_proto(request.settings).checked()
            return self.manager.deploy(auth.caller(), request)
        except ConfigError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        except DeploymentError as err:
            await context.abort(_CODES[err.code], str(err))
        raise AssertionError("unreachable")

    async def ListDeployments(
        self, request: pb.ListDeploymentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDeploymentsReply:
        return pb.ListDeploymentsReply(deployments=self.manager.listing(auth.caller()))

    async def GetDeployment(
        self, request: pb.DeploymentRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeploymentInfo:
        return await self._named(request.name, context, self.manager.info)

    async def StopDeployment(
        self, request: pb.DeploymentRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeploymentInfo:
        return await self._named(request.name, context, self.manager.stop)

    async def RollbackDeployment(
        self, request: pb.DeploymentRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeploymentInfo:
        return await self._named(request.name, context, self.manager.rollback)

    async def ScaleDeployment(
        self, request: pb.ScaleRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeploymentInfo:
        low = request.min_containers if request.HasField("min_containers") else None
        high = request.max_containers if request.HasField("max_containers") else None

        def scale(name: str, caller: Principal) -> pb.DeploymentInfo:
            return self.manager.scale(name, caller, low, high)

        return await self._named(request.name, context, scale)

    async def _named(
        self,
        name: str,
        context: grpc.aio.ServicerContext,
        action: Callable[[str, Principal], pb.DeploymentInfo],
    ) -> pb.DeploymentInfo:
        try:
            rules.check_name(name)
            return action(name, auth.caller())
        except ConfigError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        except DeploymentError as err:
            await context.abort(_CODES[err.code], str(err))
        raise AssertionError("unreachable")

    async def DeploymentLogs(
        self, request: pb.DeploymentLogsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.DeploymentLogLines]:
        try:
            rules.check_name(request.name)
            deployment_log = self.manager.log_of(request.name, auth.caller())
        except ConfigError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
            return
        except DeploymentError as err:
            await context.abort(_CODES[err.code], str(err))
            return
        if not request.follow:
            lines = deployment_log.tail(request.tail)
            for start in range(0, len(lines), 1000):
                yield pb.DeploymentLogLines(lines=lines[start : start + 1000])
            return
        async for batch in deployment_log.follow(request.tail):
            for start in range(0, len(batch), 1000):
                yield pb.DeploymentLogLines(lines=batch[start : start + 1000])

    async def Invoke(
        self, requests: AsyncIterator[pb.CallRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.CallReplies]:
        caller = auth.caller()
        ready: list[pb.CallResult] = []
        wake = asyncio.Event()
        ours: dict[str, str] = {}  # the manager's call id -> the client's
        theirs: dict[str, str] = {}  # and back
        ended: list[str] = []  # why the requests ended early, if they did

        def sink_for(client_id: str) -> Sink:
            def sink(piece: pb.CallResult) -> None:
                if piece.done:
                    ours.pop(piece.call_id, None)
                    theirs.pop(client_id, None)
                piece.call_id = client_id
                ready.append(piece)
                wake.set()

            return sink

        def refuse(client_id: str, kind: int, message: str) -> None:
            ready.append(rules.call_error(kind, message, call_id=client_id))
            wake.set()

        async def read() -> None:
            try:
                async for request in requests:
                    client_id = rules.check_call_id(request.call_id)
                    if request.cancel:
                        call_id = theirs.pop(client_id, "")
                        if ours.pop(call_id, None) is not None:
                            self.manager.abandon(call_id)
                        wake.set()
                        continue
                    if len(ours) >= MAX_STREAM_CALLS:
                        raise ConfigError(
                            f"over {MAX_STREAM_CALLS} calls are unanswered on this stream; "
                            "wait for answers before sending more"
                        )
                    try:
                        rules.check_name(request.deployment)
                        jobs.check_values([request.args], "the call's arguments")
                    except ConfigError as err:
                        refuse(client_id, pb.CallError.BAD_REQUEST, str(err))
                        continue
                    if not self.manager.may_call(request.deployment, caller):
                        refuse(
                            client_id,
                            pb.CallError.NOT_FOUND,
                            f"no deployment named {request.deployment!r} takes calls; "
                            "`remotecell endpoint ls` lists yours",
                        )
                        continue
                    call = pb.Call(args=request.args)
                    call_id = self.manager.call(request.deployment, call, sink_for(client_id))
                    if self.manager.is_open(call_id):
                        ours[call_id] = client_id
                        theirs[client_id] = call_id
            except ConfigError as err:
                ended.append(str(err))
            finally:
                ended.append("")
                wake.set()

        reader = asyncio.create_task(read())
        try:
            while True:
                await wake.wait()
                wake.clear()
                if ready:
                    batch, ready[:] = list(ready), []
                    yield pb.CallReplies(results=batch)
                if ended and not ours and not ready:
                    if ended[0]:
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, ended[0])
                    return
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            for call_id in list(ours):
                self.manager.abandon(call_id)
