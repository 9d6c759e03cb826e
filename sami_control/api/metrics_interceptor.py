"""Count every RPC by method and status code, and time those with a single response.

It sits outside the AuthInterceptor (first in the server's list), so it also counts the
calls that interceptor refuses (UNAUTHENTICATED) and the requests that do not parse
(INVALID_ARGUMENT): it wraps whatever handler the inner interceptors return.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
from google.protobuf import descriptor_pool

from .errors import is_abort

UNKNOWN = ("unknown", "unknown", False)

Record = Callable[[str, str, str, float | None], None]


# A status code's number → its name (context.code() may give either).
_CODE_NAMES: dict[int, str] = {c.value[0]: str(c.name) for c in grpc.StatusCode}


def _code_name(code: Any) -> str:
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    if isinstance(code, int):
        return _CODE_NAMES.get(code, "OK")
    return "OK"


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, record: Record) -> None:
        self._record = record
        self._known: dict[str, tuple[str, str, bool]] = {}

    def labels(self, full_method: str) -> tuple[str, str, bool]:
        """(service, method, timed) for a method the server's protobuf descriptors define;
        anything else is ('unknown', 'unknown', False), so a caller cannot make up label
        values. Methods with a single response are timed, whatever handler answers them (a
        refusal is answered by a streaming one)."""
        hit = self._known.get(full_method)
        if hit is not None:
            return hit
        _, _, rest = full_method.partition("/")
        service, _, method = rest.partition("/")
        if not service or not method or len(full_method) > 200:
            return UNKNOWN
        try:
            desc = descriptor_pool.Default().FindServiceByName(service)
        except KeyError:
            return UNKNOWN
        m = desc.methods_by_name.get(method)
        if m is None:
            return UNKNOWN
        self._known[full_method] = hit = (service, method, not m.server_streaming)
        return hit

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        service, method, timed = self.labels(details.method)
        handler = await continuation(details)
        if handler is None:
            self._record(service, method, "UNIMPLEMENTED", None)
            return handler
        return _instrument(handler, service, method, timed, self._record)


def _instrument(
    handler: grpc.RpcMethodHandler, service: str, method: str, timed: bool, record: Record
) -> grpc.RpcMethodHandler:
    kw = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }

    def done(context: Any, exc: BaseException | None, start: float) -> None:
        if exc is None or is_abort(exc):
            code = _code_name(context.code())
        elif isinstance(exc, asyncio.CancelledError | GeneratorExit):
            code = "CANCELLED"
        else:
            code = "UNKNOWN"
        record(service, method, code, time.perf_counter() - start if timed else None)

    def unary(inner: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
        async def call(request: Any, context: Any) -> Any:
            start = time.perf_counter()
            try:
                result = await inner(request, context)
            except BaseException as exc:
                done(context, exc, start)
                raise
            done(context, None, start)
            return result

        return call

    def streaming(inner: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.isasyncgenfunction(inner):

            async def gen(request: Any, context: Any) -> AsyncIterator[Any]:
                start = time.perf_counter()
                try:
                    async for item in inner(request, context):
                        yield item
                except BaseException as exc:
                    done(context, exc, start)
                    raise
                done(context, None, start)

            return gen
        return unary(inner)

    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), **kw)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), **kw)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(streaming(handler.unary_stream), **kw)
    return grpc.stream_stream_rpc_method_handler(streaming(handler.stream_stream), **kw)
