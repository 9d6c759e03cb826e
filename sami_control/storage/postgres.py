"""PostgreSQL storage: the store of several control-plane replicas (one database, any number
of `sami-control serve --store postgresql://…`).

Driver: asyncpg, through its pool (ARCHITECTURE.md, Storage, says why not psycopg 3). The
pool is bounded (`?pool_size=N` in the URL, default 10): a replica never holds more
connections than that, however many calls it serves. TLS to the server is the URL's
`sslmode` (disable, prefer — libpq's default —, require, verify-ca, verify-full, with
sslrootcert, sslcert and sslkey), as with libpq.

Every `tx()` block is one pooled connection and one transaction, BEGIN … COMMIT at READ
COMMITTED: it commits when the block ends (no group commit, so the Store's defaults for
after_commit / durable / writable hold), and rolls back on an exception. `Tx.lock(name)`
is a transaction-scoped advisory lock: replicas that change the same thing take turns.

Failures: a uniqueness or foreign-key violation is `Conflict`, as in SQLite. A lost
connection or a server that is down, restarting or refusing connections is
`StorageFailed`, naming the database (host:port/db, never the password) and saying it is
retryable. The pool drops a broken connection and opens a new one for the next block;
a block whose BEGIN fails on a connection that died while idle in the pool (nothing done
yet) is retried once per pooled connection before it fails.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import asyncpg
import structlog

from sami_control.core.bus import Bus
from sami_control.core.store import Conflict, StorageFailed, Store, Tx
from sami_control.storage.postgres_bus import PostgresBus
from sami_control.storage.postgres_schema import (
    BOOKKEEPING,
    MIGRATION_LOCK,
    MIGRATIONS,
    SchemaTooNew,
)
from sami_control.storage.postgres_tx import PostgresTx
from sami_control.storage.urls import POSTGRES_SCHEMES, BadStoreURL

log = structlog.get_logger("sami.storage")

DEFAULT_POOL_SIZE = 10

# What a dead connection or an unavailable server looks like: retrying later may succeed.
# Class 08 (connection exception), 57 (operator intervention: shutdown, crash, starting
# up), 53 (insufficient resources: too many connections), and the OS's and asyncio's own.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
)


def _unavailable(exc: BaseException, conn: Any) -> bool:
    """Whether `exc` says the database is out of reach (retryable), rather than that the
    statement or its caller was wrong. asyncpg reports a query on a connection that died
    as an InterfaceError ("connection is closed"), as it does some misuses, or, when the
    server's last words arrived just before, as an InternalClientError ("another operation
    is in progress"): the connection's state tells them apart."""
    if isinstance(exc, _UNAVAILABLE):
        return True
    return (
        isinstance(exc, asyncpg.InterfaceError | asyncpg.exceptions.InternalClientError)
        and conn is not None
        and _is_closed(conn)
    )


def _is_closed(conn: Any) -> bool:
    """Whether a pooled connection died. When it does, the pool detaches it from our proxy
    at once, and every call on the proxy (is_closed too) raises InterfaceError ("released
    back to the pool"): we never release it before the block ends, so that says closed."""
    try:
        return bool(conn.is_closed())
    except asyncpg.InterfaceError:
        return True


def describe(url: str) -> str:
    """host:port/dbname of a PostgreSQL URL: what messages and logs name (never the user's
    password)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    host = parts.hostname or query.get("host", "") or "localhost"
    port = parts.port or int(query.get("port", "5432") or 5432)
    dbname = unquote(parts.path.lstrip("/")) or query.get("dbname", "") or parts.username or ""
    return f"{host}:{port}/{dbname}"


def split_pool_size(url: str, pool_size: int | None) -> tuple[str, int]:
    """The URL without `pool_size` (not a libpq parameter: asyncpg would send it to the
    server as a setting), and the pool size: the argument, else the URL's, else 10."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    from_url = [v for k, v in query if k == "pool_size"]
    if pool_size is None and from_url:
        try:
            pool_size = int(from_url[-1])
        except ValueError:
            pool_size = 0
        if pool_size < 1:
            raise BadStoreURL(
                f"pool_size={from_url[-1]!r} in the store URL: give a number of connections "
                "of 1 or more"
            )
    rest = urlencode([(k, v) for k, v in query if k != "pool_size"])
    return urlunsplit(parts._replace(query=rest)), pool_size or DEFAULT_POOL_SIZE


