"""Closed-loop load: N coroutines, each calling again as soon as its call returns, bounded
in both time and count. Shared by the echo baseline and the Sami clients, so both are
driven exactly alike."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc


@dataclass
class LoopResult:
    calls: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "errors": dict(self.errors),
            "elapsed": self.elapsed,
            "latencies": self.latencies,
        }


async def closed_loop(
    call: Callable[[int, int], Awaitable[Any]],
    concurrency: int,
    duration: float,
    max_calls: int,
    warmup: float = 0.0,
) -> LoopResult:
    """Run `call(worker_index, n)` from `concurrency` coroutines for `warmup` seconds
    (not counted), then for `duration` seconds or `max_calls` calls, whichever ends first.
    Latencies of the counted calls are kept (seconds)."""
    res = LoopResult()
    started = time.monotonic()
    measure_from = started + warmup
    deadline = measure_from + duration
    budget = [max_calls]
    measure_end = [0.0]

    async def one(i: int) -> None:
        n = 0
        while True:
            t0 = time.monotonic()
            if t0 >= deadline or budget[0] <= 0:
                return
            counted = t0 >= measure_from
            if counted:
                budget[0] -= 1
            try:
                await call(i, n)
            except grpc.aio.AioRpcError as exc:
                res.errors[exc.code().name] += 1
                if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED):
                    await asyncio.sleep(0.05)
                continue
            finally:
                n += 1
            t1 = time.monotonic()
            if counted:
                res.calls += 1
                res.latencies.append(t1 - t0)
                measure_end[0] = max(measure_end[0], t1)

    await asyncio.gather(*(one(i) for i in range(concurrency)))
    end = measure_end[0] or time.monotonic()
    res.elapsed = max(1e-9, end - max(measure_from, started))
    return res
