"""`sami-control store copy`: a SQLite data folder into an empty PostgreSQL database, the
way from one control plane to several replicas (docs/postgresql.md).

Row for row and column for column (PostgreSQL's first migration is SQLite's schema 7, see
postgres_schema.py): ids are kept, and so are the `seq` values that order lists and that
page tokens carry, and every event's sequence; each identity then starts past the highest
copied value. SQLite is read in one read transaction (a consistent snapshot) while the data
folder's lock keeps a server off it; PostgreSQL is written in one transaction, with COPY,
and the counts of every table are compared before it commits: a copy is whole or absent.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sami_control.storage.maintenance import DataDirLock
from sami_control.storage.postgres import PostgresStore
from sami_control.storage.postgres_schema import SEQ_TABLES, TABLES
from sami_control.storage.postgres_tx import PostgresTx
from sami_control.storage.sqlite import SQLiteStore

BATCH = 5000

# (table, rows copied so far, rows in the table): called every batch, and at each table's end.
Progress = Callable[[str, int, int], None]


class CopyRefused(Exception):
    """The copy cannot start (the target holds data, the source is not a data folder)."""


def _nothing(table: str, done: int, total: int) -> None:
    return None


def _read(conn: sqlite3.Connection, table: str, columns: list[str]) -> Iterator[list[Any]]:
    quoted = ", ".join(f'"{c}"' for c in columns)
    cur = conn.execute(f'SELECT {quoted} FROM "{table}"')
    while batch := cur.fetchmany(BATCH):
        yield [list(row) for row in batch]


async def _columns(conn: Any, table: str) -> list[tuple[str, str]]:
    rows = await conn.fetch(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
        table,
    )
    return [(r[0], r[1]) for r in rows]


def _sqlite_columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')}


async def _refuse_unless_empty(conn: Any, target: str) -> None:
    found = {t: int(await conn.fetchval(f'SELECT count(*) FROM "{t}"')) for t in TABLES}
    holding = {t: n for t, n in found.items() if n}
    if holding:
        what = ", ".join(f"{t}: {n}" for t, n in holding.items())
        raise CopyRefused(
            f"the PostgreSQL database {target} is not empty ({what} rows): store copy only "
            "fills an empty database. Give it a new database (CREATE DATABASE), or drop "
            "this one's data if it is a failed earlier copy"
        )


async def copy_sqlite_to_postgres(
    data: Path, url: str, progress: Progress = _nothing
) -> dict[str, int]:
    """Copy the data folder `data` into the empty database at `url`; the rows per table.
    Raises CopyRefused (nothing written) if the database holds data, StorageFailed if it
    cannot be reached, DataDirBusy if a server uses the folder."""
    db = Path(data) / SQLiteStore.FILE_NAME
    if not db.exists():
        raise CopyRefused(f"{db} does not exist: is {data} a Sami data folder?")
    lock = DataDirLock(Path(data))  # no server writes while we read
    try:
        SQLiteStore(data).close_now()  # brings an older data folder up to the current schema
        source = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            source.execute("BEGIN")  # one snapshot of every table
            return await _copy(source, url, progress)
        finally:
            source.close()
    finally:
        lock.release()


async def _copy(source: sqlite3.Connection, url: str, progress: Progress) -> dict[str, int]:
    store = PostgresStore(url, pool_size=1)
    await store.open()  # migrated: the tables exist
    try:
        async with store.tx() as tx:
            assert isinstance(tx, PostgresTx)
            conn = tx.c
            await tx.lock("sami:store-copy")  # two copies at once: the second finds data
            await _refuse_unless_empty(conn, store.target)
            counts = {}
            for table in TABLES:
                counts[table] = await _copy_table(source, conn, table, progress)
            for table in SEQ_TABLES:
                # The next seq is past every copied one (false: that value itself is unused).
                await conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'seq'), "
                    f"COALESCE((SELECT max(seq) FROM {table}), 0) + 1, false)"
                )
            for table, expected in counts.items():
                copied = int(await conn.fetchval(f'SELECT count(*) FROM "{table}"'))
                if copied != expected:
                    raise RuntimeError(
                        f"{table}: {expected} rows in SQLite but {copied} in PostgreSQL after "
                        "the copy; nothing was kept"
                    )
        return counts
    finally:
        await store.close()


async def _copy_table(source: sqlite3.Connection, conn: Any, table: str, progress: Progress) -> int:
    columns = await _columns(conn, table)
    names = [c for c, _ in columns]
    missing = set(names) - _sqlite_columns(source, table)
    if missing:
        raise CopyRefused(
            f"the SQLite table {table} lacks {', '.join(sorted(missing))}: this data folder "
            "is not at the schema this sami-control copies"
        )
    # SQLite has no booleans (0/1 integers): PostgreSQL's boolean columns get bools.
    booleans = [i for i, (_, kind) in enumerate(columns) if kind == "boolean"]
    total = int(source.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])
    done = 0
    progress(table, 0, total)
    for batch in _read(source, table, names):
        for row in batch:
            for i in booleans:
                row[i] = bool(row[i])
        await conn.copy_records_to_table(table, records=batch, columns=names)
        done += len(batch)
        progress(table, done, total)
    return done
