"""The base of every servicer: each RPC a generated servicer declares goes through the
core's gate (`ControlPlane.durable_call`: answered only once what the call wrote is
durable) and has its domain errors mapped to a status (api/errors.py). Subclasses just
define the RPC methods: there is nothing to remember, so nothing to forget."""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

from sami_control.api.errors import abort, is_abort
from sami_control.core.controlplane import ControlPlane


class Servicer:
    def __init__(self, core: ControlPlane) -> None:
        self.core = core

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in _rpc_names(cls):
            fn = cls.__dict__.get(name)
            if fn is not None and not getattr(fn, "_gated", False):
                setattr(cls, name, _gated(fn))


def _rpc_names(cls: type) -> set[str]:
    """The RPC methods of the generated servicer classes `cls` derives from."""
    names: set[str] = set()
    for base in cls.__mro__:
        if base.__module__.endswith("_pb2_grpc"):
            names.update(n for n in vars(base) if not n.startswith("_"))
    return names


def _gated(fn: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(fn):

        @functools.wraps(fn)
        async def gen_wrapper(self: Servicer, request: Any, context: Any) -> AsyncIterator[Any]:
            try:
                async with self.core.durable_call():
                    async for item in fn(self, request, context):
                        yield item
            except Exception as exc:
                if is_abort(exc):
                    raise
                await abort(context, exc)

        gen_wrapper._gated = True  # type: ignore[attr-defined]
        return gen_wrapper

    @functools.wraps(fn)
    async def wrapper(self: Servicer, request: Any, context: Any) -> Any:
        try:
            async with self.core.durable_call():
                return await fn(self, request, context)
        except Exception as exc:
            if is_abort(exc):
                raise
            await abort(context, exc)

    wrapper._gated = True  # type: ignore[attr-defined]
    return wrapper
