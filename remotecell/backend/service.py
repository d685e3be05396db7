"""The gRPC face of the control plane: one ``ControlPlane`` service, served by one
servicer per capability.

Each capability's servicer lives with it, over the object that does the work: jobs
(``job_service``, over the controller), blobs (``blob_service``, over the blob store),
images (``images.service``, over the image cache), volumes (``volumes.service``) and
secrets (``secrets.service``). gRPC takes one object per proto service, so
``ControlPlaneService`` is that object, made of the parts: each RPC is the method of
the same name of exactly one part, checked when it is made, so an RPC that no part (or
two parts) serves stops the control plane at start instead of answering UNIMPLEMENTED.

Each servicer checks every field of its requests (``remotecell.contract``) and ends a bad
call with its own status and sentence. An exception no servicer expected is a bug: the
last-resort guard around every RPC logs it and answers INTERNAL with a generic sentence,
so that no traceback or server path reaches the client.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from remotecell._proto import pb, pb_grpc

log = logging.getLogger("remotecell.server")

#: What the client hears of an unexpected failure; the details are in the log.
INTERNAL_MESSAGE = (
    "the control plane failed unexpectedly handling this call; its log has the details, "
    "please report them"
)

#: The RPCs of the proto's ControlPlane service.
RPCS = tuple(m.name for m in pb.DESCRIPTOR.services_by_name["ControlPlane"].methods)


class ControlPlaneService(pb_grpc.ControlPlaneServicer):
    """The ControlPlane servicer made of per-capability servicers.

    Raises:
        TypeError: an RPC is served by no part or by several, or a part has a method
            named like an RPC that the proto does not have.
    """

    def __init__(self, *parts: object) -> None:
        self.parts = parts
        for part in parts:
            unknown = sorted(
                name
                for name in dir(part)
                if name[:1].isupper() and callable(getattr(part, name)) and name not in RPCS
            )
            if unknown:
                raise TypeError(
                    f"{type(part).__name__} serves {', '.join(unknown)}, which the "
                    "ControlPlane service does not have; add it to remotecell.proto"
                )
        for rpc in RPCS:
            owners = [part for part in parts if callable(getattr(part, rpc, None))]
            if len(owners) != 1:
                names = ", ".join(type(p).__name__ for p in owners) or "none of the servicers"
                raise TypeError(f"the {rpc} RPC must be served by one servicer, not by {names}")
            setattr(self, rpc, guarded(rpc, getattr(owners[0], rpc)))


async def _internal(rpc: str, context: grpc.aio.ServicerContext, err: Exception) -> None:
    if context.done():
        # The call already ended with its status (a message over the size limit, the
        # client gone), so the method's own answer failed: nothing is left to say.
        log.info("the %s RPC ended before its answer (%s)", rpc, type(err).__name__)
        return
    log.error("the %s RPC failed unexpectedly", rpc, exc_info=err)
    await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)


def guarded(rpc: str, method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` with a last-resort guard: an exception it raises, other than the abort
    that ends a call with a status, is logged and becomes INTERNAL with a generic
    sentence."""
    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                async for reply in method(request, context):
                    yield reply
            except grpc.aio.AbortError:
                raise
            except Exception as err:
                await _internal(rpc, context, err)

        return stream

    @functools.wraps(method)
    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as err:
            await _internal(rpc, context, err)

    return unary
