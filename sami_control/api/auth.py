"""The auth interceptor: every RPC carries `authorization: Bearer <token>`, checked before the
request is even read; the caller's Principal is then available to the servicer.

An unauthenticated call costs the server a token lookup by primary key and nothing else: it is
answered with a handler that reads no request message at all (so a 16 MiB body is neither
parsed nor buffered by the handler), and it writes nothing to the database (it is logged).

The Principal also carries what the audit log records about the call: the peer address and
the request id (the `x-request-id` metadata, when a client sends one).
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
import structlog

from sami_control.core import validation
from sami_control.core.errors import DomainError, InvalidArgument, Unauthenticated
from sami_control.core.model import Principal

from .errors import to_status

log = structlog.get_logger("sami.api")

_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar("sami_principal")

# Health checks and reflection are for load balancers and grpcurl: no token needed.
PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
MAX_TOKEN = 256
REQUEST_ID_HEADER = "x-request-id"


def principal() -> Principal:
    return _principal.get()


def request_id(metadata: Any) -> str:
    """The `x-request-id` metadata if it is a well-formed request id; otherwise ignored (a
    tracing header never fails a request)."""
    for key, value in metadata or ():
        if key == REQUEST_ID_HEADER and isinstance(value, str) and validation.is_request_id(value):
            return value
    return ""


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
        who = dataclasses.replace(who, request_id=request_id(details.invocation_metadata))
        return _with_principal(handler, who)


class _LogBudget:
    """At most `burst` log lines per `window` seconds; the rest are counted, and the count is
    logged with the next line allowed (a flood of bad tokens must not flood the log)."""

    def __init__(self, burst: int = 20, window: float = 10.0) -> None:
        self.burst, self.window = burst, window
        self.start, self.used, self.suppressed = 0.0, 0, 0

    def take(self) -> int | None:
        """None: do not log; else the number of lines suppressed before this one."""
        now = time.monotonic()
        if now - self.start >= self.window:
            self.start, self.used = now, 0
        if self.used >= self.burst:
            self.suppressed += 1
            return None
        self.used += 1
        suppressed, self.suppressed = self.suppressed, 0
        return suppressed


# One budget for the gRPC port and the webhook: a flood on both logs at most 20 lines per
# 10 s in all, as docs/webhook.md says.
_unauthenticated_log = _LogBudget()


def log_unauthenticated(**fields: object) -> None:
    """Log a refused unauthenticated call (gRPC or webhook) if the shared budget allows."""
    suppressed = _unauthenticated_log.take()
    if suppressed is not None:
        log.info("unauthenticated", **fields, suppressed_before=suppressed or None)


def _refuse(exc: DomainError, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
    status = to_status(exc)
    method: str = details.method

    async def deny(request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        # Logged, not audited: a caller without a valid token must not be able to make the
        # server write to its database. The message names the token id, never a secret.
        log_unauthenticated(method=method[:200], peer=context.peer(), reason=exc.message)
        await context.abort(status.code, status.details, status.trailing_metadata)

    # A streaming-request handler without a deserializer, whatever the method's real shape:
    # the request of an unauthenticated caller is never read, let alone parsed.
    return grpc.stream_stream_rpc_method_handler(deny)


def _bind(who: Principal, context: Any) -> None:
    peer = context.peer() if context is not None else ""
    _principal.set(dataclasses.replace(who, peer=peer if isinstance(peer, str) else ""))


class _Malformed:
    """What a request that does not parse becomes: the handler answers INVALID_ARGUMENT
    (grpc's own answer would be a bare INTERNAL, as if the server were at fault)."""


_MALFORMED = _Malformed()
MALFORMED = InvalidArgument(
    "request", "is not a valid protobuf message of this method's request type"
)


# One tolerant deserializer per method's deserializer, made once rather than per call; the
# cache is bounded by the methods served, and capped all the same.
@functools.lru_cache(maxsize=1024)
def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None
    parse = deserializer

    def tolerant(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception:
            return _MALFORMED

    return tolerant


class _Requests:
    """The request stream of an authenticated call, read straight from its context (what
    grpc's own request iterator does), a message that does not parse refused. Unlike a
    generator, it keeps no reference to the last message while the next one is awaited:
    an idle stream (an agent between heartbeats) holds no parsed message."""

    __slots__ = ("_context",)

    def __init__(self, context: Any) -> None:
        self._context = context

    def __aiter__(self) -> _Requests:
        return self

    async def __anext__(self) -> Any:
        message = await self._context.read()
        if message is grpc.aio.EOF:
            raise StopAsyncIteration
        if message is _MALFORMED:
            raise MALFORMED
        return message


async def _refuse_malformed(context: Any) -> None:
    status = to_status(MALFORMED)
    await context.abort(status.code, status.details, status.trailing_metadata)


def _with_principal(handler: grpc.RpcMethodHandler, who: Principal) -> grpc.RpcMethodHandler:
    kw = {
        "request_deserializer": _tolerant(handler.request_deserializer),
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        inner_uu = handler.unary_unary

        async def uu(request: Any, context: Any) -> Any:
            if request is _MALFORMED:
                return await _refuse_malformed(context)
            _bind(who, context)
            return await inner_uu(request, context)

        return grpc.unary_unary_rpc_method_handler(uu, **kw)
    if handler.unary_stream:
        inner_us = handler.unary_stream
        if inspect.isasyncgenfunction(inner_us):

            async def gen(request: Any, context: Any) -> AsyncIterator[Any]:
                if request is _MALFORMED:
                    await _refuse_malformed(context)
                _bind(who, context)
                async for item in inner_us(request, context):
                    yield item

            return grpc.unary_stream_rpc_method_handler(gen, **kw)

        async def us(request: Any, context: Any) -> Any:
            if request is _MALFORMED:
                return await _refuse_malformed(context)
            _bind(who, context)
            return await inner_us(request, context)

        return grpc.unary_stream_rpc_method_handler(us, **kw)
    if handler.stream_stream:
        inner_ss = handler.stream_stream
        if inspect.isasyncgenfunction(inner_ss):

            async def sgen(request_iterator: Any, context: Any) -> AsyncIterator[Any]:
                _bind(who, context)
                async for item in inner_ss(_Requests(context), context):
                    yield item

            return grpc.stream_stream_rpc_method_handler(sgen, **kw)

        async def ss(request_iterator: Any, context: Any) -> Any:
            _bind(who, context)
            return await inner_ss(_Requests(context), context)

        return grpc.stream_stream_rpc_method_handler(ss, **kw)
    inner_su = handler.stream_unary

    async def su(request_iterator: Any, context: Any) -> Any:
        _bind(who, context)
        return await inner_su(_Requests(context), context)

    return grpc.stream_unary_rpc_method_handler(su, **kw)
