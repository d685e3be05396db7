"""Token authentication for every RPC of the control plane.

Clients and runners send ``authorization: Bearer <token>``; the token is compared in
constant time. A request without the right token is refused with UNAUTHENTICATED
before any method runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

DENIED = "missing or wrong token"
#: How long a refused streaming call waits for the client's first message.
FIRST_MESSAGE_WAIT = 1.0


def bearer(metadata: Any) -> str:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer ") :]
    return ""


class TokenAuth(grpc.aio.ServerInterceptor):
    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("the control plane needs a non-empty token")
        self._token = token.encode()

    def allows(self, token: str) -> bool:
        return hmac.compare_digest(token.encode(), self._token)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or self.allows(bearer(handler_call_details.invocation_metadata)):
            return handler
        return _denying(handler)


def _denying(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    async def deny(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, DENIED)

    async def deny_streaming(requests: Any, context: grpc.aio.ServicerContext) -> Any:
        # Take the client's first message before ending the call: ending it while that
        # write is in flight makes the client see INTERNAL instead of UNAUTHENTICATED.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(anext(aiter(requests)), FIRST_MESSAGE_WAIT)
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, DENIED)

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
