"""Who may call what on the control plane.

Clients and runners send ``authorization: Bearer <token>``. The interceptor finds whose
token it is (``state/credentials.py``: only token hashes are stored) before any method
runs, and refuses:

* a missing or unknown token: UNAUTHENTICATED;
* a user's token on ``RunnerSession``: only runners open the runner channel;
* a runner's credential on anything but ``RUNNER_RPCS``: it serves its own job only.

The method then runs with the caller in ``caller()``; servicers use it to keep each
user's jobs (and what else they own) their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from remotecell.backend.state.credentials import Principal

DENIED = "missing or wrong token"
#: How long a refused streaming call waits for the client's first message.
FIRST_MESSAGE_WAIT = 1.0
#: What a runner's credential may call: its channel, blobs, its volumes' files, Health.
RUNNER_RPCS = frozenset(
    {
        "RunnerSession",
        "Health",
        "MissingBlobs",
        "PutBlob",
        "GetBlob",
        "VolumeGet",
        "VolumeListFiles",
        "VolumeRead",
        "VolumeWrite",
        "VolumeRemove",
    }
)
#: What only a runner's credential may call.
RUNNER_ONLY = frozenset({"RunnerSession"})

_CALLER: contextvars.ContextVar[Principal] = contextvars.ContextVar("remotecell_caller")


def caller() -> Principal:
    """Who the current RPC comes from (set by ``Authenticator`` before the method runs).

    Raises:
        LookupError: called outside an authenticated RPC.
    """
    return _CALLER.get()


def acting_as(principal: Principal) -> contextvars.Token[Principal]:
    """Makes ``principal`` the caller (for code that runs a servicer method directly)."""
    return _CALLER.set(principal)


def owns(principal: Principal, owner: str) -> bool:
    """Whether ``principal`` may see and act on what ``owner`` owns: a user, their own
    (what was made before there were users is the data directory owner's)."""
    return not principal.is_runner and owner == principal.user


def bearer(metadata: Any) -> str:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer ") :]
    return ""


def refusal(principal: Principal | None, method: str) -> tuple[grpc.StatusCode, str] | None:
    """Why ``principal`` may not call ``method`` (status and sentence); None: it may."""
    if principal is None:
        return grpc.StatusCode.UNAUTHENTICATED, DENIED
    if principal.is_runner and method not in RUNNER_RPCS:
        return (
            grpc.StatusCode.PERMISSION_DENIED,
            f"a runner's credential cannot call {method}: it serves its own job only",
        )
    if not principal.is_runner and method in RUNNER_ONLY:
        return (
            grpc.StatusCode.PERMISSION_DENIED,
            f"{method} is the runners' channel: a user's token cannot open it",
        )
    return None


class Authenticator(grpc.aio.ServerInterceptor):
    """Finds each call's caller from its token and refuses what it may not call.

    Args:
        lookup: who a token belongs to (None: no one).
    """

    def __init__(self, lookup: Callable[[str], Principal | None]) -> None:
        self._lookup = lookup

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        principal = self._lookup(bearer(handler_call_details.invocation_metadata))
        method = handler_call_details.method.rsplit("/", 1)[-1]
        refused = refusal(principal, method)
        if refused is not None:
            return _denying(handler, *refused)
        assert principal is not None
        return _as(principal, handler)


def _as(principal: Principal, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """``handler`` with ``principal`` as the caller while its method runs."""
    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.response_streaming:
        inner = handler.stream_stream if handler.request_streaming else handler.unary_stream

        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            _CALLER.set(principal)  # the call's own task: nothing to reset
            async for reply in inner(request, context):
                yield reply

        if handler.request_streaming:
            return grpc.stream_stream_rpc_method_handler(streaming, **kwargs)
        return grpc.unary_stream_rpc_method_handler(streaming, **kwargs)
    inner_unary = handler.stream_unary if handler.request_streaming else handler.unary_unary

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        _CALLER.set(principal)
        return await inner_unary(request, context)

    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary, **kwargs)
    return grpc.unary_unary_rpc_method_handler(unary, **kwargs)


def _denying(
    handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str
) -> grpc.RpcMethodHandler:
    async def deny(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)

    async def deny_streaming(requests: Any, context: grpc.aio.ServicerContext) -> Any:
        # Take the client's first message before ending the call: ending it while that
        # write is in flight makes the client see INTERNAL instead of UNAUTHENTICATED.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(anext(aiter(requests)), FIRST_MESSAGE_WAIT)
        await context.abort(code, message)

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny_streaming, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny_streaming, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny, **kwargs)
    return grpc.unary_unary_rpc_method_handler(deny, **kwargs)
