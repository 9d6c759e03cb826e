"""The bytes of request messages the server holds, bounded per token and in all, so that no
token, however many calls it opens, can make the server run out of memory; and giving memory
back to the system after a burst of large requests.

A call's bytes are counted from the moment its message is received (before it is parsed)
until its handler returns (a single request) or the next message is read (a stream). A call
that may carry a large message (a manifests sync) reserves the largest message the server
accepts before a byte of it is read, and keeps only the real size once it is received: the
receive buffer, not only the parsed message, costs memory.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import gc
import time
from collections.abc import Callable

import structlog

from sami_control.core.errors import ResourceExhausted

log = structlog.get_logger("sami.api")

# The largest request: a manifests sync carries a whole deployments repo (12 MiB of files at
# most, see manifests.Limits) in one message. It is also gRPC's receive limit, which applies
# to every method alike; the limits below are ours, per method.
MAX_LARGE_REQUEST = 16 * 1024 * 1024
# The largest request of any other method (an agent's heartbeat with a thousand leases is
# about 80 KiB; everything else a few KiB).
MAX_REQUEST = 1024 * 1024
# Bytes of requests in flight one token may make the server hold, and all tokens together:
# two manifests syncs at once per token, eight in all. A request costs about four times its
# size while it is received, copied and parsed: the total bounds that to about 512 MiB.
PER_TOKEN_BUDGET = 2 * MAX_LARGE_REQUEST
TOTAL_BUDGET = 8 * MAX_LARGE_REQUEST
# After a request at least this large ends, and no other large one is in flight, the
# process hands its free heap pages back to the system (see trim_memory).
TRIM_AFTER_BYTES = 1024 * 1024
TRIM_DELAYS = (0.5, 5.0)


class RequestBudget:
    """Bytes of requests in flight, per token and in all. Used from the event loop only."""

    def __init__(
        self,
        per_token: int,
        total: int,
        trim: Callable[[], None] | None = None,
        trim_delays: tuple[float, ...] = TRIM_DELAYS,
    ) -> None:
        if per_token > total:
            raise ValueError("the per-token budget cannot exceed the total")
        self.per_token, self.total = per_token, total
        self.used = 0
        self.by_token: dict[str, int] = {}
        self.large_in_flight = 0
        self._trim = trim if trim is not None else trim_memory
        self._trim_pending = False
        self._trim_delays = trim_delays

    def trim_soon(self) -> None:
        """Trim a moment from now, and again a few seconds later, if no large request is in
        flight by then: when the last one's handler returns, its request is still
        referenced, and grpc frees the buffers of a connection only once it closes."""
        if self._trim_pending:
            return
        self._trim_pending = True
        loop = asyncio.get_running_loop()
        for delay in self._trim_delays:
            loop.call_later(delay, self._trim_if_idle, delay == self._trim_delays[-1])

    def _trim_if_idle(self, last: bool) -> None:
        if last:
            self._trim_pending = False
        if self.large_in_flight == 0:
            self._trim()

    def take(self, token_id: str, n: int) -> ResourceExhausted | None:
        """Count `n` more bytes for the token; the refusal (nothing counted) if either budget
        would be exceeded."""
        mine = self.by_token.get(token_id, 0)
        if mine + n > self.per_token:
            return ResourceExhausted(
                f"this token's requests in flight would hold {mine + n} bytes, over its "
                f"budget of {self.per_token}: wait for its other calls to finish and retry (a "
                "manifests sync counts as the largest message until its own is received)"
            )
        if self.used + n > self.total:
            return ResourceExhausted(
                f"the server holds {self.used} bytes of requests in flight, near its limit "
                f"of {self.total}: retry in a few seconds"
            )
        self.used += n
        self.by_token[token_id] = mine + n
        return None

    def give(self, token_id: str, n: int) -> None:
        if n <= 0:
            return
        self.used -= n
        left = self.by_token.get(token_id, 0) - n
        if left > 0:
            self.by_token[token_id] = left
        else:
            self.by_token.pop(token_id, None)


class Account:
    """The bytes one call holds in the budget."""

    __slots__ = ("budget", "held", "large", "token_id")

    def __init__(self, budget: RequestBudget, token_id: str) -> None:
        self.budget, self.token_id = budget, token_id
        self.held = 0
        self.large = False

    def hold(self, n: int) -> ResourceExhausted | None:
        """Make the call hold exactly `n` bytes: releases what is no longer needed, or takes
        more (the refusal, and nothing changed, if the budget does not allow it)."""
        self.note(n)
        if n > self.held:
            refusal = self.budget.take(self.token_id, n - self.held)
            if refusal is not None:
                return refusal
        else:
            self.budget.give(self.token_id, self.held - n)
        self.held = n
        return None

    def note(self, n: int) -> None:
        """The call received (or reserved for) `n` bytes, refused or not: a large request
        means memory to give back once the call ends."""
        if n >= TRIM_AFTER_BYTES and not self.large:
            self.large = True
            self.budget.large_in_flight += 1

    def close(self) -> None:
        """The call ended: release everything; after the last large request, trim."""
        self.hold(0)
        if self.large:
            self.large = False
            self.budget.large_in_flight -= 1
            if self.budget.large_in_flight == 0:
                self.budget.trim_soon()


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where there is none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        fn = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


def trim_memory() -> None:
    """Give free heap memory back to the system. A 15 MiB request is received in many small
    buffers and copied and parsed in others; once freed, glibc keeps those pages (its heap
    cannot shrink past what is still in use above them), so without this a burst of large
    syncs left the process at its peak size for good. Costs a few milliseconds (tens with
    thousands of streams open), after large requests only."""
    start = time.monotonic()
    # A refused request lives on in the traceback of its error, which grpc's call object
    # keeps in a reference cycle: only the cyclic collector frees it, and in a serving
    # process that runs rarely (server._settle_gc).
    gc.collect()
    fn = _malloc_trim()
    if fn is not None:
        fn(0)
    log.debug("memory_trimmed", ms=round((time.monotonic() - start) * 1000, 1))
