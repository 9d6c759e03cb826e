"""The auth interceptor: every RPC carries `authorization: Bearer <token>`, checked before the
request is even read; the caller's Principal is then available to the servicer.

An unauthenticated call costs the server a token lookup by primary key and nothing else: it is
answered with a handler that reads no request message at all (so a 16 MiB body is neither
parsed nor buffered by the handler), and it writes nothing to the database (it is logged).

An authenticated call's request is bounded before it is parsed: a manifests sync from a
caller who may not sync is refused without being read, any other method's request over
1 MiB is refused, and the bytes of requests in flight are budgeted per token and in all
(budget.py).

The Principal also carries what the audit log records about the call: the peer address and
the request id (the `x-request-id` metadata, when a client sends one).
"""

from __future__ import annotations

import contextvars
import dataclasses
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
import structlog

from sami_control.core import authz, validation
from sami_control.core.errors import (
    DomainError,
    InvalidArgument,
    ResourceExhausted,
    Unauthenticated,
)
from sami_control.core.model import Principal
from sami_control.core.store import StorageFailed

from .budget import (
    MAX_LARGE_REQUEST,
    MAX_REQUEST,
    PER_TOKEN_BUDGET,
    TOTAL_BUDGET,
    Account,
    RequestBudget,
)
from .errors import abort, to_status

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


# Methods whose request may be as large as MAX_LARGE_REQUEST: the audit action and the check
# of who may call them, made before a byte of the request is read (any other method's
# request is refused over MAX_REQUEST, before it is parsed).
LARGE_REQUESTS: dict[str, tuple[str, Callable[[Principal], None]]] = {
    "/sami.v1.ManifestService/SyncManifests": ("manifests.sync", authz.require_sync_manifests),
}

# (who, audit action, target, the refusal) -> records the refusal in the audit log.
AuditRefusal = Callable[[Principal, str, str, DomainError], Awaitable[None]]


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self,
        authenticate: Callable[[str], Awaitable[Principal]],
        budget: RequestBudget | None = None,
        audit_refusal: AuditRefusal | None = None,
    ) -> None:
        self._authenticate = authenticate
        self.budget = budget or RequestBudget(PER_TOKEN_BUDGET, TOTAL_BUDGET)
        self._audit_refusal = audit_refusal

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method: str = details.method
        if method.startswith(PUBLIC_PREFIXES):
            return await continuation(details)
        try:
            who = await self._authenticate(bearer(details.invocation_metadata))
        except DomainError as exc:
            return _refuse(exc, details)
        except StorageFailed as exc:
            return _unavailable(exc)
        who = dataclasses.replace(who, request_id=request_id(details.invocation_metadata))
        large = LARGE_REQUESTS.get(method)
        if large is not None:
            action, check = large
            try:
                check(who)
            except DomainError as exc:
                return _deny_unread(exc, who, action, self._audit_refusal, self.budget)
        handler = await continuation(details)
        if handler is None:
            return handler
        return _with_principal(handler, who, self.budget, large is not None)


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


