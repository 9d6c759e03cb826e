"""SQLite storage: one file in the data folder, WAL mode.

Durability: `synchronous=FULL` so an acknowledged write survives not only kill -9 (which WAL
with NORMAL already survives) but also a power cut or kernel crash; it costs one fsync per
commit, which the benchmarks measure. Every write transaction is `BEGIN IMMEDIATE`, taking the
write lock up front so two writers never deadlock upgrading a read lock.

Group commit (the control plane; `group_commits()`): the transactions that run in one turn of
the event loop share one SQLite transaction and one fsync. Each is a SAVEPOINT inside it, so
one that fails rolls back alone. At the end of the turn a thread of the store's own runs the
COMMIT (sqlite3 releases the GIL during it), so the loop goes on serving calls meanwhile;
only once it returned are the batch's effects published (`after_commit`) and its callers
answered (`durable`). Callers wait for the committer (`writable`) before starting the next
batch, which thus gathers everything that arrived during the fsync: under load one fsync
carries many changes instead of each paying its own, and nothing is promised before it is on
disk. A batch that has written nothing holds only what is on disk already: its readers are
answered at once, and its COMMIT (which writes nothing, so no fsync) runs on the loop. A tx()
started while a COMMIT is in flight waits for it (blocking): correct, only slower. Without
group_commits() (offline commands, tests of the core) every `tx()` block commits when it
ends.

The connection is used from one thread at a time (the control plane's event loop, or an
offline CLI command). Other processes may open the same file: WAL lets them read while the
server writes, and busy_timeout makes a writer wait instead of failing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import structlog

from sami_control.core.store import Conflict, StorageFailed, Store, Tx
from sami_control.storage.sqlite_schema import MIGRATIONS
from sami_control.storage.sqlite_tx import SQLiteTx

log = structlog.get_logger("sami.storage")


class _Batch:
    """The transactions of one turn of the event loop, committed together."""

    __slots__ = ("callbacks", "changes", "durable_waiters", "idle_waiters", "joined")

    def __init__(self, changes: int) -> None:
        # The connection's total_changes when the batch began: unchanged at its end, the
        # batch only read, and its COMMIT writes nothing (no fsync, no thread needed).
        self.changes = changes
        self.callbacks: list[Callable[[], None]] = []
        self.joined = 0
        # One future per waiting caller, rather than one shared future each waiter would
        # have to shield: a caller cancelled while it waits must not cancel the others.
        self.durable_waiters: list[asyncio.Future[None]] = []
        self.idle_waiters: list[asyncio.Future[None]] = []

    def wait(self, waiters: list[asyncio.Future[None]]) -> asyncio.Future[None]:
        waiter = asyncio.get_running_loop().create_future()
        waiters.append(waiter)
        return waiter

    def done(self) -> None:
        for w in self.durable_waiters:
            if not w.done():
                w.set_result(None)
        self._release_idle()
        for fn in self.callbacks:
            try:
                fn()
            except Exception:  # one effect failing must not stop the others
                log.exception("after_commit_failed")

    def fail(self, exc: Exception) -> None:
        log.error("commit_failed", error=str(exc), transactions=self.joined)
        for w in self.durable_waiters:
            if not w.done():
                w.set_exception(exc)
        self._release_idle()

    def _release_idle(self) -> None:
        for w in self.idle_waiters:
            if not w.done():
                w.set_result(None)


class DataDirUnsafe(PermissionError):
    """The data folder can be read by other users, and this process cannot change that."""


def _make_private(data_dir: Path) -> None:
    """A data folder that exists with group or other permission bits (made by hand, or by a
    volume mount) is tightened to 0700: it holds the database (token hashes, manifests, the
    audit log). It is refused if this user may not change its mode (it is someone else's):
    silently serving from a folder others can read would break SECURITY.md's promise."""
    mode = data_dir.stat().st_mode & 0o777
    if not mode & 0o077:
        return
    try:
        os.chmod(data_dir, 0o700)
    except PermissionError:
        raise DataDirUnsafe(
            f"the data folder {data_dir} has mode {mode:04o}: other users may read it, and "
            f"this user (uid {os.geteuid()}) may not change that (the folder belongs to uid "
            f"{data_dir.stat().st_uid}). Run `chmod 700 {data_dir}` as its owner, or give it "
            "to the user that runs sami-control"
        ) from None
    log.warning("data_folder_tightened", path=str(data_dir), was=f"{mode:04o}", now="0700")


class SQLiteStore(Store):
    kind = "sqlite"
    FILE_NAME = "sami.db"

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        _make_private(self.data_dir)
        self.path = self.data_dir / self.FILE_NAME
        # isolation_level=None: we issue BEGIN/COMMIT ourselves.
        self._conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._committer: concurrent.futures.ThreadPoolExecutor | None = None
        self._failure_listeners: list[Callable[[StorageFailed], None]] = []
        # The batch whose COMMIT the committer thread runs now, and that job.
        self._committing: tuple[_Batch, concurrent.futures.Future[Any]] | None = None
        self._batch: _Batch | None = None
        self._in_tx = False
        # Commits made and transactions they carried (group commit): how well it groups.
        self.commits = 0
        self.batched = 0
        for pragma in (
            "journal_mode=WAL",
            "synchronous=FULL",
            "foreign_keys=ON",
            "busy_timeout=30000",
            # After each checkpoint the WAL is cut back to this size, so it stays bounded
            # under load instead of keeping its high-water mark on disk.
            "journal_size_limit=67108864",
        ):
            self._conn.execute(f"PRAGMA {pragma}")
        os.chmod(self.path, 0o600)
        self._migrate()

    def _migrate(self) -> None:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                version = self._conn.execute("PRAGMA user_version").fetchone()[0]
                if version > len(MIGRATIONS):
                    raise RuntimeError(
                        f"{self.path} was written by a newer Sami (schema {version}); "
                        "upgrade sami-control"
                    )
                for i in range(version, len(MIGRATIONS)):
                    for stmt in MIGRATIONS[i].split(";"):
                        if stmt.strip():
                            self._conn.execute(stmt)
                self._conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def integrity_check(self) -> str:
        with self._lock:
            return str(self._conn.execute("PRAGMA quick_check").fetchone()[0])

    def group_commits(self) -> None:
        """From now on transactions are grouped on the running event loop and committed
        by a thread of the store's own (module doc); every tx() must then run on that
        loop's thread."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._committer = concurrent.futures.ThreadPoolExecutor(1, "sami-commit")

    @asynccontextmanager
    async def tx(self) -> AsyncIterator[Tx]:
        if self._in_tx:
            # The connection has one transaction (or, grouped, one savepoint) open at a time.
            # SQLiteTx's coroutines never suspend, so a block can only overlap another if it
            # awaited something else while open: a bug in the caller, caught here.
            raise RuntimeError("a SQLite transaction block awaited something that suspended")
        self._in_tx = True
        try:
            if self._loop is None:
                with self._lock:
                    self._conn.execute("BEGIN IMMEDIATE")
                    try:
                        yield SQLiteTx(self._conn)
                    except sqlite3.IntegrityError as exc:
                        self._conn.execute("ROLLBACK")
                        raise Conflict(str(exc)) from exc
                    except BaseException:
                        self._conn.execute("ROLLBACK")
                        raise
                    self._conn.execute("COMMIT")
                return
            if threading.get_ident() != self._loop_thread:
                raise RuntimeError("with group commits on, the store is used from its loop only")
            if self._committing is not None:
                # The connection is the committer thread's until its COMMIT returns. Callers
                # that can wait await writable() first; one that did not waits here.
                self._finish_commit(*self._committing)
            batch = self._batch or self._open_batch()
            batch.joined += 1
            self._conn.execute("SAVEPOINT tx")
            try:
                yield SQLiteTx(self._conn)
            except BaseException as exc:
                self._undo(batch)
                if isinstance(exc, sqlite3.IntegrityError):
                    raise Conflict(str(exc)) from exc
                raise
            self._conn.execute("RELEASE tx")
        finally:
            self._in_tx = False

    async def writable(self) -> None:
        """Wait (without blocking the loop) while a commit is in flight: a tx() started
        meanwhile would wait for it blocking the loop."""
        while self._committing is not None:
            batch = self._committing[0]
            await batch.wait(batch.idle_waiters)

    def _open_batch(self) -> _Batch:
        assert self._loop is not None
        self._conn.execute("BEGIN IMMEDIATE")
        batch = self._batch = _Batch(self._conn.total_changes)
        self._loop.call_soon(self._commit)
        return batch

    def _undo(self, batch: _Batch) -> None:
        """Roll back the innermost transaction alone, or, if SQLite already rolled back the
        whole batch (it does on SQLITE_FULL, IOERR, NOMEM), fail the batch."""
        if self._conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK TO tx")
                self._conn.execute("RELEASE tx")
                return
        self._fail(batch, sqlite3.OperationalError("the transaction was rolled back"))

    def _commit(self) -> None:
        """End of the loop's turn: COMMIT the batch in the committer thread (sqlite3 lets
        the GIL go meanwhile), so the loop serves calls during the fsync; the calls that
        arrive then make the next batch. Without group commits (close()), here."""
        batch = self._batch
        if batch is None:
            return  # failed and dropped already
        self._batch = None
        if (
            self._committer is None
            or self._loop is None
            or self._conn.total_changes == batch.changes
        ):
            # Also a batch that only read: its COMMIT just ends the transaction.
            try:
                self._conn.execute("COMMIT")
            except Exception as exc:
                self._fail(batch, exc)
                return
            self._committed(batch)
            return
        loop = self._loop
        job = self._committer.submit(self._run_commit)
        self._committing = (batch, job)
        job.add_done_callback(lambda _: loop.call_soon_threadsafe(self._finish_commit, batch, job))

    def _run_commit(self) -> None:
        """In the committer thread."""
        self._conn.execute("COMMIT")

    def _finish_commit(self, batch: _Batch, job: concurrent.futures.Future[Any]) -> None:
        """On the loop: once the COMMIT returned (waiting for it if it has not)."""
        if self._committing is None or self._committing[0] is not batch:
            return  # finished already (a tx() waited for it)
        exc = job.exception()  # blocks until the job is done
        self._committing = None
        if exc is not None:
            self._fail(batch, exc)
        else:
            self._committed(batch)

    def _committed(self, batch: _Batch) -> None:
        self.commits += 1
        self.batched += batch.joined
        batch.done()

    def _fail(self, batch: _Batch, exc: BaseException) -> None:
        if self._batch is batch:
            self._batch = None
        if self._conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
        failed = StorageFailed(
            f"the database {self.path} could not store the change ({exc}); nothing of it "
            "was kept: fix the cause (disk space, permissions) and retry"
        )
        batch.fail(failed)
        for fn in self._failure_listeners:
            try:
                fn(failed)
            except Exception:  # one listener failing must not stop the others
                log.exception("failure_listener_failed")

    def on_failure(self, fn: Callable[[StorageFailed], None]) -> None:
        self._failure_listeners.append(fn)

    def _pending(self) -> _Batch | None:
        """The batch that holds the last write: the open one, else the one committing."""
        if self._batch is not None:
            return self._batch
        return self._committing[0] if self._committing is not None else None

    def after_commit(self, fn: Callable[[], None]) -> None:
        pending = self._pending()
        if pending is None:
            fn()
        else:
            pending.callbacks.append(fn)

    async def durable(self) -> None:
        # Batches commit one after the other: the last one durable, all are. An open batch
        # that has written nothing yet holds nothing a reader could have seen.
        pending = self._pending()
        if pending is None:
            return
        if pending is self._batch and self._conn.total_changes == pending.changes:
            return
        await pending.wait(pending.durable_waiters)

    async def close(self) -> None:
        self.close_now()

    def close_now(self) -> None:
        """close(), for callers without an event loop (the offline commands' tail)."""
        with self._lock:
            if self._committing is not None:
                self._finish_commit(*self._committing)
            committer, self._committer = self._committer, None
            if committer is not None:
                committer.shutdown()
            self._commit()  # what the last turn of the loop wrote, here
            self._conn.close()
