"""The auth interceptor: every RPC carries `authorization: Bearer <token>`, checked before the
request is even parsed; the caller's Principal is then available to the servicer."""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

from sami_control.core.errors import DomainError, Unauthenticated
from sami_control.core.model import Principal

from .errors import to_status

_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar("sami_principal")

# Health checks and reflection are for load balancers and grpcurl: no token needed.
PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
MAX_TOKEN = 256


def principal() -> Principal:
    return _principal.get()


def bearer(metadata: Any) -> str:
    for key, value in metadata or ():
        if key == "authorization":
            if isinstance(value, bytes) or len(value) > MAX_TOKEN:
                raise Unauthenticated("malformed authorization header")
            scheme, _, token = value.partition(" ")
            if scheme.lower() != "bearer" or not token:
                raise Unauthenticated("authorization must be 'Bearer <token>'")
            return token.strip()
    raise Unauthenticated(
        "no token: send 'authorization: Bearer <token>' (the sami CLI reads SAMI_TOKEN)"
    )


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, authenticate: Callable[[str], Principal]) -> None:
        self._authenticate = authenticate

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method: str = details.method
        if method.startswith(PUBLIC_PREFIXES):
            return await continuation(details)
        try:
            who = self._authenticate(bearer(details.invocation_metadata))
        except DomainError as exc:
            return _refuse(exc, details)
        handler = await continuation(details)
        if handler is None:
            return handler
        return _with_principal(handler, who)


def _refuse(exc: DomainError, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
    status = to_status(exc)

    async def deny(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(status.code, status.details, status.trailing_metadata)

    # No deserializer: the request bytes of an unauthenticated caller are never parsed.
    method: str = details.method
    if method.endswith("/Connect"):
        return grpc.stream_stream_rpc_method_handler(deny)
    if method.endswith("/WatchDeployment"):
        return grpc.unary_stream_rpc_method_handler(deny)
    return grpc.unary_unary_rpc_method_handler(deny)


def _with_principal(handler: grpc.RpcMethodHandler, who: Principal) -> grpc.RpcMethodHandler:
    kw = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        inner_uu = handler.unary_unary

        async def uu(request: Any, context: Any) -> Any:
            _principal.set(who)
            return await inner_uu(request, context)

        return grpc.unary_unary_rpc_method_handler(uu, **kw)
    streaming = handler.unary_stream or handler.stream_stream
    if streaming:
        inner = streaming
        make = (
            grpc.unary_stream_rpc_method_handler
            if handler.unary_stream
            else grpc.stream_stream_rpc_method_handler
        )
        if inspect.isasyncgenfunction(inner):

            async def gen(request: Any, context: Any) -> AsyncIterator[Any]:
                _principal.set(who)
                async for item in inner(request, context):
                    yield item

            return make(gen, **kw)

        async def coro(request: Any, context: Any) -> Any:
            _principal.set(who)
            return await inner(request, context)

        return make(coro, **kw)
    inner_su = handler.stream_unary

    async def su(request_iterator: Any, context: Any) -> Any:
        _principal.set(who)
        return await inner_su(request_iterator, context)

    return grpc.stream_unary_rpc_method_handler(su, **kw)