def _unavailable(exc: StorageFailed) -> grpc.RpcMethodHandler:
    """The token could not be read (the store is out of reach): UNAVAILABLE, retryable,
    as for a call whose own transaction failed. Raised from the interceptor it would reach
    the caller as UNKNOWN, which clients take for a failure, not a reason to retry."""

    async def deny(request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        await abort(context, exc)

    return grpc.stream_stream_rpc_method_handler(deny)


def _deny_unread(
    exc: DomainError,
    who: Principal,
    action: str,
    audit_refusal: AuditRefusal | None,
    budget: RequestBudget,
) -> grpc.RpcMethodHandler:
    """Refuse an authenticated caller who may not call the method at all, without reading
    its request (which may be 16 MiB); audited like the servicer's own refusals."""

    async def deny(request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        _bind(who, context)
        if audit_refusal is not None:
            await audit_refusal(principal(), action, "request not read", exc)
        # grpc may have buffered a few MiB of the request before the refusal: a burst of
        # them leaves memory to give back.
        budget.trim_soon()
        await _abort(context, exc)

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
MISSING = InvalidArgument("request", "no request message was sent")


class _Refused:
    """What a request refused before it is parsed becomes (too large, over budget)."""

    __slots__ = ("error",)

    def __init__(self, error: DomainError) -> None:
        self.error = error


def _counting(
    parse: Callable[[bytes], Any] | None, account: Account, limit: int
) -> Callable[[bytes], Any]:
    """The method's deserializer for one call: the raw message's size is checked against
    the method's limit and counted in the caller's budget before it is parsed."""

    def deserialize(data: bytes) -> Any:
        size = len(data)
        if size > limit:
            account.note(size)
            return _Refused(
                ResourceExhausted(
                    f"the request is {size} bytes; this method takes at most {limit} "
                    f"(only a manifests sync may be larger, up to {MAX_LARGE_REQUEST})"
                )
            )
        refusal = account.hold(size)
        if refusal is not None:
            return _Refused(refusal)
        if parse is None:  # a generic handler that takes raw bytes
            return data
        try:
            return parse(data)
        except Exception:
            return _MALFORMED

    return deserialize


def _checked(message: Any) -> Any:
    if message is _MALFORMED:
        raise MALFORMED
    if isinstance(message, _Refused):
        raise message.error
    return message


async def _read(context: Any, account: Account) -> Any:
    """The next message of a request stream, grpc.aio.EOF at the end. The previous
    message's bytes leave the budget first: the handler is done with it when it asks for
    the next."""
    account.hold(0)
    return _checked(await context.read())


class _Requests:
    """The request stream of an authenticated call, read straight from its context (what
    grpc's own request iterator does), a message that does not parse refused. Unlike a
    generator, it keeps no reference to the last message while the next one is awaited:
    an idle stream (an agent between heartbeats) holds no parsed message."""

    __slots__ = ("_account", "_context")

    def __init__(self, context: Any, account: Account) -> None:
        self._context, self._account = context, account

    def __aiter__(self) -> _Requests:
        return self

    async def __anext__(self) -> Any:
        message = await _read(self._context, self._account)
        if message is grpc.aio.EOF:
            raise StopAsyncIteration
        return message


async def _abort(context: Any, exc: DomainError) -> None:
    status = to_status(exc)
    await context.abort(status.code, status.details, status.trailing_metadata)


async def _single(context: Any, account: Account, reserve: int) -> Any:
    """The one request message of a call whose request is not a stream; None once the
    call has been aborted (refused). `reserve`: bytes to hold before reading."""
    try:
        if reserve:
            refusal = account.hold(reserve)
            if refusal is not None:
                raise refusal
        # What the message holds stays in the budget until the handler returns.
        message = _checked(await context.read())
        if message is grpc.aio.EOF:
            raise MISSING
        return message
    except DomainError as exc:
        await _abort(context, exc)
        return None


def _with_principal(
    handler: grpc.RpcMethodHandler, who: Principal, budget: RequestBudget, large: bool
) -> grpc.RpcMethodHandler:
    """The servicer's handler with the caller bound and its request counted. Handlers of
    a single request are turned into streaming-request ones that read it themselves: the
    bytes it holds are then counted from before it is received until the handler returns,
    whatever happens in between (a call cancelled while its request arrives included)."""
    account = Account(budget, who.token_id)
    limit = MAX_LARGE_REQUEST if large else MAX_REQUEST
    reserve = MAX_LARGE_REQUEST if large else 0
    kw = {
        "request_deserializer": _counting(handler.request_deserializer, account, limit),
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        inner_uu = handler.unary_unary

        async def uu(request_iterator: Any, context: Any) -> Any:
            try:
                request = await _single(context, account, reserve)
                if request is None:
                    return None
                _bind(who, context)
                return await inner_uu(request, context)
            finally:
                account.close()

        return grpc.stream_unary_rpc_method_handler(uu, **kw)
    if handler.unary_stream:
        inner_us = handler.unary_stream
        if inspect.isasyncgenfunction(inner_us):

            async def gen(request_iterator: Any, context: Any) -> AsyncIterator[Any]:
                try:
                    request = await _single(context, account, reserve)
                    if request is None:
                        return
                    _bind(who, context)
                    async for item in inner_us(request, context):
                        yield item
                finally:
                    account.close()

            return grpc.stream_stream_rpc_method_handler(gen, **kw)

        async def us(request_iterator: Any, context: Any) -> Any:
            try:
                request = await _single(context, account, reserve)
                if request is None:
                    return None
                _bind(who, context)
                return await inner_us(request, context)
            finally:
                account.close()

        return grpc.stream_stream_rpc_method_handler(us, **kw)
    if handler.stream_stream:
        inner_ss = handler.stream_stream
        if inspect.isasyncgenfunction(inner_ss):

            async def sgen(request_iterator: Any, context: Any) -> AsyncIterator[Any]:
                _bind(who, context)
                try:
                    async for item in inner_ss(_Requests(context, account), context):
                        yield item
                finally:
                    account.close()

            return grpc.stream_stream_rpc_method_handler(sgen, **kw)

        async def ss(request_iterator: Any, context: Any) -> Any:
            _bind(who, context)
            try:
                return await inner_ss(_Requests(context, account), context)
            finally:
                account.close()

        return grpc.stream_stream_rpc_method_handler(ss, **kw)
    inner_su = handler.stream_unary

    async def su(request_iterator: Any, context: Any) -> Any:
        _bind(who, context)
        try:
            return await inner_su(_Requests(context, account), context)
        finally:
            account.close()

    return grpc.stream_unary_rpc_method_handler(su, **kw)
