"""`sami-control migrate` and `sami-control store copy`: the commands about the store
itself rather than what is in it."""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import time
from pathlib import Path

from sami_control.core.store import StorageFailed
from sami_control.storage import BadStoreURL, is_postgres, open_store, redact
from sami_control.storage.maintenance import DataDirBusy
from sami_control.storage.postgres_schema import SchemaTooNew


def main(args: argparse.Namespace) -> int:
    try:
        if args.command == "migrate":
            return asyncio.run(_migrate(Path(args.data), args.store or None))
        return asyncio.run(_copy(Path(args.data), args.to))
    except (StorageFailed, BadStoreURL, SchemaTooNew, DataDirBusy, PermissionError) as exc:
        print(f"sami-control: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # SQLite: a data folder written by a newer Sami
        print(f"sami-control: {exc}", file=sys.stderr)
        return 2


def _sqlite_version(data: Path) -> int:
    """The schema version of the data folder's database as it is on disk (0: none yet)."""
    from sami_control.storage.sqlite import SQLiteStore

    db = data / SQLiteStore.FILE_NAME
    if not db.exists():
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


async def _migrate(data: Path, spec: str | None) -> int:
    if is_postgres(spec):
        from sami_control.storage.postgres import PostgresStore

        pg = PostgresStore(str(spec), pool_size=1)
        await pg.open()  # migrates
        await pg.close()
        where, found, now = f"postgresql {pg.target}", pg.schema_found, pg.schema_version
    else:
        from sami_control.storage.sqlite_schema import MIGRATIONS

        found = _sqlite_version(data)
        store = open_store(spec, data)  # SQLite migrates as it opens
        await store.open()
        await store.close()
        where, now = f"sqlite {data}", len(MIGRATIONS)
    change = "up to date" if found == now else f"migrated from {found}"
    print(f"{where}: schema version {now} ({change})")
    return 0


class _Progress:
    """How far the copy is, on stderr."""

    def __init__(self) -> None:
        self._shown = time.monotonic()
        # On a terminal one line per table, rewritten; in a log, a line every 5 s and
        # one per table when it is done.
        self._tty = sys.stderr.isatty()

    def __call__(self, table: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done != total and now - self._shown < (0.5 if self._tty else 5.0):
            return
        self._shown = now
        end = "\n" if done == total or not self._tty else "\r"
        print(f"  copying {table}: {done}/{total}", end=end, file=sys.stderr, flush=True)


async def _copy(data: Path, url: str) -> int:
    from sami_control.storage.transfer import CopyRefused, copy_sqlite_to_postgres

    if not is_postgres(url):
        raise BadStoreURL(f"--to {redact(url)!r}: give a postgresql://USER@HOST:PORT/DB URL")
    try:
        counts = await copy_sqlite_to_postgres(data, url, _Progress())
    except CopyRefused as exc:
        print(f"sami-control: {exc}", file=sys.stderr)
        return 2
    print(f"copied {data} to {redact(url)}; rows per table (verified):")
    for table, n in counts.items():
        print(f"  {table:<22}{n}")
    return 0
