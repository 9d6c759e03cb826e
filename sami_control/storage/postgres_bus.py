"""The replicas' bus on PostgreSQL: LISTEN/NOTIFY on one channel (core/bus.py says what
travels and why a lost notice costs only time).

Two asyncpg connections of the bus's own, outside the store's pool: one LISTENs (a pooled
connection would miss notices while it serves a transaction), one sends — after the commit
a notice speaks of, in autocommit, in the order this replica committed. The notices of one
turn of the event loop go out as one (merged), so a burst of commits costs one NOTIFY.

Either connection may be lost (PostgreSQL restarting, a cut): the bus reconnects by itself
with a backoff; notices sent meanwhile are dropped, and the listener, once back, asks its
replica to resync (every watcher re-read, every dispatch woken), because what it missed
cannot be known.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable
from typing import Any

import asyncpg
import structlog

from sami_control.core.bus import Bus, Notice, Receiver

log = structlog.get_logger("sami.storage")

CHANNEL = "sami_replicas"
RECONNECT_MIN = 0.1
RECONNECT_MAX = 2.0
# The listening connection is asked this often whether it is still there: a cut that TCP
# has not noticed would otherwise leave this replica deaf without knowing it.
PING_INTERVAL = 5.0
_LOST = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class PostgresBus(Bus):
    def __init__(self, dsn: str, where: str) -> None:
        self._dsn = dsn
        self._where = where  # host:port/db, for the logs (never the password)
        self.replica_id = "r-" + secrets.token_hex(6)
        self._pending: Notice | None = None
        self._sender: Any = None  # asyncpg.Connection
        self._flushing: asyncio.Task[None] | None = None
        self._listening: asyncio.Task[None] | None = None
        self._stopping = False
        self.sent = 0
        self.dropped = 0

    @property
    def shared(self) -> bool:
        return True

    # sending

    def send(self, notice: Notice) -> None:
        if self._stopping:
            return
        if self._pending is None:
            self._pending = notice
        else:
            self._pending.merge(notice)
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        # Let the rest of this loop turn's commits join the notice first.
        await asyncio.sleep(0)
        while self._pending is not None and not self._stopping:
            notice, self._pending = self._pending, None
            try:
                conn = await self._sending_connection()
                for payload in notice.encode():
                    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
                self.sent += 1
            except _LOST as exc:
                # The listeners' sweeps find what this notice announced.
                self.dropped += 1
                log.warning("bus_send_failed", database=self._where, error=str(exc).strip())
                await self._drop_sender()
                return

    async def _sending_connection(self) -> Any:
        if self._sender is None or self._sender.is_closed():
            self._sender = await asyncpg.connect(self._dsn, timeout=5.0, command_timeout=5.0)
        return self._sender

    async def _drop_sender(self) -> None:
        sender, self._sender = self._sender, None
        if sender is not None:
            sender.terminate()

    # listening

    async def start(self, receive: Receiver, resync: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        self._listening = loop.create_task(self._listen(receive, resync, ready), name="sami-bus")
        # Serving starts once this replica hears the others (or the first try failed: it
        # goes on trying, and resyncs when it succeeds).
        await asyncio.shield(ready)

    async def _listen(
        self, receive: Receiver, resync: Callable[[], None], ready: asyncio.Future[None]
    ) -> None:
        delay = RECONNECT_MIN
        first = True
        while not self._stopping:
            conn: Any = None
            try:
                conn = await asyncpg.connect(self._dsn, timeout=5.0, command_timeout=5.0)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(
                    CHANNEL, lambda _c, _pid, _ch, payload: self._deliver(receive, payload)
                )
                if not ready.done():
                    ready.set_result(None)
                if not first:
                    log.info("bus_reconnected", database=self._where)
                    resync()
                first = False
                delay = RECONNECT_MIN
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(PING_INTERVAL):
                            await lost.wait()
                    if not lost.is_set():
                        await conn.fetchval("SELECT 1")
                raise ConnectionError("the listening connection was closed")
            except asyncio.CancelledError:
                raise
            except (*_LOST, ConnectionError) as exc:
                if not ready.done():
                    ready.set_result(None)
                first = False
                if self._stopping:
                    return
                log.warning(
                    "bus_listen_lost", database=self._where, error=str(exc).strip(), retry=delay
                )
                await asyncio.sleep(delay)
                delay = min(RECONNECT_MAX, delay * 2)
            finally:
                if conn is not None:
                    conn.terminate()

    def _deliver(self, receive: Receiver, payload: str) -> None:
        try:
            notice = Notice.decode(payload)
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("bus_notice_malformed", error=str(exc), size=len(payload))
            return
        try:
            receive(notice)
        except Exception:  # one notice must not end the listening
            log.exception("bus_notice_failed")

    async def stop(self) -> None:
        self._stopping = True
        for task in (self._listening, self._flushing):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self._drop_sender()