class PostgresStore(Store):
    kind = "postgresql"

    def __init__(
        self, url: str, pool_size: int | None = None, command_timeout: float = 30.0
    ) -> None:
        if not url.startswith(POSTGRES_SCHEMES):
            raise BadStoreURL(f"not a PostgreSQL URL (postgresql://USER@HOST:PORT/DB): {url!r}")
        self._dsn, self.pool_size = split_pool_size(url, pool_size)
        self.target = describe(url)
        self.command_timeout = command_timeout
        self._pool: Any = None  # asyncpg.Pool, once open()
        # The schema version open() found (before migrating), and the one it left.
        self.schema_found = 0
        self.schema_version = 0

    def make_bus(self) -> Bus:
        """LISTEN/NOTIFY on this database (storage/postgres_bus.py): several replicas may
        serve it."""
        return PostgresBus(self._dsn, self.target)

    def unavailable(self, exc: BaseException, committing: bool = False) -> StorageFailed:
        outcome = (
            "the commit's outcome is unknown (all of it or nothing was kept)"
            if committing
            else "nothing of this transaction was kept"
        )
        return StorageFailed(
            f"the PostgreSQL database {self.target} is unavailable "
            f"({type(exc).__name__}: {exc}); {outcome}. Retryable: retry once the database "
            "is reachable again"
        )

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=1,
                max_size=self.pool_size,
                # An idle connection is closed after a minute: a replica that was busy
                # once does not keep its whole pool open on the server for ever.
                max_inactive_connection_lifetime=60.0,
                timeout=10.0,  # to connect
                # A statement that has not answered by then (a network cut that TCP has not
                # noticed, a lock held by a replica that hangs) fails the transaction as
                # unavailable, rather than holding its caller and its connection for ever.
                command_timeout=self.command_timeout,
                server_settings={"application_name": "sami-control"},
            )
        except _UNAVAILABLE as exc:
            raise self.unavailable(exc) from exc
        except asyncpg.PostgresError as exc:  # e.g. no such database, role, password
            raise StorageFailed(f"the PostgreSQL database {self.target}: {exc}") from exc
        try:
            version = await self.migrate()
        except BaseException:
            await self.close()
            raise
        log.info("store_opened", store=self.kind, database=self.target, schema=version)

    async def migrate(self) -> int:
        """Apply the migrations this database lacks, in order, in one transaction, under
        an advisory lock (a second replica starting meanwhile waits, then has nothing to
        do). Returns the schema version. Refuses a database newer than this code."""
        async with self.tx() as tx:
            assert isinstance(tx, PostgresTx)
            await tx.lock(MIGRATION_LOCK)
            await tx.c.execute(BOOKKEEPING)
            version = int(
                await tx.c.fetchval("SELECT COALESCE(max(version), 0) FROM schema_version")
            )
            self.schema_found = version
            if version > len(MIGRATIONS):
                raise SchemaTooNew(
                    f"the PostgreSQL database {self.target} was migrated by a newer Sami "
                    f"(schema {version}; this sami-control knows up to {len(MIGRATIONS)}): "
                    "upgrade sami-control"
                )
            for i in range(version, len(MIGRATIONS)):
                await tx.c.execute(MIGRATIONS[i])
                await tx.c.execute("INSERT INTO schema_version (version) VALUES ($1)", i + 1)
                log.info("schema_migrated", database=self.target, version=i + 1)
        self.schema_version = len(MIGRATIONS)
        return self.schema_version

    @asynccontextmanager
    async def tx(self) -> AsyncIterator[Tx]:
        if self._pool is None:
            raise RuntimeError("PostgresStore.open() must be awaited before tx()")
        conn, transaction = await self._begin()
        try:
            try:
                yield PostgresTx(conn)
            except BaseException as exc:
                await self._rollback(conn, transaction)
                if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
                    raise Conflict(str(exc)) from exc
                if _unavailable(exc, conn):
                    raise self.unavailable(exc) from exc
                raise
            try:
                await transaction.commit()
            except asyncpg.IntegrityConstraintViolationError as exc:  # deferred constraints
                raise Conflict(str(exc)) from exc
            except Exception as exc:
                if _unavailable(exc, conn):
                    raise self.unavailable(exc, committing=True) from exc
                raise
        finally:
            await self._release(conn)

    @staticmethod
    async def _rollback(conn: Any, transaction: Any) -> None:
        if _is_closed(conn):
            return  # the server rolls back what a lost connection left open
        try:
            await transaction.rollback()
        except Exception as exc:
            if not _unavailable(exc, conn):
                raise

    async def _begin(self) -> tuple[Any, Any]:
        """A pooled connection in a new transaction. A connection that died while idle
        (the server restarted, a proxy cut it) fails at BEGIN, before anything was done:
        the pool drops it and the next one is tried, up to a whole pool's worth."""
        for attempt in range(self.pool_size + 1):
            try:
                conn = await self._pool.acquire()
            except Exception as exc:
                if _unavailable(exc, None):
                    raise self.unavailable(exc) from exc
                raise
            try:
                transaction = conn.transaction(isolation="read_committed")
                await transaction.start()
                return conn, transaction
            except Exception as exc:
                retry = _unavailable(exc, conn)  # before release: a proxy forgets its state
                await self._release(conn)
                if not retry:
                    raise
                if attempt == self.pool_size:
                    raise self.unavailable(exc) from exc
        raise AssertionError("unreachable")

    async def _release(self, conn: Any) -> None:
        try:
            await self._pool.release(conn)
        except Exception as exc:
            if not _unavailable(exc, conn):
                raise
            with contextlib.suppress(asyncpg.InterfaceError):  # detached: closed already
                conn.terminate()  # broken: the pool opens a new one when it needs it

    def close_now(self) -> None:
        """close(), for callers without an event loop to wait on (a server built but never
        started): connections are cut, not closed politely."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.terminate()

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), timeout=10.0)
            except TimeoutError:
                pool.terminate()
